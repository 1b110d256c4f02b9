/* attn_bf16.c - see attn_bf16.h. The kernels carry their own target attribute (the build
 * may be portable); uf_attn_bf16_available() says at run time whether they may run. */
#include "core/attn_bf16.h"

#include <stddef.h>

#include "core/matmul_bf16.h" /* uf_bf16_of */

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

/* Heads 2p and 2p + 1 of row i, the 16 columns at j0 (masked by m), rounded to bf16 as one
 * pair word per column: the operand vdpbf16ps sums a head pair of products from. */
BF16_TARGET static inline __m512i head_pair(const float *src, int r, int len, int p, int i, int j0, __mmask16 m) {
    static const uint16_t interleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                            8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512 x0 = _mm512_maskz_loadu_ps(m, src + ((size_t)(2 * p) * r + i) * len + j0);
    const __m512 x1 = _mm512_maskz_loadu_ps(m, src + ((size_t)(2 * p + 1) * r + i) * len + j0);
    /* low 16 halves: head 2p, high 16: head 2p + 1; interleaved into (2p, 2p + 1) pairs */
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(interleave), (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
}

/* wp[p H + g] = (bf16(w[g H + 2p] scale[2p r + i]), bf16(w[g H + 2p + 1] scale[(2p + 1) r + i])). */
BF16_TARGET static void weight_pairs(int H, const float *w, const float *scale, int r, int i, uint32_t *wp) {
    for (int p = 0; p < H / 2; p++)
        for (int g = 0; g < H; g++) {
            const float w0 = w[g * H + 2 * p] * (scale ? scale[(2 * p) * r + i] : 1.0f);
            const float w1 = w[g * H + 2 * p + 1] * (scale ? scale[(2 * p + 1) * r + i] : 1.0f);
            wp[p * H + g] = uf_bf16_pair(uf_bf16_of(w0), uf_bf16_of(w1));
        }
}

/* G (8 or 16) output heads from g0 x 16 columns at j0 of row i: acc[g] = the mixed values,
 * products of bf16 pairs summed in FP32, then STORE(g, acc[g]). */
#define MIX_BLOCK(G, STORE)                                                                                     \
    do {                                                                                                        \
        __m512 acc[G];                                                                                          \
        for (int g = 0; g < G; g++) acc[g] = _mm512_setzero_ps();                                               \
        for (int p = 0; p < H / 2; p++) {                                                                       \
            const __m512bh x = (__m512bh)head_pair(src, r, len, p, i, j0, m);                                   \
            const uint32_t *wq = wp + p * H + g0;                                                               \
            for (int g = 0; g < G; g++) acc[g] = _mm512_dpbf16_ps(acc[g], (__m512bh)_mm512_set1_epi32((int)wq[g]), x); \
        }                                                                                                       \
        for (int g = 0; g < G; g++) STORE(g0 + g, acc[g]);                                                     \
    } while (0)

/* The blocks of one row i over every column and output head. */
#define MIX_ROW(STORE)                                                                                          \
    for (int j0 = 0; j0 < len; j0 += 16) {                                                                      \
        const __mmask16 m = lanes(j0, len);                                                                     \
        if (H == 8) {                                                                                           \
            const int g0 = 0;                                                                                   \
            MIX_BLOCK(8, STORE);                                                                                \
        } else {                                                                                                \
            for (int g0 = 0; g0 < H; g0 += 16) MIX_BLOCK(16, STORE);                                            \
        }                                                                                                       \
    }

BF16_TARGET void uf_attn_bf16_mix(int H, const float *w, const float *scale, const float *src, int r, int len,
                                  uint16_t *dst, int ldd) {
    uint32_t wp[32 * 64];
#define STORE_BF16(g, v) _mm256_mask_storeu_epi16(dst + ((size_t)(g) * r + i) * ldd + j0, m, (__m256i)_mm512_cvtneps_pbh(v))
    for (int i = 0; i < r; i++) {
        weight_pairs(H, w, scale, r, i, wp);
        MIX_ROW(STORE_BF16)
        if (len % 2)
            for (int g = 0; g < H; g++) dst[((size_t)g * r + i) * ldd + len] = 0;
    }
#undef STORE_BF16
}

BF16_TARGET void uf_attn_bf16_mix_row(int H, const float *w, const float *src, int r, int i, int len, float *dst) {
    uint32_t wp[32 * 64];
#define STORE_F32(g, v) _mm512_mask_storeu_ps(dst + ((size_t)(g) * r + i) * len + j0, m, v)
    weight_pairs(H, w, NULL, r, i, wp);
    MIX_ROW(STORE_F32)
#undef STORE_F32
}
#else
void uf_attn_bf16_mix(int H, const float *w, const float *scale, const float *src, int r, int len, uint16_t *dst,
                      int ldd) {
    (void)H, (void)w, (void)scale, (void)src, (void)r, (void)len, (void)dst, (void)ldd;
}
void uf_attn_bf16_mix_row(int H, const float *w, const float *src, int r, int i, int len, float *dst) {
    (void)H, (void)w, (void)src, (void)r, (void)i, (void)len, (void)dst;
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
