/* Tiling of large images and the calibrated NFA (issue 24), on generated data:
 *  - the tile plan (positions, overlap, working resolution) against hand-computed values;
 *  - the stitched -log10 NFA field of a tiled image equals each tile's own field (computed
 *    independently from the tile's pixels, with the image's number of tests) where tiles do
 *    not overlap, and their maximum where they do; the map is their mean;
 *  - a defect of a few pixels in a large image is found with tiling and missed without;
 *  - a set whose validation normals are noisier than the training normals: the calibrated
 *    NFA flags at most 5% of such normal test images, the spec's (uncalibrated) test more;
 *  - the conformal offset against hand-computed quantiles; the null-hypothesis NFA with the
 *    spec's null equals the plain tree NFA bit for bit (old models predict as before).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/interp.h"
#include "detect/anomaly_map.h"
#include "detect/nfa_tree.h"
#include "harness.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "io/synth.h"
#include "io/tiling.h"
#include "model/batch.h"
#include "model/calibration.h"
#include "model/model.h"
#include "model/train.h"
#include "eval/metrics.h"

#define WEIGHTS "models/resnet18-in1k-l3-bnfolded.safetensors"

static void test_tile_plan(void) {
    const uf_input_geometry g = {256, 256, UF_FIT_STRETCH};
    uf_tiling t = {1, 32, 512};
    uf_tile_grid grid;
    /* BSD's usual 1130 x 460: own resolution, 5 x 2 tiles */
    CHECK(uf_tile_grid_plan(&t, &g, 1130, 460, &grid) == UF_OK, "%s", uf_last_error());
    CHECK(grid.work_w == 1130 && grid.work_h == 460, "work %dx%d", grid.work_w, grid.work_h);
    CHECK(grid.nx == 5 && grid.ny == 2, "tiles %dx%d", grid.nx, grid.ny);
    const int want_x[5] = {0, 219, 437, 656, 874}; /* round(i * 874 / 4), halves away from 0 */
    for (int i = 0; i < 5 && grid.nx == 5; i++) CHECK(grid.x0[i] == want_x[i], "x0[%d] = %d", i, grid.x0[i]);
    CHECK(grid.ny == 2 && grid.y0[0] == 0 && grid.y0[1] == 204, "y0 %d %d", grid.y0[0], grid.y0[1]);
    for (int i = 1; i < grid.nx; i++) CHECK(grid.x0[i - 1] + 256 - grid.x0[i] >= 32, "overlap %d", i);
    uf_tile_grid_free(&grid);
    /* a large image is brought to a shorter side of 512 first */
    CHECK(uf_tile_grid_plan(&t, &g, 2000, 1000, &grid) == UF_OK, "%s", uf_last_error());
    CHECK(grid.work_w == 1024 && grid.work_h == 512 && grid.nx == 5 && grid.ny == 3, "work %dx%d tiles %dx%d",
          grid.work_w, grid.work_h, grid.nx, grid.ny);
    uf_tile_grid_free(&grid);
    /* a small one is scaled up until a tile fits; one tile */
    CHECK(uf_tile_grid_plan(&t, &g, 100, 50, &grid) == UF_OK, "%s", uf_last_error());
    CHECK(grid.work_w == 512 && grid.work_h == 256 && grid.nx == 3 && grid.ny == 1, "work %dx%d tiles %dx%d",
          grid.work_w, grid.work_h, grid.nx, grid.ny);
    uf_tile_grid_free(&grid);
    /* exact fit without overlap: tiles side by side */
    uf_tiling t0 = {1, 0, 0};
    CHECK(uf_tile_grid_plan(&t0, &g, 768, 256, &grid) == UF_OK, "%s", uf_last_error());
    CHECK(grid.nx == 3 && grid.ny == 1 && grid.x0[1] == 256 && grid.x0[2] == 512, "tiles %d: %d %d", grid.nx,
          grid.x0[1], grid.x0[2]);
    uf_tile_grid_free(&grid);
    /* bad overlap */
    uf_tiling bad = {1, 256, 0};
    CHECK(uf_tile_grid_plan(&bad, &g, 1000, 1000, &grid) == UF_ERR, "overlap = tile side refused");
    /* the default rule */
    int w[3] = {1130, 1130, 1540}, h[3] = {460, 460, 645};
    uf_tiling c = uf_tiling_choose(w, h, 3, &g);
    CHECK(c.enabled && c.overlap == 32 && c.max_short == 512, "BSD-like sizes: tiling %d %d %d", c.enabled, c.overlap,
          c.max_short);
    int w2[3] = {295, 300, 630}, h2[3] = {330, 240, 400};
    c = uf_tiling_choose(w2, h2, 3, &g);
    CHECK(!c.enabled, "MTD-like sizes (median shorter side 300 < 384): no tiling");
}

/* j = the largest count with P(Bin(n, rate) <= j) <= 0.1, checked against values computed
 * with Python's exact math.comb (rate 0.2, n 20: 1; rate 0.05, n 200: 5; n 1000: 40). */
static void test_calibration_offset(void) {
    CHECK(uf_calibration_allowed(20, 0.05) == 0, "n 20: none allowed (%d)", uf_calibration_allowed(20, 0.05));
    CHECK(uf_calibration_allowed(20, 0.2) == 1, "n 20, rate 0.2: %d", uf_calibration_allowed(20, 0.2));
    CHECK(uf_calibration_allowed(200, 0.05) == 5, "n 200: %d", uf_calibration_allowed(200, 0.05));
    CHECK(uf_calibration_allowed(1000, 0.05) == 40, "n 1000: %d", uf_calibration_allowed(1000, 0.05));
    double s[200];
    for (int i = 0; i < 20; i++) s[i] = 19 - i; /* 0..19, reversed */
    CHECK(uf_calibration_offset(s, 20, 0.05) == 19.0, "n 20: the largest");
    for (int i = 0; i < 20; i++) s[i] = i;
    CHECK(uf_calibration_offset(s, 20, 0.2) == 18.0, "n 20, rate 0.2: the second largest");
    for (int i = 0; i < 200; i++) s[i] = (i * 37) % 200; /* a permutation of 0..199 */
    CHECK(uf_calibration_offset(s, 200, 0.05) == 194.0, "n 200: the sixth largest (%g)", s[194]);
    for (int i = 0; i < 20; i++) s[i] = -5.0 - i;
    CHECK(uf_calibration_offset(s, 20, 0.05) == 0.0, "never below 0");
}

/* The spec's null through the new entry point: the plain tree NFA bit for bit. */
static void test_standard_null_is_the_spec(void) {
    const int C[2] = {24, 8}, H[2] = {12, 6}, W[2] = {16, 8};
    float *z[2];
    uf_rng r = uf_rng_seed(7);
    uf_latent_view v[2];
    for (int l = 0; l < 2; l++) {
        const size_t n = (size_t)C[l] * H[l] * W[l];
        z[l] = malloc(sizeof(float) * n);
        for (size_t k = 0; k < n; k++) z[l][k] = (float)(uf_rng_uniform(&r) * 4.0 - 2.0);
        /* a bright square, so that something is detected */
        for (int y = 2; y < 6; y++)
            for (int x = 3; x < 7; x++) z[l][(size_t)y * W[l] + x] = 6.0f;
        v[l] = (uf_latent_view){z[l], C[l], H[l], W[l]};
    }
    float *a = malloc(sizeof(float) * 48 * 64), *b = malloc(sizeof(float) * 48 * 64);
    uf_nfa_null null = uf_nfa_null_standard();
    CHECK(uf_nfa_tree_score(v, 2, 48, 64, a) == UF_OK && uf_nfa_tree_score_null(v, 2, &null, 48, 64, b) == UF_OK,
          "%s", uf_last_error());
    CHECK(!memcmp(a, b, sizeof(float) * 48 * 64), "standard null = spec, bit for bit");
    /* 10^3 more tests lower every score by 3 */
    null.log10_extra_tests = 3.0;
    CHECK(uf_nfa_tree_score_null(v, 2, &null, 48, 64, b) == UF_OK, "%s", uf_last_error());
    float worst = 0;
    for (int p = 0; p < 48 * 64; p++) worst = fmaxf(worst, fabsf(a[p] - 3.0f - b[p]));
    CHECK(worst < 1e-3f, "extra tests shift the score by 3 (max error %g)", worst);
    /* doubling every latent's variance under H0 = halving the energies */
    null = uf_nfa_null_standard();
    null.z2_scale[0] = null.z2_scale[1] = 4.0;
    for (int l = 0; l < 2; l++)
        for (size_t k = 0; k < (size_t)C[l] * H[l] * W[l]; k++) z[l][k] *= 2.0f;
    CHECK(uf_nfa_tree_score_null(v, 2, &null, 48, 64, b) == UF_OK, "%s", uf_last_error());
    worst = 0;
    for (int p = 0; p < 48 * 64; p++) worst = fmaxf(worst, fabsf(a[p] - b[p]));
    CHECK(worst < 1e-2f, "N(0, 4) null on 2z = spec on z (max error %g)", worst);
    null.z2_scale[1] = 0.0;
    CHECK(uf_nfa_tree_score_null(v, 2, &null, 48, 64, b) == UF_ERR, "a zero variance is refused");
    free(a), free(b), free(z[0]), free(z[1]);
}

/* A tiled image's fields against each tile's own, computed from the tile's pixels. */
static void check_stitch(int overlap) {
    uf_model *m = uf_model_create(UF_BACKBONE_RESNET, WEIGHTS, (uf_input_geometry){64, 64, UF_FIT_STRETCH}, 1,
                                  UF_LN_LOGDET, 3);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    m->cfg.tiling = (uf_tiling){1, overlap, 0};
    uf_image *img = NULL;
    CHECK(uf_synth_render(4, UF_SYNTH_STREAM_TEST_DEFECT, 1, UF_SYNTH_HOLE, 160, &img, NULL) == UF_OK, "%s",
          uf_last_error());
    uf_image *cut = uf_image_new(160, 112, 3); /* not a multiple of the tile: the last tiles shift back */
    for (int y = 0; y < 112; y++) memcpy(cut->pixels + (size_t)y * 160 * 3, img->pixels + (size_t)y * 160 * 3, 160 * 3);
    uf_batch b;
    CHECK(uf_batch_init(&b, m, 4, 64, 64) == UF_OK, "%s", uf_last_error());
    const char *name = "cut";
    const uf_image *imgs[1] = {cut};
    CHECK(uf_batch_load_images(&b, m, imgs, &name, 1) == 0 && uf_batch_run(&b, m, NULL, NULL) == UF_OK, "%s",
          uf_last_error());
    CHECK(b.tiled && !b.error[0][0] && b.orig_w[0] == 160 && b.orig_h[0] == 112, "tiled run: %s", b.error[0]);
    uf_tile_grid g;
    CHECK(uf_tile_grid_plan(&m->cfg.tiling, &m->cfg.input, 160, 112, &g) == UF_OK, "%s", uf_last_error());
    const int nt = uf_tile_count(&g);
    CHECK(g.work_w == 160 && g.work_h == 112 && nt == (overlap ? 3 * 2 : 3 * 2), "grid %dx%d", g.nx, g.ny);
    /* each tile alone: latents from its pixels, map and NFA with the whole image's tests */
    float *x = malloc(sizeof(float) * 3 * 64 * 64), *tmap = malloc(sizeof(float) * nt * 64 * 64),
          *tnfa = malloc(sizeof(float) * nt * 64 * 64);
    float *z[UF_FLOW_MAX_SCALES];
    const int L = m->cfg.flow.n_scales;
    uf_latent_view v[UF_FLOW_MAX_SCALES];
    for (int l = 0; l < L; l++) {
        uf_model_latent_shape(m, l, &v[l].c, &v[l].h, &v[l].w);
        z[l] = uf_alloc(sizeof(float) * v[l].c * v[l].h * v[l].w);
        v[l].z = z[l];
    }
    const uf_nfa_null null = uf_model_nfa_null(&m->cfg, nt);
    /* the latents in the batch's chunks of 4 tiles: some kernels' rounding depends on the batch */
    float *xs = malloc(sizeof(float) * 4 * 3 * 4096);
    for (int l = 0; l < L; l++) {
        uf_free(z[l]);
        z[l] = uf_alloc(sizeof(float) * 4 * v[l].c * v[l].h * v[l].w);
    }
    for (int t0 = 0; t0 < nt; t0 += 4) {
        const int k = nt - t0 < 4 ? nt - t0 : 4;
        for (int t = 0; t < k; t++) {
            uf_image *tile = uf_tile_crop(cut, &g, t0 + t);
            uf_image_to_imagenet(tile, xs + (size_t)t * 3 * 4096);
            uf_image_free(tile);
        }
        CHECK(uf_model_latents(m, xs, k, z) == UF_OK, "%s", uf_last_error());
        for (int t = 0; t < k; t++) {
            float score;
            for (int l = 0; l < L; l++) v[l].z = z[l] + (size_t)t * v[l].c * v[l].h * v[l].w;
            CHECK(uf_anomaly_map(v, L, 64, 64, tmap + (size_t)(t0 + t) * 4096, &score) == UF_OK &&
                      uf_nfa_tree_score_null(v, L, &null, 64, 64, tnfa + (size_t)(t0 + t) * 4096) == UF_OK,
                  "%s", uf_last_error());
        }
    }
    free(xs);
    /* compare pixel by pixel: covered once -> that tile's values exactly */
    int once = 0, more = 0, bad_once = 0, bad_more = 0, positive = 0;
    for (int y = 0; y < 112; y++)
        for (int x0 = 0; x0 < 160; x0++) {
            int n_cov = 0;
            float best = -INFINITY, sum = 0, single_map = 0, single_nfa = 0;
            for (int t = 0; t < nt; t++) {
                const int tx = g.x0[t % g.nx], ty = g.y0[t / g.nx];
                if (x0 < tx || x0 >= tx + 64 || y < ty || y >= ty + 64) continue;
                const size_t o = (size_t)(y - ty) * 64 + (x0 - tx);
                n_cov++;
                sum += tmap[(size_t)t * 4096 + o];
                best = fmaxf(best, tnfa[(size_t)t * 4096 + o]);
                single_map = tmap[(size_t)t * 4096 + o], single_nfa = tnfa[(size_t)t * 4096 + o];
            }
            const float sm = b.tiled_amap[0][(size_t)y * 160 + x0], sn = b.tiled_nfa[0][(size_t)y * 160 + x0];
            positive += sn > 0;
            if (n_cov == 1) {
                once++;
                bad_once += sm != single_map || sn != single_nfa;
            } else {
                more++;
                bad_more += sn != best || fabsf(sm - sum / n_cov) > 1e-6f;
            }
        }
    CHECK(once > 0 && bad_once == 0, "overlap %d: %d of %d singly covered pixels differ from their tile", overlap,
          bad_once, once);
    CHECK(bad_more == 0, "overlap %d: %d of %d overlapping pixels are not the tiles' max NFA / mean map", overlap,
          bad_more, more);
    if (overlap == 0) CHECK(more == 0 || g.x0[g.nx - 1] + 64 == 160, "no overlap but the last shifted tile");
    for (int l = 0; l < L; l++) uf_free(z[l]);
    free(x), free(tmap), free(tnfa);
    uf_tile_grid_free(&g);
    uf_batch_free(&b);
    uf_image_free(cut);
    uf_image_free(img);
    uf_model_free(m);
    (void)positive;
}

static void test_stitched_fields_equal_tiles(void) {
    check_stitch(0);
    check_stitch(16);
}

/* One image through a batch of model m with its map at out_w x out_h (a tiled model: at the
 * image's size): copies of the map and the NFA field, and the score. */
static void run_one(uf_model *m, const uf_image *img, int out_w, int out_h, float *map, float *nfa, float *score) {
    uf_batch b;
    CHECK(uf_batch_init(&b, m, 2, out_w, out_h) == UF_OK, "%s", uf_last_error());
    const char *name = "img";
    CHECK(uf_batch_load_images(&b, m, &img, &name, 1) == 0 && uf_batch_run(&b, m, NULL, NULL) == UF_OK &&
              !b.error[0][0],
          "%s %s", uf_last_error(), b.error[0]);
    const size_t n = b.tiled ? (size_t)img->width * img->height : (size_t)out_w * out_h;
    memcpy(map, b.tiled ? b.tiled_amap[0] : b.amap, n * sizeof(float));
    memcpy(nfa, b.tiled ? b.tiled_nfa[0] : b.nfa, n * sizeof(float));
    *score = b.score[0];
    uf_batch_free(&b);
}

static float max_of(const float *a, size_t n) {
    float mx = -INFINITY;
    for (size_t i = 0; i < n; i++) mx = a[i] > mx ? a[i] : mx;
    return mx;
}

/* cfg.map_sigma: the spec's map at the input's size, smoothed, resized to the output, and the
 * score its maximum; a tiled model's stitched map smoothed at the working resolution. The NFA
 * never changes. */
static void test_map_smoothing_in_batch(void) {
    uf_model *m = uf_model_create(UF_BACKBONE_RESNET, WEIGHTS, (uf_input_geometry){64, 64, UF_FIT_STRETCH}, 1,
                                  UF_LN_LOGDET, 3);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    uf_image *img = NULL;
    CHECK(uf_synth_render(4, UF_SYNTH_STREAM_TEST_DEFECT, 1, UF_SYNTH_HOLE, 160, &img, NULL) == UF_OK, "%s",
          uf_last_error());
    const size_t big = 160 * 160;
    float *a0 = malloc(big * sizeof(float)), *a3 = malloc(big * sizeof(float)), *n0 = malloc(big * sizeof(float)),
          *n3 = malloc(big * sizeof(float)), *want = malloc(big * sizeof(float)), s0, s3;
    /* not tiled, output at the input's size */
    CHECK(m->cfg.map_sigma == 0.0, "a created model has the spec's map");
    run_one(m, img, 64, 64, a0, n0, &s0);
    m->cfg.map_sigma = 3.0;
    run_one(m, img, 64, 64, a3, n3, &s3);
    memcpy(want, a0, 4096 * sizeof(float));
    CHECK(uf_map_smooth(want, 64, 64, 3.f, 3.f) == UF_OK, "%s", uf_last_error());
    CHECK(!memcmp(a3, want, 4096 * sizeof(float)), "sigma 3 map = the spec's map smoothed");
    CHECK(memcmp(a3, a0, 4096 * sizeof(float)) != 0, "smoothing changed the map");
    CHECK(!memcmp(n3, n0, 4096 * sizeof(float)), "the NFA does not depend on the smoothing");
    CHECK(s3 == max_of(want, 4096) && s0 == max_of(a0, 4096) && s3 < s0, "scores %g %g", s0, s3);
    /* another output size: the smoothed input-size map, resized; the same score */
    float s3b;
    run_one(m, img, 96, 80, a0, n0, &s3b);
    float *resized = malloc(96 * 80 * sizeof(float));
    uf_interp_bilinear(want, 1, 64, 64, resized, 80, 96);
    CHECK(!memcmp(a0, resized, 96 * 80 * sizeof(float)) && s3b == s3, "96x80 output: the 64x64 smoothed map resized");
    free(resized);
    /* tiled (160x160 at its own resolution, 3x3 tiles of 64): the stitched map smoothed */
    m->cfg.tiling = (uf_tiling){1, 16, 0};
    m->cfg.map_sigma = 0.0;
    run_one(m, img, 64, 64, a0, n0, &s0);
    m->cfg.map_sigma = 3.0;
    run_one(m, img, 64, 64, a3, n3, &s3);
    memcpy(want, a0, big * sizeof(float));
    CHECK(uf_map_smooth(want, 160, 160, 3.f, 3.f) == UF_OK, "%s", uf_last_error());
    CHECK(!memcmp(a3, want, big * sizeof(float)), "tiled: the stitched map smoothed");
    CHECK(!memcmp(n3, n0, big * sizeof(float)), "tiled: the NFA does not depend on the smoothing");
    CHECK(s3 == max_of(want, big), "tiled score = the smoothed map's maximum");
    free(a0), free(a3), free(n0), free(n3), free(want);
    uf_image_free(img);
    uf_model_free(m);
}

/* Writes images first..first+n-1 of stream `stream` (fabric of `seed`) at size x size into dir, with
 * Gaussian noise of sd `noise` (0-255 scale) added when noise > 0. */
static void write_normals(const char *dir, uint64_t seed, int stream, int first, int n, int size, double noise) {
    CHECK(uf_make_dirs(dir) == UF_OK, "%s", uf_last_error());
    uf_rng r = uf_rng_seed(seed * 31 + (uint64_t)stream * 7 + (uint64_t)first);
    for (int i = 0; i < n; i++) {
        uf_image *img = NULL;
        CHECK(uf_synth_render(seed, stream, first + i, UF_SYNTH_NONE, size, &img, NULL) == UF_OK, "%s", uf_last_error());
        if (!img) return;
        if (noise > 0)
            for (size_t p = 0; p < (size_t)size * size * 3; p++) {
                double u1 = uf_rng_uniform(&r) + 1e-12, u2 = uf_rng_uniform(&r);
                double v = img->pixels[p] + noise * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
                img->pixels[p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lround(v));
            }
        char path[700];
        snprintf(path, sizeof path, "%s/%03d.png", dir, i);
        CHECK(uf_image_write_png(path, img) == UF_OK, "%s", uf_last_error());
        uf_image_free(img);
    }
}

/* Share of the images in dir with a detection (NFA < 1) under model m. */
static double share_flagged(uf_model *m, const char *dir, int n) {
    char paths_buf[64][700];
    const char *paths[64];
    for (int i = 0; i < n; i++) {
        snprintf(paths_buf[i], sizeof paths_buf[i], "%s/%03d.png", dir, i);
        paths[i] = paths_buf[i];
    }
    uf_batch b;
    CHECK(uf_batch_init(&b, m, n, m->cfg.input.width, m->cfg.input.height) == UF_OK, "%s", uf_last_error());
    uf_batch_load(&b, m, paths, n);
    CHECK(uf_batch_run(&b, m, NULL, NULL) == UF_OK && uf_batch_first_error(&b) < 0, "%s", uf_last_error());
    const size_t per = (size_t)b.out_w * b.out_h;
    int flagged = 0;
    for (int i = 0; i < n; i++) {
        int det = 0;
        for (size_t p = 0; p < per && !det; p++) det = b.nfa[(size_t)i * per + p] > 0;
        flagged += det;
    }
    uf_batch_free(&b);
    return (double)flagged / n;
}

/* Validation normals noisier than the training ones (a camera that changed, a new batch of
 * parts): the spec's test fires on such normal images; the calibrated one at most 5%. */
static void test_calibration_on_noisier_normals(void) {
    char data[600], val[600], test_good[600], model[600];
    snprintf(data, sizeof data, "%s/cal/train/good", uf_test_tmpdir());
    snprintf(val, sizeof val, "%s/cal_val", uf_test_tmpdir());
    snprintf(test_good, sizeof test_good, "%s/cal_test", uf_test_tmpdir());
    snprintf(model, sizeof model, "%s/cal.safetensors", uf_test_tmpdir());
    write_normals(data, 11, UF_SYNTH_STREAM_TRAIN, 0, 24, 64, 0.0);
    /* validation and test normals: the same law (noisy), different images */
    write_normals(val, 11, UF_SYNTH_STREAM_TEST_GOOD, 0, 50, 64, 10.0); /* >= 45: the 90% bound holds */
    write_normals(test_good, 11, UF_SYNTH_STREAM_TEST_GOOD, 50, 40, 64, 10.0);
    snprintf(data, sizeof data, "%s/cal", uf_test_tmpdir());
    uf_train_options o = uf_train_default_options();
    o.data_dir = data;
    o.val_dir = val;
    o.weights = WEIGHTS;
    o.out_path = model;
    o.input = (uf_input_geometry){64, 64, UF_FIT_STRETCH};
    o.n_steps = 2;
    o.epochs = 12;
    o.batch = 8;
    o.lr = 2e-3;
    o.seed = 2;
    o.early_stop = 0;
    o.checkpoint_every = 0;
    o.verbose = 0;
    uf_train_report tr;
    CHECK(uf_train(&o, &tr) == UF_OK, "%s", uf_last_error());
    CHECK(tr.calib.n_images == 50, "calibrated on the 50 validation images (%d)", tr.calib.n_images);
    uf_model *m = uf_model_load(model, WEIGHTS, NULL, NULL);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    CHECK(m->cfg.calib.n_images == 50 && m->cfg.calib.rate == UF_CALIB_RATE, "the model file records it");
    for (int l = 0; l < m->cfg.flow.n_scales; l++)
        CHECK(m->cfg.calib.z2[l] > 1.0, "scale %d: the noisy normals' variance %g is above 1", l, m->cfg.calib.z2[l]);
    const double calibrated = share_flagged(m, test_good, 40);
    uf_calibration k = m->cfg.calib;
    m->cfg.calib.n_images = 0; /* the spec's test on the same model */
    const double spec = share_flagged(m, test_good, 40);
    m->cfg.calib = k;
    printf("  noisy normal test images with a detection: spec's NFA %.1f%%, calibrated %.1f%% (validation: %.1f%% "
           "-> %.1f%%; variance %.3f %.3f %.3f, offset %.2f)\n",
           100 * spec, 100 * calibrated, 100 * k.flagged_spec, 100 * k.flagged, k.z2[0], k.z2[1], k.z2[2],
           k.log10_offset);
    CHECK(calibrated <= 0.05, "calibrated: %.1f%% of normal test images flagged (<= 5%%)", 100 * calibrated);
    CHECK(spec > calibrated && spec > 0.05, "the spec's test flags more: %.1f%%", 100 * spec);
    uf_model_free(m);
}

/* A 4 x 4 px dark pit on 256 x 256 fabric, for a 64 x 64 model: resized, the pit is about one
 * input pixel, a fraction of a cell of the finest latent grid; tiled at the image's own
 * resolution it keeps its 16 pixels. Both models are trained on the same 16 normal images. */
#define PIT 4
static int g_px[8], g_py[8]; /* the pits of pits_bad/, for the command-line test */
static void write_pitted(const char *dir, int first, int n, int pitted, int *px, int *py) {
    CHECK(uf_make_dirs(dir) == UF_OK, "%s", uf_last_error());
    uf_rng r = uf_rng_seed(99 + (uint64_t)first);
    for (int i = 0; i < n; i++) {
        uf_image *img = NULL;
        CHECK(uf_synth_render(13, UF_SYNTH_STREAM_TEST_GOOD, first + i, UF_SYNTH_NONE, 256, &img, NULL) == UF_OK, "%s",
              uf_last_error());
        if (!img) return;
        if (pitted) {
            px[i] = 20 + (int)uf_rng_below(&r, 256 - 40), py[i] = 20 + (int)uf_rng_below(&r, 256 - 40);
            for (int y = py[i]; y < py[i] + PIT; y++)
                for (int x = px[i]; x < px[i] + PIT; x++) memset(img->pixels + ((size_t)y * 256 + x) * 3, 12, 3);
        }
        char path[700];
        snprintf(path, sizeof path, "%s/%03d.png", dir, i);
        CHECK(uf_image_write_png(path, img) == UF_OK, "%s", uf_last_error());
        uf_image_free(img);
    }
}

/* Image scores, whether the map's maximum lies on the pit (within 4 px), and whether a
 * detection (NFA < 1) touches it, for n images of dir under model m, at the image's size. */
static void score_images(uf_model *m, const char *dir, int n, const int *px, const int *py, float *score, int *on_pit,
                         int *detected_on_pit) {
    for (int i = 0; i < n; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%03d.png", dir, i);
        const char *paths[1] = {path};
        uf_batch b;
        CHECK(uf_batch_init(&b, m, 4, 256, 256) == UF_OK, "%s", uf_last_error());
        uf_batch_load(&b, m, paths, 1);
        CHECK(uf_batch_run(&b, m, NULL, NULL) == UF_OK && !b.error[0][0], "%s %s", uf_last_error(), b.error[0]);
        const float *amap = b.tiled ? b.tiled_amap[0] : b.amap, *nfa = b.tiled ? b.tiled_nfa[0] : b.nfa;
        int arg = 0, det = 0;
        for (int p = 0; p < 256 * 256; p++) {
            if (amap[p] > amap[arg]) arg = p;
            if (px && nfa[p] > 0) {
                const int x = p % 256, y = p / 256;
                det |= x >= px[i] - 4 && x < px[i] + PIT + 4 && y >= py[i] - 4 && y < py[i] + PIT + 4;
            }
        }
        score[i] = b.score[0];
        if (px) {
            const int x = arg % 256, y = arg / 256;
            on_pit[i] = x >= px[i] - 4 && x < px[i] + PIT + 4 && y >= py[i] - 4 && y < py[i] + PIT + 4;
            detected_on_pit[i] = det;
        }
        uf_batch_free(&b);
    }
}

static void test_small_defect_needs_tiling(void) {
    char data[600], good[600], pits[600], tiled[600], resized[600];
    snprintf(data, sizeof data, "%s/pits/train/good", uf_test_tmpdir());
    snprintf(good, sizeof good, "%s/pits_good", uf_test_tmpdir());
    snprintf(pits, sizeof pits, "%s/pits_bad", uf_test_tmpdir());
    snprintf(tiled, sizeof tiled, "%s/tiled.safetensors", uf_test_tmpdir());
    snprintf(resized, sizeof resized, "%s/resized.safetensors", uf_test_tmpdir());
    int px[8], py[8];
    write_pitted(data, 0, 16, 0, NULL, NULL);
    write_pitted(good, 100, 8, 0, NULL, NULL);
    write_pitted(pits, 200, 8, 1, px, py);
    memcpy(g_px, px, sizeof px), memcpy(g_py, py, sizeof py);
    snprintf(data, sizeof data, "%s/pits", uf_test_tmpdir());
    const char *models[2] = {tiled, resized};
    double auroc[2];
    int hits[2] = {0, 0}, found[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        uf_train_options o = uf_train_default_options();
        o.data_dir = data;
        o.weights = WEIGHTS;
        o.out_path = models[k];
        o.input = (uf_input_geometry){64, 64, UF_FIT_STRETCH};
        o.tile = k == 0; /* the same model input; tiles at the image's own resolution, or the image resized */
        o.tile_max_short = -1;
        o.n_steps = 2;
        o.epochs = 30; /* the same optimizer steps: a tiled epoch takes one tile of each image */
        o.batch = 16;
        o.lr = 2e-3;
        o.seed = 4;
        o.val_split = 0;
        o.checkpoint_every = 0;
        o.verbose = 0;
        uf_train_report tr;
        CHECK(uf_train(&o, &tr) == UF_OK, "%s", uf_last_error());
        uf_model *m = uf_model_load(models[k], WEIGHTS, NULL, NULL);
        CHECK(m != NULL && m->cfg.tiling.enabled == (k == 0), "%s", uf_last_error());
        if (!m) return;
        float s[16];
        int on[8], det[8];
        score_images(m, good, 8, NULL, NULL, s, NULL, NULL);
        score_images(m, pits, 8, px, py, s + 8, on, det);
        uint8_t label[16];
        for (int i = 0; i < 16; i++) label[i] = i >= 8;
        auroc[k] = uf_auroc(s, label, 16);
        for (int i = 0; i < 8; i++) hits[k] += on[i], found[k] += det[i];
        uf_model_free(m);
    }
    printf("  4x4 px pits in 256x256 images, 64x64 model: tiled: image AUROC %.3f, map maximum on the pit %d/8, "
           "detection on the pit %d/8; resized: %.3f, %d/8, %d/8\n",
           auroc[0], hits[0], found[0], auroc[1], hits[1], found[1]);
    CHECK(auroc[0] >= 0.9 && found[0] >= 6, "tiled: the pits are found (AUROC %.3f, detected on %d/8)", auroc[0],
          found[0]);
    CHECK(auroc[1] < 0.8 && found[1] <= 2 && hits[1] <= 2,
          "resized: the pits are missed (AUROC %.3f, detected on %d/8, map maximum on %d/8)", auroc[1], found[1],
          hits[1]);
}

/* The command line: train --tile on, predict writes at the image's size, test scores at full
 * resolution, inspect shows the tiling; a bad --tile is refused with one line. Runs after
 * test_small_defect_needs_tiling (its pits data set). */
static void test_cli_tiled(void) {
    char data[600], model[600], pred[600], evald[600], out[600], err[600], img[600];
    snprintf(data, sizeof data, "%s/pits", uf_test_tmpdir());
    snprintf(model, sizeof model, "%s/cli_tiled.safetensors", uf_test_tmpdir());
    snprintf(pred, sizeof pred, "%s/cli_pred", uf_test_tmpdir());
    snprintf(evald, sizeof evald, "%s/cli_eval", uf_test_tmpdir());
    snprintf(out, sizeof out, "%s/cli.out", uf_test_tmpdir());
    snprintf(err, sizeof err, "%s/cli.err", uf_test_tmpdir());
    snprintf(img, sizeof img, "%s/pits_bad/000.png", uf_test_tmpdir());
    const char *bad[] = {"train", "--data", data, "-o", model, "--tile", "sometimes", NULL};
    CHECK(uf_test_run_uflow(bad, out, err) == 1, "--tile sometimes is refused");
    char *e = uf_test_read_text(err);
    CHECK(e && strstr(e, "--tile must be auto, on or off") && uf_test_count_lines(e) == 1, "one line: %s", e ? e : "");
    free(e);
    const char *tr[] = {"train", "--data", data, "-o", model, "--tile", "on", "--size", "64", "--epochs", "1",
                        "--steps", "1", "--weights", WEIGHTS, NULL};
    CHECK(uf_test_run_uflow(tr, out, err) == 0, "train --tile on");
    char *o = uf_test_read_text(out);
    CHECK(o && strstr(o, "tiled: ") && strstr(o, " tiles of 14 training images"), "train output: %s", o ? o : "");
    free(o);
    const char *in[] = {"inspect", model, NULL};
    CHECK(uf_test_run_uflow(in, out, err) == 0, "inspect");
    o = uf_test_read_text(out);
    CHECK(o && strstr(o, "tiling: on, tiles of the input size overlapping by 8 px"), "inspect: %s", o ? o : "");
    free(o);
    const char *pr[] = {"predict", "--model", model, "-o", pred, img, NULL};
    CHECK(uf_test_run_uflow(pr, out, err) == 0, "predict");
    const char *kinds[3] = {"map", "mask", "overlay"};
    for (int k = 0; k < 3; k++) {
        char path[700];
        snprintf(path, sizeof path, "%s/000_%s.png", pred, kinds[k]);
        uf_image *im = uf_image_load(path, 0);
        CHECK(im && im->width == 256 && im->height == 256, "%s at the image's 256x256", kinds[k]);
        uf_image_free(im);
    }
    /* a test split: the good and pitted images with their masks (MVTec layout) */
    char dir[700], from[700], to[700];
    const char *sub[3] = {"test/good", "test/pit", "ground_truth/pit"};
    for (int k = 0; k < 3; k++) {
        snprintf(dir, sizeof dir, "%s/%s", data, sub[k]);
        CHECK(uf_make_dirs(dir) == UF_OK, "%s", uf_last_error());
    }
    for (int i = 0; i < 8; i++) {
        snprintf(from, sizeof from, "%s/pits_good/%03d.png", uf_test_tmpdir(), i);
        snprintf(to, sizeof to, "%s/test/good/%03d.png", data, i);
        CHECK(uf_test_copy_file(from, to) == 0, "copy %s", from);
        snprintf(from, sizeof from, "%s/pits_bad/%03d.png", uf_test_tmpdir(), i);
        snprintf(to, sizeof to, "%s/test/pit/%03d.png", data, i);
        CHECK(uf_test_copy_file(from, to) == 0, "copy %s", from);
        uf_image *mask = uf_image_new(256, 256, 1);
        for (int y = g_py[i]; y < g_py[i] + PIT; y++) memset(mask->pixels + (size_t)y * 256 + g_px[i], 255, PIT);
        snprintf(to, sizeof to, "%s/ground_truth/pit/%03d_mask.png", data, i);
        CHECK(uf_image_write_png(to, mask) == UF_OK, "%s", uf_last_error());
        uf_image_free(mask);
    }
    const char *te[] = {"test", "--model", model, "--data", data, "-o", evald, NULL};
    CHECK(uf_test_run_uflow(te, out, err) == 0, "test");
    snprintf(to, sizeof to, "%s/metrics.json", evald);
    char *js = uf_test_read_text(to);
    CHECK(js && strstr(js, "\"tiled\":\ttrue") && strstr(js, "\"eval_grid\":\t\"image\""),
          "metrics.json: tiled, scored at the image's size: %.300s", js ? js : "");
    free(js);
}

int main(void) {
    UF_TEST(test_tile_plan);
    UF_TEST(test_calibration_offset);
    UF_TEST(test_standard_null_is_the_spec);
    UF_TEST(test_stitched_fields_equal_tiles);
    UF_TEST(test_map_smoothing_in_batch);
    UF_TEST(test_calibration_on_noisier_normals);
    UF_TEST(test_small_defect_needs_tiling);
    UF_TEST(test_cli_tiled);
    return uf_test_summary();
}
