/* Flow maths: the double reference against central finite differences and a numerical
 * Jacobian, the float production code against the double reference, inverses, the IRevNet
 * permutation, parameter layout/names/counts (spec 4.6), loss and Adam closed forms. */
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/conv_blocked.h"
#include "flow/adam.h"
#include "flow/flow_ref.h"
#include "flow/graph.h"
#include "flow/loss.h"
#include "harness.h"

/* the largest float-vs-double differences seen, printed at the end */
static struct {
    double block_y, block_ld, block_dx, block_grad, graph_z, graph_gf, graph_ld, graph_grad;
} g_seen;

static double urand(void) { return (double)rand() / RAND_MAX * 2.0 - 1.0; }

/* A model with 1..3 tiny scales; finest scale first in ch. */
static uf_flow *tiny_model(int L, const int *ch, int h0, int w0, int T, uf_ln_mode mode, uint64_t seed) {
    uf_flow_config cfg = uf_flow_default_config();
    cfg.n_scales = L;
    cfg.n_steps = T;
    cfg.ln_mode = mode;
    for (int l = 0; l < L; l++) cfg.channels[l] = ch[l], cfg.height[l] = h0 >> l, cfg.width[l] = w0 >> l;
    uf_flow *m = uf_flow_new(&cfg, seed);
    CHECK(m != NULL, "%s", uf_last_error());
    return m;
}

/* Moves the parameters away from their init so every term matters: subnet weights x4,
 * global scales spread over the softplus curve (one block in its linear branch), offsets
 * and LayerNorm affines random (some LN weights negative). */
static void randomize(uf_flow *m) {
    for (int i = 0; i < m->n_blocks; i++) {
        uf_block_params p;
        uf_flow_block_params(m, i, &p);
        int c = m->blocks[i].c, c1 = uf_block_c1(c), c2 = uf_block_c2(c), kk = m->blocks[i].k * m->blocks[i].k;
        for (int j = 0; j < c1 * c1 * kk; j++) p.w1[j] *= 4.0f;
        for (int j = 0; j < c1; j++) p.b1[j] = (float)(0.3 * urand());
        for (int j = 0; j < 2 * c2 * c1 * kk; j++) p.w2[j] *= 4.0f;
        for (int j = 0; j < 2 * c2; j++) p.b2[j] = (float)(0.5 * urand());
        for (int j = 0; j < c; j++) {
            p.gamma[j] = i == 1 ? (float)(45.0 + 3.0 * urand()) : (float)(3.0 * urand());
            p.offset[j] = (float)(0.3 * urand());
        }
    }
    for (int l = 0; l < m->cfg.n_scales; l++) {
        float *w = uf_flow_ln_weight(m, l), *b = uf_flow_ln_bias(m, l);
        if (!w) continue;
        size_t n = (size_t)m->cfg.channels[l] * m->cfg.height[l] * m->cfg.width[l];
        for (size_t i = 0; i < n; i++) {
            w[i] = (float)((0.6 + 0.5 * fabs(urand())) * (i % 7 == 3 ? -1 : 1));
            b[i] = (float)(0.2 * urand());
        }
    }
}

static double *params_double(const uf_flow *m) {
    double *d = malloc(sizeof(double) * m->n_params);
    for (size_t i = 0; i < m->n_params; i++) d[i] = m->params[i];
    return d;
}

/* max |a - b| / max |b| over n values */
static double rel_err_fd(const float *a, const double *b, size_t n) {
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs(a[i] - b[i])), mb = fmax(mb, fabs(b[i]));
    return md / mb;
}

/* ---------- rounding model for the inverse checks ----------
 * What float arithmetic may do to a block inverse (uf_block_inverse), op by op, with
 * u = 2^-24 the unit roundoff (a correctly rounded op has relative error <= u):
 *   - u = (y - o) * (1/g): g rounded to float, 1/g, the difference and the product:
 *     4 roundings, |du| <= 4u (|y| + |o|) / g. Modelled as y += 4u (|y| + max|o|) xi.
 *   - s, t from the subnet: two convolutions, dot products of K = C1 k^2 terms plus the
 *     bias. A computed dot product equals the exact one with every term perturbed by a
 *     relative |theta| <= gamma_{K+1} ~ (K+1) u, for ANY summation order, blocking or FMA
 *     use (Higham, Accuracy and Stability of Numerical Algorithms, 3.1): this is what makes
 *     the model independent of the BLAS kernel. The 0.1 scaling adds one rounding.
 *     Modelled as every subnet weight and bias *= 1 + (K + 2) u xi.
 *   - x2 = (u2 - t) * expf(-s), s = 2 tanhf(.): the subtraction, expf (<= 2 ulp), the
 *     product and tanhf (2 ulp, times |s| <= 2 in exp(-s)): |dx2| <= 8u |x2|.
 *     Modelled as x2 *= 1 + 8u xi.
 * xi is uniform in [-1, 1], independent per element (per weight for the subnet). The
 * double reference inverse run on these perturbations gives, through the actual
 * parameters and data (all of the conditioning: 1/g, exp(-s), the subnet's gain, the
 * depth), the error a float inverse of this size is expected to make. Errors are linear
 * in u, so the same run with u = 2^-53 gives the double reference's own error. */
#define U_F32 0x1p-24
#define U_F64 0x1p-53
#define INV_SAFETY 3.0 /* model vs the actual rounding pattern: the model takes every error
                          at its bound with random signs; actual roundings are smaller but
                          may correlate. 3 runs of the model, the largest times 3. */
#define INV_RUNS 3

/* sqrt(sum (a - b)^2) / sqrt(sum b^2) accumulated over several arrays */
typedef struct {
    double num, den;
} nrm_acc;
static void nrm_add(nrm_acc *acc, const double *a, const double *b, size_t n) {
    for (size_t i = 0; i < n; i++) acc->num += (a[i] - b[i]) * (a[i] - b[i]), acc->den += b[i] * b[i];
}
static double nrm_rel(const nrm_acc *acc) { return sqrt(acc->num) / fmax(sqrt(acc->den), 1e-300); }
static double rel_norm(const double *a, const double *b, size_t n) {
    nrm_acc acc = {0, 0};
    nrm_add(&acc, a, b, n);
    return nrm_rel(&acc);
}

/* x (B, C, H, W) = the double inverse of block blk at y, with the perturbations of the
 * model above when u > 0 (plain uf_ref_block_inverse when u == 0). */
static uf_rng g_model_rng = {12345}; /* its own stream: the data drawn with rand() stay as they were */
static double model_xi(void) { return 2.0 * uf_rng_uniform(&g_model_rng) - 1.0; }

static void ref_block_inverse_rounded(const uf_flow_block *blk, int batch, const double *prm, const double *y,
                                      double *x, double u) {
    if (u == 0) {
        uf_ref_block_inverse(blk, batch, prm, y, x);
        return;
    }
    const int C = blk->c, c1 = uf_block_c1(C), K = c1 * blk->k * blk->k;
    const size_t hw = (size_t)blk->h * blk->w, n = (size_t)batch * C * hw, np = uf_block_param_floats(C, blk->k);
    double *yp = malloc(8 * n), *pp = malloc(8 * np), omax = 0;
    memcpy(pp, prm, 8 * np);
    for (int c = 0; c < C; c++) omax = fmax(omax, fabs(prm[C + c])); /* layout: gamma (C), offset (C), subnet */
    for (size_t i = 0; i < n; i++) yp[i] = y[i] + 4 * u * (fabs(y[i]) + omax) * model_xi();
    for (size_t i = 2 * (size_t)C; i < np; i++) pp[i] *= 1 + (K + 2) * u * model_xi();
    uf_ref_block_inverse(blk, batch, pp, yp, x);
    for (int b = 0; b < batch; b++)
        for (size_t i = (size_t)c1 * hw; i < (size_t)C * hw; i++) x[(size_t)b * C * hw + i] *= 1 + 8 * u * model_xi();
    free(yp), free(pp);
}

/* Checks an analytic gradient against central differences of f at the point x[i] (double).
 * A point where two step sizes disagree sits next to a ReLU kink and is skipped. */
typedef double (*scalar_fn)(void *ctx);
typedef struct {
    int checked, skipped, bad;
    double worst;
} fd_stats;

static void fd_check(scalar_fn f, void *ctx, double *x, size_t n, size_t stride, const double *analytic,
                     fd_stats *st, const char *what) {
    for (size_t i = 0; i < n; i += stride) {
        double x0 = x[i], fd[2], hs[2] = {1e-5, 1e-6};
        for (int s = 0; s < 2; s++) {
            x[i] = x0 + hs[s];
            double fp = f(ctx);
            x[i] = x0 - hs[s];
            double fm = f(ctx);
            fd[s] = (fp - fm) / (2 * hs[s]);
        }
        x[i] = x0;
        double scale = fmax(fabs(fd[0]), 0.1); /* double rounding noise of F is ~1e-8 */
        if (fabs(fd[0] - fd[1]) > 1e-5 * scale) {
            st->skipped++;
            continue;
        }
        st->checked++;
        double err = fabs(analytic[i] - fd[0]) / scale;
        if (err > st->worst) st->worst = err;
        if (err > 1e-6) {
            if (st->bad < 5)
                fprintf(stderr, "  %s[%zu]: analytic %.10g, finite difference %.10g\n", what, i, analytic[i], fd[0]);
            st->bad++;
        }
    }
}

/* ---------- one block, double reference ---------- */

typedef struct {
    const uf_flow_block *blk;
    int batch;
    double *prm, *x;
    const double *ry, *rld; /* random functional: F = sum ry.y + sum rld.logdet */
    double *y, *ld;
} block_ctx;

static double block_fn(void *p) {
    block_ctx *c = p;
    size_t n = (size_t)c->batch * c->blk->c * c->blk->h * c->blk->w;
    memset(c->ld, 0, sizeof(double) * c->batch);
    uf_ref_block_forward(c->blk, c->batch, c->prm, c->x, c->y, c->ld);
    double f = 0;
    for (size_t i = 0; i < n; i++) f += c->ry[i] * c->y[i];
    for (int b = 0; b < c->batch; b++) f += c->rld[b] * c->ld[b];
    return f;
}

static void test_block_ref_gradients(void) {
    srand(1);
    int ch[1] = {5};
    uf_flow *m = tiny_model(1, ch, 3, 4, 2, UF_LN_NONE, 42);
    if (!m) return;
    randomize(m);
    double *dp = params_double(m);
    for (int bi = 0; bi < 2; bi++) {
        const uf_flow_block *blk = &m->blocks[bi];
        int B = 2;
        size_t n = (size_t)B * blk->c * blk->h * blk->w, np = uf_block_param_floats(blk->c, blk->k);
        double *x = malloc(sizeof(double) * n), *ry = malloc(sizeof(double) * n), *y = malloc(sizeof(double) * n);
        double rld[2] = {0.7, -1.3}, ld[2];
        for (size_t i = 0; i < n; i++) x[i] = urand(), ry[i] = urand();
        double *prm = dp + blk->param_off;
        block_ctx c = {blk, B, prm, x, ry, rld, y, ld};
        double *gx = calloc(n, sizeof(double)), *gp = calloc(np, sizeof(double));
        uf_ref_block_backward(blk, B, prm, x, ry, rld, gx, gp);
        fd_stats st = {0, 0, 0, 0};
        fd_check(block_fn, &c, prm, np, 1, gp, &st, "block param");
        fd_check(block_fn, &c, x, n, 1, gx, &st, "block input");
        CHECK(st.bad == 0 && st.skipped * 20 <= st.checked, "k=%d: %d of %d gradients off (worst rel %.3g), %d skipped",
              blk->k, st.bad, st.checked, st.worst, st.skipped);
        printf("  block k=%d: %d gradients match finite differences (worst rel err %.2g, %d kinks skipped)\n", blk->k,
               st.checked, st.worst, st.skipped);
        free(x), free(ry), free(y), free(gx), free(gp);
    }
    free(dp);
    uf_flow_free(m);
}

/* log|det| of an n x n matrix (row-major, destroyed) by LU with partial pivoting. */
static double log_abs_det(double *a, int n) {
    double acc = 0;
    for (int k = 0; k < n; k++) {
        int piv = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(a[i * n + k]) > fabs(a[piv * n + k])) piv = i;
        if (piv != k)
            for (int j = 0; j < n; j++) {
                double t = a[k * n + j];
                a[k * n + j] = a[piv * n + j];
                a[piv * n + j] = t;
            }
        double d = a[k * n + k];
        acc += log(fabs(d));
        for (int i = k + 1; i < n; i++) {
            double f = a[i * n + k] / d;
            for (int j = k; j < n; j++) a[i * n + j] -= f * a[k * n + j];
        }
    }
    return acc;
}

static void test_block_logdet_jacobian(void) {
    srand(2);
    int ch[1] = {5};
    uf_flow *m = tiny_model(1, ch, 3, 3, 2, UF_LN_NONE, 7);
    if (!m) return;
    randomize(m);
    double *dp = params_double(m);
    for (int bi = 0; bi < 2; bi++) {
        const uf_flow_block *blk = &m->blocks[bi];
        int n = blk->c * blk->h * blk->w;
        double *x = malloc(sizeof(double) * n), *y1 = malloc(sizeof(double) * n), *y2 = malloc(sizeof(double) * n);
        double *jac = malloc(sizeof(double) * n * n), ld = 0, dummy;
        for (int i = 0; i < n; i++) x[i] = urand();
        uf_ref_block_forward(blk, 1, dp + blk->param_off, x, y1, &ld);
        for (int j = 0; j < n; j++) {
            double x0 = x[j], h = 1e-6;
            x[j] = x0 + h;
            uf_ref_block_forward(blk, 1, dp + blk->param_off, x, y1, &dummy);
            x[j] = x0 - h;
            uf_ref_block_forward(blk, 1, dp + blk->param_off, x, y2, &dummy);
            x[j] = x0;
            for (int i = 0; i < n; i++) jac[i * n + j] = (y1[i] - y2[i]) / (2 * h);
        }
        double num = log_abs_det(jac, n);
        CHECK_CLOSE(ld, num, 1e-6, 1e-7);
        printf("  block k=%d: logdet %.10f, log|det J| numerical %.10f\n", blk->k, ld, num);
        free(x), free(y1), free(y2), free(jac);
    }
    free(dp);
    uf_flow_free(m);
}

/* The float inverse xi of one block from its float output y (B, C, H, W), against the
 * rounding model: forward error vs the double inverse of the same y (so the forward
 * pass's own error is not counted), and backward error |F(xi) - y| / |y| with F the
 * double forward. Also the double inverse's round trip on the original input xd.
 * With g down to 0.04 (1/g up to 25) and exp(-s) up to e^2 an absolute bound has no
 * meaning; the model carries both. */
static void check_block_inverse(const uf_flow_block *blk, int B, const double *prm, const double *xd, const float *y,
                                const float *xi) {
    const size_t n = (size_t)B * blk->c * blk->h * blk->w;
    double *yd = malloc(8 * n), *xs = malloc(8 * n), *xid = malloc(8 * n), *fx = malloc(8 * n), *xm = malloc(8 * n);
    double *ld = calloc((size_t)B, 8);
    for (size_t i = 0; i < n; i++) yd[i] = y[i], xid[i] = xi[i];
    uf_ref_block_inverse(blk, B, prm, yd, xs);
    double e_fwd = rel_norm(xid, xs, n);
    uf_ref_block_forward(blk, B, prm, xid, fx, ld);
    double e_bwd = rel_norm(fx, yd, n), m_fwd = 0, m_bwd = 0;
    for (int r = 0; r < INV_RUNS; r++) {
        ref_block_inverse_rounded(blk, B, prm, yd, xm, U_F32);
        m_fwd = fmax(m_fwd, rel_norm(xm, xs, n));
        uf_ref_block_forward(blk, B, prm, xm, fx, ld);
        m_bwd = fmax(m_bwd, rel_norm(fx, yd, n));
    }
    /* double round trip: F^-1(F(xd)) = xd up to the model at u = 2^-53 */
    uf_ref_block_forward(blk, B, prm, xd, fx, ld);
    uf_ref_block_inverse(blk, B, prm, fx, xm);
    double e_rt = rel_norm(xm, xd, n), ginv = 0;
    for (int c = 0; c < blk->c; c++) ginv = fmax(ginv, 1.0 / uf_block_global_scale(prm[c]));
    CHECK(e_fwd <= INV_SAFETY * m_fwd, "k=%d inverse forward error %.3g > %g x model %.3g", blk->k, e_fwd, INV_SAFETY,
          m_fwd);
    CHECK(e_bwd <= INV_SAFETY * m_bwd, "k=%d inverse backward error %.3g > %g x model %.3g", blk->k, e_bwd,
          INV_SAFETY, m_bwd);
    CHECK(e_rt <= INV_SAFETY * m_fwd * (U_F64 / U_F32), "k=%d double inverse round trip %.3g", blk->k, e_rt);
    printf("  block k=%d inverse (1/g up to %.3g): forward err %.2g (model %.2g), backward err %.2g (model %.2g)\n",
           blk->k, ginv, e_fwd, m_fwd, e_bwd, m_bwd);
    free(yd), free(xs), free(xid), free(fx), free(xm), free(ld);
}

/* float block vs double block: forward, log-det, inverse, backward.
 *
 * Tolerances of the float-vs-double checks here and in test_graph_float_vs_ref. They depend
 * on the BLAS kernel's summation order (the subnet convolutions and their backward are
 * GEMMs), so all are relative to the tensor's scale (max |a - b| / max |b|), never absolute:
 *   - forward y / z: 1e-5 (168 u). Each block's subnet values are dot products of
 *     K = C1 k^2 <= 36 terms, error <= uf_test_dot_tol(36) = 39u of their sum of |terms|, then
 *     exp/tanh/g (a few u); through the 12 blocks of the graph the rounding model of the
 *     inverse (same operations, same blocks) measures 8e-6 for the accumulated error.
 *     Seen: 1.8e-7 (block), 1.4e-7 (graph) under Haswell, SkylakeX and Sandybridge kernels.
 *   - gradients (dx, parameters, features): 1e-4. The weight gradients are sums over
 *     B H W <= 192 positions (uf_test_dot_tol(192) = 114u = 6.8e-6 of the sum of |terms|),
 *     the terms of either sign (sum |terms| up to ~10x the result for these random
 *     functionals), after the forward error above. Seen: 2.7e-7 (block), 1.4e-6 (graph).
 *   - log-det: a double sum of N = C2 H W s-values per block (N up to ~3000 over the graph),
 *     each with the forward's float error (|s| <= 2, ~1e-7): sqrt(N)-style growth gives
 *     ~1e-5, so 1e-4 (block) / 1e-3 (graph) absolute + 1e-6 relative. Seen: 1.2e-6 and
 *     6.3e-6 absolute (|logdet| ~ 100-400). */
static void block_float_vs_ref(int channels) {
    CHECK(uf_blas_init() == UF_OK, "%s", uf_last_error());
    srand(3);
    int ch[1] = {channels};
    uf_flow *m = tiny_model(1, ch, 5, 6, 2, UF_LN_NONE, 9);
    if (!m || uf_flow_alloc_grads(m) != UF_OK) return;
    randomize(m);
    double *dp = params_double(m);
    for (int bi = 0; bi < 2; bi++) {
        const uf_flow_block *blk = &m->blocks[bi];
        int B = 3;
        uf_block_geom g = {B, blk->c, blk->h, blk->w, blk->k};
        size_t n = (size_t)B * blk->c * blk->h * blk->w, np = uf_block_param_floats(blk->c, blk->k);
        size_t hw = (size_t)blk->h * blk->w;
        float *x = uf_alloc(4 * n), *y = uf_alloc(4 * n), *xi = uf_alloc(4 * n), *dy = uf_alloc(4 * n);
        float *dx = uf_calloc(n, 4), *r = uf_alloc(4 * uf_block_r_floats(&g));
        float *st = uf_alloc(4 * B * 2 * uf_block_c2(blk->c) * hw), *work = uf_alloc(4 * uf_block_workspace(&g));
        double *xd = malloc(8 * n), *yd = malloc(8 * n), *dyd = malloc(8 * n), *dxd = calloc(n, 8);
        double *gpd = calloc(np, 8), ld[3] = {0}, ldd[3] = {0}, gld[3] = {0.5, -1.0, 2.0};
        for (size_t i = 0; i < n; i++) x[i] = (float)urand(), xd[i] = x[i], dy[i] = (float)urand(), dyd[i] = dy[i];
        uf_block_params p, gp;
        uf_flow_block_params(m, bi, &p);
        uf_flow_block_grads(m, bi, &gp);
        uf_flow_zero_grads(m);
        CHECK(uf_block_forward(&g, &p, x, y, r, st, ld, work) == UF_OK, "%s", uf_last_error());
        uf_ref_block_forward(blk, B, dp + blk->param_off, xd, yd, ldd);
        CHECK(rel_err_fd(y, yd, n) < 1e-5, "k=%d forward rel err %.3g", blk->k, rel_err_fd(y, yd, n));
        g_seen.block_y = fmax(g_seen.block_y, rel_err_fd(y, yd, n));
        for (int b = 0; b < B; b++) CHECK_CLOSE(ld[b], ldd[b], 1e-4, 1e-6);
        for (int b = 0; b < B; b++) g_seen.block_ld = fmax(g_seen.block_ld, fabs(ld[b] - ldd[b]));
        CHECK(uf_block_inverse(&g, &p, y, xi, work) == UF_OK, "%s", uf_last_error());
        check_block_inverse(blk, B, dp + blk->param_off, xd, y, xi);
        CHECK(uf_block_backward(&g, &p, x, r, st, dy, gld, dx, &gp, work) == UF_OK, "%s", uf_last_error());
        uf_ref_block_backward(blk, B, dp + blk->param_off, xd, dyd, gld, dxd, gpd);
        float *gflat = m->grads + blk->param_off;
        double ex = rel_err_fd(dx, dxd, n);
        CHECK(ex < 1e-4, "k=%d dx rel err %.3g", blk->k, ex);
        g_seen.block_dx = fmax(g_seen.block_dx, ex);
        /* each parameter tensor separately */
        const char *names[6] = {"gamma", "offset", "W1", "b1", "W2", "b2"};
        size_t c = blk->c, c1 = uf_block_c1(blk->c), c2 = uf_block_c2(blk->c), kk = blk->k * blk->k;
        size_t sizes[6] = {c, c, c1 * c1 * kk, c1, 2 * c2 * c1 * kk, 2 * c2}, off = 0;
        for (int t = 0; t < 6; t++) {
            double e = rel_err_fd(gflat + off, gpd + off, sizes[t]);
            CHECK(e < 1e-4, "k=%d grad %s rel err %.3g", blk->k, names[t], e);
            g_seen.block_grad = fmax(g_seen.block_grad, e);
            off += sizes[t];
        }
        uf_free(x), uf_free(y), uf_free(xi), uf_free(dy), uf_free(dx), uf_free(r), uf_free(st), uf_free(work);
        free(xd), free(yd), free(dyd), free(dxd), free(gpd);
    }
    free(dp);
    uf_flow_free(m);
}

/* 7 channels: the subnets' 3x3 convolutions have 4 inputs (plain path); 33 channels:
 * 17 inputs, which run on the channel-blocked kernels where the CPU has them (8 lanes
 * with AVX2, 16 with AVX-512; oneDNN needs at least one full block of inputs for 3x3). */
static void test_block_float_vs_ref(void) { block_float_vs_ref(7); }
static void test_block_float_vs_ref_blocked(void) {
    if (!uf_cblk_lanes()) {
        printf("  note: no channel-blocked kernels here; this runs the plain path again\n");
    } else {
        uf_conv_geom g = {3, 17, 5, 6, 32, 3, 1, 1};
        CHECK(uf_cblk_supported(&g, 1), "the 17-input subnet conv is not blocked (%d lanes)", uf_cblk_lanes());
    }
    block_float_vs_ref(33);
}

/* ---------- whole U graph ---------- */

#define NL 3
typedef struct {
    const uf_flow *m;
    int batch;
    double *params;
    double *feats[NL];
    double *rz[NL], *rld; /* random functional */
    double *z[NL], *ld;
} graph_ctx;

static size_t feat_n(const uf_flow *m, int l) { return (size_t)m->cfg.channels[l] * m->cfg.height[l] * m->cfg.width[l]; }
static size_t hw_of(const uf_flow *m, int l) { return (size_t)m->cfg.height[l] * m->cfg.width[l]; }
static size_t z_n(const uf_flow *m, int l) { return (size_t)m->z_ch[l] * m->cfg.height[l] * m->cfg.width[l]; }

static double graph_fn(void *p) {
    graph_ctx *c = p;
    uf_ref_flow_forward(c->m, c->params, c->batch, (const double *const *)c->feats, c->z, c->ld);
    double f = 0;
    for (int l = 0; l < c->m->cfg.n_scales; l++)
        for (size_t i = 0; i < (size_t)c->batch * z_n(c->m, l); i++) f += c->rz[l][i] * c->z[l][i];
    for (int b = 0; b < c->batch; b++) f += c->rld[b] * c->ld[b];
    return f;
}

static void graph_ctx_init(graph_ctx *c, const uf_flow *m, int batch) {
    memset(c, 0, sizeof *c);
    c->m = m, c->batch = batch;
    c->params = params_double(m);
    for (int l = 0; l < m->cfg.n_scales; l++) {
        size_t nf = (size_t)batch * feat_n(m, l), nz = (size_t)batch * z_n(m, l);
        c->feats[l] = malloc(8 * nf);
        for (size_t i = 0; i < nf; i++) c->feats[l][i] = (float)(1.5 * urand() + 0.3);
        c->rz[l] = malloc(8 * nz), c->z[l] = malloc(8 * nz);
        for (size_t i = 0; i < nz; i++) c->rz[l][i] = (float)urand();
    }
    c->rld = malloc(8 * batch), c->ld = malloc(8 * batch);
    for (int b = 0; b < batch; b++) c->rld[b] = (float)urand();
}

static void graph_ctx_free(graph_ctx *c) {
    for (int l = 0; l < NL; l++) free(c->feats[l]), free(c->rz[l]), free(c->z[l]);
    free(c->params), free(c->rld), free(c->ld);
}

static const int graph_ch[NL] = {3, 7, 8}; /* V = 4, 8, 8: 1 channel goes up at each split */

static void test_graph_ref_gradients(void) {
    const uf_ln_mode modes[3] = {UF_LN_LOGDET, UF_LN_REFERENCE, UF_LN_NONE};
    for (int mi = 0; mi < 3; mi++) {
        srand(4 + mi);
        uf_flow *m = tiny_model(NL, graph_ch, 8, 4, 2, modes[mi], 11);
        if (!m) return;
        randomize(m);
        graph_ctx c;
        graph_ctx_init(&c, m, 2);
        double *gp = calloc(m->n_params, 8), *gf[NL];
        for (int l = 0; l < NL; l++) gf[l] = calloc((size_t)c.batch * feat_n(m, l), 8);
        uf_ref_flow_backward(m, c.params, c.batch, (const double *const *)c.feats, (const double *const *)c.rz,
                             c.rld, gp, gf);
        fd_stats st = {0, 0, 0, 0};
        /* all parameters in the richest mode, every 3rd otherwise (runtime) */
        fd_check(graph_fn, &c, c.params, m->n_params, mi == 0 ? 1 : 3, gp, &st, "graph param");
        for (int l = 0; l < NL; l++) fd_check(graph_fn, &c, c.feats[l], (size_t)c.batch * feat_n(m, l), 1, gf[l], &st, "graph feature");
        CHECK(st.bad == 0 && st.skipped * 20 <= st.checked, "LN %s: %d of %d gradients off (worst %.3g), %d skipped",
              uf_ln_mode_name(modes[mi]), st.bad, st.checked, st.worst, st.skipped);
        printf("  graph (3 scales, LN %s): %d gradients match finite differences (worst rel err %.2g, %d skipped)\n",
               uf_ln_mode_name(modes[mi]), st.checked, st.worst, st.skipped);
        for (int l = 0; l < NL; l++) free(gf[l]);
        free(gp);
        graph_ctx_free(&c);
        uf_flow_free(m);
    }
}

/* Numerical Jacobian of the whole graph (no LayerNorm: it is not a bijection). */
static void test_graph_logdet_jacobian(void) {
    srand(8);
    uf_flow *m = tiny_model(NL, graph_ch, 4, 4, 2, UF_LN_NONE, 5);
    if (!m) return;
    randomize(m);
    graph_ctx c;
    graph_ctx_init(&c, m, 1);
    int n = 0;
    for (int l = 0; l < NL; l++) n += (int)feat_n(m, l);
    double *jac = malloc(sizeof(double) * n * n), *zp = malloc(8 * n), *zm = malloc(8 * n), ld;
    graph_fn(&c);
    ld = c.ld[0];
    for (int j = 0, lj = 0, ij = 0; j < n; j++, ij++) {
        if (ij == (int)feat_n(m, lj)) lj++, ij = 0;
        double x0 = c.feats[lj][ij], h = 1e-6;
        double *outs[2] = {zp, zm};
        for (int s = 0; s < 2; s++) {
            c.feats[lj][ij] = x0 + (s ? -h : h);
            graph_fn(&c);
            for (int l = 0, o = 0; l < NL; l++)
                for (size_t i = 0; i < z_n(m, l); i++) outs[s][o++] = c.z[l][i];
        }
        c.feats[lj][ij] = x0;
        for (int i = 0; i < n; i++) jac[i * n + j] = (zp[i] - zm[i]) / (2 * h);
    }
    double num = log_abs_det(jac, n);
    CHECK_CLOSE(ld, num, 1e-6, 1e-7);
    printf("  graph (%d dims): logdet %.10f, log|det J| numerical %.10f\n", n, ld, num);
    free(jac), free(zp), free(zm);
    graph_ctx_free(&c);
    uf_flow_free(m);
}

/* Double inverse of the U graph, wired as uf_flow_inverse, from block inverses (each
 * perturbed by the rounding model when u > 0). z[l] (B, z_ch[l], H_l, W_l) -> fn[l]
 * (B, C_l, H_l, W_l). Checked against the double forward in test_graph_float_vs_ref. */
static void ref_graph_inverse(const uf_flow *m, const double *params, int B, double *const *z, double *const *fn,
                              double u) {
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    double *up = NULL; /* (B, n_up[l], H_l, W_l) from the finer scale */
    for (int l = 0; l < L; l++) {
        const int H = m->cfg.height[l], W = m->cfg.width[l], v = m->v[l], C = m->cfg.channels[l];
        const size_t hw = (size_t)H * W, skip = (size_t)m->n_up[l] * hw, zn = (size_t)m->z_ch[l] * hw;
        double *cur = malloc(8 * (size_t)B * v * hw), *nxt = malloc(8 * (size_t)B * v * hw);
        for (int b = 0; b < B; b++) {
            if (skip) memcpy(cur + (size_t)b * v * hw, up + b * skip, 8 * skip);
            memcpy(cur + (size_t)b * v * hw + skip, z[l] + b * zn, 8 * zn);
        }
        for (int t = T - 1; t >= 0; t--) {
            const uf_flow_block *blk = &m->blocks[(L - 1 - l) * T + t]; /* module_list order: coarsest first */
            CHECK(blk->scale == l && blk->step == t, "block order");
            ref_block_inverse_rounded(blk, B, params + blk->param_off, cur, nxt, u);
            double *tmp = cur;
            cur = nxt, nxt = tmp;
        }
        free(up), up = NULL;
        for (int b = 0; b < B; b++) memcpy(fn[l] + (size_t)b * C * hw, cur + (size_t)b * v * hw, 8 * C * hw);
        if (l < L - 1) { /* space-to-depth of the channels after the feature: out[4g+2p+q, i, j] = in[g, 2i+p, 2j+q] */
            const int n1 = m->n_up[l + 1], W1 = m->cfg.width[l + 1];
            const size_t hw1 = hw_of(m, l + 1);
            up = malloc(8 * (size_t)B * n1 * hw1);
            for (int b = 0; b < B; b++)
                for (int g = 0; g < n1 / 4; g++)
                    for (int pq = 0; pq < 4; pq++)
                        for (size_t i = 0; i < hw1; i++) {
                            size_t yy = 2 * (i / W1) + pq / 2, xx = 2 * (i % W1) + pq % 2;
                            up[((size_t)b * n1 + 4 * g + pq) * hw1 + i] = cur[((size_t)b * v + C + g) * hw + yy * W + xx];
                        }
        }
        free(cur), free(nxt);
    }
}

/* The float graph inverse fi of the float latents z (the model m with LN none, whose
 * inputs c->feats are the features): as check_block_inverse, through all the blocks.
 * The forward error is against the double inverse of the same z; the backward error
 * |F(fi) - z| / |z| uses the double forward. Both against the rounding model run
 * through the same 12 blocks, which measures the amplification of the per-block
 * rounding by the later blocks (1/g, exp(-s), subnets) instead of guessing it. */
static void check_graph_inverse(const uf_flow *m, int B, graph_ctx *c, float *const *z, float *const *fi) {
    free(c->params);
    c->params = params_double(m); /* the global scales were changed */
    double *zd[NL], *xs[NL], *xm[NL], *fid[NL], *fz[NL], ld[8];
    for (int l = 0; l < NL; l++) {
        size_t nz = B * z_n(m, l), nf = B * feat_n(m, l);
        zd[l] = malloc(8 * nz), fz[l] = malloc(8 * nz);
        xs[l] = malloc(8 * nf), xm[l] = malloc(8 * nf), fid[l] = malloc(8 * nf);
        for (size_t i = 0; i < nz; i++) zd[l][i] = z[l][i];
        for (size_t i = 0; i < nf; i++) fid[l][i] = fi[l][i];
    }
    nrm_acc af = {0, 0}, ab = {0, 0}, art = {0, 0};
    ref_graph_inverse(m, c->params, B, zd, xs, 0);
    uf_ref_flow_forward(m, c->params, B, (const double *const *)fid, fz, ld);
    for (int l = 0; l < NL; l++) nrm_add(&af, fid[l], xs[l], B * feat_n(m, l)), nrm_add(&ab, fz[l], zd[l], B * z_n(m, l));
    double e_fwd = nrm_rel(&af), e_bwd = nrm_rel(&ab), m_fwd = 0, m_bwd = 0;
    for (int r = 0; r < INV_RUNS; r++) {
        nrm_acc mf = {0, 0}, mb = {0, 0};
        ref_graph_inverse(m, c->params, B, zd, xm, U_F32);
        uf_ref_flow_forward(m, c->params, B, (const double *const *)xm, fz, ld);
        for (int l = 0; l < NL; l++) nrm_add(&mf, xm[l], xs[l], B * feat_n(m, l)), nrm_add(&mb, fz[l], zd[l], B * z_n(m, l));
        m_fwd = fmax(m_fwd, nrm_rel(&mf)), m_bwd = fmax(m_bwd, nrm_rel(&mb));
    }
    /* the double pair: F^-1(F(x)) = x up to the model at u = 2^-53 (checks the wiring above) */
    graph_fn(c);
    ref_graph_inverse(m, c->params, B, c->z, xm, 0);
    for (int l = 0; l < NL; l++) nrm_add(&art, xm[l], c->feats[l], B * feat_n(m, l));
    double e_rt = nrm_rel(&art);
    nrm_acc afr = {0, 0}; /* the float round trip, for information: its error is mostly the float forward's (checked
                             above) amplified by the inverse, which the forward error here excludes */
    for (int l = 0; l < NL; l++) nrm_add(&afr, fid[l], c->feats[l], B * feat_n(m, l));
    CHECK(e_fwd <= INV_SAFETY * m_fwd, "graph inverse forward error %.3g > %g x model %.3g", e_fwd, INV_SAFETY, m_fwd);
    CHECK(e_bwd <= INV_SAFETY * m_bwd, "graph inverse backward error %.3g > %g x model %.3g", e_bwd, INV_SAFETY, m_bwd);
    CHECK(e_rt <= INV_SAFETY * m_fwd * (U_F64 / U_F32), "double graph inverse round trip %.3g", e_rt);
    printf("  graph inverse (%d blocks): forward err %.2g (model %.2g), backward err %.2g (model %.2g), double round "
           "trip %.2g, float round trip %.2g\n", m->n_blocks, e_fwd, m_fwd, e_bwd, m_bwd, e_rt, nrm_rel(&afr));
    for (int l = 0; l < NL; l++) free(zd[l]), free(fz[l]), free(xs[l]), free(xm[l]), free(fid[l]);
}

/* float model vs double reference: z, logdet, every gradient, feature gradients, inverse. */
static void test_graph_float_vs_ref(void) {
    CHECK(uf_blas_init() == UF_OK, "%s", uf_last_error());
    const uf_ln_mode modes[4] = {UF_LN_REFERENCE, UF_LN_LOGDET, UF_LN_FROZEN, UF_LN_NONE};
    for (int mi = 0; mi < 4; mi++) {
        srand(20 + mi);
        uf_flow *m = tiny_model(NL, graph_ch, 8, 8, 4, modes[mi], 100 + mi);
        if (!m || uf_flow_alloc_grads(m) != UF_OK) return;
        randomize(m);
        const int B = 3;
        graph_ctx c;
        graph_ctx_init(&c, m, B);
        float *f[NL], *z[NL], *gz[NL], *gf[NL], *fi[NL];
        double *gfd[NL], *gpd = calloc(m->n_params, 8), ld[3], gld[3] = {-0.3, 0.6, -1.1};
        for (int l = 0; l < NL; l++) {
            size_t nf = B * feat_n(m, l), nz = B * z_n(m, l);
            f[l] = uf_alloc(4 * nf), gf[l] = uf_calloc(nf, 4), fi[l] = uf_alloc(4 * nf);
            z[l] = uf_alloc(4 * nz), gz[l] = uf_alloc(4 * nz);
            gfd[l] = calloc(nf, 8);
            for (size_t i = 0; i < nf; i++) f[l][i] = (float)c.feats[l][i];
            for (size_t i = 0; i < nz; i++) gz[l][i] = (float)c.rz[l][i];
        }
        uf_flow_zero_grads(m);
        CHECK(uf_flow_forward(m, B, (const float *const *)f, z, ld, 1) == UF_OK, "%s", uf_last_error());
        CHECK(uf_flow_backward(m, B, (const float *const *)gz, gld, gf) == UF_OK, "%s", uf_last_error());
        graph_fn(&c);
        uf_ref_flow_backward(m, c.params, B, (const double *const *)c.feats, (const double *const *)c.rz, gld, gpd, gfd);
        const char *mn = uf_ln_mode_name(modes[mi]);
        for (int l = 0; l < NL; l++) {
            double ez = rel_err_fd(z[l], c.z[l], B * z_n(m, l)), ef = rel_err_fd(gf[l], gfd[l], B * feat_n(m, l));
            CHECK(ez < 1e-5, "LN %s z_%d rel err %.3g", mn, l, ez);
            CHECK(ef < 1e-4, "LN %s grad f_%d rel err %.3g", mn, l, ef);
            g_seen.graph_z = fmax(g_seen.graph_z, ez), g_seen.graph_gf = fmax(g_seen.graph_gf, ef);
        }
        for (int b = 0; b < B; b++) CHECK_CLOSE(ld[b], c.ld[b], 1e-3, 1e-6);
        for (int b = 0; b < B; b++) g_seen.graph_ld = fmax(g_seen.graph_ld, fabs(ld[b] - c.ld[b]));
        /* every named trainable tensor */
        int np = uf_flow_param_count(m), n_tr = 0;
        double worst = 0;
        for (int i = 0; i < np; i++) {
            uf_flow_param pi;
            uf_flow_param_get(m, i, &pi);
            if (pi.kind != UF_PARAM_TRAINABLE) continue;
            CHECK(pi.grad != NULL, "%s has no gradient", pi.name);
            if (!pi.grad) continue;
            double e = rel_err_fd(pi.grad, gpd + (pi.data - m->params), pi.numel);
            worst = fmax(worst, e);
            n_tr++;
            CHECK(e < 1e-4, "LN %s: gradient of %s rel err %.3g", mn, pi.name, e);
            g_seen.graph_grad = fmax(g_seen.graph_grad, e);
        }
        if (modes[mi] == UF_LN_FROZEN) { /* frozen affine: no gradient accumulated */
            double s = 0;
            for (size_t i = m->n_trainable; i < m->n_params; i++) s += fabs(m->grads[i]);
            CHECK(s == 0 && m->n_trainable < m->n_params, "frozen LN got gradient %g", s);
        }
        printf("  graph float vs double (LN %s): %d tensors, worst gradient rel err %.2g\n", mn, n_tr, worst);
        /* inverse: z -> normalized features; without LN those are the inputs. The randomized
         * weights above make the inverse too ill-conditioned for float (g down to 0.04, 12
         * blocks: the rounding model predicts, and the float inverse shows, a relative error of
         * order 1), so this uses milder global scales (g in [0.5, 1.5]). */
        if (modes[mi] == UF_LN_NONE) {
            for (int i = 0; i < m->n_blocks; i++) {
                uf_block_params p;
                uf_flow_block_params(m, i, &p);
                for (int j = 0; j < m->blocks[i].c; j++) p.gamma[j] = (float)(UF_GAMMA_INIT + 5.0 * urand());
            }
            CHECK(uf_flow_forward(m, B, (const float *const *)f, z, ld, 0) == UF_OK, "%s", uf_last_error());
            CHECK(uf_flow_inverse(m, B, (const float *const *)z, fi) == UF_OK, "%s", uf_last_error());
            check_graph_inverse(m, B, &c, z, fi);
        }
        for (int l = 0; l < NL; l++) uf_free(f[l]), uf_free(gf[l]), uf_free(fi[l]), uf_free(z[l]), uf_free(gz[l]), free(gfd[l]);
        free(gpd);
        graph_ctx_free(&c);
        uf_flow_free(m);
    }
}

static void test_irevnet_permutation(void) {
    const int c = 8, h = 3, w = 5, n = c * h * w;
    float in[8 * 3 * 5], out[8 * 3 * 5], back[8 * 3 * 5];
    for (int i = 0; i < n; i++) in[i] = (float)i;
    uf_irevnet_upsample(in, c, h, w, out);
    /* spec 4.1: out[g, 2i+p, 2j+q] = in[4g+2p+q, i, j] */
    CHECK(out[(1 * 6 + 3) * 10 + 4] == in[(4 + 2 + 0) * 15 + 1 * 5 + 2], "index map");
    char seen[8 * 3 * 5] = {0};
    int dup = 0;
    for (int i = 0; i < n; i++) {
        int v = (int)out[i];
        if (v < 0 || v >= n || seen[v]) dup++;
        else seen[v] = 1;
    }
    CHECK(dup == 0, "upsampling is not a permutation (%d repeats)", dup);
    uf_irevnet_downsample(out, c, h, w, back);
    CHECK(memcmp(back, in, sizeof in) == 0, "space-to-depth does not invert the upsampling");
}

/* Layout, names and counts from spec 4.6 (independent numbers). */
static void test_param_layout(void) {
    uf_flow_config cfg = uf_flow_default_config();
    cfg.n_scales = 3;
    cfg.ln_mode = UF_LN_REFERENCE;
    int ch[3] = {64, 128, 256};
    for (int l = 0; l < 3; l++) cfg.channels[l] = ch[l], cfg.height[l] = cfg.width[l] = 64 >> l;
    uf_flow *m = uf_flow_new(&cfg, 1);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    CHECK(m->v[2] == 256 && m->v[1] == 160 && m->v[0] == 84, "V %d %d %d", m->v[2], m->v[1], m->v[0]);
    CHECK(m->z_ch[2] == 128 && m->z_ch[1] == 80 && m->z_ch[0] == 84, "z %d %d %d", m->z_ch[2], m->z_ch[1], m->z_ch[0]);
    size_t flow = 0, ln = 0;
    int np = uf_flow_param_count(m);
    for (int i = 0; i < np; i++) {
        uf_flow_param p;
        uf_flow_param_get(m, i, &p);
        if (p.kind == UF_PARAM_TRAINABLE) *(strstr(p.name, "feature_normalizations") ? &ln : &flow) += p.numel;
    }
    CHECK(flow == 1479880, "resnet18 flow parameters %zu (spec: 1,479,880)", flow);
    CHECK(ln == 917504, "resnet18@256 LayerNorm parameters %zu (spec: 917,504)", ln);
    CHECK(m->n_trainable == m->n_params && m->n_params == flow + ln, "n_params %zu", m->n_params);
    const char *expect[] = {"flow.module_list.0.global_scale", "flow.module_list.3.subnet.2.bias",
                            "flow.module_list.5.downsample_kernel", "flow.module_list.7.w_perm",
                            "flow.module_list.12.downsample_kernel", "flow.module_list.17.subnet.0.weight",
                            "feature_extractor.feature_normalizations.2.bias"};
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++)
        CHECK(uf_flow_param_find(m, expect[i]) >= 0, "missing %s", expect[i]);
    CHECK(uf_flow_param_find(m, "flow.module_list.4.global_scale") < 0, "module 4 is the split");
    int i17 = uf_flow_param_find(m, "flow.module_list.17.subnet.2.weight");
    uf_flow_param p;
    if (i17 >= 0) {
        uf_flow_param_get(m, i17, &p);
        CHECK(p.ndim == 4 && p.shape[0] == 84 && p.shape[1] == 42 && p.shape[2] == 1, "shape of %s", p.name);
    }
    int iu = uf_flow_param_find(m, "flow.module_list.5.downsample_kernel");
    if (iu >= 0) {
        uf_flow_param_get(m, iu, &p);
        CHECK(p.shape[0] == 128 && p.shape[1] == 1 && p.shape[2] == 2, "upsample kernel shape");
    }
    /* init: g = 1 exactly, offsets 0, weights within PyTorch's bound, perms are permutations */
    CHECK_CLOSE(uf_block_global_scale(UF_GAMMA_INIT), 1.0, 1e-15, 0);
    CHECK_CLOSE(uf_block_global_scale(50.0), 5.0, 1e-12, 0); /* threshold-20 linear branch */
    uf_block_params bp;
    uf_flow_block_params(m, 0, &bp);
    double bound = 1.0 / sqrt(128.0 * 9), mx = 0, mean = 0;
    for (int i = 0; i < 128 * 128 * 9; i++) mx = fmax(mx, fabs(bp.w1[i])), mean += bp.w1[i];
    mean /= 128 * 128 * 9;
    CHECK(mx <= bound && mx > 0.99 * bound && fabs(mean) < 0.01 * bound, "W1 init max %g mean %g bound %g", mx, mean, bound);
    CHECK(bp.gamma[5] == (float)UF_GAMMA_INIT && bp.offset[5] == 0.0f, "gamma/offset init");
    /* permutation round trip through the one-hot tensor, and rejection of a bad one */
    int ip = uf_flow_param_find(m, "flow.module_list.7.w_perm"), ipi = ip + 1;
    if (ip >= 0) {
        uf_flow_param_get(m, ip, &p);
        float *oh = uf_alloc(4 * p.numel), *ohi = uf_alloc(4 * p.numel);
        uf_flow_param_read(m, ip, oh);
        uf_flow_param_read(m, ipi, ohi);
        int32_t before = m->blocks[4].perm[3];
        CHECK(oh[3 * 160 + before] == 1.0f, "w_perm[c, perm[c]] = 1");
        CHECK(uf_flow_param_write(m, ip, oh) == UF_OK && uf_flow_param_write(m, ipi, ohi) == UF_OK, "%s", uf_last_error());
        CHECK(m->blocks[4].perm[3] == before, "perm changed by a round trip");
        oh[0] = oh[0] == 1.0f ? 0.0f : 1.0f;
        CHECK(uf_flow_param_write(m, ip, oh) == UF_ERR && strstr(uf_last_error(), "w_perm"), "bad permutation accepted");
        uf_free(oh), uf_free(ohi);
    }
    uf_flow_free(m);
    /* MS-CaiT: 12,216,480 flow parameters, no LayerNorm */
    cfg = uf_flow_default_config();
    cfg.n_scales = 2;
    cfg.channels[0] = 768, cfg.channels[1] = 384;
    cfg.height[0] = cfg.width[0] = 28, cfg.height[1] = cfg.width[1] = 14;
    m = uf_flow_new(&cfg, 1);
    CHECK(m && m->n_params == 12216480 && m->v[0] == 816, "MS-CaiT params %zu", m ? m->n_params : 0);
    uf_flow_free(m);
    cfg.height[1] = 13;
    CHECK(uf_flow_new(&cfg, 1) == NULL && strstr(uf_last_error(), "half"), "bad sizes accepted: %s", uf_last_error());
}

static void test_loss_closed_form(void) {
    float z0[4] = {1, 2, 3, 4}, z1[2] = {-1, 0.5f}; /* B = 2: per sample z0 2 values, z1 1 value */
    const float *z[2] = {z0, z1};
    size_t zn[2] = {2, 1};
    double ld[2] = {3.0, -1.0}, gld[2], per[2];
    float g0[4], g1[2];
    float *gz[2] = {g0, g1};
    double L = uf_flow_nll(2, 2, zn, z, ld, gz, gld, per, 0);
    /* sample 0: 0.5(1+4+1) - 3 = 0; sample 1: 0.5(9+16+0.25) + 1 = 13.625 */
    CHECK_CLOSE(per[0], 0.0, 1e-12, 0);
    CHECK_CLOSE(per[1], 13.625, 1e-12, 0);
    CHECK_CLOSE(L, 6.8125, 1e-12, 0);
    CHECK_CLOSE(g0[3], 2.0, 1e-7, 0);
    CHECK_CLOSE(gld[1], -0.5, 1e-15, 0);
    double Lb = uf_flow_nll(2, 2, zn, z, ld, gz, gld, NULL, 1); /* anomalib: sum_b 0.5||z||^2 - mean logdet */
    CHECK_CLOSE(Lb, 15.625 - 1.0, 1e-12, 0);
    CHECK_CLOSE(g0[3], 4.0, 1e-7, 0);
}

static void test_adam_closed_form(void) {
    uf_adam a;
    CHECK(uf_adam_init(&a, 2, 0.1) == UF_OK, "%s", uf_last_error());
    float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.0f};
    uf_adam_step(&a, p, g);
    /* step 1: m_hat = g', v_hat = g'^2 -> p -= lr * g'/(|g'| + eps), g' = g + 1e-5 p */
    double g0 = 0.5 + 1e-5, g1 = -2e-5;
    CHECK_CLOSE(p[0], 1.0 - 0.1 * g0 / (fabs(g0) + 1e-8), 1e-6, 0);
    CHECK_CLOSE(p[1], -2.0 - 0.1 * g1 / (fabs(g1) + 1e-8), 1e-6, 0);
    uf_adam_free(&a);
}

/* The same block and graph checks with the channel-blocked subnets off (the plain
 * layout, which runs where oneDNN has no blocked kernels). */
static void test_block_float_vs_ref_plain(void) {
    uf_cblk_set_enabled(0);
    block_float_vs_ref(21);
    uf_cblk_set_enabled(1);
}
static void test_graph_float_vs_ref_plain(void) {
    uf_cblk_set_enabled(0);
    test_graph_float_vs_ref();
    uf_cblk_set_enabled(1);
}
/* Blocked with Winograd off: the direct blocked kernels (the only ones with AVX2; with
 * AVX-512 the 3x3 convolutions run as Winograd by default). */
static void test_block_float_vs_ref_blocked_direct(void) {
    uf_cblk_set_winograd(0);
    test_block_float_vs_ref_blocked();
    uf_cblk_set_winograd(1);
}

int main(void) {
    UF_TEST(test_block_ref_gradients);
    UF_TEST(test_block_logdet_jacobian);
    UF_TEST(test_block_float_vs_ref);
    UF_TEST(test_block_float_vs_ref_blocked);
    UF_TEST(test_graph_ref_gradients);
    UF_TEST(test_graph_logdet_jacobian);
    UF_TEST(test_graph_float_vs_ref);
    UF_TEST(test_block_float_vs_ref_plain);
    UF_TEST(test_graph_float_vs_ref_plain);
    UF_TEST(test_block_float_vs_ref_blocked_direct);
    UF_TEST(test_irevnet_permutation);
    UF_TEST(test_param_layout);
    UF_TEST(test_loss_closed_form);
    UF_TEST(test_adam_closed_form);
    printf("  worst float vs double: block y %.2g, logdet %.2g, dx %.2g, grads %.2g; graph z %.2g, feature grads "
           "%.2g, logdet %.2g, grads %.2g\n", g_seen.block_y, g_seen.block_ld, g_seen.block_dx, g_seen.block_grad,
           g_seen.graph_z, g_seen.graph_gf, g_seen.graph_ld, g_seen.graph_grad);
    return uf_test_summary();
}
