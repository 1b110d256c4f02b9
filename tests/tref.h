/* tref.h - test-only reader of the small .safetensors references in tests/data.
 *
 * Kept inside tests/ so the reference checks do not depend on the library's own
 * reader. Supports F32, F64, I32, I64 and U8 tensors; each tensor's bytes are
 * copied into their own aligned buffer. Header-only (static functions).
 */
#ifndef UF_TESTS_TREF_H
#define UF_TESTS_TREF_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[96];
    char dtype[8];
    int ndim;
    int64_t shape[8];
    int64_t numel;
    void *data; /* malloc'd copy */
} tref_tensor;

typedef struct {
    int n;
    tref_tensor *t;
} tref_file;

static inline void tref_close(tref_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->t[i].data);
    free(f->t);
    free(f);
}

/* NULL (with a message on stderr) when the file is missing or malformed. */
static inline tref_file *tref_open(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "tref: cannot open %s\n", path);
        return NULL;
    }
    unsigned char len8[8];
    tref_file *f = NULL;
    char *hdr = NULL;
    cJSON *js = NULL;
    if (fread(len8, 1, 8, fp) != 8) goto fail;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len8[i];
    if (hlen > (1u << 24)) goto fail;
    hdr = malloc(hlen + 1);
    if (!hdr || fread(hdr, 1, hlen, fp) != hlen) goto fail;
    hdr[hlen] = 0;
    js = cJSON_Parse(hdr);
    if (!js) goto fail;
    f = calloc(1, sizeof *f);
    f->t = calloc((size_t)cJSON_GetArraySize(js) + 1, sizeof(tref_tensor));
    for (cJSON *it = js->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) continue;
        tref_tensor *t = &f->t[f->n];
        snprintf(t->name, sizeof t->name, "%s", it->string);
        snprintf(t->dtype, sizeof t->dtype, "%s", cJSON_GetObjectItem(it, "dtype")->valuestring);
        cJSON *sh = cJSON_GetObjectItem(it, "shape"), *off = cJSON_GetObjectItem(it, "data_offsets");
        t->ndim = cJSON_GetArraySize(sh);
        t->numel = 1;
        for (int d = 0; d < t->ndim && d < 8; d++) {
            t->shape[d] = (int64_t)cJSON_GetArrayItem(sh, d)->valuedouble;
            t->numel *= t->shape[d];
        }
        long b = (long)cJSON_GetArrayItem(off, 0)->valuedouble, e = (long)cJSON_GetArrayItem(off, 1)->valuedouble;
        t->data = malloc((size_t)(e - b) + 8);
        if (fseek(fp, (long)(8 + hlen) + b, SEEK_SET) != 0 || fread(t->data, 1, (size_t)(e - b), fp) != (size_t)(e - b))
            goto fail;
        f->n++;
    }
    cJSON_Delete(js);
    free(hdr);
    fclose(fp);
    return f;
fail:
    fprintf(stderr, "tref: malformed %s\n", path);
    if (js) cJSON_Delete(js);
    free(hdr);
    tref_close(f);
    fclose(fp);
    return NULL;
}

/* The tensor called name, or NULL (message on stderr). */
static inline const tref_tensor *tref_get(const tref_file *f, const char *name) {
    for (int i = 0; f && i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    fprintf(stderr, "tref: no tensor %s\n", name);
    return NULL;
}

static inline const float *tref_f32(const tref_file *f, const char *name) {
    const tref_tensor *t = tref_get(f, name);
    return t && strcmp(t->dtype, "F32") == 0 ? (const float *)t->data : NULL;
}

#endif
