/* conv.h - 2-D convolution with PyTorch Conv2d semantics (cross-correlation,
 * zero padding, square kernel, groups = 1), as im2col + SGEMM.
 *
 * Images are processed in chunks so each GEMM has at least ~8k columns
 * (good BLAS efficiency at small spatial sizes) while the scratch stays
 * bounded: the caller provides `work` of uf_conv2d_workspace() floats.
 * A 1x1 stride-1 convolution skips im2col (it is a plain GEMM).
 */
#ifndef UF_CORE_CONV_H
#define UF_CORE_CONV_H

#include <stddef.h>

typedef struct uf_conv_geom {
    int n, c_in, h, w;   /* input (N, Cin, H, W) */
    int c_out, k, stride, pad;
} uf_conv_geom;

int uf_conv_out_size(int in, int k, int stride, int pad);

/* The forward convolutions run on oneDNN (src/core/conv_dnnl.c) when it has
 * a kernel for the geometry, else (and when switched off) as im2col + SGEMM:
 * 1 (the default) or 0. The backward passes are im2col + SGEMM; their input
 * gradient is a forward convolution, so it follows the switch. Switching off
 * also switches off the channel-blocked kernels of conv_blocked.h (which the
 * flow's subnets use where they can). */
void uf_conv_set_dnnl(int on);
/* The oneDNN forward: 1 when it computed y, 0 when it could not (no kernel,
 * switched off): the caller then computes it itself. */
int uf_conv2d_forward_dnnl(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                           int flags);

/* Floats of scratch needed by forward and backward for this geometry. */
size_t uf_conv2d_workspace(const uf_conv_geom *g);
/* Floats of scratch needed by the forward functions only (<= uf_conv2d_workspace). */
size_t uf_conv2d_forward_workspace(const uf_conv_geom *g);

/* y (N, Cout, Ho, Wo) = conv(x (N, Cin, H, W), w (Cout, Cin, k, k)) + b (Cout; may be NULL). */
void uf_conv2d_forward(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                       float *work);

/* Epilogue flags of uf_conv2d_forward_ex. */
enum {
    UF_CONV_ACCUMULATE = 1, /* add the convolution to what y holds (fused residual add) */
    UF_CONV_RELU = 2,       /* apply max(0, .) to the final sum */
};

/* y (N, Cout, Ho, Wo) = act(conv(x, w) + b [+ y]) with act = ReLU or identity,
 * as selected by `flags` (UF_CONV_*). b may be NULL. work: as for uf_conv2d_forward
 * (uf_conv2d_forward_workspace floats suffice). x and y must not overlap. */
void uf_conv2d_forward_ex(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                          int flags, float *work);

/* Given dy (N, Cout, Ho, Wo), ACCUMULATES dx (N, Cin, H, W), dw (Cout, Cin, k, k)
 * and db (Cout). Any of dx, dw, db may be NULL to skip it. */
void uf_conv2d_backward(const uf_conv_geom *g, const float *x, const float *w, const float *dy, float *dx,
                        float *dw, float *db, float *work);

/* y (N*C, Ho, Wo) = PyTorch max_pool2d(x (N*C, H, W), kernel 3, stride 2, padding 1) with
 * Ho = (H - 1) / 2 + 1: padding never wins (-inf) and a NaN in a window gives NaN.
 * nc = N*C planes. UF_OK, or UF_ERR when out of memory. */
int uf_maxpool2d_3s2p1(const float *x, int nc, int h, int w, float *y);

/* Slow, obviously correct references (double accumulation) for tests. */
void uf_conv2d_forward_ref(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y);
void uf_conv2d_backward_ref(const uf_conv_geom *g, const float *x, const float *w, const float *dy, float *dx,
                            float *dw, float *db);

#endif
