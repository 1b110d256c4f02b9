/* conv_winograd.h - 3x3 stride-1 "same" convolutions as Winograd F(4x4, 3x3) on the
 * 8-lane channel-blocked layout of conv_blocked.h (nChw8c), with AVX2 and FMA.
 *
 * Why: oneDNN 2.x has Winograd kernels for AVX-512 only, so on AVX2 CPUs the flow's and
 * ResNet's 3x3 convolutions ran as its direct kernels. Winograd F(4x4, 3x3) does 36
 * instead of 144 multiplications per 4x4 output tile and channel pair.
 *
 * Math (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; points
 * 0, +-1, +-2, infinity). Per output tile Y (rows and columns 4t .. 4t+3) and its 6x6 input
 * tile d (rows and columns 4t-1 .. 4t+4, zeros outside the image), with g a 3x3 kernel:
 *     Y[co]  = A^T [ sum_ci U[ci][co] . V[ci] ] A,   U = G g[co][ci] G^T,   V = B^T d B
 * ("." elementwise over the 36 positions; the sums over ci are 36 GEMMs per block of tiles).
 * Backward-data is the same forward on dy with the kernels flipped and ci <-> co swapped.
 * Backward-weights is the adjoint:  dg[co][ci] = G^T [ sum_tiles (A dY[co] A^T) . V[ci] ] G.
 *
 * Rounding: the transforms amplify the rounding error of the products (entries up to 8 in
 * A, 5 in B), which stays within the dot-product bound of tests/test_conv.c; the measured
 * fraction is printed by tests/test_winograd.c.
 *
 * Layout: conv_blocked.h's with L = 8: a tensor (N, C, H, W) is (N, ceil(C/8), H, W, 8);
 * the padding lanes of inputs must be zero, outputs get zeros there. Weights (Cout, Cin, 3, 3).
 * Threads: OpenMP over blocks of tiles; a call uses the `threads` its scratch was sized for.
 * Results do not depend on timing (static schedule); they depend on `threads` only in
 * backward-weights (the order of its per-thread sums).
 */
#ifndef UF_CORE_CONV_WINOGRAD_H
#define UF_CORE_CONV_WINOGRAD_H

#include <stddef.h>

#include "core/conv.h"

/* 1 when this CPU has AVX2 and FMA (the kernels' instructions). */
int uf_wino_available(void);
/* 1 when g is a convolution these kernels compute: k 3, stride 1, pad 1, at least 8 input
 * and 8 output channels (with fewer, too few products average out the transforms' rounding:
 * up to 12x the dot-product bound measured on one channel), sizes > 0. */
int uf_wino_fits(const uf_conv_geom *g);

/* Floats of transformed weights for a convolution c_in -> c_out: 36 * pad8(c_in) * pad8(c_out). */
size_t uf_wino_weights_floats(int c_in, int c_out);
/* u = the transform of w (c_out, c_in, 3, 3). transpose 0: for the forward (c_in -> c_out);
 * 1: for backward-data (w flipped, channels swapped: a c_out -> c_in forward). Padding zero. */
void uf_wino_transform_weights(int c_in, int c_out, const float *w, int transpose, float *u);

/* Floats of scratch for one call on g with `threads` threads: forward and backward-data
 * (weight_grad 0), backward-weights (1). */
size_t uf_wino_scratch_floats(const uf_conv_geom *g, int threads, int weight_grad);

/* y = act(conv(x, w) + b [+ y]) for x (n, c_in, h, w) and y (n, c_out, h, w), blocked;
 * u = uf_wino_transform_weights(c_in, c_out, w, 0); b (c_out) may be NULL; flags:
 * UF_CONV_ACCUMULATE (add to y, before the ReLU), UF_CONV_RELU. x and y must not overlap. */
void uf_wino_forward(const uf_conv_geom *g, const float *x, const float *u, const float *b, float *y, int flags,
                     int threads, float *scratch);
/* dx = conv^T(dy, w) (overwrites dx); u = uf_wino_transform_weights(c_in, c_out, w, 1). */
void uf_wino_backward_data(const uf_conv_geom *g, const float *dy, const float *u, float *dx, int threads,
                           float *scratch);
/* ACCUMULATES dw (c_out, c_in, 3, 3) and db (c_out; may be NULL) from x and dy (blocked). */
void uf_wino_backward_weights(const uf_conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                              int threads, float *scratch);

#endif
