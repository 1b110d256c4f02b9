/* attn_bf16.h - the attention's two products in bfloat16 on CPUs with AVX512-BF16
 * (vdpbf16ps: pairs of bf16 products summed into FP32), small enough to run on one
 * thread inside a parallel loop over row blocks, so that a block's scores stay in cache
 * from Q K^T through the head mixing and the softmax to P V (backbone/cait.c).
 *
 * Operands come as bf16 pairs along the reduction axis, one pair per 32-bit word (the
 * first of the pair in the low half):
 *   scores   s (r, n) = q (r, d) k^T        q: r rows of d bf16 (d even), k as kp (d/2, n):
 *                                           kp[p][j] = (k[j][2p], k[j][2p + 1])
 *   outputs  o (r, dv) = p (r, n) v         p: r rows of n2 pairs (n rounded up to even, the
 *                                           pad 0), v as vp (n2, dv): vp[t][c] = (v[2t][c], v[2t+1][c])
 * Products are rounded to bf16 on input only; sums are FP32 (the same arithmetic as oneDNN's
 * bf16 matmul on these CPUs, not its summation order).
 */
#ifndef UF_CORE_ATTN_BF16_H
#define UF_CORE_ATTN_BF16_H

#include <stdint.h>

/* 1 where the CPU has AVX512-BF16 (and this build can use it), else 0: the functions below
 * must not be called. */
int uf_attn_bf16_available(void);

/* (lo, hi) as one pair word. */
static inline uint32_t uf_bf16_pair(uint16_t lo, uint16_t hi) { return (uint32_t)lo | (uint32_t)hi << 16; }

/* s[i * lds + j] = sum_p q[i * ldq + 2p .. 2p + 1] . kp[p * ldk + j], i < r, j < n, p < d2 (d = 2 d2).
 * q: bf16 rows (ldq in bf16 elements, even); kp: pair words (ldk in words). */
void uf_attn_bf16_scores(int r, int n, int d2, const uint16_t *q, int ldq, const uint32_t *kp, int ldk, float *s,
                         int lds);

/* o[i * ldo + c] = sum_t p[i * ldp + 2t .. 2t + 1] . vp[t * ldv + c], i < r, c < dv, t < n2.
 * p: bf16 rows (ldp in bf16 elements, even); vp: pair words (ldv in words). */
void uf_attn_bf16_values(int r, int n2, int dv, const uint16_t *p, int ldp, const uint32_t *vp, int ldv, float *o,
                         int ldo);

/* The talking heads' second mixing with P's rounding to bf16 in the same pass, for the
 * values product: dst[(g r + i) ldd + j] = bf16(sum_h w[g H + h] scale[h r + i] src[(h r + i) len + j])
 * for g < H, i < r, j < len, and dst[... + len] = 0 when len is odd (the pair's pad); scale
 * NULL means 1. The products are of bf16-rounded factors (each weight times its scale, and
 * src), summed in FP32 a pair of heads at a time (vdpbf16ps). H is 8 or a multiple of 16, at
 * most 64. */
void uf_attn_bf16_mix(int H, const float *w, const float *scale, const float *src, int r, int len, uint16_t *dst,
                      int ldd);

/* The first mixing, for one row i, in FP32 out (the softmax follows):
 * dst[(g r + i) len + j] = sum_h w[g H + h] src[(h r + i) len + j], factors rounded to bf16 as
 * in uf_attn_bf16_mix, for g < H, j < len. */
void uf_attn_bf16_mix_row(int H, const float *w, const float *src, int r, int i, int len, float *dst);

#endif
