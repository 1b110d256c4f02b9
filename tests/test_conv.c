/* Convolution (im2col + GEMM) against the naive double-accumulating reference,
 * forward and backward, for the geometries uflow uses (batched and not). */
#include <stdlib.h>

#include "core/conv.h"
#include "core/tensor.h"
#include "harness.h"

static float frand(void) { return (float)rand() / RAND_MAX * 2.0f - 1.0f; }

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double maxref = 1e-12, maxdiff = 0.0;
    for (size_t i = 0; i < n; i++) {
        maxref = fmax(maxref, fabs(b[i]));
        maxdiff = fmax(maxdiff, fabs(a[i] - b[i]));
    }
    return maxdiff / maxref;
}

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
    double ey = max_rel_diff(y, y_ref, ny), ex = max_rel_diff(dx, dx_ref, nx);
    double ew = max_rel_diff(dw, dw_ref, nw), eb = max_rel_diff(db, db_ref, g.c_out);
    CHECK(ey < 1e-5 && ex < 1e-5 && ew < 1e-5 && eb < 1e-5,
          "n=%d cin=%d %dx%d cout=%d k=%d s=%d p=%d: rel err y %.2g dx %.2g dw %.2g db %.2g", g.n, g.c_in, g.h,
          g.w, g.c_out, g.k, g.stride, g.pad, ey, ex, ew, eb);
    uf_free(x), uf_free(w), uf_free(b), uf_free(dy), uf_free(y), uf_free(y_ref), uf_free(work);
    uf_free(dx), uf_free(dx_ref), uf_free(dw), uf_free(dw_ref), uf_free(db), uf_free(db_ref);
}

static void test_conv_geometries(void) {
    srand(11);
    check_geometry((uf_conv_geom){.n = 2, .c_in = 3, .h = 19, .w = 17, .c_out = 8, .k = 7, .stride = 2, .pad = 3});
    check_geometry((uf_conv_geom){.n = 3, .c_in = 5, .h = 9, .w = 11, .c_out = 6, .k = 3, .stride = 1, .pad = 1});
    check_geometry((uf_conv_geom){.n = 2, .c_in = 6, .h = 10, .w = 10, .c_out = 4, .k = 3, .stride = 2, .pad = 1});
    check_geometry((uf_conv_geom){.n = 3, .c_in = 7, .h = 6, .w = 5, .c_out = 9, .k = 1, .stride = 1, .pad = 0});
    check_geometry((uf_conv_geom){.n = 2, .c_in = 4, .h = 8, .w = 8, .c_out = 5, .k = 1, .stride = 2, .pad = 0});
}

/* A single image large enough to take the one-image path (no batching). */
static void test_conv_single_image_path(void) {
    srand(12);
    check_geometry((uf_conv_geom){.n = 2, .c_in = 3, .h = 96, .w = 96, .c_out = 4, .k = 3, .stride = 1, .pad = 1});
    check_geometry((uf_conv_geom){.n = 2, .c_in = 3, .h = 96, .w = 96, .c_out = 4, .k = 1, .stride = 1, .pad = 0});
}

int main(void) {
    UF_TEST(test_conv_geometries);
    UF_TEST(test_conv_single_image_path);
    return uf_test_summary();
}
