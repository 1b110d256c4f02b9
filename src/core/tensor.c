#include "core/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int uf_mul_size(size_t count, size_t size, size_t *out) {
    if (size != 0 && count > SIZE_MAX / size)
        return uf_error("size overflow (%zu x %zu)", count, size);
    *out = count * size;
    return UF_OK;
}

void *uf_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    if (posix_memalign(&p, UF_ALIGN, bytes) != 0) {
        uf_error("out of memory (%zu bytes)", bytes);
        return NULL;
    }
    return p;
}

void *uf_calloc(size_t count, size_t size) {
    size_t bytes = 0;
    if (uf_mul_size(count, size, &bytes) != UF_OK) return NULL;
    void *p = uf_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void uf_free(void *p) { free(p); }

uf_tensor *uf_tensor_new(int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > UF_MAX_DIMS) {
        uf_error("tensor rank %d not supported (max %d)", ndim, UF_MAX_DIMS);
        return NULL;
    }
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            uf_error("negative tensor dimension %lld", (long long)shape[i]);
            return NULL;
        }
        if (uf_mul_size(n, (size_t)shape[i], &n) != UF_OK) return NULL;
    }
    uf_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        uf_error("out of memory");
        return NULL;
    }
    t->data = uf_calloc(n, sizeof(float));
    if (!t->data) {
        free(t);
        return NULL;
    }
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    return t;
}

uf_tensor *uf_tensor_new4(int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t shape[4] = {n, c, h, w};
    return uf_tensor_new(4, shape);
}

uf_tensor *uf_tensor_clone(const uf_tensor *t) {
    uf_tensor *c = uf_tensor_new(t->ndim, t->shape);
    if (c) memcpy(c->data, t->data, (size_t)uf_tensor_numel(t) * sizeof(float));
    return c;
}

void uf_tensor_free(uf_tensor *t) {
    if (!t) return;
    uf_free(t->data);
    free(t);
}

int64_t uf_tensor_numel(const uf_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int uf_tensor_same_shape(const uf_tensor *a, const uf_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

const char *uf_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
    size_t used = 0;
    if (cap == 0) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, cap - used, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
    return buf;
}

int uf_arena_init(uf_arena *a, size_t bytes) {
    memset(a, 0, sizeof *a);
    a->base = uf_alloc(bytes);
    if (!a->base) return UF_ERR;
    a->cap = bytes;
    return UF_OK;
}

void *uf_arena_bytes(uf_arena *a, size_t bytes) {
    size_t start = (a->used + UF_ALIGN - 1) & ~(size_t)(UF_ALIGN - 1);
    if (start > a->cap || bytes > a->cap - start) {
        uf_error("scratch arena full (%zu of %zu bytes used, %zu more asked)", a->used, a->cap, bytes);
        return NULL;
    }
    a->used = start + bytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

float *uf_arena_floats(uf_arena *a, size_t n) {
    size_t bytes = 0;
    if (uf_mul_size(n, sizeof(float), &bytes) != UF_OK) return NULL;
    return uf_arena_bytes(a, bytes);
}

void uf_arena_reset(uf_arena *a) { a->used = 0; }

void uf_arena_free(uf_arena *a) {
    uf_free(a->base);
    memset(a, 0, sizeof *a);
}

int uf_all_finite(const float *v, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (!isfinite(v[k])) return 0;
    return 1;
}
