/* safetensors.c - strict .safetensors reader (mmap) and atomic writer.
 *
 * Reader: the header is parsed with cJSON and every field is checked before
 * uf_st_open returns; afterwards tensor data is only ever accessed through
 * validated (offset, size) pairs, with memcpy since data may be unaligned.
 * Writer: tensors are converted and copied when added, so save only has to
 * serialize (through io/atomic_file); the header is built with cJSON, integers inserted as raw text so
 * that they are printed exactly (cJSON prints large doubles with an exponent).
 */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/atomic_file.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* 100 MB, as the reference implementation */
#define ST_MAX_INT 9007199254740992.0               /* 2^53: larger JSON numbers are not exact doubles */
#define ST_META "__metadata__"

/* ---------------------------------------------------------------- dtypes */

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {
    [UF_DT_F32] = {"F32", 4}, [UF_DT_F16] = {"F16", 2}, [UF_DT_BF16] = {"BF16", 2}, [UF_DT_F64] = {"F64", 8},
    [UF_DT_I64] = {"I64", 8}, [UF_DT_I32] = {"I32", 4}, [UF_DT_I16] = {"I16", 2},   [UF_DT_I8] = {"I8", 1},
    [UF_DT_U8] = {"U8", 1},   [UF_DT_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof *DTYPES))

const char *uf_dtype_name(uf_dtype dt) { return (int)dt >= 0 && (int)dt < N_DTYPES ? DTYPES[dt].name : "?"; }

size_t uf_dtype_size(uf_dtype dt) { return (int)dt >= 0 && (int)dt < N_DTYPES ? DTYPES[dt].size : 0; }

static int dtype_parse(const char *s, uf_dtype *out) {
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(s, DTYPES[i].name)) {
            *out = (uf_dtype)i;
            return 1;
        }
    return 0;
}

static int dtype_is_float(uf_dtype dt) {
    return dt == UF_DT_F32 || dt == UF_DT_F16 || dt == UF_DT_BF16 || dt == UF_DT_F64;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float uf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float32 */
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return f32_from_bits(sign | 0x7f800000u | (m << 13)); /* inf, nan (payload kept) */
    return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));       /* rebias 15 -> 127 */
}

uint16_t uf_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff); /* nan, quiet */
    if (ax == 0x7f800000u) return sign | 0x7c00;
    if (ax < 0x38800000u) { /* below 2^-14: half subnormal (units of 2^-24) or zero */
        int e = (int)(ax >> 23);
        if (e < 102) return sign; /* < 2^-25: rounds to zero (2^-25 itself ties to even 0 below) */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u; /* value = m * 2^(e-150) */
        int shift = 126 - e;                        /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q; /* q == 0x400 is the smallest normal: still right */
    }
    uint32_t r = ax - 0x38000000u; /* exponent rebias 127 -> 15 */
    uint32_t q = r >> 13, rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
    if (q >= 0x7c00) q = 0x7c00; /* overflow -> inf */
    return sign | (uint16_t)q;
}

float uf_bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

uint16_t uf_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* nan, quiet */
    x += 0x7fffu + ((x >> 16) & 1); /* ties to even; carries into the exponent (up to inf) */
    return (uint16_t)(x >> 16);
}

/* ---------------------------------------------------------------- reader */

struct uf_safetensors {
    char *path;
    unsigned char *map; /* whole file, read-only */
    size_t map_size;
    const unsigned char *data; /* data buffer = map + 8 + header length */
    size_t data_size;
    cJSON *root; /* owns the name and metadata strings */
    int n;
    uf_st_tensor *tensors; /* (n) sorted by offset */
    int *by_name;          /* (n) indices into tensors, sorted by name */
    int n_meta;
    const char **meta_key, **meta_val; /* (n_meta) header order */
    uf_safetensors *parent; /* a view (uf_st_view): the file whose mapping and strings it shares */
    int refs;               /* a file: 1 + its live views */
};

/* Copies s into buf with control characters and quotes escaped, so that a
 * hostile name cannot break the one-line error message. */
static const char *esc(const char *s, char *buf, size_t cap) {
    size_t j = 0;
    for (; *s && j + 5 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\')
            j += (size_t)snprintf(buf + j, cap - j, "\\x%02x", c);
        else
            buf[j++] = (char)c;
    }
    if (*s && cap > 4) {
        if (j > cap - 4) j = cap - 4;
        memcpy(buf + j, "...", 3), j += 3;
    }
    buf[j] = '\0';
    return buf;
}

/* "<path>: tensor '<name>': <message>"; name may be NULL. Returns UF_ERR. */
static int st_fail(const char *path, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int st_fail(const char *path, const char *name, const char *fmt, ...) {
    char msg[512], ename[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (name)
        return uf_error("%s: tensor '%s': %s", path, esc(name, ename, sizeof ename), msg);
    return uf_error("%s: %s", path, msg);
}

/* A JSON number that is an exact integer in [0, 2^53]. */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_INT) || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* Validates one header entry and fills t (except data, filled later). */
static int parse_entry(const char *path, const cJSON *e, size_t data_size, uf_st_tensor *t) {
    const char *name = e->string;
    t->name = name;
    if (!cJSON_IsObject(e)) return st_fail(path, name, "entry is not a JSON object");

    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!jd) return st_fail(path, name, "missing \"dtype\"");
    if (!cJSON_IsString(jd)) return st_fail(path, name, "\"dtype\" is not a string");
    if (!dtype_parse(jd->valuestring, &t->dtype)) {
        char ed[64];
        return st_fail(path, name, "unknown dtype '%s' (supported: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)",
                       esc(jd->valuestring, ed, sizeof ed));
    }

    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!js) return st_fail(path, name, "missing \"shape\"");
    if (!cJSON_IsArray(js)) return st_fail(path, name, "\"shape\" is not an array");
    int nd = cJSON_GetArraySize(js);
    if (nd > UF_MAX_DIMS) return st_fail(path, name, "shape has %d dimensions (at most %d supported)", nd, UF_MAX_DIMS);
    t->ndim = nd;
    int i = 0;
    int64_t numel = 1;
    int overflow = 0;
    for (const cJSON *jv = js->child; jv; jv = jv->next, i++) {
        uint64_t d;
        if (cJSON_IsNumber(jv) && jv->valuedouble < 0)
            return st_fail(path, name, "shape dimension %d is negative (%.17g)", i, jv->valuedouble);
        if (!json_uint(jv, &d))
            return st_fail(path, name, "shape dimension %d is not a non-negative integer", i);
        t->shape[i] = (int64_t)d;
        /* overflow of the product of the non-zero dims: the shape is nonsense even if a dim is 0 */
        if (d != 0) {
            if ((uint64_t)numel > (uint64_t)INT64_MAX / d) overflow = 1;
            else numel *= (int64_t)d;
        }
    }
    if (overflow) {
        char sb[200];
        return st_fail(path, name, "shape %s: element count overflows", uf_shape_str(nd, t->shape, sb, sizeof sb));
    }
    for (i = 0; i < nd; i++)
        if (t->shape[i] == 0) numel = 0;
    t->numel = numel;

    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!jo) return st_fail(path, name, "missing \"data_offsets\"");
    uint64_t b, en;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &b) ||
        !json_uint(jo->child->next, &en))
        return st_fail(path, name, "\"data_offsets\" is not an array of 2 non-negative integers");
    if (b > en)
        return st_fail(path, name, "data_offsets [%" PRIu64 ", %" PRIu64 "] reversed (begin > end)", b, en);
    if (en > data_size)
        return st_fail(path, name, "data_offsets [%" PRIu64 ", %" PRIu64 "] exceed the data buffer (%zu bytes)", b,
                       en, data_size);
    uint64_t esize = uf_dtype_size(t->dtype);
    if ((uint64_t)numel > (en - b) / esize || (uint64_t)numel * esize != en - b) {
        char sb[200];
        return st_fail(path, name, "size mismatch: %s %s is %" PRId64 " elements x %" PRIu64 " bytes, data_offsets [%" PRIu64
                       ", %" PRIu64 "] hold %" PRIu64 " bytes",
                       uf_dtype_name(t->dtype), uf_shape_str(nd, t->shape, sb, sizeof sb), numel, esize, b, en, en - b);
    }
    t->offset = (size_t)b;
    t->nbytes = (size_t)(en - b);
    return UF_OK;
}

static int cmp_offset(const void *pa, const void *pb) {
    const uf_st_tensor *a = pa, *b = pb;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes) return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* for cmp_name (qsort has no context argument) */
static _Thread_local const uf_st_tensor *tl_sort_tensors;

static int cmp_name(const void *pa, const void *pb) {
    return strcmp(tl_sort_tensors[*(const int *)pa].name, tl_sort_tensors[*(const int *)pb].name);
}

static int parse_metadata(uf_safetensors *st, const cJSON *m) {
    if (!cJSON_IsObject(m)) return st_fail(st->path, NULL, "\"__metadata__\" is not a JSON object");
    int n = cJSON_GetArraySize(m);
    st->meta_key = calloc((size_t)n + 1, sizeof *st->meta_key);
    st->meta_val = calloc((size_t)n + 1, sizeof *st->meta_val);
    if (!st->meta_key || !st->meta_val) return uf_error("out of memory");
    char ek[160];
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return st_fail(st->path, NULL, "\"__metadata__\" entry '%s' is not a string", esc(e->string, ek, sizeof ek));
        for (int i = 0; i < st->n_meta; i++)
            if (!strcmp(st->meta_key[i], e->string))
                return st_fail(st->path, NULL, "duplicate \"__metadata__\" key '%s'", esc(e->string, ek, sizeof ek));
        st->meta_key[st->n_meta] = e->string;
        st->meta_val[st->n_meta] = e->valuestring;
        st->n_meta++;
    }
    return UF_OK;
}

/* Everything after the mapping: header JSON, entries, overlaps, names. */
static int st_validate(uf_safetensors *st) {
    const char *path = st->path;
    if (st->map_size < 8) return st_fail(path, NULL, "file too short (%zu bytes; shorter than the 8-byte header length)", st->map_size);
    uint64_t hlen;
    memcpy(&hlen, st->map, 8);
    if (hlen > ST_MAX_HEADER)
        return st_fail(path, NULL, "header length %" PRIu64 " larger than the 100 MB limit", hlen);
    if (hlen > st->map_size - 8)
        return st_fail(path, NULL, "header length %" PRIu64 " exceeds the file size (%zu bytes after the length)", hlen,
                       st->map_size - 8);
    st->data = st->map + 8 + hlen;
    st->data_size = st->map_size - 8 - (size_t)hlen;

    const char *hdr = (const char *)st->map + 8, *end = NULL;
    st->root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!st->root) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        return st_fail(path, NULL, "invalid JSON header (%" PRIu64 " bytes; parse error near byte %zu)", hlen, at);
    }
    for (const char *p = end; p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return st_fail(path, NULL, "invalid JSON header: unexpected data after the JSON object at byte %zu",
                           (size_t)(p - hdr));
    if (!cJSON_IsObject(st->root)) return st_fail(path, NULL, "JSON header is not a JSON object");

    int n = 0;
    const cJSON *meta = NULL;
    for (const cJSON *e = st->root->child; e; e = e->next) {
        if (!strcmp(e->string, ST_META)) {
            if (meta) return st_fail(path, NULL, "duplicate \"__metadata__\" entry");
            meta = e;
        } else {
            n++;
        }
    }
    if (meta && parse_metadata(st, meta) != UF_OK) return UF_ERR;

    st->tensors = calloc((size_t)n + 1, sizeof *st->tensors);
    st->by_name = calloc((size_t)n + 1, sizeof *st->by_name);
    if (!st->tensors || !st->by_name) return uf_error("out of memory");
    for (const cJSON *e = st->root->child; e; e = e->next) {
        if (e == meta) continue;
        if (parse_entry(path, e, st->data_size, &st->tensors[st->n]) != UF_OK) return UF_ERR;
        st->n++;
    }

    /* Duplicate names (cJSON keeps both members): sort an index by name. */
    for (int i = 0; i < n; i++) st->by_name[i] = i;
    tl_sort_tensors = st->tensors;
    qsort(st->by_name, (size_t)n, sizeof *st->by_name, cmp_name);
    for (int i = 1; i < n; i++)
        if (!strcmp(st->tensors[st->by_name[i]].name, st->tensors[st->by_name[i - 1]].name))
            return st_fail(path, st->tensors[st->by_name[i]].name, "duplicate tensor name");

    /* File order; then no non-empty tensor may start before the previous ones end. */
    qsort(st->tensors, (size_t)n, sizeof *st->tensors, cmp_offset);
    int last = -1; /* the non-empty tensor reaching furthest so far */
    for (int i = 0; i < n; i++) {
        uf_st_tensor *t = &st->tensors[i];
        if (t->nbytes == 0) continue;
        if (last >= 0 && t->offset < st->tensors[last].offset + st->tensors[last].nbytes) {
            char ename[160];
            const uf_st_tensor *o = &st->tensors[last];
            return st_fail(path, t->name, "data_offsets [%zu, %zu] overlap tensor '%s' [%zu, %zu]", t->offset,
                           t->offset + t->nbytes, esc(o->name, ename, sizeof ename), o->offset, o->offset + o->nbytes);
        }
        if (last < 0 || t->offset + t->nbytes > st->tensors[last].offset + st->tensors[last].nbytes) last = i;
    }
    for (int i = 0; i < n; i++) st->tensors[i].data = st->data + st->tensors[i].offset;
    /* by_name indexed the pre-sort order: rebuild it for the final order. */
    for (int i = 0; i < n; i++) st->by_name[i] = i;
    qsort(st->by_name, (size_t)n, sizeof *st->by_name, cmp_name);
    tl_sort_tensors = NULL;
    return UF_OK;
}

uf_safetensors *uf_st_open(const char *path) {
    uf_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        uf_error("out of memory");
        return NULL;
    }
    st->refs = 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st_fail(path, NULL, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st_fail(path, NULL, "cannot stat: %s", strerror(errno));
        close(fd);
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st_fail(path, NULL, "not a regular file");
        close(fd);
        goto fail;
    }
    st->map_size = (size_t)sb.st_size;
    if (st->map_size >= 8) {
        void *m = mmap(NULL, st->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            st_fail(path, NULL, "cannot map %zu bytes: %s", st->map_size, strerror(errno));
            close(fd);
            goto fail;
        }
        st->map = m;
    }
    close(fd);
    if (st_validate(st) != UF_OK) goto fail;
    return st;
fail:
    uf_st_close(st);
    return NULL;
}

uf_safetensors *uf_st_view(uf_safetensors *st, const char *prefix) {
    if (st->parent) st = st->parent; /* a view of a view: of the file, with the full prefix given */
    const size_t plen = strlen(prefix);
    uf_safetensors *v = calloc(1, sizeof *v);
    if (v) v->tensors = calloc((size_t)st->n + 1, sizeof *v->tensors);
    if (v) v->by_name = calloc((size_t)st->n + 1, sizeof *v->by_name);
    if (v && v->tensors && v->by_name) {
        size_t cap = strlen(st->path) + plen + 16;
        if ((v->path = malloc(cap))) snprintf(v->path, cap, "%s (%s*)", st->path, prefix);
    }
    if (!v || !v->tensors || !v->by_name || !v->path) {
        if (v) free(v->tensors), free(v->by_name), free(v->path), free(v);
        uf_error("out of memory");
        return NULL;
    }
    for (int i = 0; i < st->n; i++)
        if (!strncmp(st->tensors[i].name, prefix, plen) && st->tensors[i].name[plen]) {
            v->tensors[v->n] = st->tensors[i];
            v->tensors[v->n].name += plen; /* into the file's strings */
            v->n++;
        }
    for (int i = 0; i < v->n; i++) v->by_name[i] = i;
    tl_sort_tensors = v->tensors;
    qsort(v->by_name, (size_t)v->n, sizeof *v->by_name, cmp_name);
    tl_sort_tensors = NULL;
    v->data = st->data;
    v->data_size = st->data_size;
    v->parent = st;
    st->refs++;
    return v;
}

void uf_st_close(uf_safetensors *st) {
    if (!st) return;
    if (st->parent) { /* a view: its own tables, then its reference to the file */
        uf_safetensors *file = st->parent;
        free(st->tensors), free(st->by_name), free(st->path), free(st);
        uf_st_close(file);
        return;
    }
    if (--st->refs > 0) return; /* views still use the mapping */
    if (st->map) munmap(st->map, st->map_size);
    cJSON_Delete(st->root);
    free(st->tensors);
    free(st->by_name);
    free(st->meta_key);
    free(st->meta_val);
    free(st->path);
    free(st);
}

int uf_st_count(const uf_safetensors *st) { return st->n; }

const uf_st_tensor *uf_st_at(const uf_safetensors *st, int i) {
    return i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const uf_st_tensor *uf_st_find(const uf_safetensors *st, const char *name) {
    int lo = 0, hi = st->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[st->by_name[mid]].name, name);
        if (c == 0) return &st->tensors[st->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

size_t uf_st_data_size(const uf_safetensors *st) { return st->data_size; }
const char *uf_st_path(const uf_safetensors *st) { return st->path; }

int uf_st_metadata_count(const uf_safetensors *st) { return st->n_meta; }
const char *uf_st_metadata_key(const uf_safetensors *st, int i) {
    return i >= 0 && i < st->n_meta ? st->meta_key[i] : NULL;
}
const char *uf_st_metadata_value(const uf_safetensors *st, int i) {
    return i >= 0 && i < st->n_meta ? st->meta_val[i] : NULL;
}
const char *uf_st_metadata_get(const uf_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_key[i], key)) return st->meta_val[i];
    return NULL;
}

/* Finds `name` and checks the shape (ndim >= 0) or error. */
static const uf_st_tensor *find_checked(const uf_safetensors *st, const char *name, int ndim,
                                        const int64_t *expect_shape) {
    const uf_st_tensor *t = uf_st_find(st, name);
    if (!t) {
        st_fail(st->path, name, "not found in the file (%d tensors)", st->n);
        return NULL;
    }
    if (ndim >= 0) {
        int same = ndim == t->ndim;
        for (int i = 0; same && i < ndim; i++) same = expect_shape[i] == t->shape[i];
        if (!same) {
            char a[200], b[200];
            st_fail(st->path, name, "shape %s expected, found %s",
                    uf_shape_str(ndim, expect_shape, a, sizeof a),
                    uf_shape_str(t->ndim, t->shape, b, sizeof b));
            return NULL;
        }
    }
    return t;
}

int uf_st_read_f32_into(const uf_safetensors *st, const char *name, int ndim, const int64_t *expect_shape,
                        float *out, int64_t count) {
    const uf_st_tensor *t = find_checked(st, name, ndim, expect_shape);
    if (!t) return UF_ERR;
    if (!dtype_is_float(t->dtype))
        return st_fail(st->path, name, "dtype %s is not a float type (F32, F16, BF16, F64)", uf_dtype_name(t->dtype));
    if (count != t->numel)
        return st_fail(st->path, name, "%" PRId64 " elements, the caller expects %" PRId64, t->numel, count);
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        float v;
        if (t->dtype == UF_DT_F32) {
            memcpy(&v, p + 4 * i, 4);
        } else if (t->dtype == UF_DT_F64) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            if (!isfinite(d))
                return st_fail(st->path, name, "non-finite value %g at element %" PRId64, d, i);
            if (fabs(d) > (double)FLT_MAX)
                return st_fail(st->path, name, "value %g at element %" PRId64 " is out of float32 range", d, i);
            v = (float)d;
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            v = t->dtype == UF_DT_F16 ? uf_f16_to_f32(h) : uf_bf16_to_f32(h);
        }
        if (!isfinite(v)) return st_fail(st->path, name, "non-finite value %g at element %" PRId64, (double)v, i);
        out[i] = v;
    }
    return UF_OK;
}

const float *uf_st_view_f32(const uf_safetensors *st, const char *name, int ndim, const int64_t *expect_shape,
                           float **owned) {
    *owned = NULL;
    const uf_st_tensor *t = find_checked(st, name, ndim, expect_shape);
    if (!t) return NULL;
    if (t->dtype == UF_DT_F32 && (uintptr_t)t->data % _Alignof(float) == 0) {
        const float *v = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            if (!isfinite(v[i])) {
                st_fail(st->path, name, "non-finite value %g at element %" PRId64, (double)v[i], i);
                return NULL;
            }
        return v;
    }
    uf_tensor *c = uf_st_read_f32(st, name, -1, NULL);
    if (!c) return NULL;
    *owned = c->data;
    c->data = NULL;
    uf_tensor_free(c);
    return *owned;
}

uf_tensor *uf_st_read_f32(const uf_safetensors *st, const char *name, int ndim, const int64_t *expect_shape) {
    const uf_st_tensor *t = find_checked(st, name, ndim, expect_shape);
    if (!t) return NULL;
    uf_tensor *out = uf_tensor_new(t->ndim, t->shape);
    if (!out) {
        uf_error_prefix("%s: tensor '%s'", st->path, name);
        return NULL;
    }
    if (uf_st_read_f32_into(st, name, -1, NULL, out->data, t->numel) != UF_OK) {
        uf_tensor_free(out);
        return NULL;
    }
    return out;
}

int uf_st_read_i64(const uf_safetensors *st, const char *name, int64_t *out, int64_t count) {
    const uf_st_tensor *t = find_checked(st, name, -1, NULL);
    if (!t) return UF_ERR;
    if (dtype_is_float(t->dtype))
        return st_fail(st->path, name, "dtype %s is not an integer type", uf_dtype_name(t->dtype));
    if (count != t->numel)
        return st_fail(st->path, name, "%" PRId64 " elements, the caller expects %" PRId64, t->numel, count);
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case UF_DT_I64: memcpy(&out[i], p + 8 * i, 8); break;
        case UF_DT_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); out[i] = v; } break;
        case UF_DT_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); out[i] = v; } break;
        case UF_DT_I8: out[i] = (int8_t)p[i]; break;
        case UF_DT_U8: out[i] = p[i]; break;
        case UF_DT_BOOL:
            if (p[i] > 1) return st_fail(st->path, name, "BOOL element %" PRId64 " has byte value %d (not 0 or 1)", i, p[i]);
            out[i] = p[i];
            break;
        default: UF_ASSERT(0);
        }
    }
    return UF_OK;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    char *name;
    uf_dtype dtype;
    int ndim;
    int64_t shape[UF_MAX_DIMS];
    unsigned char *bytes; /* (nbytes) little-endian file image of the values */
    size_t nbytes;
} st_wtensor;

struct uf_st_writer {
    st_wtensor *t;
    int n, cap;
    char **mkey, **mval;
    int nm, capm;
};

uf_st_writer *uf_st_writer_new(void) {
    uf_st_writer *w = calloc(1, sizeof *w);
    if (!w) uf_error("out of memory");
    return w;
}

void uf_st_writer_free(uf_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        uf_free(w->t[i].bytes);
    }
    for (int i = 0; i < w->nm; i++) free(w->mkey[i]), free(w->mval[i]);
    free(w->t);
    free(w->mkey);
    free(w->mval);
    free(w);
}

/* Checks name and shape, computes the element count, reserves a slot. */
static st_wtensor *writer_slot(uf_st_writer *w, const char *name, uf_dtype dtype, int ndim, const int64_t *shape,
                               size_t *numel) {
    char en[160], sb[200];
    if (!name) {
        uf_error("safetensors writer: tensor name is NULL");
        return NULL;
    }
    if (!strcmp(name, ST_META)) {
        uf_error("safetensors writer: '%s' cannot be a tensor name", ST_META);
        return NULL;
    }
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) {
            uf_error("safetensors writer: tensor '%s': duplicate tensor name", esc(name, en, sizeof en));
            return NULL;
        }
    if (ndim < 0 || ndim > UF_MAX_DIMS) {
        uf_error("safetensors writer: tensor '%s': rank %d not supported (0..%d)", esc(name, en, sizeof en), ndim,
                 UF_MAX_DIMS);
        return NULL;
    }
    size_t n = 1, bytes;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || (uint64_t)shape[i] > (uint64_t)ST_MAX_INT || uf_mul_size(n, (size_t)shape[i], &n) != UF_OK ||
            n > (size_t)INT64_MAX) {
            uf_error("safetensors writer: tensor '%s': invalid shape %s", esc(name, en, sizeof en),
                     uf_shape_str(ndim, shape, sb, sizeof sb));
            return NULL;
        }
    if (uf_mul_size(n, uf_dtype_size(dtype), &bytes) != UF_OK) {
        uf_error_prefix("safetensors writer: tensor '%s'", esc(name, en, sizeof en));
        return NULL;
    }
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        st_wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) {
            uf_error("out of memory");
            return NULL;
        }
        w->t = t, w->cap = cap;
    }
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->bytes = uf_alloc(bytes);
    if (!t->name || !t->bytes) {
        free(t->name);
        uf_free(t->bytes);
        uf_error("out of memory (tensor '%s', %zu bytes)", esc(name, en, sizeof en), bytes);
        return NULL;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = bytes;
    *numel = n;
    return t;
}

int uf_st_writer_add_f32(uf_st_writer *w, const char *name, uf_dtype dtype, int ndim, const int64_t *shape,
                         const float *data) {
    char en[160];
    if (!dtype_is_float(dtype))
        return uf_error("safetensors writer: tensor '%s': dtype %s is not a float type (F32, F16, BF16, F64)",
                        name ? esc(name, en, sizeof en) : "(null)", uf_dtype_name(dtype));
    size_t n;
    st_wtensor *t = writer_slot(w, name, dtype, ndim, shape, &n);
    if (!t) return UF_ERR;
    int bad = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        float v = data[i];
        if (!isfinite(v)) {
            bad = 1;
            break;
        }
        unsigned char *o = t->bytes + i * uf_dtype_size(dtype);
        uint16_t h;
        switch (dtype) {
        case UF_DT_F32: memcpy(o, &v, 4); break;
        case UF_DT_F64: { double d = v; memcpy(o, &d, 8); } break;
        case UF_DT_F16:
            h = uf_f32_to_f16(v);
            if ((h & 0x7c00) == 0x7c00) bad = 2;
            memcpy(o, &h, 2);
            break;
        case UF_DT_BF16:
            h = uf_f32_to_bf16(v);
            if ((h & 0x7f80) == 0x7f80) bad = 2;
            memcpy(o, &h, 2);
            break;
        default: UF_ASSERT(0);
        }
        if (bad) break;
    }
    if (bad) {
        free(t->name);
        uf_free(t->bytes);
        return uf_error("safetensors writer: tensor '%s': element %zu = %g %s", esc(name, en, sizeof en), i,
                        (double)data[i], bad == 1 ? "is not finite" : "overflows the dtype");
    }
    w->n++;
    return UF_OK;
}

int uf_st_writer_add_i64(uf_st_writer *w, const char *name, int ndim, const int64_t *shape, const int64_t *data) {
    size_t n;
    st_wtensor *t = writer_slot(w, name, UF_DT_I64, ndim, shape, &n);
    if (!t) return UF_ERR;
    if (n) memcpy(t->bytes, data, n * 8);
    w->n++;
    return UF_OK;
}

int uf_st_writer_set_metadata(uf_st_writer *w, const char *key, const char *value) {
    if (!key || !value) return uf_error("safetensors writer: metadata key or value is NULL");
    char *v = strdup(value);
    if (!v) return uf_error("out of memory");
    for (int i = 0; i < w->nm; i++)
        if (!strcmp(w->mkey[i], key)) {
            free(w->mval[i]);
            w->mval[i] = v;
            return UF_OK;
        }
    if (w->nm == w->capm) {
        int cap = w->capm ? 2 * w->capm : 8;
        char **k = realloc(w->mkey, (size_t)cap * sizeof *k);
        if (k) w->mkey = k;
        char **vv = k ? realloc(w->mval, (size_t)cap * sizeof *vv) : NULL;
        if (vv) w->mval = vv;
        if (!k || !vv) {
            free(v);
            return uf_error("out of memory");
        }
        w->capm = cap;
    }
    if (!(w->mkey[w->nm] = strdup(key))) {
        free(v);
        return uf_error("out of memory");
    }
    w->mval[w->nm++] = v;
    return UF_OK;
}

static cJSON *json_int(int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return cJSON_CreateRaw(buf);
}

/* Header JSON padded with spaces so that 8 + length is a multiple of 8. */
static char *writer_header(const uf_st_writer *w, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && w->nm) {
        cJSON *m = cJSON_AddObjectToObject(root, ST_META);
        ok = m != NULL;
        for (int i = 0; ok && i < w->nm; i++) ok = cJSON_AddStringToObject(m, w->mkey[i], w->mval[i]) != NULL;
    }
    size_t off = 0;
    for (int i = 0; ok && i < w->n; i++) {
        const st_wtensor *t = &w->t[i];
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        cJSON *dt = e ? cJSON_AddStringToObject(e, "dtype", uf_dtype_name(t->dtype)) : NULL;
        cJSON *sh = dt ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *of = sh ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        ok = of != NULL;
        for (int d = 0; ok && d < t->ndim; d++) ok = cJSON_AddItemToArray(sh, json_int(t->shape[d]));
        ok = ok && cJSON_AddItemToArray(of, json_int((int64_t)off));
        ok = ok && cJSON_AddItemToArray(of, json_int((int64_t)(off + t->nbytes)));
        off += t->nbytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        uf_error("out of memory building the safetensors header");
        return NULL;
    }
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    char *out = malloc(padded + 1);
    if (!out) {
        cJSON_free(text);
        uf_error("out of memory");
        return NULL;
    }
    memcpy(out, text, n);
    memset(out + n, ' ', padded - n);
    out[padded] = '\0';
    cJSON_free(text);
    *len = padded;
    return out;
}

/* fwrite with the error named; ENOSPC gets a plain "disk full" wording. */
static int write_all(FILE *f, const void *buf, size_t n, const char *what) {
    if (n == 0 || fwrite(buf, 1, n, f) == n) return UF_OK;
    if (errno == ENOSPC) return uf_error("%s: write failed: no space left on device (disk full)", what);
    return uf_error("%s: write failed: %s", what, strerror(errno));
}

int uf_st_writer_write_stream(const uf_st_writer *w, FILE *f, const char *what) {
    size_t hlen;
    char *hdr = writer_header(w, &hlen);
    if (!hdr) return UF_ERR;
    uint64_t le = hlen;
    errno = 0;
    int rc = write_all(f, &le, 8, what);
    if (rc == UF_OK) rc = write_all(f, hdr, hlen, what);
    for (int i = 0; rc == UF_OK && i < w->n; i++) rc = write_all(f, w->t[i].bytes, w->t[i].nbytes, what);
    free(hdr);
    if (rc == UF_OK && fflush(f) != 0) {
        if (errno == ENOSPC) return uf_error("%s: write failed: no space left on device (disk full)", what);
        return uf_error("%s: write failed: %s", what, strerror(errno));
    }
    return rc;
}

int uf_st_writer_save_as(const uf_st_writer *w, const char *path, int durable) {
    uf_atomic_file af;
    if (uf_atomic_begin(&af, path) != UF_OK) return UF_ERR;
    if (uf_st_writer_write_stream(w, af.fp, path) != UF_OK) {
        uf_atomic_abort(&af);
        return UF_ERR;
    }
    return uf_atomic_commit_as(&af, durable);
}

int uf_st_writer_save(const uf_st_writer *w, const char *path) { return uf_st_writer_save_as(w, path, 1); }
