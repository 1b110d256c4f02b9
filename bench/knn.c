/* `uflow bench knn` (knn.h): nearest-neighbour scores on the backbone features of a U-Flow model,
 * with the metrics of `uflow test`.
 *
 * Data flow: image -> model input (uf_load_backbone_inputs_each, or the tiles of a tiled model)
 * -> backbone -> scales 0 and 1 (1 upsampled to 0's grid), concatenated, 3x3 mean over the
 * valid neighbours -> one D-vector per location. Training: a reservoir of at most K vectors.
 * Test: the distance of every location to its nearest bank vector, by SGEMM in chunks
 * (||a||^2 + ||b||^2 - 2 a.b), -> distance map -> eval grid (or tile, then stitched) -> metrics.
 */
#include "knn.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/interp.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "eval/metrics.h"
#include "io/json_file.h"
#include "io/dataset.h"
#include "io/tiling.h"
#include "model/batch.h"
#include "model/evaluate.h"
#include "model/model.h"

#define KNN_GROUP 8          /* model inputs per backbone call (uflow test's batch) */
#define KNN_QUERY_ROWS 2048  /* one distance product: this many queries ... */
#define KNN_BANK_COLS 4096   /* ... against this many bank vectors (32 MB of floats) */
#define KNN_SEED 0
#define KNN_PROGRESS_SECONDS 2.0

bench_knn_options bench_knn_default_options(void) {
    bench_knn_options o = {NULL, 50000, 256, 1};
    return o;
}

typedef struct knn_ctx {
    uf_model *m;
    int W, H;                                /* model input */
    int c[2], h[2], w[2];                    /* backbone scales 0 and 1 */
    int D, h0, w0;                           /* feature size, location grid (scale 0's) */
    size_t hw;                               /* h0 * w0 */
    float *x;                                /* (KNN_GROUP, 3, H, W) */
    float *feat[UF_BACKBONE_MAX_LEVELS];     /* (KNN_GROUP, C_l, h_l, w_l), every level of the backbone */
    float *cat;                              /* (D, h0, w0) one input's two scales */
    float *q;                                /* (KNN_GROUP, h0 * w0, D) location features */
    float *dist;                             /* (KNN_GROUP, h0 * w0) nearest distances */
    char (*errors)[UF_BATCH_ERROR_LEN];      /* (KNN_GROUP) */
    /* memory bank: a reservoir of at most bank_max vectors */
    float *bank;                             /* (bank_cap, D) */
    float *bank_norm;                        /* (bank_n) squared norms */
    int bank_n, bank_cap, bank_max;
    long long seen;                          /* training locations offered to the reservoir */
    uf_rng rng;
    /* distance scratch */
    float *prod;                             /* (KNN_QUERY_ROWS, KNN_BANK_COLS) */
    float *qnorm, *best;                     /* (KNN_QUERY_ROWS) */
    int verbose;
} knn_ctx;

static void knn_free(knn_ctx *k) {
    uf_free(k->x), uf_free(k->cat), uf_free(k->q), uf_free(k->dist), uf_free(k->prod);
    for (int l = 0; l < UF_BACKBONE_MAX_LEVELS; l++) uf_free(k->feat[l]);
    free(k->errors), free(k->bank), free(k->bank_norm), free(k->qnorm), free(k->best);
    memset(k, 0, sizeof *k);
}

static int knn_init(knn_ctx *k, uf_model *m, int bank_max, int verbose) {
    memset(k, 0, sizeof *k);
    k->m = m, k->bank_max = bank_max, k->verbose = verbose;
    k->rng = uf_rng_seed(KNN_SEED);
    k->W = m->cfg.input.width, k->H = m->cfg.input.height;
    const int levels = uf_backbone_levels(m->backbone);
    if (levels < 2) return uf_error("backbone %s has %d feature scale(s); the kNN needs two", m->cfg.backbone, levels);
    int ok = 1;
    for (int l = 0; l < levels; l++) {
        int c, h, w;
        uf_backbone_feature_shape(m->backbone, l, k->H, k->W, &c, &h, &w);
        if (l < 2) k->c[l] = c, k->h[l] = h, k->w[l] = w;
        ok = ok && (k->feat[l] = uf_alloc((size_t)KNN_GROUP * c * h * w * sizeof(float)));
    }
    k->D = k->c[0] + k->c[1], k->h0 = k->h[0], k->w0 = k->w[0];
    k->hw = (size_t)k->h0 * k->w0;
    ok = ok && (k->x = uf_alloc((size_t)KNN_GROUP * 3 * k->W * k->H * sizeof(float))) &&
         (k->cat = uf_alloc((size_t)k->D * k->hw * sizeof(float))) &&
         (k->q = uf_alloc((size_t)KNN_GROUP * k->hw * k->D * sizeof(float))) &&
         (k->dist = uf_alloc((size_t)KNN_GROUP * k->hw * sizeof(float))) &&
         (k->prod = uf_alloc((size_t)KNN_QUERY_ROWS * KNN_BANK_COLS * sizeof(float))) &&
         (k->errors = malloc(sizeof *k->errors * KNN_GROUP)) &&
         (k->qnorm = malloc(sizeof(float) * KNN_QUERY_ROWS)) && (k->best = malloc(sizeof(float) * KNN_QUERY_ROWS));
    if (!ok) {
        knn_free(k);
        return uf_error("out of memory for the kNN buffers (%d-dim features on a %dx%d grid)", k->D, k->w0, k->h0);
    }
    return UF_OK;
}

/* The location features of model inputs 0..n-1 in k->x into k->q (n, h0 * w0, D): scale 0 and
 * scale 1 bilinearly upsampled to its grid, then the mean over the valid 3x3 neighbours. what:
 * the image named in errors. */
static int knn_features(knn_ctx *k, int n, const char *what) {
    if (uf_backbone_forward(k->m->backbone, k->x, n, k->H, k->W, k->feat) != UF_OK) return UF_ERR;
    const int D = k->D, h0 = k->h0, w0 = k->w0, h1 = k->h[1], w1 = k->w[1];
    const size_t hw = k->hw, hw1 = (size_t)h1 * w1;
    for (int i = 0; i < n; i++) {
        const float *f0 = k->feat[0] + (size_t)i * k->c[0] * hw;
        const float *f1 = k->feat[1] + (size_t)i * k->c[1] * hw1;
        memcpy(k->cat, f0, (size_t)k->c[0] * hw * sizeof(float));
        float *up = k->cat + (size_t)k->c[0] * hw;
#pragma omp parallel for schedule(static)
        for (int c = 0; c < k->c[1]; c++) uf_interp_bilinear(f1 + c * hw1, 1, h1, w1, up + c * hw, h0, w0);
        if (!uf_all_finite(k->cat, (size_t)D * hw))
            return uf_error("backbone features of '%s' are not finite (NaN or Inf): check the backbone weights '%s'",
                            what, k->m->cfg.backbone_file);
        float *q = k->q + (size_t)i * hw * D;
        int failed = 0;
#pragma omp parallel reduction(+ : failed)
        {
            float *rows = malloc(hw * sizeof(float)); /* horizontal 3-sums of one channel */
            failed += !rows;
#pragma omp for schedule(static)
            for (int c = 0; c < D; c++) {
                if (!rows) continue;
                const float *p = k->cat + (size_t)c * hw;
                for (int y = 0; y < h0; y++)
                    for (int x = 0; x < w0; x++) {
                        const float *r = p + (size_t)y * w0 + x;
                        rows[(size_t)y * w0 + x] = r[0] + (x > 0 ? r[-1] : 0.f) + (x < w0 - 1 ? r[1] : 0.f);
                    }
                for (int y = 0; y < h0; y++) {
                    const int cy = 1 + (y > 0) + (y < h0 - 1);
                    for (int x = 0; x < w0; x++) {
                        const size_t o = (size_t)y * w0 + x;
                        const int cx = 1 + (x > 0) + (x < w0 - 1);
                        const float s = rows[o] + (y > 0 ? rows[o - w0] : 0.f) + (y < h0 - 1 ? rows[o + w0] : 0.f);
                        q[o * D + c] = s / (float)(cx * cy);
                    }
                }
            }
            free(rows);
        }
        if (failed) return uf_error("out of memory");
    }
    return UF_OK;
}

/* Offers n vectors (n, D) to the reservoir (Algorithm R, seeded): the bank stays a uniform
 * random subset of at most bank_max of the vectors offered so far. */
static int knn_bank_add(knn_ctx *k, const float *v, size_t n) {
    const int D = k->D;
    for (size_t i = 0; i < n; i++, k->seen++) {
        long long slot = k->seen;
        if (slot >= k->bank_max) {
            slot = (long long)uf_rng_below(&k->rng, (uint64_t)k->seen + 1);
            if (slot >= k->bank_max) continue;
        } else if (slot >= k->bank_cap) { /* grow: the bank is allocated as it fills */
            int cap = k->bank_cap ? k->bank_cap : (k->bank_max < 16384 ? k->bank_max : 16384);
            while (cap <= slot) cap = cap > k->bank_max / 2 ? k->bank_max : 2 * cap;
            float *b = realloc(k->bank, (size_t)cap * D * sizeof(float));
            if (!b) return uf_error("out of memory for a bank of %d %d-dim features (--max-train-features)", cap, D);
            k->bank = b, k->bank_cap = cap;
        }
        memcpy(k->bank + (size_t)slot * D, v + i * D, (size_t)D * sizeof(float));
    }
    k->bank_n = k->seen < k->bank_max ? (int)k->seen : k->bank_max;
    return UF_OK;
}

static int knn_bank_finish(knn_ctx *k) {
    if (k->bank_n == 0) return uf_error("no training features");
    if (!(k->bank_norm = malloc(sizeof(float) * (size_t)k->bank_n))) return uf_error("out of memory");
#pragma omp parallel for schedule(static)
    for (int j = 0; j < k->bank_n; j++) {
        const float *b = k->bank + (size_t)j * k->D;
        double s = 0.0;
        for (int c = 0; c < k->D; c++) s += (double)b[c] * b[c];
        k->bank_norm[j] = (float)s;
    }
    return UF_OK;
}

/* d[i] = Euclidean distance from query i of q (n, D) to its nearest bank vector:
 * min_j (||b_j||^2 - 2 q.b_j) by SGEMM over chunks of the bank, + ||q||^2, clamped at 0. */
static void knn_nearest(knn_ctx *k, const float *q, size_t n, float *d) {
    const int D = k->D;
    for (size_t r0 = 0; r0 < n; r0 += KNN_QUERY_ROWS) {
        const int nr = n - r0 < KNN_QUERY_ROWS ? (int)(n - r0) : KNN_QUERY_ROWS;
        const float *qr = q + r0 * D;
#pragma omp parallel for schedule(static)
        for (int i = 0; i < nr; i++) {
            double s = 0.0;
            for (int c = 0; c < D; c++) s += (double)qr[(size_t)i * D + c] * qr[(size_t)i * D + c];
            k->qnorm[i] = (float)s, k->best[i] = INFINITY;
        }
        for (int c0 = 0; c0 < k->bank_n; c0 += KNN_BANK_COLS) {
            const int nc = k->bank_n - c0 < KNN_BANK_COLS ? k->bank_n - c0 : KNN_BANK_COLS;
            /* prod (nr, nc) = -2 Q B^T */
            uf_sgemm(false, true, nr, nc, D, -2.0f, qr, D, k->bank + (size_t)c0 * D, D, 0.0f, k->prod, nc);
            const float *bn = k->bank_norm + c0;
#pragma omp parallel for schedule(static)
            for (int i = 0; i < nr; i++) {
                const float *p = k->prod + (size_t)i * nc;
                float m = k->best[i];
                for (int j = 0; j < nc; j++) {
                    const float v = p[j] + bn[j];
                    m = v < m ? v : m;
                }
                k->best[i] = m;
            }
        }
        for (int i = 0; i < nr; i++) {
            const float d2 = k->qnorm[i] + k->best[i];
            d[r0 + i] = sqrtf(d2 > 0.f ? d2 : 0.f);
        }
    }
}

/* One image of a split as the passes see it. */
typedef struct knn_image {
    const uf_sample *s;
    int w, h;                 /* the image as loaded */
    const uf_tile_grid *grid; /* a tiled model's tiles of it; NULL otherwise */
} knn_image;

/* A pass over a split: `inputs` gets the features q (n, h0 * w0, D) of the image's model
 * inputs tile0..tile0+n-1 (the whole image: tile0 0, n 1, when not tiled), in order; `done`
 * (may be NULL) follows the image's last input. */
typedef struct knn_pass {
    const char *what; /* progress: "bank", "test" */
    int (*inputs)(knn_ctx *k, void *user, const knn_image *im, int tile0, int n, const float *q);
    int (*done)(knn_ctx *k, void *user, const knn_image *im);
    void *user;
} knn_pass;

static void knn_progress(const knn_ctx *k, const knn_pass *p, int done, int total, double *t_report) {
    if (!k->verbose || done >= total || uf_now() - *t_report < KNN_PROGRESS_SECONDS) return;
    uf_log(UF_LOG_PROGRESS, "knn %s: %d/%d images", p->what, done, total);
    *t_report = uf_now();
}

/* Runs pass p over every image of ds. An image that cannot be read stops it, naming the file
 * (metrics over part of a split would mislead). */
static int knn_run_split(knn_ctx *k, const uf_dataset *ds, const knn_pass *p) {
    const uf_input_geometry *g = &k->m->cfg.input;
    const size_t per_x = (size_t)3 * k->W * k->H, per_q = k->hw * k->D;
    double t_report = uf_now();
    int rc = UF_OK;
    if (!k->m->cfg.tiling.enabled) {
        const char *paths[KNN_GROUP];
        int ow[KNN_GROUP], oh[KNN_GROUP];
        for (int i0 = 0; i0 < ds->count && rc == UF_OK; i0 += KNN_GROUP) {
            const int n = ds->count - i0 < KNN_GROUP ? ds->count - i0 : KNN_GROUP;
            for (int i = 0; i < n; i++) paths[i] = ds->samples[i0 + i].image_path;
            if (uf_load_backbone_inputs_each(paths, n, g, k->x, NULL, NULL, ow, oh, k->errors) > 0)
                for (int i = 0; i < n; i++)
                    if (k->errors[i][0]) return uf_error("%s", k->errors[i]);
            rc = knn_features(k, n, paths[0]);
            for (int i = 0; i < n && rc == UF_OK; i++) {
                const knn_image im = {&ds->samples[i0 + i], ow[i], oh[i], NULL};
                rc = p->inputs(k, p->user, &im, 0, 1, k->q + i * per_q);
                if (rc == UF_OK && p->done) rc = p->done(k, p->user, &im);
            }
            knn_progress(k, p, i0 + n, ds->count, &t_report);
        }
        return rc;
    }
    for (int i = 0; i < ds->count && rc == UF_OK; i++) {
        const uf_sample *s = &ds->samples[i];
        uf_image *img = uf_image_load(s->image_path, 3), *work = NULL;
        uf_tile_grid grid;
        memset(&grid, 0, sizeof grid);
        if (!img) return UF_ERR; /* the message names the file */
        if (uf_tile_grid_plan(&k->m->cfg.tiling, g, img->width, img->height, &grid) == UF_OK)
            work = uf_tile_work_image(img, &grid);
        const knn_image im = {s, img->width, img->height, &grid};
        uf_image_free(img);
        if (!work) rc = uf_error_prefix("image '%s'", s->image_path);
        const int nt = uf_tile_count(&grid);
        for (int t0 = 0; t0 < nt && rc == UF_OK; t0 += KNN_GROUP) {
            const int n = nt - t0 < KNN_GROUP ? nt - t0 : KNN_GROUP;
            for (int t = 0; t < n; t++) uf_tile_to_imagenet(work, &grid, t0 + t, k->x + (size_t)t * per_x);
            rc = knn_features(k, n, s->image_path);
            if (rc == UF_OK) rc = p->inputs(k, p->user, &im, t0, n, k->q);
        }
        if (rc == UF_OK && p->done) rc = p->done(k, p->user, &im);
        uf_image_free(work);
        uf_tile_grid_free(&grid);
        knn_progress(k, p, i + 1, ds->count, &t_report);
    }
    return rc;
}

static int bank_inputs(knn_ctx *k, void *user, const knn_image *im, int tile0, int n, const float *q) {
    (void)user, (void)im, (void)tile0;
    return knn_bank_add(k, q, (size_t)n * k->hw);
}

/* The test pass: maps, ground truth and the metric accumulators. */
typedef struct knn_test {
    uf_eval *ev;
    int ew, eh;                 /* eval grid of a non-tiled model */
    float *amap;                /* the current image's map: (eh, ew), or a tiled model's at the image's size */
    uint8_t *gt;                /* its ground truth, same size */
    size_t map_cap;
    float *tile_map;            /* (H, W) one tile's upsampled distances */
    float *sum, *weight, *best; /* stitching at the working resolution */
    size_t work_cap;
    float *score;               /* (count) image scores */
    uint8_t *label;             /* (count) */
    int n, n_masked_anomalous, n_skipped;
} knn_test;

static int test_inputs(knn_ctx *k, void *user, const knn_image *im, int tile0, int n, const float *q) {
    knn_test *t = user;
    knn_nearest(k, q, (size_t)n * k->hw, k->dist);
    if (!im->grid) {
        uf_interp_bilinear(k->dist, 1, k->h0, k->w0, t->amap, t->eh, t->ew);
        return UF_OK;
    }
    const uf_tile_grid *g = im->grid;
    if (tile0 == 0) {
        const size_t nw = (size_t)g->work_w * g->work_h;
        if (nw > t->work_cap) {
            free(t->sum), free(t->weight), free(t->best);
            t->sum = malloc(nw * sizeof(float)), t->weight = malloc(nw * sizeof(float));
            t->best = malloc(nw * sizeof(float));
            t->work_cap = t->sum && t->weight && t->best ? nw : 0;
            if (!t->work_cap) return uf_error("out of memory for a %dx%d map", g->work_w, g->work_h);
        }
        uf_tile_stitch_begin(g, t->sum, t->weight, t->best);
    }
    for (int i = 0; i < n; i++) {
        uf_interp_bilinear(k->dist + (size_t)i * k->hw, 1, k->h0, k->w0, t->tile_map, k->H, k->W);
        uf_tile_stitch_add(g, tile0 + i, t->tile_map, t->tile_map, t->sum, t->weight, t->best);
    }
    return UF_OK;
}

/* Ground truth of sample s (an image of w x h as loaded) on an ew x eh grid, 0/1 into gt, as
 * uflow test has it: the mask (0/255) fitted to the model input like the image (tiled models:
 * kept at the image's size), bilinear to the grid, > 0.5. A shim of evaluate.c's static gt_for
 * and tiled_gt. */
static int test_done(knn_ctx *k, void *user, const knn_image *im) {
    knn_test *t = user;
    int ew = t->ew, eh = t->eh;
    if (im->grid) { /* the stitched map at the image's own size, as uflow test scores tiled models */
        const uf_tile_grid *g = im->grid;
        uf_tile_stitch_end(g, t->sum, t->weight);
        /* the model's map smoothing, as the flow's map gets it (model/batch.c) */
        if (uf_batch_smooth_map(k->m, t->sum, g->work_h, g->work_w, g->work_w, g->work_h) != UF_OK) return UF_ERR;
        ew = im->w, eh = im->h;
        const size_t n = (size_t)ew * eh;
        if (n > t->map_cap) {
            free(t->amap), free(t->gt);
            t->amap = malloc(n * sizeof(float)), t->gt = malloc(n);
            t->map_cap = t->amap && t->gt ? n : 0;
            if (!t->map_cap) return uf_error("out of memory for a %dx%d map", ew, eh);
        }
        if (g->work_w == ew && g->work_h == eh)
            memcpy(t->amap, t->sum, n * sizeof(float));
        else
            uf_interp_bilinear(t->sum, 1, g->work_h, g->work_w, t->amap, eh, ew);
    } else if (uf_batch_smooth_map(k->m, t->amap, eh, ew, k->W, k->H) != UF_OK) { /* the eval grid's map */
        return UF_ERR;
    }
    const size_t n = (size_t)ew * eh;
    float mx = -INFINITY;
    for (size_t i = 0; i < n; i++) mx = t->amap[i] > mx ? t->amap[i] : mx;
    t->score[t->n] = mx;
    t->label[t->n++] = (uint8_t)(im->s->label != 0);
    if (!uf_sample_has_pixel_gt(im->s)) {
        t->n_skipped++;
        return UF_OK;
    }
    if (uf_evaluate_gt(k->m, im->s, im->w, im->h, ew, eh, k->m->cfg.tiling.enabled, t->gt) != UF_OK) return UF_ERR;
    if (uf_eval_add(t->ev, eh, ew, t->amap, NULL, t->gt, im->s->label, NAN) != UF_OK)
        return uf_error_prefix("%s", im->s->image_path);
    t->n_masked_anomalous += im->s->label != 0;
    return UF_OK;
}

static void knn_test_free(knn_test *t) {
    uf_eval_free(t->ev);
    free(t->amap), free(t->gt), free(t->tile_map), free(t->sum), free(t->weight), free(t->best);
    free(t->score), free(t->label);
}

int bench_knn(uf_model *m, const bench_knn_options *o, bench_knn_result *r) {
    const double t_start = uf_now();
    memset(r, 0, sizeof *r);
    r->image_auroc = r->pixel_auroc = r->aupro = NAN;
    if (!m || !m->backbone) return uf_error("the model has no backbone loaded");
    if (!o->data_dir) return uf_error("no data folder");
    if (o->max_train_features < 1 || o->eval_size < 1)
        return uf_error("max_train_features and eval_size must be positive");
    uf_dataset *train = uf_dataset_open(o->data_dir, "train");
    if (!train) return UF_ERR;
    uf_dataset *test = uf_dataset_open(o->data_dir, "test");
    if (!test) {
        uf_dataset_free(train);
        return UF_ERR;
    }
    knn_ctx k;
    knn_test t;
    memset(&t, 0, sizeof t);
    int rc = knn_init(&k, m, o->max_train_features, o->verbose);
    if (rc != UF_OK) goto out_ds;

    const knn_pass bank = {"bank", bank_inputs, NULL, NULL};
    if ((rc = knn_run_split(&k, train, &bank)) != UF_OK || (rc = knn_bank_finish(&k)) != UF_OK) goto out;
    r->n_train_features = k.bank_n, r->n_train_locations = k.seen, r->n_train_images = train->count;
    if (o->verbose)
        uf_log(UF_LOG_INFO, "knn: bank of %d %d-dim features from %lld locations of %d training images (%.1f s)",
               k.bank_n, k.D, k.seen, train->count, uf_now() - t_start);

    uf_evaluate_grid(m, o->eval_size, &t.ew, &t.eh);
    t.map_cap = (size_t)t.ew * t.eh;
    rc = UF_ERR;
    if (!(t.ev = uf_eval_new())) goto out;
    if (!(t.amap = malloc(t.map_cap * sizeof(float))) || !(t.gt = malloc(t.map_cap)) ||
        !(t.tile_map = malloc((size_t)k.W * k.H * sizeof(float))) ||
        !(t.score = malloc(sizeof(float) * (size_t)test->count)) || !(t.label = malloc((size_t)test->count))) {
        uf_error("out of memory");
        goto out;
    }
    const knn_pass scoring = {"test", test_inputs, test_done, &t};
    if ((rc = knn_run_split(&k, test, &scoring)) != UF_OK) goto out;
    if (t.n_skipped)
        uf_log(UF_LOG_WARNING, "%d anomalous test images have no mask: in the image-level metrics, not in the "
                               "pixel-level ones", t.n_skipped);
    /* as uflow test: pixel metrics need anomalous pixels; image AUROC over every image */
    if (t.n_masked_anomalous > 0) {
        uf_eval_result er;
        if ((rc = uf_eval_compute(t.ev, UF_AUPRO_FPR_LIMIT, &er)) != UF_OK) goto out;
        r->pixel_auroc = er.pixel_auroc, r->aupro = er.aupro;
    }
    r->image_auroc = uf_auroc(t.score, t.label, (size_t)t.n);
    r->n_test_images = t.n;
    r->seconds = uf_now() - t_start;
out:
    knn_test_free(&t);
    knn_free(&k);
out_ds:
    uf_dataset_free(train);
    uf_dataset_free(test);
    return rc;
}

int bench_knn_write_json(const bench_knn_result *r, const bench_knn_options *o, const char *path) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return uf_error("out of memory");
    uf_json_add_number(root, "image_auroc", r->image_auroc);
    uf_json_add_number(root, "pixel_auroc", r->pixel_auroc);
    uf_json_add_number(root, "aupro", r->aupro);
    uf_json_add_number(root, "seconds", r->seconds);
    cJSON_AddStringToObject(root, "data", o->data_dir);
    cJSON_AddNumberToObject(root, "eval_size", o->eval_size);
    cJSON_AddNumberToObject(root, "max_train_features", o->max_train_features);
    cJSON_AddNumberToObject(root, "train_features", r->n_train_features);
    cJSON_AddNumberToObject(root, "train_locations", (double)r->n_train_locations);
    cJSON_AddNumberToObject(root, "train_images", r->n_train_images);
    cJSON_AddNumberToObject(root, "test_images", r->n_test_images);
    return uf_json_write_file(root, path);
}
