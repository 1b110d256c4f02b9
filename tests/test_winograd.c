/* The AVX2 Winograd F(4x4, 3x3) kernels (core/conv_winograd.h) against the double
 * reference of conv.h, on every CPU with AVX2 (whatever lanes oneDNN picks here): forward
 * (bias, ReLU, accumulate), backward-data and the accumulating backward-weights, within the
 * dot-product rounding bound of tests/test_conv.c (its largest fraction over 8 seeds was
 * 0.4); image sizes that are and are not multiples of the 4x4 tile, channel counts that do
 * and do not fill the 8 lanes, 1 to 3 threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/conv.h"
#include "core/conv_winograd.h"
#include "core/tensor.h"
#include "harness.h"

static float frand(void) { return (float)rand() / RAND_MAX * 2.0f - 1.0f; }


/* The 8-lane blocked layout, written here independently of conv_blocked.h (whose lanes
 * follow the CPU): dst (n, ceil(c/8), hw, 8), padding lanes set to `pad`. */
static float *to_blocked8(int n, int c, size_t hw, const float *src, float pad) {
    const int nb = (c + 7) / 8;
    float *d = uf_alloc(sizeof(float) * (size_t)n * nb * hw * 8);
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < nb * 8; ch++)
            for (size_t i = 0; i < hw; i++)
                d[(((size_t)b * nb + ch / 8) * hw + i) * 8 + ch % 8] = ch < c ? src[((size_t)b * c + ch) * hw + i] : pad;
    return d;
}

/* channels [0, c) back to nchw; *pad_ok = 0 when a padding lane is not zero. */
static void from_blocked8(int n, int c, size_t hw, const float *src, float *dst, int *pad_ok) {
    const int nb = (c + 7) / 8;
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < nb * 8; ch++)
            for (size_t i = 0; i < hw; i++) {
                float v = src[(((size_t)b * nb + ch / 8) * hw + i) * 8 + ch % 8];
                if (ch < c)
                    dst[((size_t)b * c + ch) * hw + i] = v;
                else if (v != 0.0f)
                    *pad_ok = 0;
            }
}

static double g_worst;

static void check_winograd(uf_conv_geom g, int threads) {
    CHECK(uf_wino_fits(&g), "3x3 stride 1 pad 1 is expected to fit");
    const size_t hw = (size_t)g.h * g.w;
    const size_t nx = (size_t)g.n * g.c_in * hw, nw = (size_t)g.c_out * g.c_in * 9, ny = (size_t)g.n * g.c_out * hw;
    float *x = uf_alloc(4 * nx), *w = uf_alloc(4 * nw), *b = uf_alloc(4 * g.c_out), *dy = uf_alloc(4 * ny);
    float *y0 = uf_alloc(4 * ny);
    for (size_t i = 0; i < nx; i++) x[i] = frand();
    for (size_t i = 0; i < nw; i++) w[i] = frand();
    for (int i = 0; i < g.c_out; i++) b[i] = frand();
    for (size_t i = 0; i < ny; i++) dy[i] = frand(), y0[i] = frand();
    float *xb = to_blocked8(g.n, g.c_in, hw, x, 0.0f), *dyb = to_blocked8(g.n, g.c_out, hw, dy, 0.0f);
    float *scratch = uf_alloc(4 * uf_wino_scratch_floats(&g, threads, 1));
    float *u = uf_alloc(4 * uf_wino_weights_floats(g.c_in, g.c_out)), *ut = uf_alloc(4 * uf_wino_weights_floats(g.c_out, g.c_in));
    uf_wino_transform_weights(g.c_in, g.c_out, w, 0, u);
    uf_wino_transform_weights(g.c_in, g.c_out, w, 1, ut);

    /* the references, and the sums of |terms| that scale the bound */
    float *y_ref = uf_calloc(ny, 4), *my = uf_calloc(ny, 4), *dx_ref = uf_calloc(nx, 4), *mdx = uf_calloc(nx, 4);
    float *dw_ref = uf_alloc(4 * nw), *mdw = uf_alloc(4 * nw), *db_ref = uf_calloc(g.c_out, 4), *mdb = uf_calloc(g.c_out, 4);
    for (size_t i = 0; i < nw; i++) dw_ref[i] = -0.25f, mdw[i] = 0.25f;
    float *ax = uf_test_abs_copy(x, nx), *aw = uf_test_abs_copy(w, nw), *ab = uf_test_abs_copy(b, g.c_out), *ady = uf_test_abs_copy(dy, ny);
    uf_conv2d_forward_ref(&g, x, w, b, y_ref);
    uf_conv2d_forward_ref(&g, ax, aw, ab, my);
    uf_conv2d_backward_ref(&g, x, w, dy, dx_ref, dw_ref, db_ref);
    uf_conv2d_backward_ref(&g, ax, aw, ady, mdx, mdw, mdb);
    const double ky = g.c_in * 9 + 2, kx = g.c_out * 9, kw = (double)g.n * hw + 1;

    /* forward: plain, + ReLU, accumulating onto y0 + ReLU */
    float *y = uf_alloc(4 * ny), *want = uf_alloc(4 * ny), *mag = uf_alloc(4 * ny);
    for (int flags = 0; flags <= (UF_CONV_ACCUMULATE | UF_CONV_RELU); flags++) {
        if (flags == UF_CONV_ACCUMULATE) continue; /* covered with the ReLU */
        float *yb = to_blocked8(g.n, g.c_out, hw, y0, 0.0f);
        uf_wino_forward(&g, xb, u, b, yb, flags, threads, scratch);
        int pad_ok = 1;
        from_blocked8(g.n, g.c_out, hw, yb, y, &pad_ok);
        CHECK(pad_ok, "cout=%d flags %d: padding lanes of the output are not zero", g.c_out, flags);
        size_t zeros = 0;
        for (size_t i = 0; i < ny; i++) {
            float v = y_ref[i] + (flags & UF_CONV_ACCUMULATE ? y0[i] : 0.0f);
            want[i] = (flags & UF_CONV_RELU) && v < 0.0f ? 0.0f : v;
            mag[i] = my[i] + (flags & UF_CONV_ACCUMULATE ? fabsf(y0[i]) : 0.0f);
            zeros += y[i] == 0.0f;
        }
        if ((flags & UF_CONV_RELU) && ny >= 20) CHECK(zeros > ny / 10, "ReLU clipped only %zu of %zu", zeros, ny);
        double e = uf_test_dot_err(y, want, mag, ny, ky);
        CHECK(e <= 1.0, "n=%d %dx%d cin=%d cout=%d flags %d threads %d: forward error %.2g of the bound", g.n, g.h,
              g.w, g.c_in, g.c_out, flags, threads, e);
        g_worst = fmax(g_worst, e);
        uf_free(yb);
    }
    /* backward-data (overwrites dx: start from garbage) */
    float *dx = uf_alloc(4 * nx), *dxb = to_blocked8(g.n, g.c_in, hw, x, 0.0f);
    uf_wino_backward_data(&g, dyb, ut, dxb, threads, scratch);
    int pad_ok = 1;
    from_blocked8(g.n, g.c_in, hw, dxb, dx, &pad_ok);
    CHECK(pad_ok, "cin=%d: padding lanes of dx are not zero", g.c_in);
    double ex = uf_test_dot_err(dx, dx_ref, mdx, nx, kx);
    /* backward-weights accumulates onto what dw and db hold */
    float *dw = uf_alloc(4 * nw), *db = uf_alloc(4 * g.c_out);
    for (size_t i = 0; i < nw; i++) dw[i] = -0.25f;
    for (int i = 0; i < g.c_out; i++) db[i] = 0.0f;
    uf_wino_backward_weights(&g, xb, dyb, dw, db, threads, scratch);
    double ew = uf_test_dot_err(dw, dw_ref, mdw, nw, kw), eb = uf_test_dot_err(db, db_ref, mdb, g.c_out, kw);
    CHECK(ex <= 1.0 && ew <= 1.0 && eb <= 1.0,
          "n=%d %dx%d cin=%d cout=%d threads %d: error of the bound: dx %.2g dw %.2g db %.2g", g.n, g.h, g.w, g.c_in,
          g.c_out, threads, ex, ew, eb);
    g_worst = fmax(g_worst, fmax(ex, fmax(ew, eb)));

    uf_free(x), uf_free(w), uf_free(b), uf_free(dy), uf_free(y0), uf_free(xb), uf_free(dyb), uf_free(scratch);
    uf_free(u), uf_free(ut), uf_free(y_ref), uf_free(my), uf_free(dx_ref), uf_free(mdx), uf_free(dw_ref);
    uf_free(mdw), uf_free(db_ref), uf_free(mdb), uf_free(ax), uf_free(aw), uf_free(ab), uf_free(ady);
    uf_free(y), uf_free(want), uf_free(mag), uf_free(dx), uf_free(dxb), uf_free(dw), uf_free(db);
}

static void test_winograd_passes(void) {
    if (!uf_wino_available()) {
        printf("  SKIP: this CPU has no AVX2 + FMA (the kernels' instructions)\n");
        return;
    }
    srand(21);
    const uf_conv_geom geoms[] = {
        {.n = 1, .c_in = 8, .h = 1, .w = 1, .c_out = 8, .k = 3, .stride = 1, .pad = 1},      /* one partial tile */
        {.n = 2, .c_in = 9, .h = 9, .w = 7, .c_out = 10, .k = 3, .stride = 1, .pad = 1},     /* partial tiles, lanes */
        {.n = 3, .c_in = 21, .h = 12, .w = 13, .c_out = 42, .k = 3, .stride = 1, .pad = 1},
        {.n = 1, .c_in = 8, .h = 5, .w = 30, .c_out = 11, .k = 3, .stride = 1, .pad = 1},
        {.n = 1, .c_in = 42, .h = 64, .w = 64, .c_out = 84, .k = 3, .stride = 1, .pad = 1},  /* the flow's stage 0 */
        {.n = 4, .c_in = 128, .h = 16, .w = 16, .c_out = 256, .k = 3, .stride = 1, .pad = 1}, /* stage 2 */
    };
    const int ng = (int)(sizeof geoms / sizeof *geoms);
    for (int i = 0; i < ng; i++)
        for (int threads = 1; threads <= 3; threads++)
            if (i < ng - 2 || threads == 2) check_winograd(geoms[i], threads);
    /* fewer than 8 channels are refused: too few products to average the transforms' rounding
     * (measured up to 12x the bound on one channel) */
    CHECK(!uf_wino_fits(&(uf_conv_geom){.n = 1, .c_in = 3, .h = 8, .w = 8, .c_out = 16, .k = 3, .stride = 1, .pad = 1}) &&
          !uf_wino_fits(&(uf_conv_geom){.n = 1, .c_in = 16, .h = 8, .w = 8, .c_out = 7, .k = 3, .stride = 1, .pad = 1}),
          "fewer than 8 channels are expected to be refused");
    printf("  worst error %.3g of the rounding bound\n", g_worst);
}

/* Backward-weights sums per thread: a given thread count gives the same bits run after
 * run; the forward does not depend on the thread count at all. */
static void test_winograd_deterministic(void) {
    if (!uf_wino_available()) return;
    srand(22);
    const uf_conv_geom g = {.n = 2, .c_in = 16, .h = 20, .w = 20, .c_out = 24, .k = 3, .stride = 1, .pad = 1};
    const size_t hw = 400, nx = 2 * 16 * hw, ny = 2 * 24 * hw, nw = 24 * 16 * 9;
    float *x = uf_alloc(4 * nx), *dy = uf_alloc(4 * ny), *w = uf_alloc(4 * nw);
    for (size_t i = 0; i < nx; i++) x[i] = frand();
    for (size_t i = 0; i < ny; i++) dy[i] = frand();
    for (size_t i = 0; i < nw; i++) w[i] = frand();
    float *xb = to_blocked8(2, 16, hw, x, 0.0f), *dyb = to_blocked8(2, 24, hw, dy, 0.0f);
    float *u = uf_alloc(4 * uf_wino_weights_floats(16, 24)), *s = uf_alloc(4 * uf_wino_scratch_floats(&g, 3, 1));
    uf_wino_transform_weights(16, 24, w, 0, u);
    float *y1 = uf_calloc(ny, 4), *y3 = uf_calloc(ny, 4), *dw1 = uf_calloc(nw, 4), *dw2 = uf_calloc(nw, 4);
    uf_wino_forward(&g, xb, u, NULL, y1, 0, 1, s);
    uf_wino_forward(&g, xb, u, NULL, y3, 0, 3, s);
    CHECK(memcmp(y1, y3, 4 * ny) == 0, "the forward changed with the thread count");
    uf_wino_backward_weights(&g, xb, dyb, dw1, NULL, 3, s);
    uf_wino_backward_weights(&g, xb, dyb, dw2, NULL, 3, s);
    CHECK(memcmp(dw1, dw2, 4 * nw) == 0, "backward-weights changed between two runs");
    uf_free(x), uf_free(dy), uf_free(w), uf_free(xb), uf_free(dyb), uf_free(u), uf_free(s);
    uf_free(y1), uf_free(y3), uf_free(dw1), uf_free(dw2);
}

int main(void) {
    UF_TEST(test_winograd_passes);
    UF_TEST(test_winograd_deterministic);
    return uf_test_summary();
}
