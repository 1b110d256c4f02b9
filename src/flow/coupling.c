#include "flow/coupling.h"

#include <math.h>
#include <string.h>

#include "core/conv.h"
#include "core/conv_blocked.h"
#include "core/error.h"
#include "core/vmath.h"

size_t uf_block_param_floats(int c, int k) {
    size_t c1 = (size_t)uf_block_c1(c), c2 = (size_t)uf_block_c2(c), kk = (size_t)k * k;
    return 2 * (size_t)c + c1 * c1 * kk + c1 + 2 * c2 * c1 * kk + 2 * c2;
}

void uf_block_params_map(uf_block_params *p, float *base, int c, int k) {
    size_t c1 = (size_t)uf_block_c1(c), c2 = (size_t)uf_block_c2(c), kk = (size_t)k * k;
    p->gamma = base;
    p->offset = p->gamma + c;
    p->w1 = p->offset + c;
    p->b1 = p->w1 + c1 * c1 * kk;
    p->w2 = p->b1 + c1;
    p->b2 = p->w2 + 2 * c2 * c1 * kk;
}

void uf_block_init(uf_block_params *p, int32_t *perm, int c, int k, uf_rng *rng) {
    int c1 = uf_block_c1(c), c2 = uf_block_c2(c);
    size_t kk = (size_t)k * k;
    /* Conv2d.reset_parameters: kaiming_uniform(a=sqrt 5) gives bound 1/sqrt(fan_in) for the
     * weight, and the bias bound is 1/sqrt(fan_in) as well; fan_in = C1 k^2 for both convs. */
    double bound = 1.0 / sqrt((double)c1 * (double)kk);
    for (size_t i = 0; i < (size_t)c1 * c1 * kk; i++) p->w1[i] = (float)(bound * (2.0 * uf_rng_uniform(rng) - 1.0));
    for (int i = 0; i < c1; i++) p->b1[i] = (float)(bound * (2.0 * uf_rng_uniform(rng) - 1.0));
    for (size_t i = 0; i < (size_t)2 * c2 * c1 * kk; i++)
        p->w2[i] = (float)(bound * (2.0 * uf_rng_uniform(rng) - 1.0));
    for (int i = 0; i < 2 * c2; i++) p->b2[i] = (float)(bound * (2.0 * uf_rng_uniform(rng) - 1.0));
    for (int i = 0; i < c; i++) {
        p->gamma[i] = (float)UF_GAMMA_INIT;
        p->offset[i] = 0.0f;
    }
    for (int i = 0; i < c; i++) perm[i] = i;
    for (int i = c - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)uf_rng_below(rng, (uint64_t)i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

double uf_block_global_scale(double gamma) {
    double x = 0.5 * gamma; /* Softplus(beta=0.5, threshold=20): linear when beta*x > 20 */
    return 0.1 * (x > 20.0 ? gamma : 2.0 * log1p(exp(x)));
}

double uf_block_global_scale_grad(double gamma) {
    double x = 0.5 * gamma;
    return x > 20.0 ? 0.1 : 0.1 / (1.0 + exp(-x));
}

static uf_conv_geom conv1_geom(const uf_block_geom *g) {
    int c1 = uf_block_c1(g->c);
    uf_conv_geom cg = {g->b, c1, g->h, g->w, c1, g->k, 1, g->k / 2};
    return cg;
}

static uf_conv_geom conv2_geom(const uf_block_geom *g) {
    int c1 = uf_block_c1(g->c), c2 = uf_block_c2(g->c);
    uf_conv_geom cg = {g->b, c1, g->h, g->w, 2 * c2, g->k, 1, g->k / 2};
    return cg;
}

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Scratch layout (each part rounded to 16 floats to keep 64-byte alignment). */
/* Blocked path (conv_blocked.h): x1, gr, dx1b, and gab / ab are in the blocked
 * layout, and so is the saved r; st, ga and dx1 stay (B, C, HW). Sizes are the
 * blocked ones (the larger) whichever path runs. */
typedef struct {
    float *x1;     /* (B, C1, HW) contiguous copy of x[:, 0:C1] */
    float *ga;     /* (B, 2*C2, HW) gradient of a (backward) / st scratch (inverse) */
    float *gab;    /* blocked path: ga blocked (backward) / the conv2 output a (forward) */
    float *gr;     /* (B, C1, HW) gradient of r (backward) / r scratch (inverse) */
    float *dx1;    /* (B, C1, HW) gradient of x[:, 0:C1] */
    float *dx1b;   /* blocked path: conv1's input gradient */
    float *gsc;    /* (C) global scales g */
    double *sums;  /* (2, B, C) per-sample channel sums for the offset and scale gradients */
    float *conv;   /* conv workspace */
} block_work;

static block_work carve(const uf_block_geom *g, float *work) {
    size_t hw = (size_t)g->h * g->w, b = (size_t)g->b;
    size_t c1 = (size_t)uf_block_c1(g->c), c2 = (size_t)uf_block_c2(g->c);
    const size_t n1 = uf_cblk_floats(g->b, (int)c1, hw), n2 = uf_cblk_floats(g->b, 2 * (int)c2, hw);
    block_work w;
    float *p = work;
    w.x1 = p, p += n1;
    w.ga = p, p += round16(b * 2 * c2 * hw);
    w.gab = p, p += n2;
    w.gr = p, p += n1;
    w.dx1 = p, p += round16(b * c1 * hw);
    w.dx1b = p, p += n1;
    w.gsc = p, p += round16((size_t)g->c);
    w.sums = (double *)p, p += round16(4 * b * (size_t)g->c);
    w.conv = p;
    return w;
}

size_t uf_block_workspace(const uf_block_geom *g) {
    size_t hw = (size_t)g->h * g->w, b = (size_t)g->b;
    size_t c1 = (size_t)uf_block_c1(g->c), c2 = (size_t)uf_block_c2(g->c);
    uf_conv_geom g1 = conv1_geom(g), g2 = conv2_geom(g);
    size_t cw1 = uf_conv2d_workspace(&g1), cw2 = uf_conv2d_workspace(&g2);
    const size_t n1 = uf_cblk_floats(g->b, (int)c1, hw), n2 = uf_cblk_floats(g->b, 2 * (int)c2, hw);
    return 3 * n1 + n2 + round16(b * c1 * hw) + round16(b * 2 * c2 * hw) + round16((size_t)g->c) +
           round16(4 * b * (size_t)g->c) + (cw1 > cw2 ? cw1 : cw2);
}

size_t uf_block_r_floats(const uf_block_geom *g) {
    return uf_cblk_floats(g->b, uf_block_c1(g->c), (size_t)g->h * g->w);
}

/* 1 when this block's subnet runs on the blocked kernels (decided per geometry,
 * so a forward and its backward always agree). */
static int blocked(const uf_block_geom *g) {
    uf_conv_geom g1 = conv1_geom(g), g2 = conv2_geom(g);
    return uf_cblk_supported(&g1, 1) && uf_cblk_supported(&g2, 1);
}

static void copy_passive(const uf_block_geom *g, const float *x, float *x1) {
    size_t hw = (size_t)g->h * g->w, n1 = (size_t)uf_block_c1(g->c) * hw;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < g->b; b++) memcpy(x1 + b * n1, x + (size_t)b * g->c * hw, sizeof(float) * n1);
}

static void global_scales(const uf_block_geom *g, const uf_block_params *p, float *gsc) {
    for (int c = 0; c < g->c; c++) gsc[c] = (float)uf_block_global_scale(p->gamma[c]);
}

/* st from the conv2 output a: [2 tanh(0.1 a[0:C2]), 0.1 a[C2:]] (in place when a = st). */
static void st_from_a(const uf_block_geom *g, float *st) {
    size_t hw = (size_t)g->h * g->w;
    int c2 = uf_block_c2(g->c);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < g->b; b++)
        for (int j = 0; j < 2 * c2; j++) {
            float *a = st + ((size_t)b * 2 * c2 + j) * hw;
            if (j < c2)
                for (size_t i = 0; i < hw; i++) a[i] = UF_FLOW_CLAMP * uf_vtanhf(0.1f * a[i]);
            else
                for (size_t i = 0; i < hw; i++) a[i] *= 0.1f;
        }
}

/* st (B, 2 C2, HW) from the blocked conv2 output ab, as st_from_a, in the same pass as the
 * layout change (conv_blocked.h's nChwLc: (B, ceil(2 C2 / L), HW, L)); s_sum (B, C2), when
 * not NULL, gets each s channel's sum (the log-det terms) in double. */
static void st_from_blocked(const uf_block_geom *g, const float *ab, float *st, double *s_sum) {
    const size_t hw = (size_t)g->h * g->w;
    const int c2 = uf_block_c2(g->c), nch = 2 * c2, L = uf_cblk_lanes(), nb = (nch + L - 1) / L;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < g->b; b++)
        for (int cb = 0; cb < nb; cb++)
            for (int l = 0; l < L && cb * L + l < nch; l++) {
                const int ch = cb * L + l;
                const float *src = ab + ((size_t)b * nb + cb) * hw * L + l;
                float *dst = st + ((size_t)b * nch + ch) * hw;
                if (ch < c2) {
                    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
                    for (size_t i = 0; i < hw; i++) {
                        float v = UF_FLOW_CLAMP * uf_vtanhf(0.1f * src[i * L]);
                        dst[i] = v;
                        acc += v;
                    }
                    if (s_sum) s_sum[(size_t)b * c2 + ch] = acc;
                } else {
                    for (size_t i = 0; i < hw; i++) dst[i] = 0.1f * src[i * L];
                }
            }
}

/* The subnet on the blocked kernels: x (B, C, HW) -> r (blocked, saved), st (B, 2 C2, HW),
 * s_sum as st_from_blocked. x1b and ab: blocked scratch. */
static int subnet_forward_blocked(const uf_block_geom *g, const uf_block_params *p, const float *x, float *x1b,
                                  float *r, float *ab, float *st, double *s_sum) {
    const size_t hw = (size_t)g->h * g->w;
    const int c1 = uf_block_c1(g->c);
    uf_conv_geom g1 = conv1_geom(g), g2 = conv2_geom(g);
    uf_cblk_from_nchw(g->b, c1, hw, x, g->c, x1b);
    int ok = uf_cblk_conv_forward(&g1, x1b, p->w1, p->b1, r, UF_CONV_RELU) &&
             uf_cblk_conv_forward(&g2, r, p->w2, p->b2, ab, 0);
    /* the primitives were built by blocked(): only memory can fail them (their scratchpad) */
    if (!ok) return uf_error("a flow convolution (oneDNN) failed: out of memory?");
    st_from_blocked(g, ab, st, s_sum);
    return UF_OK;
}

/* r = relu(conv1(x1)); st = [2 tanh(0.1 conv2(r)[0:C2]), 0.1 conv2(r)[C2:]] */
static void subnet_forward(const uf_block_geom *g, const uf_block_params *p, const float *x1, float *r, float *st,
                           float *convw) {
    size_t hw = (size_t)g->h * g->w;
    int c1 = uf_block_c1(g->c);
    uf_conv_geom g1 = conv1_geom(g), g2 = conv2_geom(g);
    uf_conv2d_forward(&g1, x1, p->w1, p->b1, r, convw);
    size_t nr = (size_t)g->b * c1 * hw;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nr; i++) r[i] = r[i] > 0.0f ? r[i] : 0.0f;
    uf_conv2d_forward(&g2, r, p->w2, p->b2, st, convw);
    st_from_a(g, st);
}

int uf_block_forward(const uf_block_geom *g, const uf_block_params *p, const float *x, float *y, float *r,
                     float *st, double *logdet, float *work) {
    UF_ASSERT(g->c >= 2 && (g->k == 1 || g->k == 3));
    block_work w = carve(g, work);
    const size_t hw = (size_t)g->h * g->w;
    const int C = g->c, c1 = uf_block_c1(C), c2 = uf_block_c2(C);
    /* the s channels' sums come with the blocked subnet's last pass; the plain path sums st */
    double *s_sum = NULL;
    if (blocked(g)) {
        s_sum = logdet ? w.sums : NULL;
        if (subnet_forward_blocked(g, p, x, w.x1, r, w.gab, st, s_sum) != UF_OK) return UF_ERR;
    } else {
        copy_passive(g, x, w.x1);
        subnet_forward(g, p, w.x1, r, st, w.conv);
    }
    global_scales(g, p, w.gsc);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < g->b; b++)
        for (int c = 0; c < C; c++) {
            int src = p->perm[c];
            float gs = w.gsc[src], o = p->offset[src];
            const float *xp = x + ((size_t)b * C + src) * hw;
            float *yp = y + ((size_t)b * C + c) * hw;
            if (src < c1) {
                for (size_t i = 0; i < hw; i++) yp[i] = xp[i] * gs + o;
            } else {
                const float *sp = st + ((size_t)b * 2 * c2 + (src - c1)) * hw, *tp = sp + (size_t)c2 * hw;
                for (size_t i = 0; i < hw; i++) yp[i] = (xp[i] * uf_vexpf(sp[i]) + tp[i]) * gs + o;
            }
        }
    if (!logdet) return UF_OK;
    double lg = 0.0;
    for (int c = 0; c < C; c++) lg += log(uf_block_global_scale(p->gamma[c]));
    lg *= (double)hw;
    for (int b = 0; b < g->b; b++) {
        double acc = 0.0;
        if (s_sum) {
            for (int j = 0; j < c2; j++) acc += s_sum[(size_t)b * c2 + j];
        } else {
            const float *sp = st + (size_t)b * 2 * c2 * hw;
#pragma omp parallel for reduction(+ : acc) schedule(static)
            for (size_t i = 0; i < (size_t)c2 * hw; i++) acc += sp[i];
        }
        logdet[b] += acc + lg;
    }
    return UF_OK;
}

int uf_block_inverse(const uf_block_geom *g, const uf_block_params *p, const float *y, float *x, float *work) {
    UF_ASSERT(g->c >= 2 && (g->k == 1 || g->k == 3));
    block_work w = carve(g, work);
    const size_t hw = (size_t)g->h * g->w;
    const int C = g->c, c1 = uf_block_c1(C), c2 = uf_block_c2(C);
    global_scales(g, p, w.gsc);
    /* u[perm[c]] = (y[c] - o) / g, written into x (the active half is finished below) */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < g->b; b++)
        for (int c = 0; c < C; c++) {
            int src = p->perm[c];
            float inv = 1.0f / w.gsc[src], o = p->offset[src];
            const float *yp = y + ((size_t)b * C + c) * hw;
            float *xp = x + ((size_t)b * C + src) * hw;
            for (size_t i = 0; i < hw; i++) xp[i] = (yp[i] - o) * inv;
        }
    float *r = w.gr, *st = w.ga;
    if (blocked(g)) {
        if (subnet_forward_blocked(g, p, x, w.x1, r, w.gab, st, NULL) != UF_OK) return UF_ERR;
    } else {
        copy_passive(g, x, w.x1);
        subnet_forward(g, p, w.x1, r, st, w.conv);
    }
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < g->b; b++)
        for (int j = 0; j < c2; j++) {
            float *xp = x + ((size_t)b * C + c1 + j) * hw;
            const float *sp = st + ((size_t)b * 2 * c2 + j) * hw, *tp = sp + (size_t)c2 * hw;
            for (size_t i = 0; i < hw; i++) xp[i] = (xp[i] - tp[i]) * uf_vexpf(-sp[i]);
        }
    return UF_OK;
}

/* Through the subnet's ReLU: gr = 0 where r (its output) is not positive. n floats,
 * in whichever layout r and gr share. */
static void relu_backward(const float *r, float *gr, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        if (!(r[i] > 0.0f)) gr[i] = 0.0f;
}

/* dx[:, 0:C1] += dx1 (B, C1, HW) */
static void add_passive_grad(const uf_block_geom *g, const float *dx1, float *dx) {
    const size_t hw = (size_t)g->h * g->w;
    const int c1 = uf_block_c1(g->c);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < g->b; b++)
        for (int c = 0; c < c1; c++) {
            float *d = dx + ((size_t)b * g->c + c) * hw;
            const float *s = dx1 + ((size_t)b * c1 + c) * hw;
            for (size_t i = 0; i < hw; i++) d[i] += s[i];
        }
}

/* One active channel of the backward: the gradients of s and t (gas, gat) from dy's row,
 * dx's row accumulated when has_dx, and the row's sums for the offset and global-scale
 * gradients added to *so, *sg. Inlined with has_dx constant, so both versions vectorise. */
static inline void active_grad_row(size_t hw, const float *dyp, const float *xp, const float *sp, const float *tp,
                                   float gs, float gld, float *gas, float *gat, float *dxp, int has_dx, double *so,
                                   double *sg) {
    const float clamp = UF_FLOW_CLAMP;
    double o = 0.0, g = 0.0;
#pragma omp simd reduction(+ : o, g)
    for (size_t i = 0; i < hw; i++) {
        float e = uf_vexpf(sp[i]), xe = xp[i] * e;
        o += dyp[i];
        g += (double)dyp[i] * (xe + tp[i]);
        float gy2 = dyp[i] * gs;
        if (has_dx) dxp[i] += gy2 * e;
        float gsv = gy2 * xe + gld;
        gas[i] = 0.1f * gsv * (clamp - sp[i] * sp[i] / clamp);
        gat[i] = 0.1f * gy2;
    }
    *so += o, *sg += g;
}

int uf_block_backward(const uf_block_geom *g, const uf_block_params *p, const float *x, const float *r,
                      const float *st, const float *dy, const double *g_ld, float *dx,
                      const uf_block_params *grad, float *work) {
    UF_ASSERT(g->c >= 2 && (g->k == 1 || g->k == 3));
    block_work w = carve(g, work);
    const size_t hw = (size_t)g->h * g->w;
    const int B = g->b, C = g->c, c1 = uf_block_c1(C), c2 = uf_block_c2(C);
    global_scales(g, p, w.gsc);
    double *sum_o = w.sums, *sum_g = w.sums + (size_t)B * C;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            int src = p->perm[c];
            float gs = w.gsc[src];
            const float *dyp = dy + ((size_t)b * C + c) * hw;
            const float *xp = x + ((size_t)b * C + src) * hw;
            double so = 0.0, sg = 0.0;
            if (src < c1) {
                float *d1 = w.dx1 + ((size_t)b * c1 + src) * hw;
#pragma omp simd reduction(+ : so, sg)
                for (size_t i = 0; i < hw; i++) {
                    so += dyp[i];
                    sg += (double)dyp[i] * xp[i];
                    d1[i] = dyp[i] * gs;
                }
            } else {
                int j = src - c1;
                const float *sp = st + ((size_t)b * 2 * c2 + j) * hw, *tp = sp + (size_t)c2 * hw;
                float *gas = w.ga + ((size_t)b * 2 * c2 + j) * hw, *gat = gas + (size_t)c2 * hw;
                const float gld = (float)g_ld[b];
                if (dx)
                    active_grad_row(hw, dyp, xp, sp, tp, gs, gld, gas, gat, dx + ((size_t)b * C + src) * hw, 1, &so, &sg);
                else
                    active_grad_row(hw, dyp, xp, sp, tp, gs, gld, gas, gat, NULL, 0, &so, &sg);
            }
            sum_o[(size_t)b * C + src] = so;
            sum_g[(size_t)b * C + src] = sg;
        }
    double gld_sum = 0.0;
    for (int b = 0; b < B; b++) gld_sum += g_ld[b];
    for (int c = 0; c < C; c++) {
        double so = 0.0, sg = 0.0;
        for (int b = 0; b < B; b++) so += sum_o[(size_t)b * C + c], sg += sum_g[(size_t)b * C + c];
        if (grad->offset) grad->offset[c] += (float)so;
        if (grad->gamma) {
            double gam = p->gamma[c];
            sg += gld_sum * (double)hw / uf_block_global_scale(gam);
            grad->gamma[c] += (float)(sg * uf_block_global_scale_grad(gam));
        }
    }
    uf_conv_geom g1 = conv1_geom(g), g2 = conv2_geom(g);
    if (blocked(g)) {
        /* the same steps as below, on the blocked kernels; r is blocked */
        const size_t nrb = uf_cblk_floats(B, c1, hw);
        uf_cblk_from_nchw(B, 2 * c2, hw, w.ga, 2 * c2, w.gab);
        int ok = uf_cblk_conv_backward_data(&g2, w.gab, p->w2, w.gr);
        relu_backward(r, w.gr, nrb);
        if (ok && grad->w2) ok = uf_cblk_conv_backward_weights(&g2, r, w.gab, grad->w2, grad->b2);
        uf_cblk_from_nchw(B, c1, hw, x, C, w.x1);
        if (ok && grad->w1) ok = uf_cblk_conv_backward_weights(&g1, w.x1, w.gr, grad->w1, grad->b1);
        if (ok && dx) ok = uf_cblk_conv_backward_data(&g1, w.gr, p->w1, w.dx1b);
        /* the primitives were built by blocked(): only memory can fail them (their scratchpad) */
        if (!ok) return uf_error("a flow convolution (oneDNN) failed: out of memory?");
        if (!dx) return UF_OK;
        add_passive_grad(g, w.dx1, dx);
        uf_cblk_to_nchw(B, c1, hw, w.dx1b, dx, C, 1);
        return UF_OK;
    }
    /* conv2 backward: G_r = conv2^T(G_a), then through the ReLU */
    size_t nr = (size_t)B * c1 * hw;
    memset(w.gr, 0, sizeof(float) * nr);
    uf_conv2d_backward(&g2, r, p->w2, w.ga, w.gr, grad->w2, grad->b2, w.conv);
    relu_backward(r, w.gr, nr);
    copy_passive(g, x, w.x1);
    uf_conv2d_backward(&g1, w.x1, p->w1, w.gr, dx ? w.dx1 : NULL, grad->w1, grad->b1, w.conv);
    if (!dx) return UF_OK;
    add_passive_grad(g, w.dx1, dx);
    return UF_OK;
}
