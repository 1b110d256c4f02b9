#include "core/conv.h"

#include <string.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"

/* Forward strategy (measured with OpenBLAS on 2 threads, ResNet/flow shapes):
 * - outputs of at least CONV_TILE_COLS pixels per image: per image, blocks of output rows of about
 *   CONV_TILE_COLS columns: im2col of the block (stays in cache), GEMM straight into y (ldc = Ho*Wo),
 *   bias/residual/ReLU on the block. No copies of the output.
 * - smaller outputs: several images share one GEMM of at least CONV_MIN_COLS columns (a per-image
 *   GEMM would be too thin), then the result is scattered into y with the epilogue.
 * Backward always uses the batched layout. */
#define CONV_MIN_COLS 8192
#define CONV_TILE_COLS 4096

int uf_conv_out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

typedef struct {
    int ho, wo, hw_out, kk_rows; /* kk_rows = Cin*k*k */
    int chunk;                   /* images per GEMM (batched layout) */
    int plain_1x1;               /* 1x1, stride 1, no padding */
    int tiled;                   /* forward by row blocks of one image */
    int tile_rows;               /* output rows per block */
} conv_plan;

static conv_plan plan_of(const uf_conv_geom *g) {
    conv_plan p;
    p.ho = uf_conv_out_size(g->h, g->k, g->stride, g->pad);
    p.wo = uf_conv_out_size(g->w, g->k, g->stride, g->pad);
    p.hw_out = p.ho * p.wo;
    p.kk_rows = g->c_in * g->k * g->k;
    p.chunk = (CONV_MIN_COLS + p.hw_out - 1) / p.hw_out;
    if (p.chunk > g->n) p.chunk = g->n;
    if (p.chunk < 1) p.chunk = 1;
    p.plain_1x1 = g->k == 1 && g->stride == 1 && g->pad == 0;
    p.tiled = p.hw_out >= CONV_TILE_COLS;
    p.tile_rows = p.plain_1x1 ? p.ho : CONV_TILE_COLS / (p.wo > 0 ? p.wo : 1);
    if (p.tile_rows < 1) p.tile_rows = 1;
    if (p.tile_rows > p.ho) p.tile_rows = p.ho;
    return p;
}

/* Input gradient of a stride-1 "same" convolution with k > 1 as a forward
 * convolution of dy with the flipped, transposed kernel: its GEMM has K =
 * Cout*k*k instead of the K = Cout of W^T x dY (which BLAS runs slowly for the
 * flow's 42..256 channels), and it needs no col2im. */
static int dx_as_conv(const uf_conv_geom *g) { return g->stride == 1 && g->k > 1 && 2 * g->pad == g->k - 1; }

static uf_conv_geom transposed_geom(const uf_conv_geom *g) {
    uf_conv_geom t = {g->n, g->c_out, g->h, g->w, g->c_in, g->k, 1, g->pad};
    return t;
}

size_t uf_conv2d_workspace(const uf_conv_geom *g) {
    conv_plan p = plan_of(g);
    size_t cols = (size_t)p.chunk * p.hw_out;
    /* col (kk_rows, cols) + gathered output/grad (Cout, cols) + dcol (kk_rows, cols) */
    size_t need = cols * (2 * (size_t)p.kk_rows + (size_t)g->c_out);
    if (dx_as_conv(g)) {
        /* flipped kernel (Cin, Cout, k, k) + the transposed convolution's forward scratch */
        uf_conv_geom t = transposed_geom(g);
        size_t dx_need = (size_t)p.kk_rows * g->c_out + uf_conv2d_forward_workspace(&t);
        if (dx_need > need) need = dx_need;
    }
    return need;
}

/* col (Cin*k*k, (oy1-oy0)*Wo), with row stride `cols`, from output rows [oy0, oy1) of one image
 * x (Cin, H, W).
 * The valid input span of each output row is copied without per-pixel bounds checks. */
static void im2col_rows(const uf_conv_geom *g, const conv_plan *p, const float *x, int oy0, int oy1, float *col,
                        size_t cols) {
    const int k = g->k, s = g->stride, pad = g->pad, H = g->h, W = g->w, wo = p->wo;
#pragma omp parallel for schedule(static)
    for (int row = 0; row < p->kk_rows; row++) {
        const int ci = row / (k * k), ky = (row / k) % k, kx = row % k;
        /* output columns whose input column ix = ox*s - pad + kx lies in [0, W) */
        int lo = pad - kx > 0 ? (pad - kx + s - 1) / s : 0;
        int hi = (W - 1 + pad - kx) >= 0 ? (W - 1 + pad - kx) / s + 1 : 0;
        if (hi > wo) hi = wo;
        if (lo > hi) lo = hi;
        const float *src = x + (size_t)ci * H * W;
        float *dst = col + (size_t)row * cols;
        for (int oy = oy0; oy < oy1; oy++, dst += wo) {
            const int iy = oy * s - pad + ky;
            if (iy < 0 || iy >= H) {
                memset(dst, 0, sizeof(float) * wo);
                continue;
            }
            const float *srow = src + (size_t)iy * W + (lo * s - pad + kx);
            for (int ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
            if (s == 1)
                memcpy(dst + lo, srow, sizeof(float) * (size_t)(hi - lo));
            else
                for (int ox = lo; ox < hi; ox++) dst[ox] = srow[(size_t)(ox - lo) * s];
            for (int ox = hi; ox < wo; ox++) dst[ox] = 0.0f;
        }
    }
}

/* col (Cin*k*k, nb*Ho*Wo) from images x (nb, Cin, H, W). */
static void im2col(const uf_conv_geom *g, const conv_plan *p, const float *x, int nb, float *col) {
    const size_t cols = (size_t)nb * p->hw_out, in_img = (size_t)g->c_in * g->h * g->w;
    for (int n = 0; n < nb; n++) im2col_rows(g, p, x + n * in_img, 0, p->ho, col + (size_t)n * p->hw_out, cols);
}

/* dx (nb, Cin, H, W) += col2im(dcol (Cin*k*k, nb*Ho*Wo)). Parallel over (n, ci): no write conflicts. */
static void col2im_add(const uf_conv_geom *g, const conv_plan *p, const float *dcol, int nb, float *dx) {
    const int k = g->k, s = g->stride, pad = g->pad, H = g->h, W = g->w;
    const size_t cols = (size_t)nb * p->hw_out;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < nb; n++)
        for (int ci = 0; ci < g->c_in; ci++) {
            float *img = dx + ((size_t)n * g->c_in + ci) * H * W;
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    const float *src = dcol + (size_t)((ci * k + ky) * k + kx) * cols + (size_t)n * p->hw_out;
                    for (int oy = 0; oy < p->ho; oy++) {
                        int iy = oy * s - pad + ky;
                        if (iy < 0 || iy >= H) continue;
                        float *drow = img + (size_t)iy * W;
                        const float *srow = src + (size_t)oy * p->wo;
                        for (int ox = 0; ox < p->wo; ox++) {
                            int ix = ox * s - pad + kx;
                            if (ix >= 0 && ix < W) drow[ix] += srow[ox];
                        }
                    }
                }
        }
}

/* dst (C, nb*HW) <- src (nb, C, HW) */
static void gather_channels(const float *src, int nb, int c, int hw, float *dst) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int ch = 0; ch < c; ch++)
        for (int n = 0; n < nb; n++)
            memcpy(dst + ((size_t)ch * nb + n) * hw, src + ((size_t)n * c + ch) * hw, sizeof(float) * hw);
}

/* Epilogue on one channel row: d[i] = act(s[i] + bias [+ d[i]]). s may equal d only without ACCUMULATE
 * (then d[i] is read as the GEMM result). */
static inline void epilogue_row(float *d, const float *s, float bias, int hw, int flags) {
    if (flags & UF_CONV_ACCUMULATE) {
        if (flags & UF_CONV_RELU)
            for (int i = 0; i < hw; i++) {
                float v = s[i] + bias + d[i];
                d[i] = v > 0.0f ? v : 0.0f;
            }
        else
            for (int i = 0; i < hw; i++) d[i] += s[i] + bias;
    } else if (flags & UF_CONV_RELU) {
        for (int i = 0; i < hw; i++) {
            float v = s[i] + bias;
            d[i] = v > 0.0f ? v : 0.0f;
        }
    } else {
        for (int i = 0; i < hw; i++) d[i] = s[i] + bias;
    }
}

/* dst (nb, C, HW) <- epilogue(src (C, nb*HW), bias[C] (may be NULL)) */
static void scatter_channels(const float *src, const float *bias, int nb, int c, int hw, float *dst, int flags) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < nb; n++)
        for (int ch = 0; ch < c; ch++)
            epilogue_row(dst + ((size_t)n * c + ch) * hw, src + ((size_t)ch * nb + n) * hw, bias ? bias[ch] : 0.0f,
                         hw, flags);
}

size_t uf_conv2d_forward_workspace(const uf_conv_geom *g) {
    conv_plan p = plan_of(g);
    if (p.tiled) return p.plain_1x1 ? 0 : (size_t)p.kk_rows * p.tile_rows * p.wo;
    size_t cols = (size_t)p.chunk * p.hw_out;
    return cols * ((size_t)p.kk_rows + (size_t)g->c_out);
}

/* Per image, blocks of output rows: im2col of the block (cache-sized), GEMM straight into y with
 * ldc = Ho*Wo, bias/ReLU on the block while it is in cache. */
static void forward_tiled(const uf_conv_geom *g, const conv_plan *p, const float *x, const float *w,
                          const float *b, float *y, int flags, float *work) {
    const size_t in_img = (size_t)g->c_in * g->h * g->w, out_img = (size_t)g->c_out * p->hw_out;
    const int rows = p->tile_rows;
    for (int n = 0; n < g->n; n++) {
        const float *xn = x + (size_t)n * in_img;
        float *yn = y + (size_t)n * out_img;
        for (int oy0 = 0; oy0 < p->ho; oy0 += rows) {
            int oy1 = oy0 + rows < p->ho ? oy0 + rows : p->ho, cols = (oy1 - oy0) * p->wo;
            const float *col = xn + (size_t)oy0 * p->wo;
            int ldb = p->hw_out;
            if (!p->plain_1x1) {
                im2col_rows(g, p, xn, oy0, oy1, work, (size_t)cols);
                col = work, ldb = cols;
            }
            float *yt = yn + (size_t)oy0 * p->wo;
            uf_sgemm(false, false, g->c_out, cols, p->kk_rows, 1.0f, w, p->kk_rows, col, ldb,
                     (flags & UF_CONV_ACCUMULATE) ? 1.0f : 0.0f, yt, p->hw_out);
            if (b || (flags & UF_CONV_RELU)) {
                int f = flags & UF_CONV_RELU;
#pragma omp parallel for schedule(static)
                for (int ch = 0; ch < g->c_out; ch++)
                    epilogue_row(yt + (size_t)ch * p->hw_out, yt + (size_t)ch * p->hw_out, b ? b[ch] : 0.0f, cols,
                                 f);
            }
        }
    }
}

void uf_conv2d_forward_ex(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                          int flags, float *work) {
    if (uf_conv2d_forward_dnnl(g, x, w, b, y, flags)) return;
    conv_plan p = plan_of(g);
    if (p.tiled) {
        forward_tiled(g, &p, x, w, b, y, flags, work);
        return;
    }
    const size_t in_img = (size_t)g->c_in * g->h * g->w, out_img = (size_t)g->c_out * p.hw_out;
    for (int n0 = 0; n0 < g->n; n0 += p.chunk) {
        int nb = g->n - n0 < p.chunk ? g->n - n0 : p.chunk;
        int cols = nb * p.hw_out;
        const float *xn = x + (size_t)n0 * in_img;
        float *yn = y + (size_t)n0 * out_img;
        if (nb == 1) {
            /* One image: the GEMM writes (Cout, Ho*Wo) straight into y (beta = 1 accumulates). */
            const float *col = xn;
            if (!p.plain_1x1) {
                im2col(g, &p, xn, 1, work);
                col = work;
            }
            uf_sgemm(false, false, g->c_out, cols, p.kk_rows, 1.0f, w, p.kk_rows, col, cols,
                     (flags & UF_CONV_ACCUMULATE) ? 1.0f : 0.0f, yn, cols);
            if (b || (flags & UF_CONV_RELU)) {
                int f = flags & UF_CONV_RELU;
#pragma omp parallel for schedule(static)
                for (int ch = 0; ch < g->c_out; ch++)
                    epilogue_row(yn + (size_t)ch * p.hw_out, yn + (size_t)ch * p.hw_out, b ? b[ch] : 0.0f,
                                 p.hw_out, f);
            }
            continue;
        }
        float *col = work, *out = work + (size_t)p.kk_rows * cols;
        if (p.plain_1x1)
            gather_channels(xn, nb, g->c_in, p.hw_out, col);
        else
            im2col(g, &p, xn, nb, col);
        uf_sgemm(false, false, g->c_out, cols, p.kk_rows, 1.0f, w, p.kk_rows, col, cols, 0.0f, out, cols);
        scatter_channels(out, b, nb, g->c_out, p.hw_out, yn, flags);
    }
}

void uf_conv2d_forward(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                       float *work) {
    uf_conv2d_forward_ex(g, x, w, b, y, 0, work);
}

void uf_conv2d_backward(const uf_conv_geom *g, const float *x, const float *w, const float *dy, float *dx,
                        float *dw, float *db, float *work) {
    conv_plan p = plan_of(g);
    const size_t in_img = (size_t)g->c_in * g->h * g->w, out_img = (size_t)g->c_out * p.hw_out;
    if (db) {
        for (int n = 0; n < g->n; n++)
#pragma omp parallel for schedule(static)
            for (int co = 0; co < g->c_out; co++) {
                const float *d = dy + n * out_img + (size_t)co * p.hw_out;
                double acc = 0.0;
                for (int i = 0; i < p.hw_out; i++) acc += d[i];
                db[co] += (float)acc;
            }
    }
    const int by_conv = dx && dx_as_conv(g);
    for (int n0 = 0; n0 < g->n && (dw || (dx && !by_conv)); n0 += p.chunk) {
        int nb = g->n - n0 < p.chunk ? g->n - n0 : p.chunk;
        int cols = nb * p.hw_out;
        const float *xn = x + (size_t)n0 * in_img, *dyn = dy + (size_t)n0 * out_img;
        float *col = work, *dyg = work + (size_t)p.kk_rows * cols, *dcol = dyg + (size_t)g->c_out * cols;
        if (nb == 1)
            dyg = (float *)dyn; /* already (Cout, Ho*Wo) */
        else
            gather_channels(dyn, nb, g->c_out, p.hw_out, dyg);
        if (dw) {
            const float *colx = col;
            if (p.plain_1x1 && nb == 1)
                colx = xn;
            else if (p.plain_1x1)
                gather_channels(xn, nb, g->c_in, p.hw_out, col);
            else
                im2col(g, &p, xn, nb, col);
            /* dW (Cout, Cin*k*k) += dY (Cout, cols) x col^T */
            uf_sgemm(false, true, g->c_out, p.kk_rows, cols, 1.0f, dyg, cols, colx, cols, 1.0f, dw, p.kk_rows);
        }
        if (dx && !by_conv) {
            /* dcol (Cin*k*k, cols) = W^T x dY */
            uf_sgemm(true, false, p.kk_rows, cols, g->c_out, 1.0f, w, p.kk_rows, dyg, cols, 0.0f, dcol, cols);
            float *dxn = dx + (size_t)n0 * in_img;
            if (p.plain_1x1) {
#pragma omp parallel for collapse(2) schedule(static)
                for (int n = 0; n < nb; n++)
                    for (int ci = 0; ci < g->c_in; ci++) {
                        float *d = dxn + ((size_t)n * g->c_in + ci) * p.hw_out;
                        const float *s = dcol + ((size_t)ci * nb + n) * p.hw_out;
                        for (int i = 0; i < p.hw_out; i++) d[i] += s[i];
                    }
            } else {
                col2im_add(g, &p, dcol, nb, dxn);
            }
        }
    }
    if (by_conv) {
        /* dx += conv(dy, wt) with wt[ci][co][ky][kx] = w[co][ci][k-1-ky][k-1-kx] */
        const int k = g->k, kk = k * k;
        float *wt = work;
#pragma omp parallel for schedule(static)
        for (int ci = 0; ci < g->c_in; ci++)
            for (int co = 0; co < g->c_out; co++) {
                const float *src = w + ((size_t)co * g->c_in + ci) * kk;
                float *dst = wt + ((size_t)ci * g->c_out + co) * kk;
                for (int i = 0; i < kk; i++) dst[kk - 1 - i] = src[i];
            }
        uf_conv_geom t = transposed_geom(g);
        uf_conv2d_forward_ex(&t, dy, wt, NULL, dx, UF_CONV_ACCUMULATE, wt + (size_t)p.kk_rows * g->c_out);
    }
}

/* max that propagates NaN like PyTorch's pooling (a NaN anywhere in the window wins) */
static inline float max_nan(float a, float b) { return (b > a || b != b) ? b : a; }

/* y (n, c, ho, wo) = max_pool2d(x (n, c, h, w), 3, stride 2, padding 1): padding never wins (-inf).
 * Per output row: the max over its (up to) 3 input rows, then over 3 columns at stride 2. */
int uf_maxpool2d_3s2p1(const float *x, int nc, int h, int w, float *y) {
    const int ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
    int rc = UF_OK;
#pragma omp parallel
    {
        float *vmax = uf_alloc(sizeof(float) * (size_t)(w + 1));
        if (!vmax) {
#pragma omp atomic write
            rc = UF_ERR;
        }
#pragma omp for schedule(static)
        for (int p = 0; p < nc; p++) {
            if (!vmax) continue;
            const float *src = x + (size_t)p * h * w;
            float *dst = y + (size_t)p * ho * wo;
            for (int oy = 0; oy < ho; oy++) {
                int y0 = 2 * oy - 1 < 0 ? 0 : 2 * oy - 1, y1 = 2 * oy + 2 > h ? h : 2 * oy + 2;
                memcpy(vmax, src + (size_t)y0 * w, sizeof(float) * w);
                for (int iy = y0 + 1; iy < y1; iy++) {
                    const float *r = src + (size_t)iy * w;
                    for (int ix = 0; ix < w; ix++) vmax[ix] = max_nan(vmax[ix], r[ix]);
                }
                float *d = dst + (size_t)oy * wo;
                /* window columns 2*ox-1 .. 2*ox+1, clipped to [0, w) */
                d[0] = w > 1 ? max_nan(vmax[0], vmax[1]) : vmax[0];
                for (int ox = 1; ox < wo; ox++) {
                    float m = max_nan(vmax[2 * ox - 1], vmax[2 * ox]);
                    d[ox] = 2 * ox + 1 < w ? max_nan(m, vmax[2 * ox + 1]) : m;
                }
            }
        }
        uf_free(vmax);
    }
    return rc;
}

void uf_conv2d_forward_ref(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    int ho = uf_conv_out_size(g->h, g->k, g->stride, g->pad), wo = uf_conv_out_size(g->w, g->k, g->stride, g->pad);
    for (int n = 0; n < g->n; n++)
        for (int co = 0; co < g->c_out; co++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double acc = b ? b[co] : 0.0;
                    for (int ci = 0; ci < g->c_in; ci++)
                        for (int ky = 0; ky < g->k; ky++)
                            for (int kx = 0; kx < g->k; kx++) {
                                int iy = oy * g->stride - g->pad + ky, ix = ox * g->stride - g->pad + kx;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                                acc += (double)x[(((size_t)n * g->c_in + ci) * g->h + iy) * g->w + ix] *
                                       w[(((size_t)co * g->c_in + ci) * g->k + ky) * g->k + kx];
                            }
                    y[(((size_t)n * g->c_out + co) * ho + oy) * wo + ox] = (float)acc;
                }
}

void uf_conv2d_backward_ref(const uf_conv_geom *g, const float *x, const float *w, const float *dy, float *dx,
                            float *dw, float *db) {
    int ho = uf_conv_out_size(g->h, g->k, g->stride, g->pad), wo = uf_conv_out_size(g->w, g->k, g->stride, g->pad);
    for (int n = 0; n < g->n; n++)
        for (int co = 0; co < g->c_out; co++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    float d = dy[(((size_t)n * g->c_out + co) * ho + oy) * wo + ox];
                    if (db) db[co] += d;
                    for (int ci = 0; ci < g->c_in; ci++)
                        for (int ky = 0; ky < g->k; ky++)
                            for (int kx = 0; kx < g->k; kx++) {
                                int iy = oy * g->stride - g->pad + ky, ix = ox * g->stride - g->pad + kx;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                                size_t xi = (((size_t)n * g->c_in + ci) * g->h + iy) * g->w + ix;
                                size_t wi = (((size_t)co * g->c_in + ci) * g->k + ky) * g->k + kx;
                                if (dx) dx[xi] += d * w[wi];
                                if (dw) dw[wi] += d * x[xi];
                            }
                }
}
