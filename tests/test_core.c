/* Core: tensors, arena, BLAS loading and GEMM against the naive reference. */
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
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

int main(void) {
    UF_TEST(test_tensor_alloc);
    UF_TEST(test_arena);
    UF_TEST(test_sgemm_matches_reference);
    return uf_test_summary();
}
