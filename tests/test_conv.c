/* Convolution (im2col + GEMM) against the naive double-accumulating reference,
 * forward and backward, for the geometries uflow uses (batched and not). */
#include <stdlib.h>
#include <string.h>

#include "core/conv.h"
#include "core/conv_blocked.h"
#include "core/tensor.h"
#include "harness.h"

static double g_worst; /* largest error seen, in units of its rounding bound */

static float frand(void) { return (float)rand() / RAND_MAX * 2.0f - 1.0f; }


static void check_geometry(uf_conv_geom g) {
    int ho = uf_conv_out_size(g.h, g.k, g.stride, g.pad), wo = uf_conv_out_size(g.w, g.k, g.stride, g.pad);
    size_t nx = (size_t)g.n * g.c_in * g.h * g.w, nw = (size_t)g.c_out * g.c_in * g.k * g.k;
    size_t ny = (size_t)g.n * g.c_out * ho * wo;
    float *x = uf_calloc(nx, 4), *w = uf_calloc(nw, 4), *b = uf_calloc(g.c_out, 4), *dy = uf_calloc(ny, 4);
    float *y = uf_calloc(ny, 4), *y_ref = uf_calloc(ny, 4), *work = uf_calloc(uf_conv2d_workspace(&g), 4);
    float *dx = uf_calloc(nx, 4), *dx_ref = uf_calloc(nx, 4), *dw = uf_calloc(nw, 4), *dw_ref = uf_calloc(nw, 4);
    float *db = uf_calloc(g.c_out, 4), *db_ref = uf_calloc(g.c_out, 4);
    for (size_t i = 0; i < nx; i++) x[i] = frand();
    for (size_t i = 0; i < nw; i++) w[i] = frand();
    for (int i = 0; i < g.c_out; i++) b[i] = frand();
    for (size_t i = 0; i < ny; i++) dy[i] = frand();
    /* Backward accumulates: start both from the same non-zero values. */
    for (size_t i = 0; i < nx; i++) dx[i] = dx_ref[i] = 0.5f;
    for (size_t i = 0; i < nw; i++) dw[i] = dw_ref[i] = -0.25f;

    uf_conv2d_forward(&g, x, w, b, y, work);
    uf_conv2d_forward_ref(&g, x, w, b, y_ref);
    uf_conv2d_backward(&g, x, w, dy, dx, dw, db, work);
    uf_conv2d_backward_ref(&g, x, w, dy, dx_ref, dw_ref, db_ref);
    /* sums of |terms|: the references on |x|, |w|, |b|, |dy| and the |initial| accumulators.
     * Terms per value: y c_in k^2 + bias; dx at most c_out k^2 (+ the initial value); dw and
     * db n ho wo (+ the initial value). */
    float *ax = uf_test_abs_copy(x, nx), *aw = uf_test_abs_copy(w, nw), *abias = uf_test_abs_copy(b, g.c_out), *ady = uf_test_abs_copy(dy, ny);
    float *my = uf_calloc(ny, 4), *mdx = uf_calloc(nx, 4), *mdw = uf_calloc(nw, 4), *mdb = uf_calloc(g.c_out, 4);
    for (size_t i = 0; i < nx; i++) mdx[i] = 0.5f;
    for (size_t i = 0; i < nw; i++) mdw[i] = 0.25f;
    uf_conv2d_forward_ref(&g, ax, aw, abias, my);
    uf_conv2d_backward_ref(&g, ax, aw, ady, mdx, mdw, mdb);
    double ky = g.c_in * g.k * g.k + 1, kx = g.c_out * g.k * g.k + 1, kw = (double)g.n * ho * wo + 1;
    double ey = uf_test_dot_err(y, y_ref, my, ny, ky), ex = uf_test_dot_err(dx, dx_ref, mdx, nx, kx);
    double ew = uf_test_dot_err(dw, dw_ref, mdw, nw, kw), eb = uf_test_dot_err(db, db_ref, mdb, g.c_out, kw);
    CHECK(ey <= 1 && ex <= 1 && ew <= 1 && eb <= 1,
          "n=%d cin=%d %dx%d cout=%d k=%d s=%d p=%d: error in units of the rounding bound: y %.2g dx %.2g dw %.2g db %.2g",
          g.n, g.c_in, g.h, g.w, g.c_out, g.k, g.stride, g.pad, ey, ex, ew, eb);
    g_worst = fmax(g_worst, fmax(fmax(ey, ex), fmax(ew, eb)));
    uf_free(x), uf_free(w), uf_free(b), uf_free(dy), uf_free(y), uf_free(y_ref), uf_free(work);
    uf_free(dx), uf_free(dx_ref), uf_free(dw), uf_free(dw_ref), uf_free(db), uf_free(db_ref);
    uf_free(ax), uf_free(aw), uf_free(abias), uf_free(ady), uf_free(my), uf_free(mdx), uf_free(mdw), uf_free(mdb);
}

static void test_conv_geometries(void) {
    srand(11);
    check_geometry((uf_conv_geom){.n = 2, .c_in = 3, .h = 19, .w = 17, .c_out = 8, .k = 7, .stride = 2, .pad = 3});
    check_geometry((uf_conv_geom){.n = 3, .c_in = 5, .h = 9, .w = 11, .c_out = 6, .k = 3, .stride = 1, .pad = 1});
    check_geometry((uf_conv_geom){.n = 2, .c_in = 6, .h = 10, .w = 10, .c_out = 4, .k = 3, .stride = 2, .pad = 1});
    check_geometry((uf_conv_geom){.n = 3, .c_in = 7, .h = 6, .w = 5, .c_out = 9, .k = 1, .stride = 1, .pad = 0});
    check_geometry((uf_conv_geom){.n = 2, .c_in = 4, .h = 8, .w = 8, .c_out = 5, .k = 1, .stride = 2, .pad = 0});
}

/* Images large enough for the forward's row-block path (several blocks, a partial last one). */
static void test_conv_single_image_path(void) {
    srand(12);
    check_geometry((uf_conv_geom){.n = 2, .c_in = 3, .h = 96, .w = 96, .c_out = 4, .k = 3, .stride = 1, .pad = 1});
    check_geometry((uf_conv_geom){.n = 2, .c_in = 3, .h = 96, .w = 96, .c_out = 4, .k = 1, .stride = 1, .pad = 0});
    check_geometry((uf_conv_geom){.n = 2, .c_in = 3, .h = 131, .w = 133, .c_out = 5, .k = 7, .stride = 2, .pad = 3});
    check_geometry((uf_conv_geom){.n = 1, .c_in = 2, .h = 130, .w = 70, .c_out = 3, .k = 1, .stride = 2, .pad = 0});
}

/* uf_conv2d_forward_ex: y = act(conv + b [+ y]) on both forward paths and the one-image tail. */
static void check_epilogue(uf_conv_geom g, int flags) {
    int ho = uf_conv_out_size(g.h, g.k, g.stride, g.pad), wo = uf_conv_out_size(g.w, g.k, g.stride, g.pad);
    size_t nx = (size_t)g.n * g.c_in * g.h * g.w, nw = (size_t)g.c_out * g.c_in * g.k * g.k;
    size_t ny = (size_t)g.n * g.c_out * ho * wo;
    float *x = uf_calloc(nx, 4), *w = uf_calloc(nw, 4), *b = uf_calloc(g.c_out, 4), *y = uf_calloc(ny, 4);
    float *y_ref = uf_calloc(ny, 4), *y0 = uf_calloc(ny, 4), *work = uf_calloc(uf_conv2d_forward_workspace(&g) + 1, 4);
    for (size_t i = 0; i < nx; i++) x[i] = frand();
    for (size_t i = 0; i < nw; i++) w[i] = frand();
    for (int i = 0; i < g.c_out; i++) b[i] = frand();
    for (size_t i = 0; i < ny; i++) y[i] = y0[i] = frand() * 3.0f;
    uf_conv2d_forward_ex(&g, x, w, b, y, flags, work);
    uf_conv2d_forward_ref(&g, x, w, b, y_ref);
    size_t zeros = 0;
    for (size_t i = 0; i < ny; i++) {
        if (flags & UF_CONV_ACCUMULATE) y_ref[i] += y0[i];
        if ((flags & UF_CONV_RELU) && y_ref[i] < 0.0f) y_ref[i] = 0.0f;
        zeros += y[i] == 0.0f;
    }
    /* |terms|: the reference on |x|, |w|, |b| (+ |y0|); ReLU only shrinks the error */
    float *ax = uf_test_abs_copy(x, nx), *aw = uf_test_abs_copy(w, nw), *abias = uf_test_abs_copy(b, g.c_out), *my = uf_calloc(ny, 4);
    uf_conv2d_forward_ref(&g, ax, aw, abias, my);
    if (flags & UF_CONV_ACCUMULATE)
        for (size_t i = 0; i < ny; i++) my[i] += fabsf(y0[i]);
    double e = uf_test_dot_err(y, y_ref, my, ny, g.c_in * g.k * g.k + 2);
    CHECK(e <= 1, "n=%d cin=%d %dx%d k=%d flags %d: error %.2g of the rounding bound", g.n, g.c_in, g.h, g.w, g.k,
          flags, e);
    g_worst = fmax(g_worst, e);
    uf_free(ax), uf_free(aw), uf_free(abias), uf_free(my);
    if (flags & UF_CONV_RELU) CHECK(zeros > ny / 10, "ReLU clipped only %zu of %zu", zeros, ny);
    uf_free(x), uf_free(w), uf_free(b), uf_free(y), uf_free(y_ref), uf_free(y0), uf_free(work);
}

static void test_conv_forward_epilogue(void) {
    srand(13);
    const uf_conv_geom geoms[] = {
        {.n = 4, .c_in = 2, .h = 50, .w = 80, .c_out = 3, .k = 3, .stride = 1, .pad = 1},  /* batched 3 + tail 1 */
        {.n = 3, .c_in = 6, .h = 9, .w = 9, .c_out = 5, .k = 1, .stride = 1, .pad = 0},    /* batched 1x1 */
        {.n = 2, .c_in = 3, .h = 70, .w = 66, .c_out = 4, .k = 3, .stride = 1, .pad = 1},  /* row blocks */
        {.n = 2, .c_in = 5, .h = 65, .w = 64, .c_out = 3, .k = 1, .stride = 1, .pad = 0},  /* 1x1 in place */
    };
    for (size_t i = 0; i < sizeof geoms / sizeof *geoms; i++)
        for (int flags = 0; flags < 4; flags++) check_epilogue(geoms[i], flags);
}

/* The same checks with oneDNN switched off: the im2col + SGEMM forward (the reference, and
 * the fallback where oneDNN has no kernel). */
static void without_dnnl(void (*fn)(void)) {
    uf_conv_set_dnnl(0);
    fn();
    uf_conv_set_dnnl(1);
}
static void test_conv_geometries_im2col(void) { without_dnnl(test_conv_geometries); }
static void test_conv_single_image_path_im2col(void) { without_dnnl(test_conv_single_image_path); }
static void test_conv_forward_epilogue_im2col(void) { without_dnnl(test_conv_forward_epilogue); }

/* The channel-blocked kernels (conv_blocked.h) against the double reference, through
 * uf_cblk_from_nchw / uf_cblk_to_nchw: forward (+ ReLU), backward-data and the
 * accumulating backward-weights, on channel counts that do and do not fill the lanes. */
static void check_blocked(uf_conv_geom g, double tol, double *worst) {
    CHECK(uf_cblk_supported(&g, 1), "cin=%d cout=%d k=%d: blocked kernels refused", g.c_in, g.c_out, g.k);
    const size_t hw = (size_t)g.h * g.w; /* stride 1, same padding: the output is H x W too */
    size_t nx = (size_t)g.n * g.c_in * hw, nw = (size_t)g.c_out * g.c_in * g.k * g.k, ny = (size_t)g.n * g.c_out * hw;
    float *x = uf_calloc(nx, 4), *w = uf_calloc(nw, 4), *b = uf_calloc(g.c_out, 4), *dy = uf_calloc(ny, 4);
    float *xb = uf_calloc(uf_cblk_floats(g.n, g.c_in, hw), 4), *yb = uf_calloc(uf_cblk_floats(g.n, g.c_out, hw), 4);
    float *dyb = uf_calloc(uf_cblk_floats(g.n, g.c_out, hw), 4), *dxb = uf_calloc(uf_cblk_floats(g.n, g.c_in, hw), 4);
    float *y = uf_calloc(ny, 4), *y_ref = uf_calloc(ny, 4), *dx = uf_calloc(nx, 4), *dx_ref = uf_calloc(nx, 4);
    float *dw = uf_calloc(nw, 4), *dw_ref = uf_calloc(nw, 4), *db = uf_calloc(g.c_out, 4), *db_ref = uf_calloc(g.c_out, 4);
    for (size_t i = 0; i < nx; i++) x[i] = frand();
    for (size_t i = 0; i < nw; i++) w[i] = frand(), dw[i] = dw_ref[i] = -0.25f;
    for (int i = 0; i < g.c_out; i++) b[i] = frand();
    for (size_t i = 0; i < ny; i++) dy[i] = frand();
    uf_cblk_from_nchw(g.n, g.c_in, hw, x, g.c_in, xb);
    uf_cblk_from_nchw(g.n, g.c_out, hw, dy, g.c_out, dyb);
    uf_cblk_to_nchw(g.n, g.c_in, hw, xb, dx, g.c_in, 0);
    CHECK(memcmp(dx, x, 4 * nx) == 0, "blocked layout round trip changed the values");
    uf_conv2d_forward_ref(&g, x, w, b, y_ref);
    uf_conv2d_backward_ref(&g, x, w, dy, dx_ref, dw_ref, db_ref);
    float *ax = uf_test_abs_copy(x, nx), *aw = uf_test_abs_copy(w, nw), *abias = uf_test_abs_copy(b, g.c_out), *ady = uf_test_abs_copy(dy, ny);
    float *my = uf_calloc(ny, 4), *mdx = uf_calloc(nx, 4), *mdw = uf_calloc(nw, 4), *mdb = uf_calloc(g.c_out, 4);
    for (size_t i = 0; i < nw; i++) mdw[i] = 0.25f;
    uf_conv2d_forward_ref(&g, ax, aw, abias, my);
    uf_conv2d_backward_ref(&g, ax, aw, ady, mdx, mdw, mdb);
    double ky = g.c_in * g.k * g.k + 1, kx = g.c_out * g.k * g.k, kw = (double)g.n * hw + 1;
    for (int relu = 0; relu < 2; relu++) {
        CHECK(uf_cblk_conv_forward(&g, xb, w, b, yb, relu ? UF_CONV_RELU : 0), "blocked forward did not run");
        uf_cblk_to_nchw(g.n, g.c_out, hw, yb, y, g.c_out, 0);
        float *want = uf_calloc(ny, 4);
        for (size_t i = 0; i < ny; i++) want[i] = relu && y_ref[i] < 0.0f ? 0.0f : y_ref[i];
        double e = uf_test_dot_err(y, want, my, ny, ky);
        CHECK(e <= tol, "cin=%d cout=%d k=%d relu %d: forward error %.2g of the bound", g.c_in, g.c_out, g.k, relu, e);
        *worst = fmax(*worst, e);
        uf_free(want);
    }
    /* the padding lanes of an output are zero (the next layer reads them) */
    const int L = uf_cblk_lanes(), nb = (g.c_out + L - 1) / L;
    int pad_ok = 1;
    for (int n = 0; n < g.n; n++)
        for (size_t i = 0; i < hw; i++)
            for (int l = g.c_out - (nb - 1) * L; l < L; l++) pad_ok &= yb[(((size_t)n * nb + nb - 1) * hw + i) * L + l] == 0.0f;
    CHECK(pad_ok, "cout=%d: padding lanes of the output are not zero", g.c_out);
    CHECK(uf_cblk_conv_backward_data(&g, dyb, w, dxb), "blocked backward-data did not run");
    memset(dx, 0, 4 * nx);
    uf_cblk_to_nchw(g.n, g.c_in, hw, dxb, dx, g.c_in, 1);
    CHECK(uf_cblk_conv_backward_weights(&g, xb, dyb, dw, db), "blocked backward-weights did not run");
    double ex = uf_test_dot_err(dx, dx_ref, mdx, nx, kx), ew = uf_test_dot_err(dw, dw_ref, mdw, nw, kw), eb = uf_test_dot_err(db, db_ref, mdb, g.c_out, kw);
    CHECK(ex <= tol && ew <= tol && eb <= tol, "cin=%d cout=%d k=%d: error of the bound: dx %.2g dw %.2g db %.2g",
          g.c_in, g.c_out, g.k, ex, ew, eb);
    *worst = fmax(*worst, fmax(ex, fmax(ew, eb)));
    uf_free(ax), uf_free(aw), uf_free(abias), uf_free(ady), uf_free(my), uf_free(mdx), uf_free(mdw), uf_free(mdb);
    uf_free(x), uf_free(w), uf_free(b), uf_free(dy), uf_free(xb), uf_free(yb), uf_free(dyb), uf_free(dxb);
    uf_free(y), uf_free(y_ref), uf_free(dx), uf_free(dx_ref), uf_free(dw), uf_free(dw_ref), uf_free(db), uf_free(db_ref);
}

static void test_conv_blocked(void) {
    if (!uf_cblk_lanes()) {
        printf("  SKIP: oneDNN has no blocked kernels on this CPU (needs AVX2); the plain path is tested above\n");
        return;
    }
    srand(14);
    const int L = uf_cblk_lanes();
    const uf_conv_geom geoms[] = {
        {.n = 2, .c_in = L + 1, .h = 9, .w = 7, .c_out = 10, .k = 3, .stride = 1, .pad = 1},
        {.n = 3, .c_in = 21, .h = 12, .w = 12, .c_out = 42, .k = 3, .stride = 1, .pad = 1},
        {.n = 2, .c_in = 16, .h = 8, .w = 6, .c_out = 32, .k = 1, .stride = 1, .pad = 0},
        {.n = 2, .c_in = 7, .h = 5, .w = 11, .c_out = 3, .k = 1, .stride = 1, .pad = 0},
        {.n = 1, .c_in = 42, .h = 64, .w = 64, .c_out = 84, .k = 3, .stride = 1, .pad = 1},   /* the flow's stage 0 */
        {.n = 4, .c_in = 128, .h = 16, .w = 16, .c_out = 256, .k = 3, .stride = 1, .pad = 1}, /* stage 2 */
    };
    const int ng = (int)(sizeof geoms / sizeof *geoms);
    /* direct kernels: within the dot-product rounding bound */
    uf_cblk_set_winograd(0);
    /* no direct blocked 3x3 kernel for fewer input channels than lanes (8 with AVX2, 16
     * with AVX-512): refused, not wrong; one more than a block (9 / 17) runs */
    CHECK(!uf_cblk_supported(&(uf_conv_geom){.n = 2, .c_in = L - 3, .h = 9, .w = 7, .c_out = 10, .k = 3, .stride = 1, .pad = 1}, 1),
          "a direct 3x3 kernel on %d channels (%d lanes) is expected to be refused", L - 3, L);
    for (int i = 0; i < ng; i++) check_blocked(geoms[i], 1.0, &g_worst);
    uf_cblk_set_winograd(1);
    /* Winograd (AVX-512 only: F(4x4, 3x3), F(2x2, 3x3) at batch 1): its transforms add
     * rounding error, but it stays inside the same worst-case bound (a fifth of it measured) */
    double wino_worst = 0;
    int n_wino = 0;
    for (int i = 0; i < ng; i++) {
        if (!uf_cblk_supported(&geoms[i], 1) || !uf_cblk_winograd(&geoms[i], 1)) continue;
        n_wino++;
        check_blocked(geoms[i], 1.0, &wino_worst);
    }
    if (L == 16)
        CHECK(uf_cblk_winograd(&geoms[4], 1) && uf_cblk_winograd(&geoms[5], 1),
              "AVX-512: the flow's 3x3 convolutions are expected to run as Winograd");
    printf("  Winograd: %d geometries, worst error %.3g of the rounding bound\n", n_wino, wino_worst);
}

int main(void) {
    UF_TEST(test_conv_geometries);
    UF_TEST(test_conv_single_image_path);
    UF_TEST(test_conv_forward_epilogue);
    UF_TEST(test_conv_geometries_im2col);
    UF_TEST(test_conv_single_image_path_im2col);
    UF_TEST(test_conv_forward_epilogue_im2col);
    UF_TEST(test_conv_blocked);
    printf("  worst conv error: %.3f of its rounding bound\n", g_worst);
    return uf_test_summary();
}
