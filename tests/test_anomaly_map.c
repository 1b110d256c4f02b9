/* Anomaly map (spec 6) vs a torch computation on random latents; its smoothing vs scipy. */
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

/* uf_map_smooth against scipy.ndimage.gaussian_filter1d (tools/make_detect_refs.py smooth). The
 * sums have at most 129 taps of weights summing to 1 over values in [0, 1]: 1e-6 is a few ulps. */
static void test_map_smooth_vs_scipy(void) {
    tref_file *f = tref_open("tests/data/detect/map_smooth.safetensors");
    CHECK(f != NULL, "reference file");
    if (!f) return;
    char name[32];
    for (int k = 0; k < 5; k++) {
        snprintf(name, sizeof name, "c%d_map", k);
        const tref_tensor *in = tref_get(f, name);
        snprintf(name, sizeof name, "c%d_sigma", k);
        const tref_tensor *sg = tref_get(f, name);
        snprintf(name, sizeof name, "c%d_ref", k);
        const tref_tensor *ref = tref_get(f, name);
        CHECK(in && sg && ref, "case %d in the reference file", k);
        if (!in || !sg || !ref) break;
        const int h = (int)in->shape[0], w = (int)in->shape[1];
        const float *sigma = sg->data, *want = ref->data;
        float *m = malloc(sizeof(float) * h * w);
        memcpy(m, in->data, sizeof(float) * h * w);
        CHECK(uf_map_smooth(m, h, w, sigma[0], sigma[1]) == UF_OK, "%s", uf_last_error());
        double err = 0;
        for (int i = 0; i < h * w; i++) err = fmax(err, fabs((double)m[i] - want[i]));
        CHECK(err <= 1e-6, "case %d: max abs err %g", k, err);
        printf("  case %d: %dx%d, sigma %.1f x %.1f: max abs err %.2e\n", k, h, w, sigma[0], sigma[1], err);
        free(m);
    }
    tref_close(f);
    /* sigma 0 on both axes leaves the map as it is */
    float one[6] = {0, 1, 2, 3, 4, 5};
    CHECK(uf_map_smooth(one, 2, 3, 0.f, 0.f) == UF_OK && one[4] == 4.f, "sigma 0 must be the identity");
}

int main(void) {
    UF_TEST(test_anomaly_map_vs_torch);
    UF_TEST(test_anomaly_map_errors);
    UF_TEST(test_map_smooth_vs_scipy);
    return uf_test_summary();
}
