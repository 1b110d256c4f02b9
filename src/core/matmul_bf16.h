/* matmul_bf16.h - dense layers in bfloat16 on CPUs with AVX512-BF16 or AMX (oneDNN's
 * matmul): y (rows, out) = x (rows, in) W^T + b, with x and W rounded to bfloat16 (8-bit
 * mantissa), products accumulated in FP32, b and y FP32. For the frozen MS-CaiT
 * extractor's dense layers under --precision bf16 (backbone/cait.c).
 *
 * Primitives are cached per (rows, in, out); calls are serialised (one at a time, the
 * primitive itself uses all threads), like core/conv_dnnl.c's.
 */
#ifndef UF_CORE_MATMUL_BF16_H
#define UF_CORE_MATMUL_BF16_H

#include <stddef.h>
#include <stdint.h>

#include <string.h>

/* bfloat16 of a float, rounded to nearest even (NaN stays NaN). */
static inline uint16_t uf_bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* uf_bf16_of of each float (in parallel for large n: call it outside parallel regions); with
 * AVX512-BF16 by its conversion instruction, which also flushes denormals (below 1.2e-38) to zero. */
void uf_to_bf16(const float *src, uint16_t *dst, size_t n);
/* The same on the calling thread only (inside parallel regions). */
void uf_to_bf16_serial(const float *src, uint16_t *dst, size_t n);

/* The product above. w16: W (out, in) in bfloat16 (uf_to_bf16 of the FP32 weights, made once
 * by the caller); x16: room for rows * in bfloat16 values (x converted there). b may be
 * NULL. UF_OK, or UF_ERR + message (oneDNN cannot run it here, out of memory). */
int uf_linear_bf16(const float *x, int rows, int in, const uint16_t *w16, const float *b, int out, float *y,
                   uint16_t *x16);
/* The same with x already in bfloat16 (x16: rows * in values). */
int uf_linear_bf16_in(const uint16_t *x16, int rows, int in, const uint16_t *w16, const float *b, int out, float *y);

#endif
