/* Anomaly map (spec 6) vs a torch computation on random latents. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "detect/anomaly_map.h"
#include "harness.h"
#include "tref.h"

static void run_case(const tref_file *f, int k, int nscales) {
    uf_latent_view v[4];
    char name[32];
    for (int l = 0; l < nscales; l++) {
        snprintf(name, sizeof name, "c%d_z%d", k, l);
        const tref_tensor *t = tref_get(f, name);
        CHECK(t != NULL, "%s", name);
        if (!t) return;
        v[l] = (uf_latent_view){t->data, (int)t->shape[0], (int)t->shape[1], (int)t->shape[2]};
    }
    snprintf(name, sizeof name, "c%d_amap", k);
    const tref_tensor *ref = tref_get(f, name);
    if (!ref) return;
    int oh = (int)ref->shape[0], ow = (int)ref->shape[1];
    float *a = malloc(sizeof(float) * oh * ow), score = 0;
    CHECK(uf_anomaly_map(v, nscales, oh, ow, a, &score) == UF_OK, "%s", uf_last_error());
    const float *r = ref->data;
    double err = 0, rmax = -1;
    for (int i = 0; i < oh * ow; i++) {
        err = fmax(err, fabs((double)a[i] - r[i]));
        rmax = fmax(rmax, r[i]);
    }
    CHECK(err <= 1e-5, "case %d: max abs err %g", k, err);
    CHECK_CLOSE(score, rmax, 1e-5, 0);
    printf("  case %d: %d scales -> %dx%d, max abs err %.2e, image score %.6f\n", k, nscales, oh, ow, err, score);
    free(a);
}

static void test_anomaly_map_vs_torch(void) {
    tref_file *f = tref_open("tests/data/detect/anomaly_map.safetensors");
    CHECK(f != NULL, "reference file");
    if (!f) return;
    run_case(f, 0, 2);
    run_case(f, 1, 3);
    tref_close(f);
}

static void test_anomaly_map_errors(void) {
    float z[8] = {0, 1, 2, 3, 4, 5, 6, NAN}, a[16];
    uf_latent_view v = {z, 2, 2, 2};
    CHECK(uf_anomaly_map(&v, 1, 4, 4, a, NULL) == UF_ERR, "NaN latent must fail");
    CHECK(strstr(uf_last_error(), "non-finite") != NULL, "%s", uf_last_error());
    v.c = 0;
    CHECK(uf_anomaly_map(&v, 1, 4, 4, a, NULL) == UF_ERR, "C=0 must fail");
    CHECK(uf_anomaly_map(&v, 0, 4, 4, a, NULL) == UF_ERR, "no scales must fail");
    /* all-zero latents: P = 1 everywhere, A = 0 */
    float zero[8] = {0};
    v = (uf_latent_view){zero, 2, 2, 2};
    float s = 1;
    CHECK(uf_anomaly_map(&v, 1, 4, 4, a, &s) == UF_OK, "%s", uf_last_error());
    CHECK(s == 0.f && a[5] == 0.f, "A of zero latents %g", s);
}

int main(void) {
    UF_TEST(test_anomaly_map_vs_torch);
    UF_TEST(test_anomaly_map_errors);
    return uf_test_summary();
}
