/* conv_blocked.h - convolutions on channel-blocked activations, on oneDNN's
 * direct (jit) kernels: forward, backward-data and backward-weights.
 *
 * Layout ("nChwLc"): a tensor (N, C, H, W) is stored as (N, ceil(C/L), H, W, L)
 * with L = uf_cblk_lanes() (8 with AVX2, 16 with AVX-512); element (n, c, h, w)
 * is at ((n * ceil(C/L) + c / L) * H * W + h * W + w) * L + c % L. The lanes
 * past C are padding: inputs must hold zeros there (uf_cblk_from_nchw writes
 * them); outputs get zeros there.
 *
 * Why: oneDNN's direct kernels on this layout run the flow's convolutions at
 * 1.2-2.5x its gemm kernel on plain nchw arrays (measured on AVX2, bench flow).
 * Weights stay in the caller's (Cout, Cin, k, k) arrays; they are reordered
 * inside each call (they change every training step; they are small).
 *
 * Every function returns 1 when it computed its result and 0 when it could
 * not (oneDNN unusable, no kernel, switched off with uf_conv_set_dnnl(0)): the
 * caller then uses the plain path of conv.h. uf_cblk_lanes() returns 0 in that
 * case, so callers check it once before choosing the layout.
 */
#ifndef UF_CORE_CONV_BLOCKED_H
#define UF_CORE_CONV_BLOCKED_H

#include <stddef.h>

#include "core/conv.h"

/* Lanes L of the blocked layout, or 0 when the blocked kernels are not available. */
int uf_cblk_lanes(void);
/* Switches the blocked kernels on (1, the default) or off (0) without touching
 * conv.h's plain oneDNN forward (for tests and A/B benchmarks). Switch only
 * between a forward and the next one, never between a forward and its backward. */
void uf_cblk_set_enabled(int on);
/* 3x3 stride-1 convolutions run as Winograd F(4x4, 3x3) where there is a kernel, else
 * direct: 1 (the default) or 0. The kernel is oneDNN's with 16 lanes (AVX-512: 2-2.7x faster
 * than direct on the flow's shapes) and ours with 8 (core/conv_winograd.h, AVX2: 2.2-3.5x;
 * pad 1 and 8+ channels). Winograd's rounding error is larger (the transforms amplify it; see
 * tests/test_conv.c for the measured bound). Same switching rule as uf_cblk_set_enabled;
 * switching empties the primitive cache. */
void uf_cblk_set_winograd(int on);
/* Whether Winograd is on: the last uf_cblk_set_winograd, else off only when the environment
 * has UFLOW_WINOGRAD=0 (direct kernels everywhere, so an image's results do not depend on
 * its batch). The ResNet engine follows it too. */
int uf_cblk_get_winograd(void);
/* 1 when g's forward (with_bias as given) runs as Winograd. */
int uf_cblk_winograd(const uf_conv_geom *g, int with_bias);
/* Floats of an (n, c, hw) tensor in the blocked layout, padding included, for any lanes. */
size_t uf_cblk_floats(int n, int c, size_t hw);
/* 1 when forward (with and without ReLU), backward-data and backward-weights all
 * run blocked for g (the primitives are built and cached now), 0 otherwise
 * (e.g. a 3x3 kernel on fewer input channels than lanes, 8 with AVX2 and 16 with
 * AVX-512: oneDNN's direct kernels want those in nchw). */
int uf_cblk_supported(const uf_conv_geom *g, int with_bias);

/* dst (blocked, n x c x hw) = channels [0, c) of src, n samples of src_c channels
 * (nchw, sample stride src_c * hw). Padding lanes are zeroed. */
void uf_cblk_from_nchw(int n, int c, size_t hw, const float *src, int src_c, float *dst);
/* dst (nchw, n samples of dst_c channels, channels [0, c) written) (+)= src (blocked).
 * accumulate: 0 overwrite, 1 add. */
void uf_cblk_to_nchw(int n, int c, size_t hw, const float *src, float *dst, int dst_c, int accumulate);

/* y = act(conv(x, w) + b) (flags: UF_CONV_RELU only); x, y blocked. b may be NULL. */
int uf_cblk_conv_forward(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                         int flags);
/* dx = conv^T(dy, w) (overwrites dx); dy, dx blocked. */
int uf_cblk_conv_backward_data(const uf_conv_geom *g, const float *dy, const float *w, float *dx);
/* ACCUMULATES dw (Cout, Cin, k, k) and db (Cout; may be NULL) from x and dy (blocked). */
int uf_cblk_conv_backward_weights(const uf_conv_geom *g, const float *x, const float *dy, float *dw, float *db);

#endif
