/* safetensors: f16/bf16 conversions (exhaustive, against closed forms), a
 * reference file written by an independent Python writer
 * (tools/make_safetensors_ref.py), writer round trips and bit-exact rounding
 * against numpy/torch, malformed files, atomic saves, and `uflow inspect`. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "harness.h"
#include "io/safetensors.h"

#define REF_FILE "tests/data/safetensors/ref.safetensors"
#define REF_VALUES "tests/data/safetensors/ref_values.txt"


/* ------------------------------------------------------------ helpers */

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (buf) *len = n;
    return buf;
}

static void put_file(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot create %s", path);
    if (!f) return;
    CHECK(fwrite(bytes, 1, n, f) == n, "write %s", path);
    fclose(f);
}

/* A .safetensors file: 8-byte length, `json`, then `ndata` bytes of 0x11. */
static void put_st(const char *path, const char *json, size_t ndata) {
    size_t hl = strlen(json);
    unsigned char *buf = calloc(1, 8 + hl + ndata + 1);
    uint64_t le = hl;
    memcpy(buf, &le, 8);
    memcpy(buf + 8, json, hl);
    memset(buf + 8 + hl, 0x11, ndata);
    put_file(path, buf, 8 + hl + ndata);
    free(buf);
}

static int same_float(float a, float b) { return a == b && !signbit(a) == !signbit(b); }

/* ------------------------------------------------------------ conversions */

/* Closed form of an IEEE half: (-1)^s 2^(e-15) (1 + m/1024), subnormal 2^-14 m/1024. */
static double half_closed_form(int h) {
    int s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m / 1024.0, -14) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

static void test_f16_conversion_exhaustive(void) {
    int bad_dec = 0, bad_rt = 0, bad_tie = 0;
    for (int h = 0; h < 65536; h++) {
        double ref = half_closed_form(h);
        float v = uf_f16_to_f32((uint16_t)h);
        if (isnan(ref) ? !isnan(v) : !(v == ref && !signbit(v) == !signbit(ref))) bad_dec++;
        if (!isnan(ref) && uf_f32_to_f16(v) != h) bad_rt++;
        /* exact midpoint to the next half up in magnitude: ties go to the even mantissa */
        int m = h & 0x7fff;
        if (m < 0x7bff) {
            double mid = 0.5 * (half_closed_form(m) + half_closed_form(m + 1));
            float fm = (float)mid;
            if ((double)fm != mid) bad_tie += 1000; /* midpoint must be exact in float32 */
            int want = (m & 1) ? m + 1 : m;
            if (uf_f32_to_f16(fm) != want) bad_tie++;
            if (uf_f32_to_f16(-fm) != (want | 0x8000)) bad_tie++;
            /* just above / below the midpoint */
            if (uf_f32_to_f16(nextafterf(fm, INFINITY)) != m + 1) bad_tie++;
            if (uf_f32_to_f16(nextafterf(fm, 0.0f)) != m) bad_tie++;
        }
    }
    CHECK(bad_dec == 0, "%d half values decoded differently from the closed form", bad_dec);
    CHECK(bad_rt == 0, "%d finite halves do not round trip", bad_rt);
    CHECK(bad_tie == 0, "%d rounding errors at or next to midpoints", bad_tie);
    CHECK(uf_f32_to_f16(65519.0f) == 0x7bff, "65519 -> 65504");
    CHECK(uf_f32_to_f16(65520.0f) == 0x7c00, "65520 -> inf");
    CHECK(uf_f32_to_f16(1e30f) == 0x7c00, "1e30 -> inf");
    CHECK(uf_f32_to_f16(-INFINITY) == 0xfc00, "-inf");
    CHECK(uf_f32_to_f16(ldexpf(1.0f, -25)) == 0, "2^-25 ties to 0");
    CHECK(uf_f32_to_f16(nextafterf(ldexpf(1.0f, -25), 1.0f)) == 1, "just above 2^-25 -> smallest subnormal");
    CHECK(uf_f32_to_f16(1e-30f) == 0 && uf_f32_to_f16(-1e-30f) == 0x8000, "underflow keeps the sign");
    CHECK(isnan(uf_f16_to_f32(uf_f32_to_f16(NAN))), "nan stays nan");
}

static void test_bf16_conversion_exhaustive(void) {
    int bad_dec = 0, bad_rt = 0, bad_tie = 0;
    for (int b = 0; b < 65536; b++) {
        int s = (b >> 15) & 1, e = (b >> 7) & 255, m = b & 127;
        double ref = e == 0 ? ldexp(m / 128.0, -126) : e == 255 ? (m ? NAN : INFINITY) : ldexp(1.0 + m / 128.0, e - 127);
        if (s) ref = -ref;
        float v = uf_bf16_to_f32((uint16_t)b);
        if (isnan(ref) ? !isnan(v) : !(v == ref && !signbit(v) == !signbit(ref))) bad_dec++;
        if (!isnan(ref) && uf_f32_to_bf16(v) != b) bad_rt++;
        int a = b & 0x7fff;
        if (a < 0x7f7f && !s) {
            float lo = uf_bf16_to_f32((uint16_t)a), hi = uf_bf16_to_f32((uint16_t)(a + 1));
            double mid = 0.5 * ((double)lo + (double)hi);
            float fm = (float)mid;
            if ((double)fm != mid) bad_tie += 1000;
            if (uf_f32_to_bf16(fm) != ((a & 1) ? a + 1 : a)) bad_tie++;
            if (uf_f32_to_bf16(nextafterf(fm, INFINITY)) != a + 1) bad_tie++;
            if (uf_f32_to_bf16(nextafterf(fm, 0.0f)) != a) bad_tie++;
        }
    }
    CHECK(bad_dec == 0, "%d bf16 values decoded differently from the closed form", bad_dec);
    CHECK(bad_rt == 0, "%d finite bf16 values do not round trip", bad_rt);
    CHECK(bad_tie == 0, "%d bf16 rounding errors at or next to midpoints", bad_tie);
    CHECK(uf_f32_to_bf16(FLT_MAX) == 0x7f80, "FLT_MAX rounds to bf16 inf");
    CHECK(isnan(uf_bf16_to_f32(uf_f32_to_bf16(NAN))), "nan stays nan");
}

/* ------------------------------------------------------------ reference file */

static int parse_dtype(const char *s, uf_dtype *dt) {
    for (int i = UF_DT_F32; i <= UF_DT_BOOL; i++)
        if (!strcmp(s, uf_dtype_name((uf_dtype)i))) {
            *dt = (uf_dtype)i;
            return 1;
        }
    return 0;
}

static void test_reference_file(void) {
    uf_safetensors *st = uf_st_open(REF_FILE);
    CHECK(st != NULL, "%s", uf_last_error());
    if (!st) return;
    FILE *f = fopen(REF_VALUES, "r");
    CHECK(f != NULL, "cannot open %s", REF_VALUES);
    if (!f) {
        uf_st_close(st);
        return;
    }
    CHECK(uf_st_count(st) == 17, "count %d", uf_st_count(st));
    /* the Python writer laid the data out in reverse order of its list */
    CHECK(!strcmp(uf_st_at(st, 0)->name, "f64.overflow") && !strcmp(uf_st_at(st, 16)->name, "f32.odd"),
          "file order %s .. %s", uf_st_at(st, 0)->name, uf_st_at(st, 16)->name);
    for (int i = 1; i < uf_st_count(st); i++)
        CHECK(uf_st_at(st, i)->offset >= uf_st_at(st, i - 1)->offset, "offsets not ascending at %d", i);

    char *line = NULL;
    size_t cap = 0;
    int tensors_checked = 0, meta_checked = 0;
    while (getline(&line, &cap, f) > 0) {
        char *save = NULL, *name = strtok_r(line, " \n", &save), *tok = strtok_r(NULL, " \n", &save);
        if (!name || !tok) continue;
        if (!strcmp(name, "__metadata__")) { /* __metadata__ "key" "value" (JSON strings) */
            const char *end = NULL, *kstart = tok;
            tok[strlen(tok)] = ' '; /* undo strtok's cut: the rest of the line holds two JSON strings */
            cJSON *k = cJSON_ParseWithOpts(kstart, &end, 0);
            cJSON *v = k ? cJSON_ParseWithOpts(end, NULL, 0) : NULL;
            CHECK(k && v && cJSON_IsString(k) && cJSON_IsString(v), "bad metadata line");
            if (k && v) {
                const char *got = uf_st_metadata_get(st, k->valuestring);
                CHECK(got && !strcmp(got, v->valuestring), "metadata %s = '%s', expected '%s'", k->valuestring,
                      got ? got : "(absent)", v->valuestring);
                meta_checked++;
            }
            cJSON_Delete(k), cJSON_Delete(v);
            continue;
        }
        const uf_st_tensor *t = uf_st_find(st, name);
        CHECK(t != NULL, "tensor %s missing", name);
        if (!t) continue;
        if (!strcmp(tok, "REJECT")) {
            uf_tensor *x = uf_st_read_f32(st, name, -1, NULL);
            CHECK(x == NULL, "%s must be rejected", name);
            CHECK(strstr(uf_last_error(), name) && (strstr(uf_last_error(), "non-finite") ||
                                                    strstr(uf_last_error(), "out of float32 range")),
                  "%s", uf_last_error());
            uf_tensor_free(x);
            tensors_checked++;
            continue;
        }
        uf_dtype dt = UF_DT_F32;
        CHECK(parse_dtype(tok, &dt) && dt == t->dtype, "%s: dtype %s vs %s", name, tok, uf_dtype_name(t->dtype));
        int ndim = atoi(strtok_r(NULL, " \n", &save));
        int64_t shape[UF_MAX_DIMS];
        for (int d = 0; d < ndim; d++) shape[d] = atoll(strtok_r(NULL, " \n", &save));
        int64_t numel = atoll(strtok_r(NULL, " \n", &save));
        CHECK(t->ndim == ndim && t->numel == numel, "%s: ndim %d numel %lld", name, t->ndim, (long long)t->numel);
        CHECK(t->nbytes == (size_t)numel * uf_dtype_size(dt), "%s: nbytes %zu", name, t->nbytes);
        if (dt == UF_DT_F32 || dt == UF_DT_F16 || dt == UF_DT_BF16 || dt == UF_DT_F64) {
            uf_tensor *x = uf_st_read_f32(st, name, ndim, shape);
            CHECK(x != NULL, "%s", uf_last_error());
            int bad = 0;
            for (int64_t i = 0; x && i < numel; i++) {
                float want = (float)strtod(strtok_r(NULL, " \n", &save), NULL); /* exact: printed from float32 */
                if (!same_float(x->data[i], want)) {
                    if (bad++ < 3) fprintf(stderr, "  %s[%lld] = %.9g, want %.9g\n", name, (long long)i, x->data[i], want);
                }
            }
            CHECK(bad == 0, "%s: %d values differ", name, bad);
            uf_tensor_free(x);
        } else {
            int64_t *v = calloc((size_t)numel + 1, sizeof *v);
            CHECK(uf_st_read_i64(st, name, v, numel) == UF_OK, "%s", uf_last_error());
            int bad = 0;
            for (int64_t i = 0; i < numel; i++)
                if (v[i] != strtoll(strtok_r(NULL, " \n", &save), NULL, 10)) bad++;
            CHECK(bad == 0, "%s: %d integers differ", name, bad);
            free(v);
        }
        tensors_checked++;
    }
    free(line);
    fclose(f);
    CHECK(tensors_checked == 17 && meta_checked == 3, "checked %d tensors, %d metadata", tensors_checked, meta_checked);
    CHECK(uf_st_metadata_count(st) == 3, "metadata count %d", uf_st_metadata_count(st));
    CHECK(uf_st_find(st, "nope") == NULL, "absent tensor");

    /* read errors: each names the file and tensor */
    int64_t s3[3] = {3, 5, 6}, iv[6];
    uf_tensor *x = uf_st_read_f32(st, "f32.odd", 3, s3);
    CHECK(!x && strstr(uf_last_error(), "[3, 5, 6] expected, found [3, 5, 7]") && strstr(uf_last_error(), "f32.odd") &&
              strstr(uf_last_error(), REF_FILE),
          "%s", uf_last_error());
    x = uf_st_read_f32(st, "f32.missing", -1, NULL);
    CHECK(!x && strstr(uf_last_error(), "f32.missing") && strstr(uf_last_error(), "not found"), "%s", uf_last_error());
    x = uf_st_read_f32(st, "i64.vals", -1, NULL);
    CHECK(!x && strstr(uf_last_error(), "i64.vals") && strstr(uf_last_error(), "not a float"), "%s", uf_last_error());
    CHECK(uf_st_read_i64(st, "f32.odd", iv, 105) == UF_ERR && strstr(uf_last_error(), "not an integer"), "%s",
          uf_last_error());
    CHECK(uf_st_read_i64(st, "i64.vals", iv, 5) == UF_ERR && strstr(uf_last_error(), "i64.vals"), "count mismatch");
    float one;
    CHECK(uf_st_read_f32_into(st, "scalar", 0, NULL, &one, 1) == UF_OK && one == 42.5f, "scalar %g", one);
    uf_st_close(st);
}

/* ------------------------------------------------------------ writer */

/* The writer's F16/BF16 rounding, bit for bit against numpy (F16) and the
 * Python integer rounding cross-checked with torch (BF16). */
static void test_writer_rounding_matches_reference(void) {
    uf_safetensors *ref = uf_st_open(REF_FILE);
    CHECK(ref != NULL, "%s", uf_last_error());
    if (!ref) return;
    uf_tensor *a = uf_st_read_f32(ref, "f16.src", -1, NULL), *b = uf_st_read_f32(ref, "bf16.src", -1, NULL);
    uf_st_writer *w = uf_st_writer_new();
    CHECK(a && b && w, "%s", uf_last_error());
    if (a && b && w) {
        CHECK(uf_st_writer_add_f32(w, "h", UF_DT_F16, a->ndim, a->shape, a->data) == UF_OK, "%s", uf_last_error());
        CHECK(uf_st_writer_add_f32(w, "b", UF_DT_BF16, b->ndim, b->shape, b->data) == UF_OK, "%s", uf_last_error());
        const char *path = uf_test_path("rounding.safetensors");
        CHECK(uf_st_writer_save(w, path) == UF_OK, "%s", uf_last_error());
        uf_safetensors *st = uf_st_open(path);
        CHECK(st != NULL, "%s", uf_last_error());
        if (st) {
            const uf_st_tensor *h = uf_st_find(st, "h"), *hr = uf_st_find(ref, "f16.vals");
            const uf_st_tensor *g = uf_st_find(st, "b"), *gr = uf_st_find(ref, "bf16.vals");
            CHECK(h && hr && h->nbytes == hr->nbytes && !memcmp(h->data, hr->data, h->nbytes), "F16 bits differ");
            CHECK(g && gr && g->nbytes == gr->nbytes && !memcmp(g->data, gr->data, g->nbytes), "BF16 bits differ");
            uf_st_close(st);
        }
    }
    uf_tensor_free(a), uf_tensor_free(b);
    uf_st_writer_free(w);
    uf_st_close(ref);
}

static void test_writer_round_trip(void) {
    enum { N = 6 * 7 * 5 };
    float v[N];
    srand(3);
    for (int i = 0; i < N; i++) v[i] = ((float)rand() / RAND_MAX - 0.5f) * powf(10.0f, (float)(i % 9) - 4.0f);
    v[0] = 0.5f, v[1] = -3.0f, v[2] = 1024.0f, v[3] = -0.0f, v[4] = ldexpf(1.0f, -20); /* exact in all dtypes */
    int64_t shape[3] = {6, 7, 5}, sh_empty[2] = {0, 4}, sh_i[2] = {2, 3};
    int64_t iv[6] = {0, -1, INT64_MAX, INT64_MIN, 1234567890123, -42};
    float scalar = 7.25f;
    const uf_dtype dts[4] = {UF_DT_F32, UF_DT_F16, UF_DT_BF16, UF_DT_F64};
    const char *names[4] = {"w.f32", "w.f16", "w.bf16", "w.f64"};

    uf_st_writer *w = uf_st_writer_new();
    CHECK(w != NULL, "writer");
    if (!w) return;
    for (int k = 0; k < 4; k++)
        CHECK(uf_st_writer_add_f32(w, names[k], dts[k], 3, shape, v) == UF_OK, "%s", uf_last_error());
    CHECK(uf_st_writer_add_i64(w, "steps", 2, sh_i, iv) == UF_OK, "%s", uf_last_error());
    CHECK(uf_st_writer_add_f32(w, "scalar", UF_DT_F32, 0, NULL, &scalar) == UF_OK, "%s", uf_last_error());
    CHECK(uf_st_writer_add_f32(w, "empty", UF_DT_F16, 2, sh_empty, NULL) == UF_OK, "%s", uf_last_error());
    CHECK(uf_st_writer_set_metadata(w, "arch", "first") == UF_OK, "meta");
    CHECK(uf_st_writer_set_metadata(w, "note", "quote \" backslash \\ newline \n unicode \xc3\xa9") == UF_OK, "meta");
    CHECK(uf_st_writer_set_metadata(w, "arch", "uflow") == UF_OK, "meta replace");

    /* rejected additions leave the writer usable */
    float nanv[2] = {1.0f, NAN}, big[1] = {1e5f}, bigbf[1] = {FLT_MAX};
    int64_t sh2[1] = {2}, sh1[1] = {1}, neg[1] = {-1};
    CHECK(uf_st_writer_add_f32(w, "w.f32", UF_DT_F32, 1, sh1, v) == UF_ERR && strstr(uf_last_error(), "duplicate") &&
              strstr(uf_last_error(), "w.f32"),
          "%s", uf_last_error());
    CHECK(uf_st_writer_add_i64(w, "steps", 1, sh1, iv) == UF_ERR && strstr(uf_last_error(), "duplicate"), "dup i64");
    CHECK(uf_st_writer_add_f32(w, "__metadata__", UF_DT_F32, 1, sh1, v) == UF_ERR, "reserved name");
    CHECK(uf_st_writer_add_f32(w, "nan", UF_DT_F32, 1, sh2, nanv) == UF_ERR && strstr(uf_last_error(), "not finite") &&
              strstr(uf_last_error(), "'nan'"),
          "%s", uf_last_error());
    CHECK(uf_st_writer_add_f32(w, "big", UF_DT_F16, 1, sh1, big) == UF_ERR && strstr(uf_last_error(), "overflow"),
          "%s", uf_last_error());
    CHECK(uf_st_writer_add_f32(w, "bigbf", UF_DT_BF16, 1, sh1, bigbf) == UF_ERR, "bf16 overflow");
    CHECK(uf_st_writer_add_f32(w, "neg", UF_DT_F32, 1, neg, v) == UF_ERR && strstr(uf_last_error(), "shape"), "%s",
          uf_last_error());
    CHECK(uf_st_writer_add_f32(w, "int", UF_DT_I32, 1, sh1, v) == UF_ERR && strstr(uf_last_error(), "not a float"),
          "%s", uf_last_error());

    const char *path = uf_test_path("roundtrip.safetensors");
    CHECK(uf_st_writer_save(w, path) == UF_OK, "%s", uf_last_error());
    uf_st_writer_free(w);
    CHECK(uf_test_count_temp_files(uf_test_tmpdir()) == 0, "temp file left behind");

    size_t len = 0;
    unsigned char *raw = slurp(path, &len);
    uint64_t hl = 0;
    if (raw && len >= 8) memcpy(&hl, raw, 8);
    CHECK(raw && hl % 8 == 0 && hl < len, "header length %llu not a multiple of 8", (unsigned long long)hl);
    size_t expect_data = 4 * N + 2 * N + 2 * N + 8 * N + 8 * 6 + 4;
    CHECK(len == 8 + hl + expect_data, "file size %zu, expected %zu", len, (size_t)(8 + hl + expect_data));
    free(raw);

    uf_safetensors *st = uf_st_open(path);
    CHECK(st != NULL, "%s", uf_last_error());
    if (!st) return;
    const char *order[7] = {"w.f32", "w.f16", "w.bf16", "w.f64", "steps", "scalar", "empty"};
    CHECK(uf_st_count(st) == 7, "count %d", uf_st_count(st));
    size_t next = 0;
    for (int i = 0; i < 7 && i < uf_st_count(st); i++) {
        const uf_st_tensor *t = uf_st_at(st, i);
        CHECK(!strcmp(t->name, order[i]), "position %d holds %s", i, t->name);
        CHECK(t->offset == next, "%s offset %zu, expected %zu (insertion order, contiguous)", t->name, t->offset, next);
        next = t->offset + t->nbytes;
    }
    CHECK(next == uf_st_data_size(st), "data size");
    for (int k = 0; k < 4; k++) {
        uf_tensor *x = uf_st_read_f32(st, names[k], 3, shape);
        CHECK(x != NULL, "%s", uf_last_error());
        if (!x) continue;
        CHECK(uf_st_find(st, names[k])->dtype == dts[k], "%s dtype", names[k]);
        /* half: 11 significant bits (rel. 2^-11), subnormal spacing 2^-24; bfloat16: 8 bits (2^-8) */
        double rtol = dts[k] == UF_DT_F16 ? ldexp(1, -11) : dts[k] == UF_DT_BF16 ? ldexp(1, -8) : 0;
        double atol = dts[k] == UF_DT_F16 ? ldexp(1, -25) : 0;
        int bad = 0;
        for (int i = 0; i < N; i++) {
            double err = fabs((double)x->data[i] - v[i]);
            if (err > atol + rtol * fabs(v[i])) bad++;
            if (i < 5 && !same_float(x->data[i], v[i])) bad++; /* representable: exact */
        }
        CHECK(bad == 0, "%s: %d values out of tolerance", names[k], bad);
        uf_tensor_free(x);
    }
    int64_t got[6];
    CHECK(uf_st_read_i64(st, "steps", got, 6) == UF_OK && !memcmp(got, iv, sizeof iv), "i64 round trip");
    uf_tensor *s = uf_st_read_f32(st, "scalar", 0, NULL);
    CHECK(s && s->ndim == 0 && s->data[0] == 7.25f, "scalar");
    uf_tensor_free(s);
    uf_tensor *e = uf_st_read_f32(st, "empty", 2, sh_empty);
    CHECK(e && uf_tensor_numel(e) == 0, "empty: %s", uf_last_error());
    uf_tensor_free(e);
    CHECK(uf_st_metadata_count(st) == 2, "metadata count %d", uf_st_metadata_count(st));
    const char *m = uf_st_metadata_get(st, "arch"), *n = uf_st_metadata_get(st, "note");
    CHECK(m && !strcmp(m, "uflow"), "arch = %s", m ? m : "(absent)");
    CHECK(n && !strcmp(n, "quote \" backslash \\ newline \n unicode \xc3\xa9"), "note = %s", n ? n : "(absent)");
    uf_st_close(st);

    /* an empty writer gives a valid file with zero tensors */
    uf_st_writer *w0 = uf_st_writer_new();
    CHECK(uf_st_writer_save(w0, uf_test_path("empty.safetensors")) == UF_OK, "%s", uf_last_error());
    uf_st_writer_free(w0);
    uf_safetensors *s0 = uf_st_open(uf_test_path("empty.safetensors"));
    CHECK(s0 && uf_st_count(s0) == 0 && uf_st_metadata_count(s0) == 0 && uf_st_data_size(s0) == 0, "%s",
          uf_last_error());
    uf_st_close(s0);
}

/* ------------------------------------------------------------ malformed files */

typedef struct {
    const char *file;
    const char *json; /* NULL: raw bytes below */
    size_t ndata;
    const char *keyword; /* must appear in the error */
    const char *tensor;  /* must appear quoted in the error, or NULL */
} bad_case;

static const bad_case BAD[] = {
    {"invalid_json", "{\"w\": {\"dtype\": \"F32\", ", 0, "invalid JSON", NULL},
    {"trailing_garbage", "{} x", 0, "after the JSON", NULL},
    {"empty_header", "", 0, "invalid JSON", NULL},
    {"top_array", "[1, 2]", 0, "not a JSON object", NULL},
    {"entry_number", "{\"w\": 3}", 0, "entry is not a JSON object", "w"},
    {"unknown_dtype", "{\"layer1.0.conv1.weight\": {\"dtype\": \"F8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
     "unknown dtype 'F8'", "layer1.0.conv1.weight"},
    {"dtype_missing", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "missing \"dtype\"", "w"},
    {"dtype_number", "{\"w\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "\"dtype\" is not a string", "w"},
    {"shape_number", "{\"w\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 16]}}", 16, "\"shape\" is not an array", "w"},
    {"shape_negative", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -2], \"data_offsets\": [0, 16]}}", 16, "negative", "w"},
    {"shape_fraction", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, "not a non-negative integer", "w"},
    {"shape_string", "{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8, "not a non-negative integer", "w"},
    {"shape_rank9", "{\"w\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 1, "9 dimensions", "w"},
    {"shape_overflow", "{\"w\": {\"dtype\": \"U8\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 0]}}", 0, "overflow", "w"},
    {"offsets_missing", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "missing \"data_offsets\"", "w"},
    {"offsets_three", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", 8, "2 non-negative integers", "w"},
    {"offsets_huge", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 1e300]}}", 4, "2 non-negative integers", "w"},
    {"offsets_reversed", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8, "reversed", "w"},
    {"offsets_out_of_range", "{\"layer1.0.conv1.weight\": {\"dtype\": \"F32\", \"shape\": [25], \"data_offsets\": [0, 100]}}", 64,
     "data_offsets [0, 100] exceed the data buffer (64 bytes)", "layer1.0.conv1.weight"},
    {"truncated_data", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}, \"b\": {\"dtype\": \"F32\", \"shape\": [100], \"data_offsets\": [16, 416]}}", 100,
     "exceed the data buffer", "b"},
    {"size_mismatch", "{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, "size mismatch", "w"},
    {"overlap", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}, \"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}", 24,
     "overlap tensor 'a'", "b"},
    {"duplicate_name", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
     "duplicate tensor name", "w"},
    {"metadata_number", "{\"__metadata__\": {\"epochs\": 3}}", 0, "'epochs' is not a string", NULL},
    {"metadata_array", "{\"__metadata__\": [\"a\"]}", 0, "\"__metadata__\" is not a JSON object", NULL},
    {"metadata_twice", "{\"__metadata__\": {}, \"__metadata__\": {}}", 0, "duplicate \"__metadata__\"", NULL},
};

static void test_malformed_files(void) {
    int n = (int)(sizeof BAD / sizeof *BAD);
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.safetensors", uf_test_tmpdir(), BAD[i].file);
        put_st(path, BAD[i].json, BAD[i].ndata);
        uf_error_clear();
        uf_safetensors *st = uf_st_open(path);
        const char *err = uf_last_error();
        CHECK(st == NULL, "%s: accepted", BAD[i].file);
        CHECK(strstr(err, BAD[i].keyword) != NULL, "%s: '%s' not in: %s", BAD[i].file, BAD[i].keyword, err);
        CHECK(strstr(err, path) != NULL, "%s: path not in: %s", BAD[i].file, err);
        if (BAD[i].tensor) {
            char q[128];
            snprintf(q, sizeof q, "tensor '%s'", BAD[i].tensor);
            CHECK(strstr(err, q) != NULL, "%s: %s not in: %s", BAD[i].file, q, err);
        }
        CHECK(strchr(err, '\n') == NULL, "%s: multi-line error", BAD[i].file);
        uf_st_close(st);
    }

    /* raw headers: too short, huge length, length beyond the file */
    const char *p = uf_test_path("short.safetensors");
    put_file(p, "\x05\x00\x00", 3);
    CHECK(!uf_st_open(p) && strstr(uf_last_error(), "too short"), "%s", uf_last_error());
    put_file(p, "", 0);
    CHECK(!uf_st_open(p) && strstr(uf_last_error(), "too short"), "%s", uf_last_error());
    unsigned char buf[64] = {0};
    uint64_t hl = (uint64_t)1 << 40;
    memcpy(buf, &hl, 8);
    memcpy(buf + 8, "{}", 2);
    p = uf_test_path("huge.safetensors");
    put_file(p, buf, 10);
    CHECK(!uf_st_open(p) && strstr(uf_last_error(), "100 MB"), "%s", uf_last_error());
    hl = 1000;
    memcpy(buf, &hl, 8);
    p = uf_test_path("beyond.safetensors");
    put_file(p, buf, 40);
    CHECK(!uf_st_open(p) && strstr(uf_last_error(), "exceeds the file size"), "%s", uf_last_error());
    CHECK(!uf_st_open(uf_test_tmpdir()) && strstr(uf_last_error(), "not a regular file"), "%s", uf_last_error());
    CHECK(!uf_st_open("/nonexistent/x.safetensors") && strstr(uf_last_error(), "No such file"), "%s", uf_last_error());
    /* control characters in a name are escaped: the message stays one line */
    p = uf_test_path("ctrl.safetensors");
    put_st(p, "{\"a\\nb\": {\"dtype\": \"X\", \"shape\": [], \"data_offsets\": [0, 0]}}", 0);
    CHECK(!uf_st_open(p) && strstr(uf_last_error(), "tensor 'a\\x0ab'") && !strchr(uf_last_error(), '\n'), "%s",
          uf_last_error());
}

static void test_valid_edge_files(void) {
    struct {
        const char *json;
        size_t ndata;
        int count;
    } ok[] = {
        {"{}", 0, 0},
        {"{}      ", 0, 0},
        {" {\"__metadata__\": {}}\n", 0, 0},
        /* gap between tensors and trailing bytes are tolerated; zero-size inside another's range is no overlap */
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}, "
         "\"b\": {\"dtype\": \"I16\", \"shape\": [2, 0], \"data_offsets\": [6, 6]}, "
         "\"c\": {\"dtype\": \"BF16\", \"shape\": [1, 1], \"data_offsets\": [10, 12]}}",
         20, 3},
    };
    for (int i = 0; i < 4; i++) {
        const char *p = uf_test_path("ok.safetensors");
        put_st(p, ok[i].json, ok[i].ndata);
        uf_safetensors *st = uf_st_open(p);
        CHECK(st && uf_st_count(st) == ok[i].count, "case %d: %s", i, uf_last_error());
        uf_st_close(st);
    }
}

/* ------------------------------------------------------------ atomic save */

static uf_st_writer *small_writer(int n) {
    uf_st_writer *w = uf_st_writer_new();
    float *v = calloc((size_t)n, sizeof *v);
    int64_t shape[1] = {n};
    for (int i = 0; i < n; i++) v[i] = (float)i;
    if (uf_st_writer_add_f32(w, "x", UF_DT_F32, 1, shape, v) != UF_OK) {
        uf_st_writer_free(w);
        w = NULL;
    }
    free(v);
    return w;
}

static void test_writer_atomic(void) {
    const char *dir = uf_test_tmpdir();
    char path[512], sub[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    uf_st_writer *w1 = small_writer(4), *w2 = small_writer(100000);
    CHECK(w1 && w2, "%s", uf_last_error());
    if (!w1 || !w2) return;
    CHECK(uf_st_writer_save(w1, path) == UF_OK, "%s", uf_last_error());
    size_t n1 = 0, n2 = 0;
    unsigned char *before = slurp(path, &n1);

    /* directory that does not exist: nothing is created */
    CHECK(uf_st_writer_save(w2, "/nonexistent-dir-uflow/m.safetensors") == UF_ERR &&
              strstr(uf_last_error(), "/nonexistent-dir-uflow/m.safetensors") && strstr(uf_last_error(), "temporary"),
          "%s", uf_last_error());

    /* the target is a directory: temp file written, rename fails, temp removed */
    snprintf(sub, sizeof sub, "%s/adir", dir);
    CHECK(mkdir(sub, 0755) == 0, "mkdir");
    CHECK(uf_st_writer_save(w1, sub) == UF_ERR && strstr(uf_last_error(), "rename"), "%s", uf_last_error());
    CHECK(uf_test_count_temp_files(dir) == 0, "temp file left after failed rename");

    /* write error in the middle (file size limit, EFBIG): the old file stays as it was */
    struct rlimit old, lim;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0, "getrlimit");
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 4096;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
    int rc = uf_st_writer_save(w2, path);
    char err[1024];
    snprintf(err, sizeof err, "%s", uf_last_error());
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0, "restore rlimit");
    signal(SIGXFSZ, prev);
    CHECK(rc == UF_ERR && strstr(err, "write failed") && strstr(err, path), "%s", err);
    unsigned char *after = slurp(path, &n2);
    CHECK(before && after && n1 == n2 && !memcmp(before, after, n1), "old file changed");
    CHECK(uf_test_count_temp_files(dir) == 0, "temp file left after failed write");
    uf_safetensors *st = uf_st_open(path);
    CHECK(st && uf_st_find(st, "x") && uf_st_find(st, "x")->numel == 4, "old file unreadable: %s", uf_last_error());
    uf_st_close(st);
    free(before), free(after);

    /* disk full: /dev/full fails every write with ENOSPC */
    FILE *full = fopen("/dev/full", "wb");
    if (full) {
        CHECK(uf_st_writer_write_stream(w1, full, "/dev/full") == UF_ERR && strstr(uf_last_error(), "no space left") &&
                  strstr(uf_last_error(), "/dev/full"),
              "%s", uf_last_error());
        fclose(full);
    } else {
        fprintf(stderr, "  note: /dev/full unavailable, disk-full path not exercised\n");
    }

    /* a successful save over an existing file replaces it and keeps its mode */
    CHECK(chmod(path, 0640) == 0, "chmod");
    CHECK(uf_st_writer_save(w2, path) == UF_OK, "%s", uf_last_error());
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0640, "mode %o", (unsigned)(sb.st_mode & 0777));
    st = uf_st_open(path);
    CHECK(st && uf_st_find(st, "x") && uf_st_find(st, "x")->numel == 100000, "new file: %s", uf_last_error());
    uf_st_close(st);
    CHECK(uf_test_count_temp_files(dir) == 0, "temp file left after success");
    uf_st_writer_free(w1), uf_st_writer_free(w2);
}

/* ------------------------------------------------------------ uflow inspect */

/* Runs `uflow inspect [arg]`; returns the exit status, stdout/stderr in files. */
static int run_inspect(const char *arg, const char *out, const char *errf) {
    const char *args[3] = {"inspect", arg, NULL};
    return uf_test_run_uflow(args, out, errf);
}

static void test_inspect_command(void) {
    char out[512], err[512];
    snprintf(out, sizeof out, "%s/inspect.out", uf_test_tmpdir());
    snprintf(err, sizeof err, "%s/inspect.err", uf_test_tmpdir());
    size_t n = 0;

    int rc = run_inspect(REF_FILE, out, err);
    char *text = (char *)slurp(out, &n);
    CHECK(rc == 0, "exit %d", rc);
    if (text) {
        text = realloc(text, n + 1), text[n] = '\0';
        CHECK(strstr(text, "tensors: 17\n") && strstr(text, "parameters: 328\n"), "summary: %.200s", text);
        CHECK(strstr(text, "f16.vals") && strstr(text, "F16") && strstr(text, "[6, 8]") && strstr(text, "[454, 550]"),
              "tensor line missing");
        CHECK(strstr(text, "  format: pt\n"), "metadata line missing");
        int lines = 0;
        for (char *c = text; *c; c++) lines += *c == '\n';
        CHECK(lines == 4 + 17 + 1 + 3, "%d lines", lines);
    }
    free(text);

    const char *bad[3] = {"offsets_out_of_range", "overlap", "short"};
    const char *want[3] = {"layer1.0.conv1.weight", "tensor 'b'", "too short"};
    for (int i = 0; i < 3; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s.safetensors", uf_test_tmpdir(), bad[i]);
        if (i == 2) put_file(p, "abc", 3);
        else
            for (size_t k = 0; k < sizeof BAD / sizeof *BAD; k++)
                if (!strcmp(BAD[k].file, bad[i])) put_st(p, BAD[k].json, BAD[k].ndata);
        rc = run_inspect(p, out, err);
        char *e = (char *)slurp(err, &n);
        CHECK(rc == 1, "%s: exit %d", bad[i], rc);
        if (e) {
            e = realloc(e, n + 1), e[n] = '\0';
            int lines = 0;
            for (char *c = e; *c; c++) lines += *c == '\n';
            CHECK(lines == 1 && e[n - 1] == '\n', "%s: stderr has %d lines: %s", bad[i], lines, e);
            CHECK(!strncmp(e, "uflow inspect: error: ", 22) && strstr(e, want[i]) && strstr(e, p), "%s: %s", bad[i], e);
        }
        free(e);
        free(slurp(out, &n));
        CHECK(n == 0, "%s: stdout not empty", bad[i]);
    }
    CHECK(run_inspect(NULL, out, err) == 2, "no file: usage, exit 2");
    CHECK(run_inspect("--bogus", out, err) == 2, "bad option: exit 2");
    CHECK(run_inspect("--help", out, err) == 0, "--help: exit 0");
}

/* ------------------------------------------------------------ shipped model */

static void test_shipped_backbone(void) {
    const char *path = "models/resnet18-in1k-l3-bnfolded.safetensors";
    uf_safetensors *st = uf_st_open(path);
    CHECK(st != NULL, "%s", uf_last_error());
    if (!st) return;
    CHECK(uf_st_count(st) == 30, "count %d", uf_st_count(st));
    /* ResNet-18 conv1..layer3 with biases: conv weights + one bias per output channel */
    int64_t p = 64 * 3 * 49 + 64;
    p += 4 * (64 * 64 * 9 + 64);
    p += (128 * 64 * 9 + 128) + 3 * (128 * 128 * 9 + 128) + (128 * 64 + 128);
    p += (256 * 128 * 9 + 256) + 3 * (256 * 256 * 9 + 256) + (256 * 128 + 256);
    int64_t total = 0;
    for (int i = 0; i < uf_st_count(st); i++) total += uf_st_at(st, i)->numel;
    CHECK(total == p, "parameters %lld, ResNet-18 to layer3 has %lld", (long long)total, (long long)p);
    int64_t shape[4] = {64, 3, 7, 7};
    uf_tensor *w = uf_st_read_f32(st, "conv1.weight", 4, shape);
    CHECK(w != NULL, "%s", uf_last_error());
    uf_tensor_free(w);
    const char *arch = uf_st_metadata_get(st, "arch");
    CHECK(arch && !strcmp(arch, "resnet18"), "arch %s", arch ? arch : "(absent)");
    uf_st_close(st);
}

int main(void) {
    UF_TEST(test_f16_conversion_exhaustive);
    UF_TEST(test_bf16_conversion_exhaustive);
    UF_TEST(test_reference_file);
    UF_TEST(test_writer_rounding_matches_reference);
    UF_TEST(test_writer_round_trip);
    UF_TEST(test_malformed_files);
    UF_TEST(test_valid_edge_files);
    UF_TEST(test_writer_atomic);
    UF_TEST(test_inspect_command);
    UF_TEST(test_shipped_backbone);
    return uf_test_summary();
}
