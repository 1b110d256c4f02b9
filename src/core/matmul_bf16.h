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

/* bfloat16 of each float, rounded to nearest even (NaN stays NaN). */
void uf_to_bf16(const float *src, uint16_t *dst, size_t n);

/* The product above. w16: W (out, in) in bfloat16 (uf_to_bf16 of the FP32 weights, made once
 * by the caller); x16: room for rows * in bfloat16 values (x converted there). b may be
 * NULL. UF_OK, or UF_ERR + message (oneDNN cannot run it here, out of memory). */
int uf_linear_bf16(const float *x, int rows, int in, const uint16_t *w16, const float *b, int out, float *y,
                   uint16_t *x16);

#endif
