#include "flow/flow_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

typedef struct {
    const double *gamma, *offset, *w1, *b1, *w2, *b2;
} ref_params;

static ref_params map_params(const double *base, int c, int k) {
    size_t c1 = (size_t)uf_block_c1(c), c2 = (size_t)uf_block_c2(c), kk = (size_t)k * k;
    ref_params p;
    p.gamma = base;
    p.offset = base + c;
    p.w1 = p.offset + c;
    p.b1 = p.w1 + c1 * c1 * kk;
    p.w2 = p.b1 + c1;
    p.b2 = p.w2 + 2 * c2 * c1 * kk;
    return p;
}

static double softplus_g(double gamma) {
    double x = 0.5 * gamma;
    return 0.1 * (x > 20.0 ? gamma : 2.0 * log(1.0 + exp(x)));
}

static double softplus_g_grad(double gamma) {
    double x = 0.5 * gamma;
    return x > 20.0 ? 0.1 : 0.1 * (1.0 / (1.0 + exp(-x)));
}

/* out (co, H, W) = bias + same-padded cross-correlation of in (ci, H, W) with w (co, ci, k, k). */
static void conv_d(const double *in, int ci, int h, int w, const double *wt, const double *bias, int co, int k,
                   double *out) {
    int pad = k / 2;
    for (int o = 0; o < co; o++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = bias[o];
                for (int i = 0; i < ci; i++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y + ky - pad, ix = x + kx - pad;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                            acc += wt[((o * ci + i) * k + ky) * k + kx] * in[(i * h + iy) * w + ix];
                        }
                out[(o * h + y) * w + x] = acc;
            }
}

/* Accumulates din (may be NULL), dw, db of conv_d given dout. */
static void conv_d_backward(const double *in, int ci, int h, int w, const double *wt, int co, int k,
                            const double *dout, double *din, double *dw, double *db) {
    int pad = k / 2;
    for (int o = 0; o < co; o++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double d = dout[(o * h + y) * w + x];
                db[o] += d;
                for (int i = 0; i < ci; i++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y + ky - pad, ix = x + kx - pad;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                            size_t wi = (size_t)((o * ci + i) * k + ky) * k + kx, xi = (size_t)(i * h + iy) * w + ix;
                            dw[wi] += d * in[xi];
                            if (din) din[xi] += d * wt[wi];
                        }
            }
}

/* Subnet of one sample: r (C1, HW) and the raw a (2 C2, HW) = 0.1 * conv2(r). */
static void subnet_d(const uf_flow_block *blk, const ref_params *p, const double *x1, double *h, double *a) {
    int c1 = uf_block_c1(blk->c), c2 = uf_block_c2(blk->c);
    size_t hw = (size_t)blk->h * blk->w;
    conv_d(x1, c1, blk->h, blk->w, p->w1, p->b1, c1, blk->k, h);
    double *r = malloc(sizeof(double) * c1 * hw);
    for (size_t i = 0; i < (size_t)c1 * hw; i++) r[i] = h[i] > 0 ? h[i] : 0;
    conv_d(r, c1, blk->h, blk->w, p->w2, p->b2, 2 * c2, blk->k, a);
    for (size_t i = 0; i < 2 * (size_t)c2 * hw; i++) a[i] *= 0.1;
    free(r);
}

void uf_ref_block_forward(const uf_flow_block *blk, int batch, const double *prm, const double *x, double *y,
                          double *logdet) {
    const int C = blk->c, c1 = uf_block_c1(C), c2 = uf_block_c2(C);
    const size_t hw = (size_t)blk->h * blk->w;
    ref_params p = map_params(prm, C, blk->k);
    double *h = malloc(sizeof(double) * c1 * hw), *a = malloc(sizeof(double) * 2 * c2 * hw);
    double *u = malloc(sizeof(double) * C * hw);
    for (int b = 0; b < batch; b++) {
        const double *xb = x + (size_t)b * C * hw;
        subnet_d(blk, &p, xb, h, a);
        double ld = 0;
        for (size_t i = 0; i < (size_t)c1 * hw; i++) u[i] = xb[i];
        for (int j = 0; j < c2; j++)
            for (size_t i = 0; i < hw; i++) {
                double s = 2.0 * tanh(a[j * hw + i]), t = a[(c2 + j) * hw + i];
                u[(c1 + j) * hw + i] = xb[(c1 + j) * hw + i] * exp(s) + t;
                ld += s;
            }
        for (int c = 0; c < C; c++) {
            int src = blk->perm[c];
            double g = softplus_g(p.gamma[src]);
            for (size_t i = 0; i < hw; i++) y[((size_t)b * C + c) * hw + i] = u[src * hw + i] * g + p.offset[src];
            ld += (double)hw * log(softplus_g(p.gamma[c]));
        }
        logdet[b] += ld;
    }
    free(h), free(a), free(u);
}

void uf_ref_block_inverse(const uf_flow_block *blk, int batch, const double *prm, const double *y, double *x) {
    const int C = blk->c, c1 = uf_block_c1(C), c2 = uf_block_c2(C);
    const size_t hw = (size_t)blk->h * blk->w;
    ref_params p = map_params(prm, C, blk->k);
    double *h = malloc(sizeof(double) * c1 * hw), *a = malloc(sizeof(double) * 2 * c2 * hw);
    for (int b = 0; b < batch; b++) {
        double *xb = x + (size_t)b * C * hw;
        for (int c = 0; c < C; c++) {
            int src = blk->perm[c];
            double g = softplus_g(p.gamma[src]);
            for (size_t i = 0; i < hw; i++) xb[src * hw + i] = (y[((size_t)b * C + c) * hw + i] - p.offset[src]) / g;
        }
        subnet_d(blk, &p, xb, h, a);
        for (int j = 0; j < c2; j++)
            for (size_t i = 0; i < hw; i++) {
                double s = 2.0 * tanh(a[j * hw + i]), t = a[(c2 + j) * hw + i];
                xb[(c1 + j) * hw + i] = (xb[(c1 + j) * hw + i] - t) * exp(-s);
            }
    }
    free(h), free(a);
}

void uf_ref_block_backward(const uf_flow_block *blk, int batch, const double *prm, const double *x,
                           const double *dy, const double *g_ld, double *dx, double *dprm) {
    const int C = blk->c, c1 = uf_block_c1(C), c2 = uf_block_c2(C), k = blk->k;
    const size_t hw = (size_t)blk->h * blk->w;
    ref_params p = map_params(prm, C, k);
    ref_params gq = map_params(dprm, C, k);
    double *g_gamma = (double *)gq.gamma, *g_off = (double *)gq.offset, *g_w1 = (double *)gq.w1;
    double *g_b1 = (double *)gq.b1, *g_w2 = (double *)gq.w2, *g_b2 = (double *)gq.b2;
    double *h = malloc(sizeof(double) * c1 * hw), *a = malloc(sizeof(double) * 2 * c2 * hw);
    double *r = malloc(sizeof(double) * c1 * hw), *gu = malloc(sizeof(double) * C * hw);
    double *ga = malloc(sizeof(double) * 2 * c2 * hw), *gr = malloc(sizeof(double) * c1 * hw);
    double *gx1 = malloc(sizeof(double) * c1 * hw), *u = malloc(sizeof(double) * C * hw);
    for (int b = 0; b < batch; b++) {
        const double *xb = x + (size_t)b * C * hw, *dyb = dy + (size_t)b * C * hw;
        subnet_d(blk, &p, xb, h, a);
        for (size_t i = 0; i < (size_t)c1 * hw; i++) r[i] = h[i] > 0 ? h[i] : 0, u[i] = xb[i];
        for (int j = 0; j < c2; j++)
            for (size_t i = 0; i < hw; i++)
                u[(c1 + j) * hw + i] = xb[(c1 + j) * hw + i] * exp(2.0 * tanh(a[j * hw + i])) + a[(c2 + j) * hw + i];
        /* G_v[perm[c]] = G_y[c]; offset/scale gradients; G_u = G_v * g */
        for (int c = 0; c < C; c++) {
            int src = blk->perm[c];
            double g = softplus_g(p.gamma[src]), sg = 0;
            for (size_t i = 0; i < hw; i++) {
                double gv = dyb[c * hw + i];
                g_off[src] += gv;
                sg += gv * u[src * hw + i];
                gu[src * hw + i] = gv * g;
            }
            g_gamma[src] += (sg + g_ld[b] * (double)hw / g) * softplus_g_grad(p.gamma[src]);
        }
        for (size_t i = 0; i < (size_t)c1 * hw; i++) gx1[i] = gu[i];
        for (int j = 0; j < c2; j++)
            for (size_t i = 0; i < hw; i++) {
                double s = 2.0 * tanh(a[j * hw + i]), x2 = xb[(c1 + j) * hw + i], gy2 = gu[(c1 + j) * hw + i];
                if (dx) dx[((size_t)b * C + c1 + j) * hw + i] += gy2 * exp(s);
                double gs = gy2 * x2 * exp(s) + g_ld[b];
                ga[j * hw + i] = 0.1 * gs * (2.0 - s * s / 2.0);
                ga[(c2 + j) * hw + i] = 0.1 * gy2;
            }
        memset(gr, 0, sizeof(double) * c1 * hw);
        conv_d_backward(r, c1, blk->h, blk->w, p.w2, 2 * c2, k, ga, gr, g_w2, g_b2);
        for (size_t i = 0; i < (size_t)c1 * hw; i++)
            if (!(h[i] > 0)) gr[i] = 0;
        conv_d_backward(xb, c1, blk->h, blk->w, p.w1, c1, k, gr, gx1, g_w1, g_b1);
        if (dx)
            for (size_t i = 0; i < (size_t)c1 * hw; i++) dx[(size_t)b * C * hw + i] += gx1[i];
    }
    free(h), free(a), free(r), free(gu), free(ga), free(gr), free(gx1), free(u);
}

/* ---- whole model ---- */

static size_t hw_l(const uf_flow *m, int l) { return (size_t)m->cfg.height[l] * m->cfg.width[l]; }

static void ln_forward_d(size_t n, const double *x, const double *w, const double *bias, double *y, double *xhat) {
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    double rs = 1.0 / sqrt(var / (double)n + UF_LN_EPS);
    for (size_t i = 0; i < n; i++) {
        xhat[i] = (x[i] - mean) * rs;
        y[i] = w ? xhat[i] * w[i] + bias[i] : xhat[i];
    }
}

/* Runs the model forward keeping every block input: acts[l][t] (B, V_l, HW), t = 0..T. */
static double **run_forward(const uf_flow *m, const double *params, int batch, const double *const *feats,
                            double *logdet) {
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    double **acts = calloc((size_t)L * (T + 1), sizeof(double *));
    double *xhat = NULL;
    for (int b = 0; b < batch; b++) logdet[b] = 0;
    for (int l = L - 1; l >= 0; l--) {
        size_t hw = hw_l(m, l), v = (size_t)m->v[l], n = (size_t)m->cfg.channels[l] * hw;
        for (int t = 0; t <= T; t++) acts[l * (T + 1) + t] = calloc((size_t)batch * v * hw, sizeof(double));
        double *in = acts[l * (T + 1)];
        xhat = realloc(xhat, sizeof(double) * n);
        const double *w = m->cfg.ln_mode != UF_LN_NONE ? params + m->ln_off[l] : NULL, *bias = w ? w + n : NULL;
        for (int b = 0; b < batch; b++) {
            double *dst = in + (size_t)b * v * hw;
            if (w)
                ln_forward_d(n, feats[l] + (size_t)b * n, w, bias, dst, xhat);
            else
                memcpy(dst, feats[l] + (size_t)b * n, sizeof(double) * n);
            if (l < L - 1) { /* out[g, 2i+p, 2j+q] = in[4g+2p+q, i, j] */
                int h1 = m->cfg.height[l + 1], w1 = m->cfg.width[l + 1];
                const double *up = acts[(l + 1) * (T + 1) + T] + (size_t)b * m->v[l + 1] * hw_l(m, l + 1);
                for (int g = 0; g < m->n_up[l + 1] / 4; g++)
                    for (int i = 0; i < 2 * h1; i++)
                        for (int j = 0; j < 2 * w1; j++)
                            dst[n + ((size_t)g * 2 * h1 + i) * 2 * w1 + j] =
                                up[((size_t)(4 * g + 2 * (i % 2) + j % 2) * h1 + i / 2) * w1 + j / 2];
            }
        }
        if (m->cfg.ln_mode == UF_LN_LOGDET) {
            double ld = 0;
            for (size_t i = 0; i < n; i++) ld += log(fabs(w[i]));
            for (int b = 0; b < batch; b++) logdet[b] += ld;
        }
        for (int t = 0; t < T; t++) {
            int bi = (L - 1 - l) * T + t;
            const uf_flow_block *blk = &m->blocks[bi];
            uf_ref_block_forward(blk, batch, params + blk->param_off, acts[l * (T + 1) + t],
                                 acts[l * (T + 1) + t + 1], logdet);
        }
    }
    free(xhat);
    return acts;
}

static void free_acts(const uf_flow *m, double **acts) {
    for (int i = 0; i < m->cfg.n_scales * (m->cfg.n_steps + 1); i++) free(acts[i]);
    free(acts);
}

int uf_ref_flow_forward(const uf_flow *m, const double *params, int batch, const double *const *feats,
                        double *const *z, double *logdet) {
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    double **acts = run_forward(m, params, batch, feats, logdet);
    for (int l = 0; l < L; l++) {
        size_t hw = hw_l(m, l), zn = (size_t)m->z_ch[l] * hw;
        for (int b = 0; b < batch; b++)
            memcpy(z[l] + b * zn, acts[l * (T + 1) + T] + ((size_t)b * m->v[l] + m->n_up[l]) * hw,
                   sizeof(double) * zn);
    }
    free_acts(m, acts);
    return UF_OK;
}

int uf_ref_flow_backward(const uf_flow *m, const double *params, int batch, const double *const *feats,
                         const double *const *gz, const double *g_ld, double *gparams, double *const *gfeats) {
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    double *logdet = calloc((size_t)batch, sizeof(double));
    double **acts = run_forward(m, params, batch, feats, logdet);
    double gsum = 0;
    for (int b = 0; b < batch; b++) gsum += g_ld[b];
    double *gcur = NULL;
    for (int l = 0; l < L; l++) {
        size_t hw = hw_l(m, l), v = (size_t)m->v[l], n = (size_t)m->cfg.channels[l] * hw;
        size_t nv = (size_t)batch * v * hw, zn = (size_t)m->z_ch[l] * hw, nup = (size_t)m->n_up[l] * hw;
        double *g = calloc(nv, sizeof(double));
        for (int b = 0; b < batch; b++) {
            if (l > 0) { /* space-to-depth of the finer stage's upsampled-part gradient */
                int h1 = m->cfg.height[l], w1 = m->cfg.width[l];
                size_t vf = (size_t)m->v[l - 1], nf = (size_t)m->cfg.channels[l - 1] * hw_l(m, l - 1);
                const double *src = gcur + (size_t)b * vf * hw_l(m, l - 1) + nf;
                for (int c = 0; c < m->n_up[l]; c++)
                    for (int i = 0; i < h1; i++)
                        for (int j = 0; j < w1; j++) {
                            int gg = c / 4, pp = (c % 4) / 2, qq = c % 2;
                            g[(size_t)b * v * hw + ((size_t)c * h1 + i) * w1 + j] =
                                src[((size_t)gg * 2 * h1 + 2 * i + pp) * 2 * w1 + 2 * j + qq];
                        }
            }
            memcpy(g + (size_t)b * v * hw + nup, gz[l] + (size_t)b * zn, sizeof(double) * zn);
        }
        free(gcur);
        for (int t = T - 1; t >= 0; t--) {
            int bi = (L - 1 - l) * T + t;
            const uf_flow_block *blk = &m->blocks[bi];
            double *gin = calloc(nv, sizeof(double));
            uf_ref_block_backward(blk, batch, params + blk->param_off, acts[l * (T + 1) + t], g, g_ld, gin,
                                  gparams + blk->param_off);
            free(g);
            g = gin;
        }
        gcur = g;
        /* feature part: LayerNorm backward */
        const double *w = m->cfg.ln_mode != UF_LN_NONE ? params + m->ln_off[l] : NULL;
        double *gw = w ? gparams + m->ln_off[l] : NULL, *gb = w ? gw + n : NULL;
        double *xhat = malloc(sizeof(double) * n), *tmp = malloc(sizeof(double) * n);
        for (int b = 0; b < batch; b++) {
            const double *gy = g + (size_t)b * v * hw;
            double *gf = gfeats && gfeats[l] ? gfeats[l] + (size_t)b * n : NULL;
            if (!w) {
                if (gf)
                    for (size_t i = 0; i < n; i++) gf[i] += gy[i];
                continue;
            }
            const double *xb = feats[l] + (size_t)b * n;
            ln_forward_d(n, xb, NULL, NULL, tmp, xhat);
            double mean = 0, var = 0;
            for (size_t i = 0; i < n; i++) mean += xb[i];
            mean /= (double)n;
            for (size_t i = 0; i < n; i++) var += (xb[i] - mean) * (xb[i] - mean);
            double rs = 1.0 / sqrt(var / (double)n + UF_LN_EPS), m1 = 0, m2 = 0;
            for (size_t i = 0; i < n; i++) {
                gw[i] += gy[i] * xhat[i];
                gb[i] += gy[i];
                m1 += gy[i] * w[i];
                m2 += gy[i] * w[i] * xhat[i];
            }
            m1 /= (double)n, m2 /= (double)n;
            if (gf)
                for (size_t i = 0; i < n; i++) gf[i] += rs * (gy[i] * w[i] - m1 - xhat[i] * m2);
        }
        if (m->cfg.ln_mode == UF_LN_LOGDET)
            for (size_t i = 0; i < n; i++) gw[i] += gsum / w[i];
        free(xhat), free(tmp);
    }
    free(gcur);
    free(logdet);
    free_acts(m, acts);
    return UF_OK;
}
