/* Evaluation metrics (spec 8) vs sklearn / scipy / numpy references
 * (tools/make_detect_refs.py metrics), plus closed forms and the radix sorts. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/timer.h"
#include "eval/metrics.h"
#include "harness.h"
#include "tref.h"

static void test_sorts(void) {
    size_t n = 300000;
    uint32_t *a = malloc(sizeof(uint32_t) * n);
    uint64_t *b = malloc(sizeof(uint64_t) * n);
    uint64_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        a[i] = (uint32_t)(x % 1000 < 300 ? 42 : x); /* many duplicates */
        b[i] = x % 1000 < 300 ? 7 : x;
    }
    uint64_t sa = 0, sb = 0;
    for (size_t i = 0; i < n; i++) sa += a[i], sb += b[i];
    uf_sort_u32(a, n);
    uf_sort_u64(b, n);
    int ok = 1;
    uint64_t ta = 0, tb = 0;
    for (size_t i = 0; i < n; i++) {
        if (i && (a[i] < a[i - 1] || b[i] < b[i - 1])) ok = 0;
        ta += a[i], tb += b[i];
    }
    CHECK(ok && sa == ta && sb == tb, "radix sorts: order %d, sums %d %d", ok, sa == ta, sb == tb);
    /* float keys order like floats, -0 == +0 */
    float f[7] = {-INFINITY, -3.5f, -1e-30f, -0.f, 0.f, 1e-30f, 2.f};
    for (int i = 1; i < 7; i++) CHECK(uf_float_key(f[i]) >= uf_float_key(f[i - 1]), "key order %d", i);
    CHECK(uf_float_key(-0.f) == uf_float_key(0.f), "-0 key");
    CHECK(uf_float_key(-1e-30f) < uf_float_key(0.f), "negative below zero");
    free(a), free(b);
}

static void test_auroc_vs_sklearn(void) {
    tref_file *f = tref_open("tests/data/detect/metrics.safetensors");
    CHECK(f != NULL, "reference file");
    if (!f) return;
    const tref_tensor *s = tref_get(f, "auc_scores"), *y = tref_get(f, "auc_labels"), *r = tref_get(f, "auc_ref");
    if (s && y && r) {
        double v = uf_auroc(s->data, y->data, (size_t)s->numel);
        CHECK_CLOSE(v, *(double *)r->data, 1e-12, 0);
        printf("  AUROC with ties: %.12f (sklearn %.12f)\n", v, *(double *)r->data);
    }
    tref_close(f);
    /* closed forms: perfect, inverted, all tied, one class */
    float sc[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    uint8_t l1[4] = {0, 0, 1, 1}, l2[4] = {1, 1, 0, 0}, l3[4] = {0, 0, 0, 0};
    CHECK(uf_auroc(sc, l1, 4) == 1.0, "perfect");
    CHECK(uf_auroc(sc, l2, 4) == 0.0, "inverted");
    float tied[4] = {1, 1, 1, 1};
    CHECK(uf_auroc(tied, l1, 4) == 0.5, "all tied");
    CHECK(isnan(uf_auroc(sc, l3, 4)), "one class");
    float z[2] = {-0.f, 0.f};
    uint8_t lz[2] = {1, 0};
    CHECK(uf_auroc(z, lz, 2) == 0.5, "-0 ties +0");
}

/* Trapezoid area of a curve over [0, x_end], divided by x_end. */
static double curve_area(const uf_curve *c, double x_end) {
    double a = 0;
    for (int i = 1; i < c->n; i++) a += (c->x[i] - c->x[i - 1]) * (c->y[i] + c->y[i - 1]) * 0.5;
    return a / x_end;
}

/* c runs from (0, 0) to x = x_end (y = 1 too for a ROC, x_end 1), nondecreasing in x and y,
 * and its area matches `area` to the thinning's 1/250 (plus float rounding). */
static void check_curve(const char *kind, const char *name, const uf_curve *c, double x_end, double area) {
    CHECK(c->n >= 2 && c->n <= UF_CURVE_MAX, "%s %s: %d points", kind, name, c->n);
    if (c->n < 2) return;
    CHECK(c->x[0] == 0 && c->y[0] == 0, "%s %s starts at (%g, %g)", kind, name, c->x[0], c->y[0]);
    CHECK(fabs(c->x[c->n - 1] - x_end) < 1e-6, "%s %s ends at x %g", kind, name, c->x[c->n - 1]);
    if (x_end == 1.0) CHECK(c->y[c->n - 1] == 1, "%s %s ends at y %g", kind, name, c->y[c->n - 1]);
    int monotone = 1;
    for (int i = 1; i < c->n; i++) monotone &= c->x[i] >= c->x[i - 1] && c->y[i] >= c->y[i - 1];
    CHECK(monotone, "%s %s is not monotone", kind, name);
    CHECK_CLOSE(curve_area(c, x_end), area, 1.0 / 250 + 1e-6, 0);
}

static void test_roc_curve_closed_form(void) {
    /* sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False) of these is
     * (0,0) (0,.5) (.5,.5) (.5,1) (1,1): one point per distinct score, from the highest. */
    const float s[4] = {0.1f, 0.4f, 0.35f, 0.8f};
    const uint8_t l[4] = {0, 0, 1, 1};
    const float ex[5] = {0, 0, 0.5f, 0.5f, 1}, ey[5] = {0, 0.5f, 0.5f, 1, 1};
    uf_curve c;
    uf_roc_curve(s, l, 4, &c);
    CHECK(c.n == 5, "%d points", c.n);
    for (int i = 0; i < 5 && i < c.n; i++)
        CHECK(c.x[i] == ex[i] && c.y[i] == ey[i], "point %d (%g, %g)", i, c.x[i], c.y[i]);
    CHECK_CLOSE(curve_area(&c, 1.0), uf_auroc(s, l, 4), 1e-7, 0);
    /* a tie between the classes is one diagonal step */
    const float t[3] = {0.5f, 0.5f, 0.2f};
    const uint8_t lt[3] = {1, 0, 0};
    uf_roc_curve(t, lt, 3, &c);
    CHECK(c.n == 3 && c.x[1] == 0.5f && c.y[1] == 1, "tie: %d points, (%g, %g)", c.n, c.x[1], c.y[1]);
    /* undefined: one class only, or a NaN score */
    uf_roc_curve(s, (const uint8_t[4]){1, 1, 1, 1}, 4, &c);
    CHECK(c.n == 0, "one class: %d points", c.n);
    uf_roc_curve((const float[2]){NAN, 1}, l + 1, 2, &c);
    CHECK(c.n == 0, "NaN: %d points", c.n);
    /* 100000 distinct scores: thinned to at most 502 points, area kept */
    enum { N = 100000 };
    float *big = malloc(sizeof(float) * N);
    uint8_t *bl = malloc(N);
    uint64_t st = 12345;
    for (int i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        bl[i] = (uint8_t)((st >> 40) % 3 == 0);
        big[i] = (float)((st >> 11) % 1000003) / 1000003.0f + (bl[i] ? 0.3f : 0.0f);
    }
    uf_roc_curve(big, bl, N, &c);
    CHECK(c.n > 100 && c.n <= 502, "thinned to %d points", c.n);
    check_curve("random", "image ROC", &c, 1.0, uf_auroc(big, bl, N));
    free(big);
    free(bl);
}

static void run_set(const char *kind) {
    tref_file *f = tref_open("tests/data/detect/metrics.safetensors");
    if (!f) return;
    char name[32];
    snprintf(name, sizeof name, "%s_amap", kind);
    const tref_tensor *am = tref_get(f, name);
    snprintf(name, sizeof name, "%s_score", kind);
    const tref_tensor *sc = tref_get(f, name);
    snprintf(name, sizeof name, "%s_gt", kind);
    const tref_tensor *gt = tref_get(f, name);
    snprintf(name, sizeof name, "%s_ref", kind);
    const tref_tensor *rf = tref_get(f, name);
    snprintf(name, sizeof name, "%s_miou", kind);
    const tref_tensor *mc = tref_get(f, name);
    CHECK(am && sc && gt && rf && mc, "%s tensors", kind);
    if (!(am && sc && gt && rf && mc)) {
        tref_close(f);
        return;
    }
    int n = (int)am->shape[0], h = (int)am->shape[1], w = (int)am->shape[2];
    uf_eval *ev = uf_eval_new();
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)i * h * w;
        int rc = uf_eval_add(ev, h, w, (const float *)am->data + o, (const float *)sc->data + o,
                             (const uint8_t *)gt->data + o, -1, NAN);
        CHECK(rc == UF_OK, "%s image %d: %s", kind, i, uf_last_error());
    }
    uf_eval_result r;
    CHECK(uf_eval_compute(ev, UF_AUPRO_FPR_LIMIT, &r) == UF_OK, "%s", uf_last_error());
    const double *ref = rf->data;
    CHECK_CLOSE(r.pixel_auroc, ref[0], 1e-12, 0);
    CHECK_CLOSE(r.image_auroc, ref[1], 1e-12, 0);
    /* The reference (tools/make_detect_refs.py aupro_official) does the float32 steps of the
     * official code (ROC fractions, index normalisation, interp1d) in the same order as
     * uf_eval_compute, so those agree bit for bit; what differs is double arithmetic: numpy's
     * pairwise trapz against a running sum over the `out` curve points (the terms are
     * dFPR * mean TPR, all >= 0 and summing to <= fpr[-1], so recursive summation errs by at
     * most out * u_d of the result, u_d = 2^-53; Higham 4.2), the division by the region count
     * and by fpr[-1] (a few u_d). Measured: 0, 5.9e-15, 0. A float32 step rounding differently
     * would show as ~1e-8 and fail here, as it should: the point is the bit-exact official curve. */
    CHECK_CLOSE(r.aupro, ref[2], (ref[3] + 8) * 0x1p-53, 0);
    CHECK(r.aupro_curve_points == (int)ref[3], "%s: curve points %d vs %d", kind, r.aupro_curve_points, (int)ref[3]);
    CHECK(r.n_regions == (int)ref[4], "%s: regions %d vs %d", kind, r.n_regions, (int)ref[4]);
    CHECK_CLOSE(r.aupro_textbook, ref[5], 1e-9, 0);
    CHECK_CLOSE(r.miou_auto, ref[6], 1e-12, 0);
    CHECK_CLOSE(r.miou_oracle, ref[7], 1e-12, 0);
    CHECK(r.oracle_thr == (int)ref[8], "%s: oracle thr %d vs %d", kind, r.oracle_thr, (int)ref[8]);
    CHECK_CLOSE(r.f1_auto, ref[9], 1e-12, 0);
    double curve[UF_MIOU_NTHR], maxd = 0;
    uf_eval_miou_curve(ev, curve);
    for (int t = 0; t < UF_MIOU_NTHR; t++) maxd = fmax(maxd, fabs(curve[t] - ((double *)mc->data)[t]));
    CHECK(maxd <= 1e-12, "%s: mIoU curve max diff %g", kind, maxd);
    printf("  %s: pixAUROC %.6f imgAUROC %.4f AUPRO %.6f (ref %.6f, |d| %.1e, bound %.1e) textbook %.6f (|d| %.1e) mIoU %.4f oracle %.4f@%d "
           "F1 %.4f\n",
           kind, r.pixel_auroc, r.image_auroc, r.aupro, ref[2], fabs(r.aupro - ref[2]), (ref[3] + 8) * 0x1p-53,
           r.aupro_textbook, fabs(r.aupro_textbook - ref[5]), r.miou_auto,
           r.miou_oracle, r.oracle_thr, r.f1_auto);
    /* The plotted curves (thinned; uf_curve): from (0, 0), monotone, to (1, 1) for the ROC and to
     * FPR = the limit for PRO; each point kept lies within 1/250 (L1, x scaled to [0, 1]) of the
     * last, so the polyline's area is the exact one to within 1/250 of the plot's area. */
    check_curve(kind, "pixel ROC", &r.pixel_roc, 1.0, r.pixel_auroc);
    check_curve(kind, "PRO", &r.pro, UF_AUPRO_FPR_LIMIT, r.aupro_textbook);
    /* computing twice gives the same numbers (the sorted state is reusable) */
    uf_eval_result r2;
    CHECK(uf_eval_compute(ev, UF_AUPRO_FPR_LIMIT, &r2) == UF_OK, "%s", uf_last_error());
    CHECK(r2.aupro == r.aupro && r2.pixel_auroc == r.pixel_auroc, "%s: second compute differs", kind);
    uf_eval_free(ev);
    tref_close(f);
}

static void test_metrics_ties(void) { run_set("ties"); }
static void test_metrics_continuous(void) { run_set("cont"); }
static void test_metrics_aupro_edge_case(void) { run_set("edge"); }

static void test_iou_and_errors(void) {
    float s[4] = {1, -1, 0, 2};
    uint8_t g[4] = {1, 0, 0, 0};
    CHECK_CLOSE(uf_iou(s, g, 4, 0.f), 0.5, 1e-12, 0); /* pred {0,3}, gt {0} */
    uint8_t none[4] = {0};
    float neg[4] = {-1, -1, -1, -1};
    CHECK(uf_iou(neg, none, 4, 0.f) == 1.0, "empty/empty IoU is 1");
    uf_eval *ev = uf_eval_new();
    float a[4] = {0.1f, NAN, 0.2f, 0.3f};
    CHECK(uf_eval_add(ev, 2, 2, a, NULL, g, -1, NAN) == UF_ERR, "NaN in amap must fail");
    a[1] = 0.5f;
    CHECK(uf_eval_add(ev, 2, 2, a, NULL, g, -1, NAN) == UF_OK, "%s", uf_last_error());
    CHECK(uf_eval_add(ev, 2, 2, a, s, g, -1, NAN) == UF_ERR, "inconsistent maps must fail");
    CHECK(uf_eval_add(ev, 0, 2, a, NULL, g, -1, NAN) == UF_ERR, "bad size must fail");
    uf_eval_result r;
    CHECK(uf_eval_compute(ev, 0.3, &r) == UF_OK, "%s", uf_last_error());
    CHECK(isnan(r.image_auroc) && isnan(r.miou_auto), "undefined metrics are NaN");
    CHECK(r.pixel_auroc == 0.0, "pixel AUROC %g (the GT pixel scores lowest)", r.pixel_auroc);
    CHECK(uf_eval_compute(ev, 0.0, &r) == UF_ERR, "FPR limit 0 must fail");
    uf_eval_free(ev);
}

/* A larger synthetic run: 100 images of 256x256 (6.5 M pixels), for timing and for the
 * official/textbook AUPRO agreement the spec mentions ("nearly the same value"). */
static void test_metrics_scale(void) {
    const int n = 100, h = 256, w = 256;
    float *a = malloc(sizeof(float) * h * w), *s = malloc(sizeof(float) * h * w);
    uint8_t *g = malloc((size_t)h * w);
    uf_eval *ev = uf_eval_new();
    uf_eval_reserve(ev, (size_t)n * h * w);
    uint64_t x = 99;
    double t0 = uf_now();
    for (int i = 0; i < n; i++) {
        memset(g, 0, (size_t)h * w);
        if (i % 4) {
            int y0 = (i * 37) % 200, x0 = (i * 53) % 200, sz = 8 + i % 40;
            for (int y = y0; y < y0 + sz && y < h; y++)
                for (int xx = x0; xx < x0 + sz && xx < w; xx++) g[y * w + xx] = 1;
        }
        for (int p = 0; p < h * w; p++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            float u = (float)((x >> 11) * (1.0 / 9007199254740992.0));
            a[p] = g[p] ? 0.3f + 0.7f * u : 0.8f * u * u;
            s[p] = g[p] ? 50.f * u : -100.f * u;
        }
        CHECK(uf_eval_add(ev, h, w, a, s, g, -1, NAN) == UF_OK, "%s", uf_last_error());
    }
    double t1 = uf_now();
    uf_eval_result r;
    CHECK(uf_eval_compute(ev, 0.3, &r) == UF_OK, "%s", uf_last_error());
    double t2 = uf_now();
    CHECK(fabs(r.aupro - r.aupro_textbook) < 0.01, "official %g vs textbook %g", r.aupro, r.aupro_textbook);
    CHECK(r.pixel_auroc > 0.8 && r.pixel_auroc <= 1.0, "pixel AUROC %g", r.pixel_auroc);
    check_curve("scale", "pixel ROC", &r.pixel_roc, 1.0, r.pixel_auroc); /* 1.6 M points thinned */
    check_curve("scale", "PRO", &r.pro, 0.3, r.aupro_textbook);
    CHECK(r.pixel_roc.n <= 502 && r.pro.n <= 502, "thinned to %d and %d points", r.pixel_roc.n, r.pro.n);
    printf("  %lld pixels, %d regions, %d curve points: add %.2f s, compute %.2f s; AUROC %.5f AUPRO %.5f "
           "(textbook %.5f)\n",
           (long long)r.n_pixels, r.n_regions, r.aupro_curve_points, t1 - t0, t2 - t1, r.pixel_auroc, r.aupro,
           r.aupro_textbook);
    uf_eval_free(ev);
    free(a), free(s), free(g);
}

int main(void) {
    UF_TEST(test_sorts);
    UF_TEST(test_auroc_vs_sklearn);
    UF_TEST(test_roc_curve_closed_form);
    UF_TEST(test_metrics_ties);
    UF_TEST(test_metrics_continuous);
    UF_TEST(test_metrics_aupro_edge_case);
    UF_TEST(test_iou_and_errors);
    UF_TEST(test_metrics_scale);
    return uf_test_summary();
}
