/* coupling.h - FrEIA AllInOneBlock as U-Flow configures it (spec 4.4, FrEIA @1779d1f).
 *
 * Per sample x (C, H, W), C1 = C - C/2 passive channels, C2 = C/2 active ones:
 *     h  = conv_k(x[0:C1]; W1, b1)                 W1 (C1, C1, k, k)
 *     r  = relu(h)
 *     a  = 0.1 * conv_k(r; W2, b2)                 W2 (2*C2, C1, k, k)
 *     s  = 2 * tanh(a[0:C2]),  t = a[C2:2*C2]
 *     u  = concat(x[0:C1], x[C1:C] * exp(s) + t)
 *     g  = 0.2 * ln(1 + exp(0.5 * gamma))          softplus(beta 0.5, threshold 20) / 10
 *     y[c] = u[perm[c]] * g[perm[c]] + o[perm[c]]
 *     logdet = sum s + H*W * sum_c ln g_c          (double, per sample)
 * Same-padding convolutions (pad 1 for k = 3, 0 for k = 1), k = 3 on even
 * steps and 1 on odd ones. All tensors are (B, C, H, W) float32.
 *
 * Saved activations: the forward writes r (uf_block_r_floats; (B, C1, H, W), or
 * channel-blocked when the subnet runs on core/conv_blocked.h, which is then only
 * meaningful to uf_block_backward) and st (B, 2*C2, H, W) (s = 2 tanh(.) then t)
 * into caller buffers; backward needs them plus the
 * block input x. So one block holds 2.5*C*H*W floats per sample (x, r, st).
 */
#ifndef UF_FLOW_COUPLING_H
#define UF_FLOW_COUPLING_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"

#define UF_FLOW_CLAMP 2.0f
/* 2 ln(e^5 - 1): softplus gives g = 1 exactly. */
#define UF_GAMMA_INIT 9.986478501101022

typedef struct uf_block_geom {
    int b, c, h, w, k; /* batch, channels, height, width, kernel (1 or 3) */
} uf_block_geom;

/* Views of one block's tensors (parameters, or their gradients: same layout). */
typedef struct uf_block_params {
    float *gamma;        /* (C)  global_scale */
    float *offset;       /* (C)  global_offset */
    float *w1, *b1;      /* (C1, C1, k, k), (C1)  subnet.0 */
    float *w2, *b2;      /* (2*C2, C1, k, k), (2*C2)  subnet.2 */
    const int32_t *perm; /* (C) y[c] = v[perm[c]]; unused for gradients */
} uf_block_params;

static inline int uf_block_c1(int c) { return c - c / 2; }
static inline int uf_block_c2(int c) { return c / 2; }

/* Number of floats of one block's parameters (2C + W1 + b1 + W2 + b2). */
size_t uf_block_param_floats(int c, int k);
/* Points p's views at base (laid out gamma, offset, w1, b1, w2, b2); perm is left alone. */
void uf_block_params_map(uf_block_params *p, float *base, int c, int k);

/* PyTorch-default init: W, b ~ U(-1/sqrt(C1 k^2), 1/sqrt(C1 k^2)); gamma = UF_GAMMA_INIT,
 * offset = 0; perm (C ints) a uniform random permutation. */
void uf_block_init(uf_block_params *p, int32_t *perm, int c, int k, uf_rng *rng);

/* g_c = 0.1 * softplus_{beta=0.5}(gamma) (PyTorch threshold 20) and dg/dgamma. */
double uf_block_global_scale(double gamma);
double uf_block_global_scale_grad(double gamma);

/* Floats of scratch for forward, inverse and backward. */
size_t uf_block_workspace(const uf_block_geom *g);
/* Floats of the saved r buffer (at least B*C1*H*W: the subnet may keep r in the
 * channel-blocked layout of core/conv_blocked.h, which pads C1). */
size_t uf_block_r_floats(const uf_block_geom *g);

/* y (B,C,H,W) from x (B,C,H,W); y must not alias x. Writes r (B,C1,H,W) and
 * st (B,2*C2,H,W) (saved for backward, or scratch). ADDS each sample's log-det
 * to logdet[b] (may be NULL). UF_OK, or UF_ERR when a oneDNN convolution fails (out of
 * memory); likewise below. */
int uf_block_forward(const uf_block_geom *g, const uf_block_params *p, const float *x, float *y, float *r,
                     float *st, double *logdet, float *work);

/* x (B,C,H,W) from y; x must not alias y. */
int uf_block_inverse(const uf_block_geom *g, const uf_block_params *p, const float *y, float *x, float *work);

/* Given the forward's input x and saved r, st, the output gradient dy (B,C,H,W)
 * and the log-det gradient g_ld[b] per sample: ACCUMULATES dx (B,C,H,W; may be
 * NULL) and the parameter gradients into grad (views; gamma/offset/w/b may each be
 * NULL to skip). dx must not alias dy. */
int uf_block_backward(const uf_block_geom *g, const uf_block_params *p, const float *x, const float *r,
                      const float *st, const float *dy, const double *g_ld, float *dx,
                      const uf_block_params *grad, float *work);

#endif
