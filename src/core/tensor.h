/* tensor.h - float32 tensors, aligned allocation and a scratch arena.
 *
 * Ownership: a uf_tensor owns its data (uf_tensor_free releases both). Hot
 * code works on plain `float *` with shapes as ints and the layout written in
 * a comment, e.g. `float *h; // (B, C, H, W)`; the tensor type is for passing
 * whole arrays across module boundaries (files, features, latents).
 *
 * The arena hands out aligned scratch from one block; memory is released all at
 * once by uf_arena_reset/uf_arena_free. Use it for per-call workspaces.
 */
#ifndef UF_CORE_TENSOR_H
#define UF_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define UF_MAX_DIMS 8
#define UF_ALIGN 64

/* Aligned allocation; NULL + uf_error() on failure or size overflow. Free with uf_free. */
void *uf_alloc(size_t bytes);
void *uf_calloc(size_t count, size_t size);
void uf_free(void *p);
/* count*size with overflow check; returns 0 and sets the error on overflow. */
int uf_mul_size(size_t count, size_t size, size_t *out);

typedef struct uf_tensor {
    float *data;
    int ndim;
    int64_t shape[UF_MAX_DIMS];
} uf_tensor;

/* New zero-filled tensor; NULL + error for a bad shape or no memory. */
uf_tensor *uf_tensor_new(int ndim, const int64_t *shape);
uf_tensor *uf_tensor_new4(int64_t n, int64_t c, int64_t h, int64_t w);
uf_tensor *uf_tensor_clone(const uf_tensor *t);
void uf_tensor_free(uf_tensor *t);
int64_t uf_tensor_numel(const uf_tensor *t);
/* 1 when every v[0..n) is finite (no NaN, no Inf). */
int uf_all_finite(const float *v, size_t n);
/* 1 when both tensors have the same ndim and shape. */
int uf_tensor_same_shape(const uf_tensor *a, const uf_tensor *b);
/* Writes e.g. "[2, 64, 32, 32]" into buf. */
const char *uf_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

typedef struct uf_arena {
    unsigned char *base;
    size_t cap, used, peak;
} uf_arena;

int uf_arena_init(uf_arena *a, size_t bytes);
/* Aligned scratch for n floats; NULL + error when the arena is full. */
float *uf_arena_floats(uf_arena *a, size_t n);
void *uf_arena_bytes(uf_arena *a, size_t bytes);
void uf_arena_reset(uf_arena *a);
void uf_arena_free(uf_arena *a);

#endif
