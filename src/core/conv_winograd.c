/* conv_winograd.c - Winograd F(4x4, 3x3) on the nChw8c layout, AVX2 + FMA (see the header).
 *
 * One call walks the image's 4x4 output tiles in blocks of `tb` tiles (all images of the
 * batch in one sequence); each OpenMP thread takes whole blocks and, per block:
 *   1. input transform: the 6x6 input tiles -> V[36][tb][cin8]
 *   2. 36 GEMMs: M[p] (tb x cout8) = V[p] (tb x cin8) . U[p] (cin8 x cout8)
 *   3. output transform: M -> 4x4 output tiles (+ bias, + y, ReLU)
 * so V and M stay in the core's cache (with too few tiles for that, the threads split each
 * step of one block instead). Backward-weights transforms dy's tiles with the
 * adjoint of step 3 and accumulates dU[p] (cin8 x cout8) += V[p]^T dM[p] per thread.
 */
#include "core/conv_winograd.h"

#include <string.h>

#include <immintrin.h>
#include <omp.h>

#define NP 36 /* positions of a 6x6 transformed tile */

int uf_wino_available(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int uf_wino_fits(const uf_conv_geom *g) {
    return g->k == 3 && g->stride == 1 && g->pad == 1 && g->n > 0 && g->h > 0 && g->w > 0 && g->c_in >= 8 &&
           g->c_out >= 8;
}

static size_t pad8(int c) { return ((size_t)c + 7) & ~(size_t)7; }

size_t uf_wino_weights_floats(int c_in, int c_out) { return NP * pad8(c_in) * pad8(c_out); }

/* ---- blocking ---------------------------------------------------------------------- */

/* Tiles of g: n x ceil(h/4) x ceil(w/4). */
static size_t n_tiles(const uf_conv_geom *g) { return (size_t)g->n * ((g->h + 3) / 4) * ((g->w + 3) / 4); }

/* Tiles per block: V and M of a block in about 512 KiB (a core's L2), a multiple of the
 * GEMM kernel's 6 rows, at most 96, and small enough that every thread gets a block. */
static size_t block_tiles(const uf_conv_geom *g, int threads) {
    const size_t per_tile = NP * (pad8(g->c_in) + pad8(g->c_out));
    size_t tb = (128 * 1024) / per_tile / 6 * 6;
    if (tb < 6) tb = 6;
    if (tb > 96) tb = 96;
    const size_t t = n_tiles(g), share = (t + (size_t)threads - 1) / (size_t)threads;
    if (share < tb) tb = share;
    return tb ? tb : 1;
}

/* Scratch floats of one thread with blocks of tb tiles. */
static size_t per_thread(const uf_conv_geom *g, size_t tb, int weight_grad) {
    const size_t ci = pad8(g->c_in), co = pad8(g->c_out);
    size_t per = NP * tb * (ci + co);          /* V and M (or dM) */
    if (weight_grad) per += NP * ci * co + co; /* the thread's dU and db sums */
    return (per + 15) & ~(size_t)15;
}

/* 1 when a forward on g has too few tiles for a block per thread and more (see forward). */
static int few_tiles(const uf_conv_geom *g, int threads) {
    const size_t t = n_tiles(g), tb = block_tiles(g, threads);
    return threads > 1 && (t + tb - 1) / tb < 2 * (size_t)threads;
}

size_t uf_wino_scratch_floats(const uf_conv_geom *g, int threads, int weight_grad) {
    if (threads < 1) threads = 1;
    size_t n = per_thread(g, block_tiles(g, threads), weight_grad) * (size_t)threads;
    /* the few-tiles forward keeps V and M of all tiles (backward-data swaps c_in and c_out:
     * the same sum) */
    const size_t all = NP * n_tiles(g) * (pad8(g->c_in) + pad8(g->c_out));
    if (!weight_grad && few_tiles(g, threads) && all > n) n = all;
    return n;
}

/* ---- AVX2 kernels ------------------------------------------------------------------ */

/* Each function below is compiled for AVX2 + FMA by its own attribute (gcc and clang alike; the
 * file as a whole keeps the build's target, so that uf_wino_available runs on any x86-64). */
#define AVX2_FN __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* o (6) = B^T d (6): the input transform along one axis */
INLINE void bt6(const __m256 *d, size_t ds, __m256 *o, size_t os) {
    const __m256 d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
    const __m256 four = _mm256_set1_ps(4.0f), two = _mm256_set1_ps(2.0f), m5 = _mm256_set1_ps(-5.0f);
    o[0] = _mm256_fmadd_ps(four, d0, _mm256_fmadd_ps(m5, d2, d4));
    o[os] = _mm256_fnmadd_ps(four, _mm256_add_ps(d1, d2), _mm256_add_ps(d3, d4));
    o[2 * os] = _mm256_fmadd_ps(four, _mm256_sub_ps(d1, d2), _mm256_sub_ps(d4, d3));
    o[3 * os] = _mm256_fmadd_ps(two, _mm256_sub_ps(d3, d1), _mm256_sub_ps(d4, d2));
    o[4 * os] = _mm256_fmadd_ps(two, _mm256_sub_ps(d1, d3), _mm256_sub_ps(d4, d2));
    o[5 * os] = _mm256_fmadd_ps(four, d1, _mm256_fmadd_ps(m5, d3, d5));
}

/* o (4) = A^T m (6): the output transform along one axis */
INLINE void at4(const __m256 *m, size_t ms, __m256 *o, size_t os) {
    const __m256 a = _mm256_add_ps(m[ms], m[2 * ms]), b = _mm256_sub_ps(m[ms], m[2 * ms]);
    const __m256 c = _mm256_add_ps(m[3 * ms], m[4 * ms]), d = _mm256_sub_ps(m[3 * ms], m[4 * ms]);
    o[0] = _mm256_add_ps(m[0], _mm256_add_ps(a, c));
    o[os] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), d, b);
    o[2 * os] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), c, a);
    o[3 * os] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), d, b), m[5 * ms]);
}

/* o (6) = A y (4): the adjoint of at4 */
INLINE void a6(const __m256 *y, size_t ys, __m256 *o, size_t os) {
    const __m256 y0 = y[0], y1 = y[ys], y2 = y[2 * ys], y3 = y[3 * ys];
    const __m256 e = _mm256_add_ps(y0, y2), f = _mm256_add_ps(y1, y3);
    const __m256 g = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), y2, y0), h = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), y3, y1);
    o[0] = y0;
    o[os] = _mm256_add_ps(e, f);
    o[2 * os] = _mm256_sub_ps(e, f);
    o[3 * os] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), h, g);
    o[4 * os] = _mm256_fnmadd_ps(_mm256_set1_ps(2.0f), h, g);
    o[5 * os] = y3;
}

/* o (6) = G g (3), G the 6x3 kernel transform. */
INLINE void g6(const __m256 *g, size_t gs, __m256 *o, size_t os) {
    const __m256 a = g[0], b = g[gs], c = g[2 * gs], ac = _mm256_add_ps(a, c);
    const __m256 sixth = _mm256_set1_ps(1.0f / 6.0f), q = _mm256_fmadd_ps(_mm256_set1_ps(1.0f / 24.0f), a,
                                                                          _mm256_mul_ps(sixth, c));
    o[0] = _mm256_mul_ps(_mm256_set1_ps(0.25f), a);
    o[os] = _mm256_mul_ps(_mm256_set1_ps(-1.0f / 6.0f), _mm256_add_ps(ac, b));
    o[2 * os] = _mm256_mul_ps(_mm256_set1_ps(-1.0f / 6.0f), _mm256_sub_ps(ac, b));
    o[3 * os] = _mm256_fmadd_ps(_mm256_set1_ps(1.0f / 12.0f), b, q);
    o[4 * os] = _mm256_fnmadd_ps(_mm256_set1_ps(1.0f / 12.0f), b, q);
    o[5 * os] = c;
}

/* o (3) = G^T d (6): the adjoint of g6 */
INLINE void gt3(const __m256 *d, size_t ds, __m256 *o, size_t os) {
    const __m256 s12 = _mm256_add_ps(d[ds], d[2 * ds]), s34 = _mm256_add_ps(d[3 * ds], d[4 * ds]);
    const __m256 sixth = _mm256_set1_ps(1.0f / 6.0f);
    o[0] = _mm256_fmadd_ps(_mm256_set1_ps(0.25f), d[0],
                           _mm256_fmadd_ps(_mm256_set1_ps(1.0f / 24.0f), s34, _mm256_mul_ps(_mm256_set1_ps(-1.0f / 6.0f), s12)));
    o[os] = _mm256_fmadd_ps(sixth, _mm256_sub_ps(d[2 * ds], d[ds]),
                            _mm256_mul_ps(_mm256_set1_ps(1.0f / 12.0f), _mm256_sub_ps(d[3 * ds], d[4 * ds])));
    o[2 * os] = _mm256_add_ps(_mm256_mul_ps(sixth, _mm256_sub_ps(s34, s12)), d[5 * ds]);
}

/* Row r of u (see uf_wino_transform_weights). Intrinsics stay out of OpenMP regions: clang
 * does not give the outlined region its function's target attribute. */
AVX2_FN static void transform_weights_row(int c_in, int c_out, const float *w, int transpose, float *u, int r) {
    const int nr = transpose ? c_out : c_in, nc = transpose ? c_in : c_out;
    const size_t rows = pad8(nr), cols = pad8(nc);
    for (int c0 = 0; c0 < nc; c0 += 8) {
            float gl[9][8] = {{0}};
            for (int l = 0; l < 8 && c0 + l < nc; l++) {
                const int co = transpose ? r : c0 + l, ci = transpose ? c0 + l : r;
                const float *k = w + ((size_t)co * c_in + ci) * 9;
                for (int i = 0; i < 9; i++) gl[i][l] = transpose ? k[8 - i] : k[i]; /* flipped for backward-data */
            }
            __m256 g[9], t[18], v[36];
            for (int i = 0; i < 9; i++) g[i] = _mm256_loadu_ps(gl[i]);
            for (int j = 0; j < 3; j++) g6(g + j, 3, t + j, 3);     /* columns: t (6x3) = G g */
            for (int i = 0; i < 6; i++) g6(t + 3 * i, 1, v + 6 * i, 1); /* rows: v = t G^T */
            for (int p = 0; p < NP; p++) _mm256_storeu_ps(u + ((size_t)p * rows + r) * cols + c0, v[p]);
        }
}

void uf_wino_transform_weights(int c_in, int c_out, const float *w, int transpose, float *u) {
    /* u[p][r][c]: rows r are the GEMM's inputs, columns c its outputs; 8 columns at a time */
    const int nr = transpose ? c_out : c_in, nc = transpose ? c_in : c_out;
    memset(u, 0, sizeof(float) * NP * pad8(nr) * pad8(nc));
#pragma omp parallel for schedule(static)
    for (int r = 0; r < nr; r++) transform_weights_row(c_in, c_out, w, transpose, u, r);
}

/* The position of tile t: image n, top-left output pixel (oy, ox). */
typedef struct {
    int n, oy, ox;
} tile_pos;

AVX2_FN static tile_pos tile_at(const uf_conv_geom *g, size_t t) {
    const size_t tw = (size_t)(g->w + 3) / 4, th = (size_t)(g->h + 3) / 4;
    tile_pos p = {(int)(t / (th * tw)), (int)(t % (th * tw) / tw) * 4, (int)(t % tw) * 4};
    return p;
}

/* V[p][i][cin8] (p stride ps) for the tiles t0 .. t0+nt-1 of x (c channels, blocked). */
AVX2_FN static void input_transform(const uf_conv_geom *g, int c, const float *x, size_t t0, size_t nt, float *v,
                            size_t ps) {
    const int nb = (c + 7) / 8, h = g->h, w = g->w;
    const size_t ci8 = pad8(c), hw = (size_t)h * w;
    for (size_t i = 0; i < nt; i++) {
        const tile_pos tp = tile_at(g, t0 + i);
        const int y0 = tp.oy - 1, x0 = tp.ox - 1;
        const int inside = y0 >= 0 && x0 >= 0 && y0 + 6 <= h && x0 + 6 <= w;
        for (int cb = 0; cb < nb; cb++) {
            const float *src = x + ((size_t)tp.n * nb + cb) * hw * 8;
            __m256 d[36], e[36];
            if (inside) {
                for (int r = 0; r < 6; r++)
                    for (int s = 0; s < 6; s++) d[6 * r + s] = _mm256_loadu_ps(src + ((size_t)(y0 + r) * w + x0 + s) * 8);
            } else {
                for (int r = 0; r < 6; r++)
                    for (int s = 0; s < 6; s++) {
                        const int yy = y0 + r, xx = x0 + s;
                        d[6 * r + s] = yy >= 0 && yy < h && xx >= 0 && xx < w
                                           ? _mm256_loadu_ps(src + ((size_t)yy * w + xx) * 8)
                                           : _mm256_setzero_ps();
                    }
            }
            for (int r = 0; r < 6; r++) bt6(d + 6 * r, 1, e + 6 * r, 1); /* along columns of each row */
            for (int s = 0; s < 6; s++) bt6(e + s, 6, d + s, 6);         /* along rows */
            float *dst = v + i * ci8 + (size_t)cb * 8;
            for (int p = 0; p < NP; p++) _mm256_storeu_ps(dst + (size_t)p * ps, d[p]);
        }
    }
}

/* dM[p][i][cout8] = A dY A^T for the block's tiles of dy (c channels, blocked; zero outside
 * the image); db8 (cout8) += the sum of each tile's dy. */
AVX2_FN static void output_adjoint(const uf_conv_geom *g, int c, const float *dy, size_t t0, size_t nt, float *dm,
                           float *db8) {
    const int nb = (c + 7) / 8, h = g->h, w = g->w;
    const size_t co8 = pad8(c), hw = (size_t)h * w, ps = nt * co8;
    for (size_t i = 0; i < nt; i++) {
        const tile_pos tp = tile_at(g, t0 + i);
        for (int cb = 0; cb < nb; cb++) {
            const float *src = dy + ((size_t)tp.n * nb + cb) * hw * 8;
            __m256 y[16], f[24], o[36], sum = _mm256_setzero_ps();
            for (int r = 0; r < 4; r++)
                for (int s = 0; s < 4; s++) {
                    const int yy = tp.oy + r, xx = tp.ox + s;
                    y[4 * r + s] = yy < h && xx < w ? _mm256_loadu_ps(src + ((size_t)yy * w + xx) * 8) : _mm256_setzero_ps();
                    sum = _mm256_add_ps(sum, y[4 * r + s]);
                }
            for (int r = 0; r < 4; r++) a6(y + 4 * r, 1, f + 6 * r, 1); /* f (4x6) = dY A^T */
            for (int s = 0; s < 6; s++) a6(f + s, 6, o + s, 6);         /* o (6x6) = A f */
            float *dst = dm + i * co8 + (size_t)cb * 8;
            for (int p = 0; p < NP; p++) _mm256_storeu_ps(dst + (size_t)p * ps, o[p]);
            _mm256_storeu_ps(db8 + (size_t)cb * 8, _mm256_add_ps(_mm256_loadu_ps(db8 + (size_t)cb * 8), sum));
        }
    }
}

/* y's tiles t0 .. t0+nt-1 from M[p][i][cout8] (p stride ps): y = act(A^T M A + b [+ y]). */
AVX2_FN static void output_transform(const uf_conv_geom *g, int c, const float *m, const float *b, float *y, int flags,
                             size_t t0, size_t nt, size_t ps) {
    const int nb = (c + 7) / 8, h = g->h, w = g->w;
    const size_t co8 = pad8(c), hw = (size_t)h * w;
    for (int cb = 0; cb < nb; cb++) {
        float bl[8] = {0};
        for (int l = 0; l < 8 && b && cb * 8 + l < c; l++) bl[l] = b[cb * 8 + l];
        const __m256 bias = _mm256_loadu_ps(bl), zero = _mm256_setzero_ps();
        for (size_t i = 0; i < nt; i++) {
            const tile_pos tp = tile_at(g, t0 + i);
            const float *src = m + i * co8 + (size_t)cb * 8;
            __m256 mm[36], f[24], o[16];
            for (int p = 0; p < NP; p++) mm[p] = _mm256_loadu_ps(src + (size_t)p * ps);
            for (int r = 0; r < 6; r++) at4(mm + 6 * r, 1, f + 4 * r, 1); /* f (6x4) = M A */
            for (int s = 0; s < 4; s++) at4(f + s, 4, o + s, 4);          /* o (4x4) = A^T f */
            float *dst = y + ((size_t)tp.n * nb + cb) * hw * 8;
            for (int r = 0; r < 4 && tp.oy + r < h; r++)
                for (int s = 0; s < 4 && tp.ox + s < w; s++) {
                    float *q = dst + ((size_t)(tp.oy + r) * w + tp.ox + s) * 8;
                    __m256 v = _mm256_add_ps(o[4 * r + s], bias);
                    if (flags & UF_CONV_ACCUMULATE) v = _mm256_add_ps(v, _mm256_loadu_ps(q));
                    if (flags & UF_CONV_RELU) v = _mm256_max_ps(v, zero);
                    _mm256_storeu_ps(q, v);
                }
        }
    }
}

/* C[i][j] (+)= sum_k A(i, k) B[k][j] for i < NR (<= 6), j < 8 NV (NV 1 or 2), with
 * A(i, k) = a[i * ars + k * aks]. NR and NV are constants at each call (see gemm). */
INLINE void micro(const int NR, const int NV, size_t K, const float *a, size_t ars, size_t aks, const float *b,
                  size_t ldb, float *c, size_t ldc, int acc) {
    __m256 s[6][2];
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) s[i][v] = acc ? _mm256_loadu_ps(c + i * ldc + 8 * v) : _mm256_setzero_ps();
    for (size_t k = 0; k < K; k++) {
        const float *bk = b + k * ldb, *ak = a + k * aks;
        const __m256 b0 = _mm256_loadu_ps(bk), b1 = NV > 1 ? _mm256_loadu_ps(bk + 8) : b0;
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            const __m256 ai = _mm256_broadcast_ss(ak + i * ars);
            s[i][0] = _mm256_fmadd_ps(ai, b0, s[i][0]);
            if (NV > 1) s[i][1] = _mm256_fmadd_ps(ai, b1, s[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(c + i * ldc + 8 * v, s[i][v]);
}

#define MICRO_CASE(nr)                                                                          \
    case nr:                                                                                    \
        if (nv == 2)                                                                            \
            micro(nr, 2, K, a, ars, aks, b, ldb, c, ldc, acc);                                  \
        else                                                                                    \
            micro(nr, 1, K, a, ars, aks, b, ldb, c, ldc, acc);                                  \
        break;

/* C (m x n, n a multiple of 8) (+)= A (m x K, strides ars / aks) B (K x n, row stride ldb). */
AVX2_FN static void gemm(size_t m, size_t n, size_t K, const float *A, size_t ars, size_t aks, const float *B, size_t ldb,
                 float *C, size_t ldc, int acc) {
    for (size_t j = 0; j < n; j += 16) {
        const int nv = n - j >= 16 ? 2 : 1;
        for (size_t i = 0; i < m; i += 6) {
            const float *a = A + i * ars, *b = B + j;
            float *c = C + i * ldc + j;
            switch (m - i >= 6 ? 6 : (int)(m - i)) {
                MICRO_CASE(6)
                MICRO_CASE(5)
                MICRO_CASE(4)
                MICRO_CASE(3)
                MICRO_CASE(2)
                MICRO_CASE(1)
            }
        }
    }
}

/* ---- the three passes -------------------------------------------------------------- */

/* The forward on g (c_in -> c_out) with transformed weights u; used by backward-data too. */
AVX2_FN static void forward(const uf_conv_geom *g, const float *x, const float *u, const float *b, float *y, int flags,
                    int threads, float *scratch) {
    const size_t ci8 = pad8(g->c_in), co8 = pad8(g->c_out), t = n_tiles(g), tb = block_tiles(g, threads);
    const size_t nblocks = (t + tb - 1) / tb, per = per_thread(g, tb, 0);
    if (few_tiles(g, threads)) {
        /* Few tiles (a small image at batch 1): blocks would leave each thread reading all
         * of U for a handful of tiles. All tiles form one block instead, and the threads
         * split each step: tiles for the transforms, (position, 16 columns) for the GEMMs. */
        float *v = scratch, *m = v + NP * t * ci8;
        const size_t ncol = (co8 + 15) / 16;
#pragma omp parallel num_threads(threads)
        {
#pragma omp for schedule(static)
            for (size_t i = 0; i < t; i++) input_transform(g, g->c_in, x, i, 1, v + i * ci8, t * ci8);
#pragma omp for schedule(static)
            for (size_t pj = 0; pj < NP * ncol; pj++) {
                const size_t p = pj / ncol, j = pj % ncol * 16, n = co8 - j < 16 ? co8 - j : 16;
                gemm(t, n, ci8, v + p * t * ci8, ci8, 1, u + p * ci8 * co8 + j, co8, m + p * t * co8 + j, co8, 0);
            }
#pragma omp for schedule(static)
            for (size_t i = 0; i < t; i++) output_transform(g, g->c_out, m + i * co8, b, y, flags, i, 1, t * co8);
        }
        return;
    }
    const int nthr = (size_t)threads < nblocks ? threads : (int)nblocks;
#pragma omp parallel num_threads(nthr)
    {
        float *v = scratch + per * (size_t)omp_get_thread_num(), *m = v + NP * tb * ci8;
#pragma omp for schedule(static)
        for (size_t blk = 0; blk < nblocks; blk++) {
            const size_t t0 = blk * tb, nt = t - t0 < tb ? t - t0 : tb;
            input_transform(g, g->c_in, x, t0, nt, v, nt * ci8);
            for (int p = 0; p < NP; p++)
                gemm(nt, co8, ci8, v + p * nt * ci8, ci8, 1, u + p * ci8 * co8, co8, m + p * nt * co8, co8, 0);
            output_transform(g, g->c_out, m, b, y, flags, t0, nt, nt * co8);
        }
    }
}

AVX2_FN void uf_wino_forward(const uf_conv_geom *g, const float *x, const float *u, const float *b, float *y, int flags,
                     int threads, float *scratch) {
    forward(g, x, u, b, y, flags, threads < 1 ? 1 : threads, scratch);
}

AVX2_FN void uf_wino_backward_data(const uf_conv_geom *g, const float *dy, const float *u, float *dx, int threads,
                           float *scratch) {
    uf_conv_geom t = *g;
    t.c_in = g->c_out, t.c_out = g->c_in; /* the same scratch size: V and M swap */
    forward(&t, dy, u, NULL, dx, 0, threads < 1 ? 1 : threads, scratch);
}

/* du[0..8) += the other threads' partial sums at the same place (stride per floats). */
AVX2_FN static void add_partials(float *du, size_t per, int nthr) {
    __m256 acc = _mm256_loadu_ps(du);
    for (int th = 1; th < nthr; th++) acc = _mm256_add_ps(acc, _mm256_loadu_ps(du + per * (size_t)th));
    _mm256_storeu_ps(du, acc);
}

/* dw[.][ci] += G^T dU[.][ci][.] G for every output channel, 8 at a time. */
AVX2_FN static void adjoint_weights_row(const uf_conv_geom *g, const float *du0, float *dw, int ci) {
    const size_t ci8 = pad8(g->c_in), co8 = pad8(g->c_out);
    for (int c0 = 0; c0 < g->c_out; c0 += 8) {
        __m256 d[36], t[18], k[9];
        for (int p = 0; p < NP; p++) d[p] = _mm256_loadu_ps(du0 + ((size_t)p * ci8 + ci) * co8 + c0);
        for (int j = 0; j < 6; j++) gt3(d + j, 6, t + j, 6);         /* t (3x6) = G^T dU */
        for (int i = 0; i < 3; i++) gt3(t + 6 * i, 1, k + 3 * i, 1); /* k (3x3) = t G */
        float kl[9][8];
        for (int i = 0; i < 9; i++) _mm256_storeu_ps(kl[i], k[i]);
        for (int l = 0; l < 8 && c0 + l < g->c_out; l++) {
            float *o = dw + ((size_t)(c0 + l) * g->c_in + ci) * 9;
            for (int i = 0; i < 9; i++) o[i] += kl[i][l];
        }
    }
}

AVX2_FN void uf_wino_backward_weights(const uf_conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                              int threads, float *scratch) {
    if (threads < 1) threads = 1;
    const size_t ci8 = pad8(g->c_in), co8 = pad8(g->c_out), t = n_tiles(g), tb = block_tiles(g, threads);
    const size_t nblocks = (t + tb - 1) / tb, per = per_thread(g, tb, 1);
    const int nthr = (size_t)threads < nblocks ? threads : (int)nblocks;
#pragma omp parallel num_threads(nthr)
    {
        float *v = scratch + per * (size_t)omp_get_thread_num(), *dm = v + NP * tb * ci8;
        float *du = dm + NP * tb * co8, *db8 = du + NP * ci8 * co8;
        memset(du, 0, sizeof(float) * (NP * ci8 * co8 + co8));
#pragma omp for schedule(static)
        for (size_t blk = 0; blk < nblocks; blk++) {
            const size_t t0 = blk * tb, nt = t - t0 < tb ? t - t0 : tb;
            input_transform(g, g->c_in, x, t0, nt, v, nt * ci8);
            output_adjoint(g, g->c_out, dy, t0, nt, dm, db8);
            for (int p = 0; p < NP; p++) /* dU[p] (ci8 x co8) += V[p]^T dM[p] */
                gemm(ci8, co8, nt, v + p * nt * ci8, 1, ci8, dm + p * nt * co8, co8, du + p * ci8 * co8, co8, 1);
        }
    }
    /* the threads' sums, in thread order, into the first one's (ndu: a multiple of 8) */
    float *du0 = scratch + NP * tb * (ci8 + co8);
    const size_t ndu = NP * ci8 * co8 + co8;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (size_t i = 0; i < ndu; i += 8) add_partials(du0 + i, per, nthr);
    /* dw += G^T dU G, 8 output channels at a time (each position's reads consecutive) */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int ci = 0; ci < g->c_in; ci++) adjoint_weights_row(g, du0, dw, ci);
    if (db)
        for (int co = 0; co < g->c_out; co++) db[co] += du0[NP * ci8 * co8 + co];
}

