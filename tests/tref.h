/* tref.h - test helper: loads every tensor of a small reference .safetensors
 * file (tests/data) into aligned, typed copies, through the library's reader
 * (itself checked against an independent Python writer in test_safetensors).
 * Header-only (static functions).
 */
#ifndef UF_TESTS_TREF_H
#define UF_TESTS_TREF_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/safetensors.h"

typedef struct {
    char name[96];
    char dtype[8];
    int ndim;
    int64_t shape[8];
    int64_t numel;
    void *data; /* malloc'd, aligned copy of the raw little-endian values */
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
    uf_safetensors *st = uf_st_open(path);
    if (!st) {
        fprintf(stderr, "tref: %s\n", uf_last_error());
        return NULL;
    }
    tref_file *f = calloc(1, sizeof *f);
    f->t = calloc((size_t)uf_st_count(st) + 1, sizeof(tref_tensor));
    for (int i = 0; i < uf_st_count(st); i++) {
        const uf_st_tensor *s = uf_st_at(st, i);
        tref_tensor *t = &f->t[f->n++];
        snprintf(t->name, sizeof t->name, "%s", s->name);
        snprintf(t->dtype, sizeof t->dtype, "%s", uf_dtype_name(s->dtype));
        t->ndim = s->ndim;
        for (int d = 0; d < s->ndim; d++) t->shape[d] = s->shape[d];
        t->numel = s->numel;
        t->data = malloc(s->nbytes + 8);
        memcpy(t->data, s->data, s->nbytes);
    }
    uf_st_close(st);
    return f;
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
