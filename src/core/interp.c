/* interp.c - PyTorch F.interpolate (bilinear / bicubic) on planar float maps.
 *
 * Both are separable: per output column we precompute the source taps and
 * weights once, then walk the rows. Index arithmetic follows ATen's CPU
 * kernels (upsample_bilinear2d / upsample_bicubic2d in float "opmath"):
 *   bilinear, align_corners=False: scale = in/out, src = scale*(dst+0.5)-0.5,
 *     negative src clamped to 0, i0 = (int)src, i1 = i0+1 unless i0 is the last
 *     row/column, lambda = src - i0.
 *   bicubic, align_corners=True: scale = (in-1)/(out-1) (0 when out == 1),
 *     src = scale*dst, i = floor(src), t = src - i, taps i-1..i+2 clamped to
 *     the border, Keys kernel with A = -0.75.
 */
#include "core/interp.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"

typedef struct {
    int i0, i1;
    float l0, l1;
} lin_tap;

static lin_tap lin_tap_at(int in, int out, int d) {
    const float scale = (float)in / (float)out;
    float src = scale * ((float)d + 0.5f) - 0.5f;
    if (src < 0.f) src = 0.f;
    int i0 = (int)src;
    if (i0 > in - 1) i0 = in - 1;
    lin_tap t;
    t.i0 = i0;
    t.i1 = i0 < in - 1 ? i0 + 1 : i0;
    t.l1 = fminf(fmaxf(src - (float)i0, 0.f), 1.f);
    t.l0 = 1.f - t.l1;
    return t;
}

void uf_interp_bilinear(const float *in, int channels, int in_h, int in_w, float *out, int out_h, int out_w) {
    UF_ASSERT(in_h > 0 && in_w > 0 && out_h > 0 && out_w > 0 && channels >= 0);
    /* Column taps are tabulated, and each source row is interpolated along x
     * once (rx[i][x] = l0 r_i[i0] + l1 r_i[i1]); an output row is then
     * h0 rx[i0y] + h1 rx[i1y], the very operations of ATen's kernel, so the
     * results are bit-identical to the per-pixel form. If those tables cannot
     * be had, taps are recomputed per pixel (same values, slower): the
     * function cannot fail. */
    lin_tap *tw = malloc(sizeof(lin_tap) * (size_t)out_w);
    float *rx = tw ? malloc(sizeof(float) * (size_t)in_h * out_w) : NULL;
    if (tw)
        for (int x = 0; x < out_w; x++) tw[x] = lin_tap_at(in_w, out_w, x);
    for (int c = 0; c < channels; c++) {
        const float *src = in + (size_t)c * in_h * in_w;
        float *dst = out + (size_t)c * out_h * out_w;
        if (rx) {
            for (int i = 0; i < in_h; i++) {
                const float *r = src + (size_t)i * in_w;
                float *o = rx + (size_t)i * out_w;
                for (int x = 0; x < out_w; x++) o[x] = tw[x].l0 * r[tw[x].i0] + tw[x].l1 * r[tw[x].i1];
            }
            for (int y = 0; y < out_h; y++) {
                const lin_tap ty = lin_tap_at(in_h, out_h, y);
                const float *a = rx + (size_t)ty.i0 * out_w, *b = rx + (size_t)ty.i1 * out_w;
                const float h0 = ty.l0, h1 = ty.l1;
                float *o = dst + (size_t)y * out_w;
                for (int x = 0; x < out_w; x++) o[x] = h0 * a[x] + h1 * b[x];
            }
            continue;
        }
        for (int y = 0; y < out_h; y++) {
            const lin_tap ty = lin_tap_at(in_h, out_h, y);
            const float *r0 = src + (size_t)ty.i0 * in_w;
            const float *r1 = src + (size_t)ty.i1 * in_w;
            const float h0 = ty.l0, h1 = ty.l1;
            float *o = dst + (size_t)y * out_w;
            for (int x = 0; x < out_w; x++) {
                const lin_tap t = tw ? tw[x] : lin_tap_at(in_w, out_w, x);
                o[x] = h0 * (t.l0 * r0[t.i0] + t.l1 * r0[t.i1]) + h1 * (t.l0 * r1[t.i0] + t.l1 * r1[t.i1]);
            }
        }
    }
    free(rx);
    free(tw);
}

typedef struct {
    int i[4];
    float w[4];
} cub_tap;

static cub_tap cub_tap_at(int in, int out, int d) {
    const float A = -0.75f;
    const float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.f;
    float src = scale * (float)d;
    float fl = floorf(src);
    int i = (int)fl;
    float x = src - fl;
    /* Keys cubic convolution: |s| <= 1 and 1 < |s| < 2 branches. */
    float x1 = x + 1.f, x2 = 1.f - x, x3 = 2.f - x;
    cub_tap t;
    t.w[0] = ((A * x1 - 5.f * A) * x1 + 8.f * A) * x1 - 4.f * A;
    t.w[1] = ((A + 2.f) * x - (A + 3.f)) * x * x + 1.f;
    t.w[2] = ((A + 2.f) * x2 - (A + 3.f)) * x2 * x2 + 1.f;
    t.w[3] = ((A * x3 - 5.f * A) * x3 + 8.f * A) * x3 - 4.f * A;
    for (int k = 0; k < 4; k++) {
        int j = i - 1 + k;
        t.i[k] = j < 0 ? 0 : (j > in - 1 ? in - 1 : j);
    }
    return t;
}

void uf_interp_bicubic_ac(const float *in, int channels, int in_h, int in_w, float *out, int out_h, int out_w) {
    UF_ASSERT(in_h > 0 && in_w > 0 && out_h > 0 && out_w > 0 && channels >= 0);
    cub_tap *tw = malloc(sizeof(cub_tap) * (size_t)out_w); /* NULL: recompute per pixel */
    if (tw)
        for (int x = 0; x < out_w; x++) tw[x] = cub_tap_at(in_w, out_w, x);
    for (int c = 0; c < channels; c++) {
        const float *src = in + (size_t)c * in_h * in_w;
        float *dst = out + (size_t)c * out_h * out_w;
        for (int y = 0; y < out_h; y++) {
            const cub_tap ty = cub_tap_at(in_h, out_h, y);
            float *o = dst + (size_t)y * out_w;
            for (int x = 0; x < out_w; x++) {
                const cub_tap tx = tw ? tw[x] : cub_tap_at(in_w, out_w, x);
                float acc = 0.f;
                for (int k = 0; k < 4; k++) {
                    const float *r = src + (size_t)ty.i[k] * in_w;
                    float row = tx.w[0] * r[tx.i[0]] + tx.w[1] * r[tx.i[1]] + tx.w[2] * r[tx.i[2]] +
                                tx.w[3] * r[tx.i[3]];
                    acc += ty.w[k] * row;
                }
                o[x] = acc;
            }
        }
    }
    free(tw);
}
