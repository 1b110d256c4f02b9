/* Interpolation vs torch.nn.functional.interpolate (tools/make_detect_refs.py interp). */
#include <stdlib.h>
#include <string.h>

#include "core/interp.h"
#include "harness.h"
#include "tref.h"

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void test_interp_vs_torch(void) {
    tref_file *f = tref_open("tests/data/detect/interp.safetensors");
    CHECK(f != NULL, "reference file");
    if (!f) return;
    int ncases = 0;
    for (int k = 0;; k++) {
        char name[32];
        snprintf(name, sizeof name, "in%d", k);
        const tref_tensor *in = NULL;
        for (int i = 0; i < f->n; i++)
            if (strcmp(f->t[i].name, name) == 0) in = &f->t[i];
        if (!in) break;
        ncases++;
        int c = (int)in->shape[0], ih = (int)in->shape[1], iw = (int)in->shape[2];
        snprintf(name, sizeof name, "bilinear%d", k);
        const tref_tensor *bl = tref_get(f, name);
        snprintf(name, sizeof name, "bicubic%d", k);
        const tref_tensor *bc = tref_get(f, name);
        CHECK(bl && bc, "case %d refs", k);
        if (!bl || !bc) continue;
        int oh = (int)bl->shape[1], ow = (int)bl->shape[2];
        size_t n = (size_t)c * oh * ow;
        float *out = malloc(sizeof(float) * n);
        uf_interp_bilinear(in->data, c, ih, iw, out, oh, ow);
        double e1 = max_abs_diff(out, bl->data, n);
        CHECK(e1 <= 1e-5, "bilinear %dx%d -> %dx%d: max abs err %g", ih, iw, oh, ow, e1);
        uf_interp_bicubic_ac(in->data, c, ih, iw, out, oh, ow);
        double e2 = max_abs_diff(out, bc->data, n);
        CHECK(e2 <= 1e-5, "bicubic %dx%d -> %dx%d: max abs err %g", ih, iw, oh, ow, e2);
        printf("  case %d: (%d,%d,%d) -> (%d,%d): bilinear %.2e bicubic %.2e\n", k, c, ih, iw, oh, ow, e1, e2);
        free(out);
    }
    CHECK(ncases >= 5, "only %d cases", ncases);
    tref_close(f);
}

/* Closed forms: a constant stays constant; identity size is the identity; a
 * linear ramp is reproduced exactly by bicubic align_corners=True (Keys kernel
 * reproduces affine functions away from clamped borders). */
static void test_interp_closed_forms(void) {
    float in[4 * 6], out[9 * 11];
    for (int i = 0; i < 24; i++) in[i] = 2.5f;
    uf_interp_bilinear(in, 1, 4, 6, out, 9, 11);
    for (int i = 0; i < 99; i++) CHECK(fabsf(out[i] - 2.5f) < 1e-6f, "const bilinear %g", out[i]);
    uf_interp_bicubic_ac(in, 1, 4, 6, out, 9, 11);
    for (int i = 0; i < 99; i++) CHECK(fabsf(out[i] - 2.5f) < 1e-5f, "const bicubic %g", out[i]);
    for (int i = 0; i < 24; i++) in[i] = (float)(i * 0.37 - 3);
    float same[24];
    uf_interp_bilinear(in, 1, 4, 6, same, 4, 6);
    for (int i = 0; i < 24; i++) CHECK(same[i] == in[i], "identity %d", i);
    /* bicubic align_corners: corners map exactly onto corners */
    uf_interp_bicubic_ac(in, 1, 4, 6, out, 9, 11);
    CHECK_CLOSE(out[0], in[0], 1e-6, 0);
    CHECK_CLOSE(out[98], in[23], 1e-5, 0);
}

int main(void) {
    UF_TEST(test_interp_vs_torch);
    UF_TEST(test_interp_closed_forms);
    return uf_test_summary();
}
