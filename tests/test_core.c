/* Core: tensors, arena, BLAS loading and GEMM against the naive reference. */
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/vmath.h"
#include <math.h>
#include "harness.h"

static void test_tensor_alloc(void) {
    uf_tensor *t = uf_tensor_new4(2, 3, 4, 5);
    CHECK(t != NULL, "%s", uf_last_error());
    if (!t) return;
    CHECK(uf_tensor_numel(t) == 120, "numel %lld", (long long)uf_tensor_numel(t));
    CHECK(((uintptr_t)t->data % UF_ALIGN) == 0, "alignment");
    char buf[64];
    CHECK(strcmp(uf_shape_str(t->ndim, t->shape, buf, sizeof buf), "[2, 3, 4, 5]") == 0, "%s", buf);
    uf_tensor_free(t);
    int64_t huge[2] = {INT64_C(1) << 40, INT64_C(1) << 40};
    CHECK(uf_tensor_new(2, huge) == NULL, "overflowing shape must fail");
    CHECK(strstr(uf_last_error(), "overflow") != NULL, "%s", uf_last_error());
}

static void test_arena(void) {
    uf_arena a;
    CHECK(uf_arena_init(&a, 1024) == UF_OK, "init");
    float *x = uf_arena_floats(&a, 10);
    float *y = uf_arena_floats(&a, 10);
    CHECK(x && y && ((uintptr_t)y % UF_ALIGN) == 0 && y >= x + 10, "layout");
    CHECK(uf_arena_floats(&a, 1000) == NULL, "overfull arena must fail");
    uf_arena_reset(&a);
    CHECK(uf_arena_floats(&a, 200) != NULL, "after reset");
    uf_arena_free(&a);
}

static void test_sgemm_matches_reference(void) {
    CHECK(uf_blas_init() == UF_OK, "%s", uf_last_error());
    srand(7);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int m = 37, n = 53, k = 71;
            float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
            float *c1 = malloc(sizeof(float) * m * n), *c2 = malloc(sizeof(float) * m * n);
            for (int i = 0; i < m * k; i++) a[i] = (float)rand() / RAND_MAX - 0.5f;
            for (int i = 0; i < k * n; i++) b[i] = (float)rand() / RAND_MAX - 0.5f;
            for (int i = 0; i < m * n; i++) c1[i] = c2[i] = (float)i * 0.01f;
            int lda = ta ? m : k, ldb = tb ? k : n;
            uf_sgemm(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, c1, n);
            uf_sgemm_ref(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, c2, n);
            /* per element: |c1 - c2| <= tol(k) * (|alpha| sum_p |a_ip b_pj| + |beta c0|), the
             * magnitudes from the reference run on |a|, |b|, |c0| */
            float *aa = malloc(sizeof(float) * m * k), *ab = malloc(sizeof(float) * k * n), *mag = malloc(sizeof(float) * m * n);
            for (int i = 0; i < m * k; i++) aa[i] = fabsf(a[i]);
            for (int i = 0; i < k * n; i++) ab[i] = fabsf(b[i]);
            for (int i = 0; i < m * n; i++) mag[i] = (float)i * 0.01f;
            uf_sgemm_ref(ta, tb, m, n, k, 0.7f, aa, lda, ab, ldb, 0.3f, mag, n);
            double worst = 0; /* largest |c1 - c2| / bound */
            for (int i = 0; i < m * n; i++) worst = fmax(worst, fabs(c1[i] - c2[i]) / (uf_test_dot_tol(k) * mag[i]));
            CHECK(worst <= 1.0, "ta=%d tb=%d: error %.3g of the k=%d rounding bound", ta, tb, worst, k);
            printf("  sgemm ta=%d tb=%d k=%d: worst error %.3f of the rounding bound\n", ta, tb, k, worst);
            free(a), free(b), free(c1), free(c2), free(aa), free(ab), free(mag);
        }
    CHECK(strcmp(uf_blas_corename(), "none") != 0, "corename %s", uf_blas_corename());
}

/* Distance in units in the last place of float between a float and the exact value
 * (double), measured in the ulp of the exact value rounded to float. */
static double ulp_err(float got, double want) {
    float wf = (float)want;
    double ulp = fabs((double)nextafterf(wf, INFINITY) - (double)wf);
    if (ulp == 0.0 || isinf(ulp)) ulp = fabs((double)wf - (double)nextafterf(wf, 0.0f));
    if (fabs(want) < 1.1754943508222875e-38) ulp = 1.4e-45; /* subnormal: absolute */
    return fabs((double)got - want) / ulp;
}

/* uf_vexpf / uf_vtanhf (vmath.h) against double exp / tanh: every 61st float bit
 * pattern of both signs (a few million values over the whole range), then the
 * special values. Loops are written so the compiler vectorises them, as in the flow. */
static void test_vmath(void) {
    enum { N = 1 << 16 };
    static float x[N], ye[N], yt[N];
    double worst_e = 0, worst_t = 0;
    float at_e = 0, at_t = 0;
    for (uint64_t u0 = 0; u0 < 0x100000000ull; u0 += (uint64_t)61 * N) {
        int n = 0;
        for (uint64_t u = u0; n < N; u += 61, n++) {
            uint32_t b = (uint32_t)u;
            float f = uf_bits_to_float(b);
            x[n] = isnan(f) ? 0.5f : f;
        }
        for (int i = 0; i < N; i++) ye[i] = uf_vexpf(x[i]);
        for (int i = 0; i < N; i++) yt[i] = uf_vtanhf(x[i]);
        for (int i = 0; i < N; i++) {
            double we = exp((double)x[i]), wt = tanh((double)x[i]);
            double ee = (we > 3.4028234663852886e38) ? (isinf(ye[i]) ? 0.0 : 1e9)
                        : (we < 1.1754943508222875e-38 ? (fabs(ye[i] - we) <= 1e-38 ? 0.0 : 1e9) : ulp_err(ye[i], we));
            double et = ulp_err(yt[i], wt);
            if (ee > worst_e) worst_e = ee, at_e = x[i];
            if (et > worst_t) worst_t = et, at_t = x[i];
        }
    }
    printf("  uf_vexpf worst %.2f ulp (at %.9g), uf_vtanhf worst %.2f ulp (at %.9g)\n", worst_e, at_e, worst_t, at_t);
    CHECK(worst_e <= 2.0, "uf_vexpf: %.2f ulp at %.9g", worst_e, at_e);
    CHECK(worst_t <= 3.0, "uf_vtanhf: %.2f ulp at %.9g", worst_t, at_t);
    CHECK(isnan(uf_vexpf(NAN)) && isnan(uf_vtanhf(NAN)), "NaN must propagate");
    CHECK(isinf(uf_vexpf(INFINITY)) && uf_vexpf(-INFINITY) == 0.0f && uf_vexpf(89.0f) == INFINITY, "exp overflow");
    CHECK(uf_vexpf(-200.0f) == 0.0f && uf_vexpf(0.0f) == 1.0f, "exp underflow / exp(0)");
    CHECK(uf_vtanhf(INFINITY) == 1.0f && uf_vtanhf(-INFINITY) == -1.0f && uf_vtanhf(0.0f) == 0.0f, "tanh limits");
}

int main(void) {
    UF_TEST(test_tensor_alloc);
    UF_TEST(test_arena);
    UF_TEST(test_sgemm_matches_reference);
    UF_TEST(test_vmath);
    return uf_test_summary();
}
