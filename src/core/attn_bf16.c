/* attn_bf16.c - see attn_bf16.h. The kernels carry their own target attribute (the build
 * may be portable); uf_attn_bf16_available() says at run time whether they may run. */
#include "core/attn_bf16.h"

#include <stddef.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ATTN_BF16_X86 1
#include <immintrin.h>
#else
#define ATTN_BF16_X86 0
#endif

int uf_attn_bf16_available(void) {
#if ATTN_BF16_X86
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512bf16");
    }
    return known;
#else
    return 0;
#endif
}

#if ATTN_BF16_X86
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

/* Lanes of the 16-wide vector starting at column j that are inside [0, n). */
BF16_TARGET static inline __mmask16 lanes(int j, int n) {
    const int left = n - j;
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1u);
}

/* One block of R (1..4) rows x 4 vectors of 16 columns of the scores. */
#define SCORE_BLOCK(R)                                                                                          \
    do {                                                                                                        \
        __m512 acc[R][4];                                                                                       \
        for (int a = 0; a < R; a++)                                                                             \
            for (int c = 0; c < 4; c++) acc[a][c] = _mm512_setzero_ps();                                        \
        for (int t = 0; t < d2; t++) {                                                                          \
            const uint32_t *kr = kp + (size_t)t * ldk + j0;                                                    \
            __m512i kv[4];                                                                                      \
            for (int c = 0; c < 4; c++) kv[c] = _mm512_maskz_loadu_epi32(m[c], kr + 16 * c);                   \
            for (int a = 0; a < R; a++) {                                                                       \
                const uint32_t *qa = (const uint32_t *)(const void *)(q + (size_t)(i + a) * ldq);              \
                const __m512i qb = _mm512_set1_epi32((int)qa[t]);                                              \
                for (int c = 0; c < 4; c++)                                                                     \
                    acc[a][c] = _mm512_dpbf16_ps(acc[a][c], (__m512bh)qb, (__m512bh)kv[c]);                    \
            }                                                                                                   \
        }                                                                                                       \
        for (int a = 0; a < R; a++)                                                                             \
            for (int c = 0; c < 4; c++) _mm512_mask_storeu_ps(s + (size_t)(i + a) * lds + j0 + 16 * c, m[c], acc[a][c]); \
    } while (0)

BF16_TARGET void uf_attn_bf16_scores(int r, int n, int d2, const uint16_t *q, int ldq, const uint32_t *kp, int ldk,
                                     float *s, int lds) {
    for (int j0 = 0; j0 < n; j0 += 64) {
        __mmask16 m[4];
        for (int c = 0; c < 4; c++) m[c] = lanes(j0 + 16 * c, n);
        int i = 0;
        for (; i + 4 <= r; i += 4) SCORE_BLOCK(4);
        for (; i < r; i++) SCORE_BLOCK(1);
    }
}

/* One block of R (1..4) rows x 3 vectors of 16 output columns. */
#define VALUE_BLOCK(R)                                                                                          \
    do {                                                                                                        \
        __m512 acc[R][3];                                                                                       \
        for (int a = 0; a < R; a++)                                                                             \
            for (int c = 0; c < 3; c++) acc[a][c] = _mm512_setzero_ps();                                        \
        for (int t = 0; t < n2; t++) {                                                                          \
            const uint32_t *vr = vp + (size_t)t * ldv + c0;                                                    \
            __m512i vv[3];                                                                                      \
            for (int c = 0; c < 3; c++) vv[c] = _mm512_maskz_loadu_epi32(m[c], vr + 16 * c);                   \
            for (int a = 0; a < R; a++) {                                                                       \
                const uint32_t *pa = (const uint32_t *)(const void *)(p + (size_t)(i + a) * ldp);              \
                const __m512i pb = _mm512_set1_epi32((int)pa[t]);                                              \
                for (int c = 0; c < 3; c++)                                                                     \
                    acc[a][c] = _mm512_dpbf16_ps(acc[a][c], (__m512bh)pb, (__m512bh)vv[c]);                    \
            }                                                                                                   \
        }                                                                                                       \
        for (int a = 0; a < R; a++)                                                                             \
            for (int c = 0; c < 3; c++) _mm512_mask_storeu_ps(o + (size_t)(i + a) * ldo + c0 + 16 * c, m[c], acc[a][c]); \
    } while (0)

BF16_TARGET void uf_attn_bf16_values(int r, int n2, int dv, const uint16_t *p, int ldp, const uint32_t *vp, int ldv,
                                     float *o, int ldo) {
    for (int c0 = 0; c0 < dv; c0 += 48) {
        __mmask16 m[3];
        for (int c = 0; c < 3; c++) m[c] = lanes(c0 + 16 * c, dv);
        int i = 0;
        for (; i + 4 <= r; i += 4) VALUE_BLOCK(4);
        for (; i < r; i++) VALUE_BLOCK(1);
    }
}

/* G (8 or 16) output heads from g0 x 16 columns at j0 of row i. */
#define MIX_BLOCK(G)                                                                                            \
    do {                                                                                                        \
        __m512 acc[G];                                                                                          \
        for (int g = 0; g < G; g++) acc[g] = _mm512_setzero_ps();                                               \
        for (int h = 0; h < H; h++) {                                                                           \
            const __m512 x = _mm512_maskz_loadu_ps(m, src + ((size_t)h * r + i) * len + j0);                   \
            const float *wh = wt + h * H + g0;                                                                  \
            for (int g = 0; g < G; g++) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(wh[g]), x, acc[g]);           \
        }                                                                                                       \
        for (int g = 0; g < G; g++)                                                                             \
            _mm256_mask_storeu_epi16(dst + ((size_t)(g0 + g) * r + i) * ldd + j0, m,                           \
                                     (__m256i)_mm512_cvtneps_pbh(acc[g]));                                      \
    } while (0)

BF16_TARGET void uf_attn_bf16_mix(int H, const float *w, const float *scale, const float *src, int r, int len,
                                  uint16_t *dst, int ldd) {
    float wt[64 * 64]; /* wt[h H + g] = w[g H + h] scale[h r + i] */
    for (int i = 0; i < r; i++) {
        for (int g = 0; g < H; g++)
            for (int h = 0; h < H; h++) wt[h * H + g] = w[g * H + h] * (scale ? scale[h * r + i] : 1.0f);
        for (int j0 = 0; j0 < len; j0 += 16) {
            const __mmask16 m = lanes(j0, len);
            if (H == 8) {
                const int g0 = 0;
                MIX_BLOCK(8);
            } else {
                for (int g0 = 0; g0 < H; g0 += 16) MIX_BLOCK(16);
            }
        }
        if (len % 2)
            for (int g = 0; g < H; g++) dst[((size_t)g * r + i) * ldd + len] = 0;
    }
}
#else
void uf_attn_bf16_mix(int H, const float *w, const float *scale, const float *src, int r, int len, uint16_t *dst,
                      int ldd) {
    (void)H, (void)w, (void)scale, (void)src, (void)r, (void)len, (void)dst, (void)ldd;
}
void uf_attn_bf16_scores(int r, int n, int d2, const uint16_t *q, int ldq, const uint32_t *kp, int ldk, float *s,
                         int lds) {
    (void)r, (void)n, (void)d2, (void)q, (void)ldq, (void)kp, (void)ldk, (void)s, (void)lds;
}
void uf_attn_bf16_values(int r, int n2, int dv, const uint16_t *p, int ldp, const uint32_t *vp, int ldv, float *o,
                         int ldo) {
    (void)r, (void)n2, (void)dv, (void)p, (void)ldp, (void)vp, (void)ldv, (void)o, (void)ldo;
}
#endif
