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
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    }
    return known;
#else
    return 0;
#endif
}

#if ATTN_BF16_X86
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* Lanes of the 16-wide vector starting at column j that are inside [0, n). */
BF16_TARGET static inline __mmask16 lanes(int j, int n) {
    const int left = n - j;
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1u);
}

/* R (1..4) rows x V (3 or 4) vectors of 16 columns from column col0 of c: over `steps` pair steps t,
 * acc[a][v] += (pair t of row i + a of the bf16 matrix a, lda elements a row) . (words col0 + 16 v..
 * of row t of the pair-word matrix b, ldb words a row); m[v] masks the columns past the end. */
#define PAIR_BLOCK(R, V, a, lda, b, ldb, steps, col0, c, ldc)                                                  \
    do {                                                                                                        \
        __m512 acc[R][V];                                                                                       \
        for (int r_ = 0; r_ < R; r_++)                                                                          \
            for (int v_ = 0; v_ < V; v_++) acc[r_][v_] = _mm512_setzero_ps();                                   \
        for (int t = 0; t < (steps); t++) {                                                                     \
            const uint32_t *br = (b) + (size_t)t * (ldb) + (col0);                                             \
            __m512i bv[V];                                                                                      \
            for (int v_ = 0; v_ < V; v_++) bv[v_] = _mm512_maskz_loadu_epi32(m[v_], br + 16 * v_);             \
            for (int r_ = 0; r_ < R; r_++) {                                                                    \
                const uint32_t *ar = (const uint32_t *)(const void *)((a) + (size_t)(i + r_) * (lda));         \
                const __m512i ab = _mm512_set1_epi32((int)ar[t]);                                              \
                for (int v_ = 0; v_ < V; v_++)                                                                  \
                    acc[r_][v_] = _mm512_dpbf16_ps(acc[r_][v_], (__m512bh)ab, (__m512bh)bv[v_]);               \
            }                                                                                                   \
        }                                                                                                       \
        for (int r_ = 0; r_ < R; r_++)                                                                          \
            for (int v_ = 0; v_ < V; v_++)                                                                      \
                _mm512_mask_storeu_ps((c) + (size_t)(i + r_) * (ldc) + (col0) + 16 * v_, m[v_], acc[r_][v_]);  \
    } while (0)

BF16_TARGET void uf_attn_bf16_scores(int r, int n, int d2, const uint16_t *q, int ldq, const uint32_t *kp, int ldk,
                                     float *s, int lds) {
    for (int j0 = 0; j0 < n; j0 += 64) {
        __mmask16 m[4];
        for (int v = 0; v < 4; v++) m[v] = lanes(j0 + 16 * v, n);
        int i = 0;
        for (; i + 4 <= r; i += 4) PAIR_BLOCK(4, 4, q, ldq, kp, ldk, d2, j0, s, lds);
        for (; i < r; i++) PAIR_BLOCK(1, 4, q, ldq, kp, ldk, d2, j0, s, lds);
    }
}

BF16_TARGET void uf_attn_bf16_values(int r, int n2, int dv, const uint16_t *p, int ldp, const uint32_t *vp, int ldv,
                                     float *o, int ldo) {
    for (int c0 = 0; c0 < dv; c0 += 48) {
        __mmask16 m[3];
        for (int v = 0; v < 3; v++) m[v] = lanes(c0 + 16 * v, dv);
        int i = 0;
        for (; i + 4 <= r; i += 4) PAIR_BLOCK(4, 3, p, ldp, vp, ldv, n2, c0, o, ldo);
        for (; i < r; i++) PAIR_BLOCK(1, 3, p, ldp, vp, ldv, n2, c0, o, ldo);
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
