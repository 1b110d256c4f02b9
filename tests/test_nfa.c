/* Tree NFA (spec 7.1) and block NFA (spec 7.2).
 * References: hand-worked trees (below), closed forms, and tests/data/detect/
 * from tools/make_detect_refs.py (an independent Python tree built by flooding
 * each upper level set, mpmath for N_T, scipy for the binomial tails). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/timer.h"
#include "detect/nfa_block.h"
#include "detect/nfa_tree.h"
#include "harness.h"
#include "tref.h"

/* ---- small deterministic N(0,1) generator (xorshift64* + Box-Muller) ---- */
static uint64_t g_rng = 88172645463325252ull;
static double urand(void) {
    g_rng ^= g_rng >> 12, g_rng ^= g_rng << 25, g_rng ^= g_rng >> 27;
    return ((g_rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}
static float nrand(void) {
    double u = urand(), v = urand();
    if (u < 1e-300) u = 1e-300;
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}
static float *randn(int c, int h, int w, uint64_t seed) {
    g_rng = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t n = (size_t)c * h * w;
    float *z = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) z[i] = nrand();
    return z;
}

static void test_log10_ntests(void) {
    int a[2] = {784, 196}, b[3] = {4096, 1024, 256}, c[2] = {144, 36};
    double va = uf_nfa_log10_ntests(a, 2), vb = uf_nfa_log10_ntests(b, 3), vc = uf_nfa_log10_ntests(c, 2);
    /* spec 7.1 (official mpmath code: 476.92371) */
    CHECK_CLOSE(va, 476.9237, 1e-4, 0);
    CHECK_CLOSE(vb, 2493.27, 0.01, 0);
    tref_file *f = tref_open("tests/data/detect/nfa_tree.safetensors");
    CHECK(f != NULL, "reference file");
    if (f) {
        CHECK_CLOSE(va, *(double *)tref_get(f, "log10nt_28_14")->data, 0, 1e-10);
        CHECK_CLOSE(vb, *(double *)tref_get(f, "log10nt_64_32_16")->data, 0, 1e-10);
        CHECK_CLOSE(vc, *(double *)tref_get(f, "log10nt_12_6")->data, 0, 1e-10);
        int r[2] = {6 * 20, 3 * 10};
        CHECK_CLOSE(uf_nfa_log10_ntests(r, 2), *(double *)tref_get(f, "log10nt_6x20_3x10")->data, 0, 1e-10);
        tref_close(f);
    }
    /* one cell: N_T = 1 * alpha * beta */
    int one = 1;
    CHECK_CLOSE(uf_nfa_log10_ntests(&one, 1), log10(UF_NFA_ALPHA * UF_NFA_BETA), 1e-12, 0);
    printf("  log10 N_T: {784,196} %.8f  {4096,1024,256} %.4f\n", va, vb);
}

/* per-cell Chernoff term with C = 2: -(x - 1 - ln x) / ln 10 */
static double g2(double x) { return -(x - 1 - log(x)) / M_LN10; }

static void run_hand(const double *x, const double *expect, const char *what) {
    double q[7];
    float lp[7];
    for (int i = 0; i < 7; i++) q[i] = 2 * x[i]; /* C = 2: Q = C x */
    uf_nfa_tree_stats st;
    CHECK(uf_nfa_tree_log10p_q(q, 2, 1, 7, lp, &st) == UF_OK, "%s", uf_last_error());
    for (int i = 0; i < 7; i++) {
        if (isnan(expect[i]))
            CHECK(isnan(lp[i]), "%s: cell %d should be uncovered, got %g", what, i, lp[i]);
        else
            CHECK(fabs(lp[i] - expect[i]) <= 1e-5 * fabs(expect[i]) + 1e-6, "%s: cell %d: %.6f vs %.6f", what, i,
                  lp[i], expect[i]);
    }
}

/* Hand-worked trees on a 1x7 grid, C = 2, so log10P(n) = |R(n)| g(level/...) with
 * g(x) = -(x-1-ln x)/ln10:  g(1.2)=-0.00768 g(2)=-0.13326 g(3)=-0.39147 g(3.5)=-0.54167
 * g(4)=-0.70082 g(4.3)=-0.79970 g(4.4)=-0.83315 g(4.5)=-0.86682 g(5)=-1.03821
 * g(6)=-1.39332 g(7)=-1.76067.
 *
 * Example A, x = [6 2 7 1 3 3.5 1.2]. Upper level sets give the nodes
 *   N7={2} (-1.761), N6={0} (-1.393), N3.5={5} (-0.542), N3={4,5} (-0.783),
 *   N2={0,1,2} (-0.400), N1.2={4,5,6} (-0.023), root (level 1, 0).
 *   Tree: root -> {N2 -> {N6, N7}, N1.2 -> N3 -> N3.5}.
 *   PRUNE: leaves N7, N6 (parent N2 has 2 children: branches of one node); N3.5's
 *     branch is [N3.5, N3, N1.2] (root has 2 children): argmin N3 = -0.783 stays.
 *   MERGE: root skipped (child N2 has children); N2: -0.400 <= min(-1.393,-1.761)? no.
 *   Final: {0}: -1.393, {2}: -1.761, {4,5}: -0.783, cells 1, 3, 6 uncovered.
 * Example B: as A with x1 = 5: N5={0,1,2} = 3 g(5) = -3.115 <= -1.761, so MERGE
 *   makes N5 a leaf; PRUNE: its branch is [N5] (root has 2 children); MERGE: root 0 >
 *   min(-3.115, -0.783). Final {0,1,2}: -3.115, {4,5}: -0.783, cells 3, 6 uncovered.
 * Example C, x = [6 5 7 4.5 3 3.5 4]: root (3, all 7: -2.740) -> A={0..3} (4.5: -3.467)
 *   -> B={0,1,2} (5: -3.115) -> {N6, N7};  root -> D={5,6} (3.5: -1.083) -> E={6} (4: -0.701).
 *   PRUNE: E's branch [E, D] -> D kept. MERGE: B merges (-3.115 <= -1.761).
 *   PRUNE: B's branch [B, A] (root has 2 children) -> A (-3.467) kept.
 *   MERGE: root -2.740 > min(-3.467, -1.083): no. Final {0..3}: -3.467, {5,6}: -1.083,
 *   cell 4 uncovered.
 * Example D, x = [6 5 7 4.5 4.4 4.3 4]: a staircase: root (4, all: 7 g(4) = -4.906) ->
 *   G={0..5} (4.3: 6 g = -4.798) -> F={0..4} (4.4: -4.166) -> A -> B -> {N6, N7}.
 *   MERGE: B merges; PRUNE: B's branch climbs to the root [B, A, F, G, root]; the
 *   argmin is the root: every cell gets 7 g(4) = -4.906.
 */
static void test_tree_hand_examples(void) {
    const double N = NAN;
    double xa[7] = {6, 2, 7, 1, 3, 3.5, 1.2};
    double ea[7] = {g2(6), N, g2(7), N, 2 * g2(3), 2 * g2(3), N};
    run_hand(xa, ea, "A");
    double xb[7] = {6, 5, 7, 1, 3, 3.5, 1.2};
    double eb[7] = {3 * g2(5), 3 * g2(5), 3 * g2(5), N, 2 * g2(3), 2 * g2(3), N};
    run_hand(xb, eb, "B");
    double xc[7] = {6, 5, 7, 4.5, 3, 3.5, 4};
    double ec[7] = {4 * g2(4.5), 4 * g2(4.5), 4 * g2(4.5), 4 * g2(4.5), N, 2 * g2(3.5), 2 * g2(3.5)};
    run_hand(xc, ec, "C");
    double xd[7] = {6, 5, 7, 4.5, 4.4, 4.3, 4};
    double ed[7];
    for (int i = 0; i < 7; i++) ed[i] = 7 * g2(4);
    run_hand(xd, ed, "D");
    /* the numbers quoted in the comment */
    CHECK_CLOSE(2 * g2(3), -0.78294, 1e-5, 0);
    CHECK_CLOSE(3 * g2(5), -3.11462, 1e-5, 0);
    CHECK_CLOSE(7 * g2(4), -4.90576, 1e-5, 0);
}

static void test_tree_vs_python_reference(void) {
    tref_file *f = tref_open("tests/data/detect/nfa_tree.safetensors");
    CHECK(f != NULL, "reference file");
    if (!f) return;
    int ncases = 0;
    for (int k = 0; k < 8; k++) {
        char name[32];
        snprintf(name, sizeof name, "t%d_z", k);
        const tref_tensor *z = tref_get(f, name);
        snprintf(name, sizeof name, "t%d_lp", k);
        const tref_tensor *ref = tref_get(f, name);
        snprintf(name, sizeof name, "t%d_nnodes", k);
        const tref_tensor *nn = tref_get(f, name);
        if (!z || !ref || !nn) continue;
        ncases++;
        int c = (int)z->shape[0], h = (int)z->shape[1], w = (int)z->shape[2];
        float *lp = malloc(sizeof(float) * h * w);
        uf_nfa_tree_stats st;
        CHECK(uf_nfa_tree_log10p(z->data, c, h, w, lp, &st) == UF_OK, "%s", uf_last_error());
        const float *r = ref->data;
        double maxrel = 0;
        int nan_mismatch = 0;
        for (int p = 0; p < h * w; p++) {
            if (isnan(r[p]) || isnan(lp[p])) {
                nan_mismatch += isnan(r[p]) != isnan(lp[p]);
                continue;
            }
            maxrel = fmax(maxrel, fabs((double)lp[p] - r[p]) / fmax(fabs(r[p]), 1e-3));
        }
        CHECK(nan_mismatch == 0, "case %d: %d cells differ in coverage", k, nan_mismatch);
        CHECK(maxrel <= 1e-4, "case %d: max rel diff %g", k, maxrel);
        CHECK(st.n_nodes == *(int32_t *)nn->data, "case %d: %d nodes vs %d", k, st.n_nodes, *(int32_t *)nn->data);
        printf("  case %d: C=%d %dx%d nodes %d final %d merges %d uncovered %d, max rel diff %.2e\n", k, c, h, w,
               st.n_nodes, st.n_final, st.n_merges, st.n_uncovered, maxrel);
        free(lp);
    }
    CHECK(ncases == 8, "%d cases", ncases);
    /* two-scale score map */
    const tref_tensor *z1 = tref_get(f, "s_z1"), *z2 = tref_get(f, "s_z2"), *sref = tref_get(f, "s_score");
    if (z1 && z2 && sref) {
        uf_latent_view v[2] = {{z1->data, 48, 12, 12}, {z2->data, 96, 6, 6}};
        float *score = malloc(sizeof(float) * 40 * 40);
        CHECK(uf_nfa_tree_score(v, 2, 40, 40, score) == UF_OK, "%s", uf_last_error());
        const float *r = sref->data;
        double maxerr = 0;
        int flips = 0, det = 0;
        for (int i = 0; i < 1600; i++) {
            maxerr = fmax(maxerr, fabs((double)score[i] - r[i]) / fmax(fabs(r[i]), 1.0));
            flips += (score[i] > 0) != (r[i] > 0);
            det += score[i] > 0;
        }
        CHECK(maxerr <= 1e-4, "score max rel err %g", maxerr);
        CHECK(flips == 0, "%d detection flips", flips);
        CHECK(det > 0, "the planted blobs must be detected");
        printf("  score map 40x40: max rel err %.2e, %d detected\n", maxerr, det);
        free(score);
    }
    /* rectangular grids (6x20 and 3x10, as a wide model gives) onto a 24x80 map */
    const tref_tensor *r1 = tref_get(f, "r_z1"), *r2 = tref_get(f, "r_z2"), *rref = tref_get(f, "r_score");
    CHECK(r1 && r2 && rref && r1->shape[1] == 6 && r1->shape[2] == 20, "rectangular case in the reference file");
    if (r1 && r2 && rref) {
        uf_latent_view v[2] = {{r1->data, 40, 6, 20}, {r2->data, 80, 3, 10}};
        float *score = malloc(sizeof(float) * 24 * 80);
        CHECK(uf_nfa_tree_score(v, 2, 24, 80, score) == UF_OK, "%s", uf_last_error());
        const float *r = rref->data;
        double maxerr = 0;
        int flips = 0, det = 0;
        for (int i = 0; i < 24 * 80; i++) {
            maxerr = fmax(maxerr, fabs((double)score[i] - r[i]) / fmax(fabs(r[i]), 1.0));
            flips += (score[i] > 0) != (r[i] > 0);
            det += score[i] > 0;
        }
        CHECK(maxerr <= 1e-4, "rectangular score max rel err %g", maxerr);
        CHECK(flips == 0, "rectangular: %d detection flips", flips);
        CHECK(det > 0, "rectangular: the planted blobs must be detected");
        printf("  score map 24x80 from 6x20 + 3x10: max rel err %.2e, %d detected\n", maxerr, det);
        free(score);
    }
    tref_close(f);
}

/* A planted blob of constant energy (x = 4) in N(0,1) latents at the finest of two
 * scales is one node of the tree; exactly its cells are detected. */
static void test_planted_blob(void) {
    const int c1 = 192, c2 = 384;
    float *z1 = randn(c1, 28, 28, 11), *z2 = randn(c2, 14, 14, 12);
    for (int k = 0; k < c1; k++)
        for (int y = 9; y < 15; y++)
            for (int x = 5; x < 12; x++) z1[((size_t)k * 28 + y) * 28 + x] = (k % 2 ? 2.f : -2.f);
    uf_latent_view v[2] = {{z1, c1, 28, 28}, {z2, c2, 14, 14}};
    float *score = malloc(sizeof(float) * 112 * 112);
    CHECK(uf_nfa_tree_score(v, 2, 28, 28, score) == UF_OK, "%s", uf_last_error());
    int wrong = 0, hits = 0;
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            int in = y >= 9 && y < 15 && x >= 5 && x < 12, det = score[y * 28 + x] > 0;
            wrong += in != det;
            hits += det;
        }
    CHECK(wrong == 0, "%d cells wrongly classified (%d detected, blob 42)", wrong, hits);
    /* expected score inside the blob: -(log10 N_T + 42 * 192/2 * g(4) with C=192) */
    int cells[2] = {784, 196};
    double lp = 42 * (-(c1 / 2.0) * (4 - 1 - log(4.0)) / M_LN10);
    CHECK_CLOSE(score[10 * 28 + 6], -(uf_nfa_log10_ntests(cells, 2) + lp), 0.05, 1e-5);
    /* at 112x112: detections stay inside the blob's footprint (+1 latent cell) and cover its interior */
    CHECK(uf_nfa_tree_score(v, 2, 112, 112, score) == UF_OK, "%s", uf_last_error());
    int outside = 0, missed = 0;
    for (int y = 0; y < 112; y++)
        for (int x = 0; x < 112; x++) {
            int det = score[y * 112 + x] > 0;
            int near = y >= 8 * 4 && y < 16 * 4 && x >= 4 * 4 && x < 13 * 4;
            int inner = y >= 10 * 4 && y < 14 * 4 && x >= 6 * 4 && x < 11 * 4;
            outside += det && !near;
            missed += inner && !det;
        }
    CHECK(outside == 0 && missed == 0, "112x112: %d outside, %d missed", outside, missed);
    free(z1), free(z2), free(score);
}

/* Pure N(0,1) latents: nothing detected (spec 7.1: covered leaves only reach about -2..-4). */
static void test_null_latents_no_detection(void) {
    const int chans[4] = {64, 192, 336, 816};
    double t0 = uf_now();
    int runs = 0;
    for (int ci = 0; ci < 4; ci++)
        for (uint64_t seed = 1; seed <= 3; seed++) {
            int c = chans[ci];
            float *z1 = randn(c, 28, 28, seed * 100 + ci), *z2 = randn(c, 14, 14, seed * 100 + 50 + ci);
            uf_latent_view v[2] = {{z1, c, 28, 28}, {z2, c, 14, 14}};
            float score[56 * 56];
            CHECK(uf_nfa_tree_score(v, 2, 56, 56, score) == UF_OK, "%s", uf_last_error());
            float mx = -INFINITY;
            for (int i = 0; i < 56 * 56; i++) mx = fmaxf(mx, score[i]);
            CHECK(mx <= 0, "C=%d seed %d: max score %g > 0", c, (int)seed, mx);
            float lp[784];
            uf_nfa_tree_stats st;
            CHECK(uf_nfa_tree_log10p(z1, c, 28, 28, lp, &st) == UF_OK, "%s", uf_last_error());
            if (seed == 1)
                printf("  C=%d: max score %.1f, 28x28: %.0f%% uncovered, min leaf log10P %.2f\n", c, mx,
                       100.0 * st.n_uncovered / 784, st.min_log10p);
            CHECK(st.min_log10p > -30, "C=%d: min leaf log10P %g", c, st.min_log10p);
            runs++;
            free(z1), free(z2);
        }
    printf("  %d null images (2 scales) in %.3f s\n", runs, uf_now() - t0);
}

/* Speed and size limits: 112x112 x 3 scales with C = 336. */
static void test_tree_large_grid(void) {
    float *z[3];
    int hs[3] = {112, 56, 28};
    uf_latent_view v[3];
    for (int l = 0; l < 3; l++) {
        z[l] = randn(336, hs[l], hs[l], 900 + l);
        v[l] = (uf_latent_view){z[l], 336, hs[l], hs[l]};
    }
    float *score = malloc(sizeof(float) * 256 * 256);
    double t0 = uf_now();
    CHECK(uf_nfa_tree_score(v, 3, 256, 256, score) == UF_OK, "%s", uf_last_error());
    double dt = uf_now() - t0;
    int det = 0;
    for (int i = 0; i < 256 * 256; i++) det += score[i] > 0;
    CHECK(det == 0, "%d null detections", det);
    printf("  112x112+56x56+28x28, C=336 -> 256x256: %.1f ms\n", dt * 1e3);
    for (int l = 0; l < 3; l++) free(z[l]);
    free(score);
}

static void test_tree_errors_and_ties(void) {
    double q[6] = {1, 2, NAN, 1, 1, 1};
    float lp[6];
    CHECK(uf_nfa_tree_log10p_q(q, 3, 2, 3, lp, NULL) == UF_ERR, "NaN energy must fail");
    q[2] = -1;
    CHECK(uf_nfa_tree_log10p_q(q, 3, 2, 3, lp, NULL) == UF_ERR, "negative energy must fail");
    CHECK(uf_nfa_tree_log10p_q(q, 0, 2, 3, lp, NULL) == UF_ERR, "C=0 must fail");
    /* constant energy: one node (the root), one final leaf covering everything */
    for (int i = 0; i < 6; i++) q[i] = 6.0;
    uf_nfa_tree_stats st;
    CHECK(uf_nfa_tree_log10p_q(q, 3, 2, 3, lp, &st) == UF_OK, "%s", uf_last_error());
    CHECK(st.n_nodes == 1 && st.n_final == 1 && st.n_uncovered == 0, "nodes %d final %d", st.n_nodes, st.n_final);
    CHECK_CLOSE(lp[0], 6 * (-(1.5) * (2 - 1 - log(2.0)) / M_LN10), 1e-6, 1e-6);
    /* zero energy is guarded (finite) */
    for (int i = 0; i < 6; i++) q[i] = 0;
    CHECK(uf_nfa_tree_log10p_q(q, 3, 2, 3, lp, &st) == UF_OK && isfinite(lp[0]), "x = 0 guard");
    /* one cell */
    q[0] = 9;
    CHECK(uf_nfa_tree_log10p_q(q, 3, 1, 1, lp, &st) == UF_OK && st.n_nodes == 1, "1x1 grid");
}

/* ---- block NFA ---- */
static void test_block_tails_vs_scipy(void) {
    tref_file *f = tref_open("tests/data/detect/nfa_block.safetensors");
    CHECK(f != NULL, "reference file");
    if (!f) return;
    const tref_tensor *rows = tref_get(f, "binom_rows"), *chi = tref_get(f, "chi2_ppf");
    if (rows) {
        const double *r = rows->data;
        for (int i = 0; i < rows->shape[0]; i++) {
            double x = r[4 * i], ref = r[4 * i + 3];
            int n = (int)r[4 * i + 1];
            double v = uf_binom_log10_sf(x, n, r[4 * i + 2]);
            if (isinf(ref))
                CHECK(v == UF_LOG10P_FLOOR, "x=%g n=%d: %g vs -inf", x, n, v);
            else
                CHECK(fabs(v - ref) <= 1e-9 * fabs(ref) + 1e-12, "x=%g n=%d p=%g: %.12g vs %.12g", x, n, r[4 * i + 2],
                      v, ref);
        }
    }
    if (chi) {
        const double *r = chi->data;
        for (int i = 0; i < chi->shape[0]; i++) CHECK_CLOSE(uf_chi2_1_ppf(r[2 * i]), r[2 * i + 1], 0, 1e-12);
    }
    CHECK_CLOSE(uf_chi2_1_ppf(0.9), 2.705543454095404, 0, 1e-13); /* spec 7.2 */
    CHECK_CLOSE(uf_chi2_1_ppf(0.5), 0.454936423119572, 0, 1e-13);
    /* closed forms: P(X > -1) = 1, P(X > n-1) = p^n */
    CHECK(uf_binom_log10_sf(-0.5, 9, 0.1) == 0.0, "sf below 0");
    CHECK_CLOSE(uf_binom_log10_sf(8.2, 9, 0.1), -9.0, 1e-9, 0);
    tref_close(f);
}

static void test_block_score_vs_reference(void) {
    tref_file *f = tref_open("tests/data/detect/nfa_block.safetensors");
    if (!f) return;
    const tref_tensor *z1 = tref_get(f, "z1"), *z2 = tref_get(f, "z2");
    if (!z1 || !z2) return;
    uf_latent_view v[2] = {{z1->data, 20, 12, 12}, {z2->data, 24, 6, 6}};
    const char *tags[2] = {"w5", "w7"};
    int wins[2] = {5, 7};
    double pth[2] = {0.9, 0.5};
    for (int t = 0; t < 2; t++) {
        char name[32];
        for (int s = 0; s < 2; s++) {
            snprintf(name, sizeof name, "%s_lp%d", tags[t], s);
            const tref_tensor *ref = tref_get(f, name);
            if (!ref) continue;
            int h = (int)ref->shape[0], w = (int)ref->shape[1];
            float lp[144];
            CHECK(uf_nfa_block_log10p(v[s].z, v[s].c, h, w, s, wins[t], pth[t], lp) == UF_OK, "%s", uf_last_error());
            double e = 0;
            for (int i = 0; i < h * w; i++) e = fmax(e, fabs(lp[i] - ((float *)ref->data)[i]));
            CHECK(e <= 1e-5, "%s scale %d: max abs err %g", tags[t], s, e);
        }
        snprintf(name, sizeof name, "%s_score", tags[t]);
        const tref_tensor *ref = tref_get(f, name);
        if (!ref) continue;
        float score[576];
        CHECK(uf_nfa_block_score(v, 2, wins[t], pth[t], 24, 24, score) == UF_OK, "%s", uf_last_error());
        double e = 0;
        int flips = 0, det = 0;
        for (int i = 0; i < 576; i++) {
            float r = ((float *)ref->data)[i];
            e = fmax(e, fabs(score[i] - r));
            flips += (score[i] > 0) != (r > 0);
            det += score[i] > 0;
        }
        CHECK(e <= 1e-4, "%s score: max abs err %g", tags[t], e);
        CHECK(flips == 0, "%s: %d detection flips", tags[t], flips);
        printf("  block %s: score max abs err %.2e, %d detected\n", tags[t], e, det);
    }
    /* grid too small for reflect padding */
    float lp[4];
    CHECK(uf_nfa_block_log10p(z1->data, 20, 2, 2, 0, 5, 0.9, lp) == UF_ERR, "2x2 grid with half window 2");
    tref_close(f);
}

int main(void) {
    UF_TEST(test_log10_ntests);
    UF_TEST(test_tree_hand_examples);
    UF_TEST(test_tree_vs_python_reference);
    UF_TEST(test_planted_blob);
    UF_TEST(test_null_latents_no_detection);
    UF_TEST(test_tree_large_grid);
    UF_TEST(test_tree_errors_and_ties);
    UF_TEST(test_block_tails_vs_scipy);
    UF_TEST(test_block_score_vs_reference);
    return uf_test_summary();
}
