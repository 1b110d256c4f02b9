#include "model/train.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backbone/shipped.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/log.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "flow/adam.h"
#include "flow/loss.h"
#include "core/rng.h"
#include "io/atomic_file.h"
#include "io/dataset.h"
#include "io/file_hash.h"
#include "io/tiling.h"
#include "model/batch.h"
#include "model/calibration.h"
#include "model/feature_store.h"
#include "model/model.h"

#define FEATURE_GROUP 8 /* images per backbone call while caching features */

uf_train_options uf_train_default_options(void) {
    uf_train_options o;
    memset(&o, 0, sizeof o);
    o.weights = uf_shipped_weights();
    o.input = (uf_input_geometry){0, 0, UF_FIT_STRETCH};
    o.n_steps = 4;
    o.epochs = 100;
    o.batch = 16;
    o.lr = 1e-3;
    o.weight_decay = 1e-5;
    o.seed = 0;
    o.ln_mode = UF_LN_LOGDET;
    o.checkpoint_every = 10;
    o.max_images = -1;
    o.feature_cache = "auto";
    o.val_split = 0.1;
    o.early_stop = 1;
    o.patience = UF_EARLY_STOP_PATIENCE;
    o.tile = -1;
    o.tile_overlap = -1;
    o.calib_rate = UF_CALIB_RATE;
    o.map_sigma = -1.0;
    o.verbose = 1;
    return o;
}



/* Cache of backbone features: feat[l] (n, C_l, H_l, W_l) of the n images
 * that were read; inputs_sha256 fingerprints their normalised inputs in order
 * (what makes a resumed run bit-identical, whatever the files are called). */
typedef struct feature_cache {
    int n, n_scales, n_skipped;  /* n entries: images, or tiles of images for a tiled model */
    size_t per_image[UF_FLOW_MAX_SCALES]; /* floats per entry */
    float *feat[UF_FLOW_MAX_SCALES];
    char inputs_sha256[65];
    char (*image_sha256)[65]; /* (n) each entry's normalised input (fingerprints of subsets) */
    int n_images;             /* images read (= n when not tiled) */
    int *entry_image;         /* (n) the image of each entry, 0..n_images */
    int *image_sample;        /* (n_images) its index in the data set */
} feature_cache;

static void cache_free(feature_cache *c) {
    free(c->image_sha256), free(c->entry_image), free(c->image_sample);
    c->image_sha256 = NULL, c->entry_image = c->image_sample = NULL;
    for (int l = 0; l < c->n_scales; l++) {
        uf_free(c->feat[l]);
        c->feat[l] = NULL;
    }
}

/* One progress line (verbose) every PROGRESS_SECONDS while features are extracted. */
#define PROGRESS_SECONDS 10.0

static void format_duration(double s, char *buf, size_t cap) {
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%dh%02dm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, cap, "%dm%02ds", t / 60, t % 60);
}

static void report_progress(int done, int total, int computed, double t_start) {
    const double dt = uf_now() - t_start;
    char eta[32];
    format_duration(dt / done * (total - done), eta, sizeof eta);
    uf_log(UF_LOG_INFO, "features %d/%d images (%d computed, %d from the cache), %.2f s/image, ETA %s", done, total,
            computed, done - computed, dt / done, eta);
}

/* Features of the first n_try samples of ds, from the disk store where it
 * has them (store may be NULL). Bad-image policy: an image that cannot be
 * read stops the build with its error, unless skip_bad, which leaves it out
 * with a warning. Non-finite features always stop it (they come from the
 * weights, not from one file). */
static int cache_build(uf_model *m, const uf_dataset *ds, int n_try, int skip_bad, uf_feature_store *store,
                       int verbose, feature_cache *c) {
    const uf_input_geometry in = m->cfg.input;
    const int L = m->cfg.flow.n_scales;
    const size_t per_x = (size_t)3 * in.width * in.height;
    memset(c, 0, sizeof *c);
    c->n_scales = L;
    double bytes = 0;
    for (int l = 0; l < L; l++) {
        c->per_image[l] = (size_t)m->cfg.flow.channels[l] * m->cfg.flow.height[l] * m->cfg.flow.width[l];
        c->feat[l] = uf_alloc((size_t)n_try * c->per_image[l] * sizeof(float));
        if (!c->feat[l]) {
            cache_free(c);
            return uf_error_prefix("feature cache for %d images", n_try);
        }
        bytes += (double)n_try * c->per_image[l] * sizeof(float);
    }
    if (!(c->image_sha256 = malloc(sizeof *c->image_sha256 * (size_t)n_try)) ||
        !(c->entry_image = malloc(sizeof(int) * (size_t)n_try)) || !(c->image_sample = malloc(sizeof(int) * (size_t)n_try))) {
        cache_free(c);
        return uf_error("out of memory for the feature cache");
    }
    if (verbose)
        uf_log(UF_LOG_INFO, "caching %s features of %d images (%.0f MB)%s%s", m->cfg.backbone, n_try, bytes / 1e6,
                store ? ", stored in " : "", store ? store->dir : "");
    float *x = uf_alloc((size_t)FEATURE_GROUP * per_x * sizeof(float));
    char (*errors)[UF_BATCH_ERROR_LEN] = malloc(sizeof *errors * FEATURE_GROUP);
    const char *paths[FEATURE_GROUP];
    char input_sha[FEATURE_GROUP][65], key[FEATURE_GROUP][65];
    int slot[FEATURE_GROUP]; /* cache index of each image to compute */
    uf_sha256_ctx sha;
    uf_sha256_init(&sha);
    int rc = x && errors ? UF_OK : uf_error("out of memory for the feature cache");
    int computed = 0;
    double t_start = uf_now(), t_report = t_start;
    for (int i0 = 0; i0 < n_try && rc == UF_OK; i0 += FEATURE_GROUP) {
        int g = n_try - i0 < FEATURE_GROUP ? n_try - i0 : FEATURE_GROUP, todo = 0;
        for (int i = 0; i < g; i++) paths[i] = ds->samples[i0 + i].image_path;
        uf_load_backbone_inputs_each(paths, g, &in, x, NULL, NULL, NULL, NULL, errors);
        for (int i = 0; i < g && rc == UF_OK; i++) {
            if (errors[i][0]) {
                if (!skip_bad) {
                    rc = uf_error("%s (--skip-bad-images leaves such files out)", errors[i]);
                    break;
                }
                uf_log(UF_LOG_WARNING, "skipped %s", errors[i]);
                c->n_skipped++;
                continue;
            }
            const float *xi = x + (size_t)i * per_x;
            uf_sha256_update(&sha, xi, per_x * sizeof(float));
            int hit = 0;
            uf_sha256_ctx one; /* the image's own hash: validation fingerprints, and it keys the store */
            uf_sha256_init(&one);
            uf_sha256_update(&one, xi, per_x * sizeof(float));
            uf_sha256_hex(&one, input_sha[todo]);
            memcpy(c->image_sha256[c->n], input_sha[todo], 65);
            c->entry_image[c->n] = c->n, c->image_sample[c->n] = i0 + i;
            if (store) {
                uf_feature_store_key(store, input_sha[todo], key[todo]);
                float *dst[UF_FLOW_MAX_SCALES];
                for (int l = 0; l < L; l++) dst[l] = c->feat[l] + (size_t)c->n * c->per_image[l];
                hit = uf_feature_store_get(store, key[todo], input_sha[todo], dst);
            }
            if (!hit) {
                /* to compute: move its input to the front of x */
                if (todo != i) memcpy(x + (size_t)todo * per_x, xi, per_x * sizeof(float));
                paths[todo] = paths[i];
                slot[todo++] = c->n;
            }
            c->n++;
        }
        if (rc != UF_OK || todo == 0) continue;
        /* The computed images' features go to their slots; they are consecutive
         * only when nothing in the group was a hit, so compute into a staging area. */
        float *out[UF_FLOW_MAX_SCALES];
        for (int l = 0; l < L; l++) out[l] = c->feat[l] + (size_t)slot[0] * c->per_image[l];
        int contiguous = slot[todo - 1] - slot[0] == todo - 1;
        float *stage[UF_FLOW_MAX_SCALES] = {0};
        if (!contiguous)
            for (int l = 0; l < L && rc == UF_OK; l++)
                if (!(out[l] = stage[l] = uf_alloc((size_t)todo * c->per_image[l] * sizeof(float)))) rc = UF_ERR;
        if (rc == UF_OK) rc = uf_backbone_forward(m->backbone, x, todo, in.height, in.width, out);
        for (int l = 0; l < L && rc == UF_OK; l++)
            if (!uf_all_finite(out[l], (size_t)todo * c->per_image[l]))
                rc = uf_error("backbone features of the images from '%s' on are not finite (NaN or Inf): check the "
                              "backbone weights '%s'",
                              paths[0], m->cfg.backbone_file);
        for (int t = 0; t < todo && rc == UF_OK; t++) {
            const float *f[UF_FLOW_MAX_SCALES];
            for (int l = 0; l < L; l++) {
                float *dst = c->feat[l] + (size_t)slot[t] * c->per_image[l];
                if (!contiguous) memcpy(dst, out[l] + (size_t)t * c->per_image[l], c->per_image[l] * sizeof(float));
                f[l] = dst;
            }
            if (store) uf_feature_store_put(store, key[t], input_sha[t], paths[t], f);
        }
        for (int l = 0; l < L; l++) uf_free(stage[l]);
        computed += todo;
        int done = i0 + g;
        if (verbose && done < n_try && uf_now() - t_report >= PROGRESS_SECONDS) {
            report_progress(done, n_try, computed, t_start);
            t_report = uf_now();
        }
    }
    uf_free(x);
    free(errors);
    if (verbose && rc == UF_OK && store)
        uf_log(UF_LOG_INFO, "features: %d computed, %d from the cache (%.1f s)", computed, c->n - computed,
                uf_now() - t_start);
    if (rc == UF_OK && c->n == 0)
        rc = uf_error("no readable training images in '%s' (%d skipped)", ds->root, c->n_skipped);
    if (rc == UF_OK) uf_sha256_hex(&sha, c->inputs_sha256);
    c->n_images = c->n;
    if (rc != UF_OK) cache_free(c);
    return rc;
}

/* Grows the cache's entry arrays to hold `need` entries. */
static int cache_reserve(feature_cache *c, int need, int *cap) {
    if (need <= *cap) return UF_OK;
    int nc = *cap ? *cap : 256;
    while (nc < need) nc *= 2;
    for (int l = 0; l < c->n_scales; l++) {
        float *f = uf_alloc((size_t)nc * c->per_image[l] * sizeof(float));
        if (!f) return uf_error("out of memory for the features of %d tiles", nc);
        if (c->feat[l]) memcpy(f, c->feat[l], (size_t)c->n * c->per_image[l] * sizeof(float));
        uf_free(c->feat[l]);
        c->feat[l] = f;
    }
    void *a = realloc(c->image_sha256, sizeof *c->image_sha256 * (size_t)nc);
    if (a) c->image_sha256 = a;
    void *e = a ? realloc(c->entry_image, sizeof(int) * (size_t)nc) : NULL;
    if (e) c->entry_image = e;
    if (!a || !e) return uf_error("out of memory for the feature cache");
    *cap = nc;
    return UF_OK;
}

/* The tiled model's cache (io/tiling.h): every image of ds[0..n_try) cut into its tiles, each
 * tile an entry. Memory: at most UF_TRAIN_TILE_CACHE_BYTES of features; when the tiles of
 * all images would need more, each image keeps an equal share of its tiles, a subset drawn
 * by a generator seeded from (seed, image). Bad images as in cache_build. */
static int cache_build_tiled(uf_model *m, const uf_dataset *ds, int n_try, int skip_bad, uint64_t seed, int verbose,
                             feature_cache *c) {
    const uf_input_geometry in = m->cfg.input;
    const int L = m->cfg.flow.n_scales;
    const size_t per_x = (size_t)3 * in.width * in.height;
    memset(c, 0, sizeof *c);
    c->n_scales = L;
    double per_tile = 0;
    for (int l = 0; l < L; l++) {
        c->per_image[l] = (size_t)m->cfg.flow.channels[l] * m->cfg.flow.height[l] * m->cfg.flow.width[l];
        per_tile += (double)c->per_image[l] * sizeof(float);
    }
    int max_tiles = (int)fmin(1e6, floor(UF_TRAIN_TILE_CACHE_BYTES / (per_tile * n_try)));
    if (max_tiles < 1) max_tiles = 1;
    int cap = 0, rc = UF_OK, limited = 0;
    float *x = uf_alloc((size_t)FEATURE_GROUP * per_x * sizeof(float));
    float *out[UF_FLOW_MAX_SCALES] = {0};
    for (int l = 0; l < L; l++)
        if (!(out[l] = uf_alloc((size_t)FEATURE_GROUP * c->per_image[l] * sizeof(float)))) rc = UF_ERR;
    if (!(c->image_sample = malloc(sizeof(int) * (size_t)n_try)) || !x || rc != UF_OK)
        rc = uf_error("out of memory for the feature cache");
    uf_sha256_ctx sha;
    uf_sha256_init(&sha);
    double t_start = uf_now(), t_report = t_start;
    char tiling[128];
    if (verbose)
        uf_log(UF_LOG_INFO, "caching %s features of the %dx%d tiles of %d images, tiling %s, at most %d tiles per image",
               m->cfg.backbone, in.width, in.height, n_try, uf_tiling_describe(&m->cfg.tiling, tiling, sizeof tiling),
               max_tiles);
    for (int i = 0; i < n_try && rc == UF_OK; i++) {
        const char *path = ds->samples[i].image_path;
        uf_image *img = uf_image_load(path, 3);
        uf_tile_grid g;
        memset(&g, 0, sizeof g);
        uf_image *work = NULL;
        if (img && uf_tile_grid_plan(&m->cfg.tiling, &in, img->width, img->height, &g) == UF_OK)
            work = uf_tile_work_image(img, &g);
        uf_image_free(img);
        if (!work) {
            uf_tile_grid_free(&g);
            if (!skip_bad) {
                rc = uf_error("image '%s': %s (--skip-bad-images leaves such files out)", path, uf_last_error());
                break;
            }
            uf_log(UF_LOG_WARNING, "skipped image '%s': %s", path, uf_last_error());
            c->n_skipped++;
            continue;
        }
        const int nt = uf_tile_count(&g);
        int *pick = malloc(sizeof(int) * (size_t)nt);
        if (!pick) rc = uf_error("out of memory");
        int keep = nt < max_tiles ? nt : max_tiles;
        limited |= keep < nt;
        if (rc == UF_OK) { /* the first `keep` of a seeded partial shuffle, in tile order */
            uf_rng r = uf_rng_seed(seed * 0xD1B54A32D192ED03ULL + (uint64_t)i + 0x7469ULL);
            for (int t = 0; t < nt; t++) pick[t] = t;
            for (int t = 0; t < keep && keep < nt; t++) {
                int j = t + (int)uf_rng_below(&r, (uint64_t)(nt - t));
                int tmp = pick[t];
                pick[t] = pick[j], pick[j] = tmp;
            }
            if (keep < nt)
                for (int a = 1; a < keep; a++) /* insertion sort: tile order */
                    for (int b2 = a; b2 > 0 && pick[b2 - 1] > pick[b2]; b2--) {
                        int tmp = pick[b2];
                        pick[b2] = pick[b2 - 1], pick[b2 - 1] = tmp;
                    }
            rc = cache_reserve(c, c->n + keep, &cap);
        }
        for (int t0 = 0; t0 < keep && rc == UF_OK; t0 += FEATURE_GROUP) {
            const int k = keep - t0 < FEATURE_GROUP ? keep - t0 : FEATURE_GROUP;
            for (int t = 0; t < k; t++) uf_tile_to_imagenet(work, &g, pick[t0 + t], x + (size_t)t * per_x);
            rc = uf_backbone_forward(m->backbone, x, k, in.height, in.width, out);
            for (int l = 0; l < L && rc == UF_OK; l++)
                if (!uf_all_finite(out[l], (size_t)k * c->per_image[l]))
                    rc = uf_error("backbone features of '%s' are not finite (NaN or Inf): check the backbone weights "
                                  "'%s'",
                                  path, m->cfg.backbone_file);
            for (int t = 0; t < k && rc == UF_OK; t++) {
                const float *xt = x + (size_t)t * per_x;
                uf_sha256_update(&sha, xt, per_x * sizeof(float));
                uf_sha256_ctx one;
                uf_sha256_init(&one);
                uf_sha256_update(&one, xt, per_x * sizeof(float));
                uf_sha256_hex(&one, c->image_sha256[c->n]);
                c->entry_image[c->n] = c->n_images;
                for (int l = 0; l < L; l++)
                    memcpy(c->feat[l] + (size_t)c->n * c->per_image[l], out[l] + (size_t)t * c->per_image[l],
                           c->per_image[l] * sizeof(float));
                c->n++;
            }
        }
        if (rc == UF_OK) c->image_sample[c->n_images++] = i;
        free(pick);
        uf_image_free(work);
        uf_tile_grid_free(&g);
        if (verbose && i + 1 < n_try && uf_now() - t_report >= PROGRESS_SECONDS) {
            report_progress(i + 1, n_try, i + 1, t_start);
            t_report = uf_now();
        }
    }
    uf_free(x);
    for (int l = 0; l < L; l++) uf_free(out[l]);
    if (rc == UF_OK && c->n == 0)
        rc = uf_error("no readable training images in '%s' (%d skipped)", ds->root, c->n_skipped);
    if (rc == UF_OK) uf_sha256_hex(&sha, c->inputs_sha256);
    if (rc == UF_OK && verbose)
        uf_log(UF_LOG_INFO, "%d tiles of %d images (%.0f MB of features)%s", c->n, c->n_images, c->n * per_tile / 1e6,
               limited ? ": a seeded subset of each image's tiles, to bound memory" : "");
    if (rc != UF_OK) cache_free(c);
    return rc;
}

/* The tiling for a new model: the user's (tile 0/1, overlap >= 0), or uf_tiling_choose on
 * the sizes of up to TILING_PROBE training images spread over the set. */
#define TILING_PROBE 32
static int choose_tiling(const uf_train_options *o, const uf_dataset *ds, int n, uf_model *m) {
    uf_tiling t = {0, 0, 0};
    const uf_input_geometry *g = &m->cfg.input;
    const int gshort = g->width < g->height ? g->width : g->height;
    if (o->tile == 1) {
        t.enabled = 1, t.overlap = gshort / UF_TILE_OVERLAP_DIV, t.max_short = UF_TILE_MAX_SHORT_TILES * gshort;
    } else if (o->tile < 0 && n > 0 && !o->input.width && !o->input.height) {
        /* auto: only at the default input size; a user who chose --size chose the resolution */
        int k = n < TILING_PROBE ? n : TILING_PROBE, got = 0, w[TILING_PROBE], h[TILING_PROBE];
        for (int j = 0; j < k; j++) {
            uf_image *img = uf_image_load(ds->samples[(int)((long)j * n / k)].image_path, 3);
            if (img) w[got] = img->width, h[got++] = img->height;
            uf_image_free(img);
        }
        uf_error_clear();
        if (got) t = uf_tiling_choose(w, h, got, g);
        if (t.enabled && o->verbose) {
            uf_log(UF_LOG_INFO, "tiling on: the training images (median shorter side >= %.1f x the model's %d) would "
                                "lose small defects if resized; --tile off resizes them instead", UF_TILE_WHEN_RATIO, gshort);
        }
    }
    if (t.enabled && o->tile_overlap >= 0) t.overlap = o->tile_overlap;
    if (t.enabled && o->tile_max_short != 0) t.max_short = o->tile_max_short > 0 ? o->tile_max_short : 0;
    if (t.enabled && t.overlap >= gshort)
        return uf_error("--tile-overlap %d: must be below the tile's shorter side %d", t.overlap, gshort);
    if (t.enabled && m->cfg.input.fit != UF_FIT_STRETCH)
        return uf_error("tiling and --keep-aspect do not go together (tiles keep the aspect already); --tile off");
    if (t.enabled && m->backbone->kind == UF_BACKBONE_MCAIT)
        t.enabled = 0; /* 448 x 448 inputs of one fixed size: MS-CaiT is not tiled (its cost per tile is 3 s) */
    m->cfg.tiling = t;
    return UF_OK;
}

/* On --resume, the cached training set must be the one the checkpoint was
 * trained on, or the promise of a bit-identical continuation breaks. */
static int check_resume_data(const uf_model *m, const feature_cache *c, const char *model_path) {
    const uf_model_config *cfg = &m->cfg;
    if (!cfg->train_inputs_sha256[0]) {
        uf_log(UF_LOG_WARNING, "%s records no fingerprint of its training images (older uflow): the data "
                                "given to --resume cannot be checked", model_path);
        return UF_OK;
    }
    if (c->n != cfg->train_images || strcmp(c->inputs_sha256, cfg->train_inputs_sha256) != 0)
        return uf_error("%s: --resume with other training images than the checkpoint's (now %d images, sha256 "
                        "%.12s...; the checkpoint was trained on %d, sha256 %.12s..., from '%s'); give the same "
                        "--data and --max-images",
                        model_path, c->n, c->inputs_sha256, cfg->train_images, cfg->train_inputs_sha256,
                        cfg->train_data);
    return UF_OK;
}

/* The image order of an epoch: a Fisher-Yates shuffle seeded by (seed, epoch). */
static void epoch_order(uint64_t seed, int epoch, int n, int *order) {
    uf_rng r = uf_rng_seed(seed * 0x100000001B3ULL + (uint64_t)epoch + 1);
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)uf_rng_below(&r, (uint64_t)i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* The held-out images: n_val of the n cached ones, chosen by a generator seeded from the
 * training seed (another stream than the epochs'); both lists in cache order. */
static void split_validation(uint64_t seed, int n, int n_val, int *train_idx, int *val_idx) {
    uf_rng r = uf_rng_seed(seed * 0x9E3779B97F4A7C15ULL + 0x76616C6964ULL);
    int *perm = train_idx; /* scratch: a partial Fisher-Yates, the first n_val picks */
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = 0; i < n_val; i++) {
        int j = i + (int)uf_rng_below(&r, (uint64_t)(n - i));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    char *held = calloc(n > 0 ? (size_t)n : 1, 1);
    for (int i = 0; i < n_val; i++) held[perm[i]] = 1;
    int a = 0, b = 0;
    for (int i = 0; i < n; i++) {
        if (held[i])
            val_idx[b++] = i;
        else
            train_idx[a++] = i;
    }
    free(held);
}

/* sha256 of the per-image fingerprints of cache images idx[0..n) in order. */
static void subset_sha256(const feature_cache *c, const int *idx, int n, char out[65]) {
    uf_sha256_ctx ctx;
    uf_sha256_init(&ctx);
    for (int i = 0; i < n; i++) uf_sha256_update(&ctx, c->image_sha256[idx[i]], 64);
    uf_sha256_hex(&ctx, out);
}

/* fb[l] (bs, per_image[l]) <- the cached features of images idx[0..bs). */
static void gather_batch(const feature_cache *c, const int *idx, int bs, float *const *fb) {
    for (int l = 0; l < c->n_scales; l++)
        for (int i = 0; i < bs; i++)
            memcpy(fb[l] + (size_t)i * c->per_image[l], c->feat[l] + (size_t)idx[i] * c->per_image[l],
                   c->per_image[l] * sizeof(float));
}

/* Mean loss per image and per-scale mean z^2 of cache images idx[0..n), by an inference
 * forward in batches of B through the given buffers. */
static int validate(uf_model *m, const feature_cache *c, const int *idx, int n, int B, float *const *fb,
                    float *const *z, double *logdet, double *per_sample, const size_t *zn, double *nll,
                    double z2[UF_FLOW_MAX_SCALES]) {
    const int L = c->n_scales;
    double loss_sum = 0.0, zsum[UF_FLOW_MAX_SCALES] = {0};
    for (int b0 = 0; b0 < n; b0 += B) {
        const int bs = n - b0 < B ? n - b0 : B;
        gather_batch(c, idx + b0, bs, fb);
        if (uf_flow_forward(m->flow, bs, (const float *const *)fb, z, logdet, 0) != UF_OK) return UF_ERR;
        uf_flow_nll(bs, L, zn, (const float *const *)z, logdet, NULL, NULL, per_sample, 0);
        for (int i = 0; i < bs; i++) loss_sum += per_sample[i];
        for (int l = 0; l < L; l++) {
            const float *zl = z[l]; /* serial: the same sum whatever the thread count */
            for (size_t k = 0; k < (size_t)bs * zn[l]; k++) zsum[l] += (double)zl[k] * zl[k];
        }
    }
    *nll = loss_sum / n;
    for (int l = 0; l < L; l++) z2[l] = zsum[l] / ((double)n * zn[l]);
    return isfinite(*nll) ? UF_OK : uf_error("the validation loss became %g", *nll);
}

/* Appends printf-style text to the growing string *buf (length *len). */
static int append_text(char **buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int append_text(char **buf, size_t *len, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof line) return uf_error("log line too long");
    char *grown = realloc(*buf, *len + (size_t)k + 1);
    if (!grown) return uf_error("out of memory");
    memcpy(grown + *len, line, (size_t)k + 1);
    *buf = grown, *len += (size_t)k;
    return UF_OK;
}

/* A whole text file (at most 64 MiB), or NULL. */
static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, k;
    char chunk[4096];
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0 && len < ((size_t)64 << 20)) {
        if (len + k + 1 > cap) {
            cap = 2 * (len + k + 1);
            char *g = realloc(buf, cap);
            if (!g) break;
            buf = g;
        }
        memcpy(buf + len, chunk, k);
        len += k;
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

/* A file beside the model: "<out without .safetensors><suffix>", e.g. the CSV log
 * ".train.csv" and, when early stopping keeps the best epoch in the model file, the
 * checkpoint ".checkpoint.safetensors". */
static void sibling_path(const char *out_path, const char *suffix, char *buf, size_t cap) {
    size_t n = strlen(out_path);
    const char *ext = ".safetensors";
    if (n > strlen(ext) && !strcmp(out_path + n - strlen(ext), ext)) n -= strlen(ext);
    snprintf(buf, cap, "%.*s%s", (int)n, out_path, suffix);
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Early stopping after an epoch with validation (the rule of train.h): updates the state in
 * c (whose val_nll / val_z2 are this epoch's); *is_best when this epoch becomes the best.
 * Returns 1 when training should stop (c->stop_reason says why). */
static int early_stop_update(uf_model_config *c, int patience, int *is_best) {
    int in_band = 1, above = 0;
    for (int l = 0; l < c->flow.n_scales; l++) {
        in_band &= c->val_z2[l] >= UF_VAL_Z2_LOW && c->val_z2[l] <= UF_VAL_Z2_HIGH;
        above |= c->val_z2[l] > UF_VAL_Z2_HIGH;
    }
    *is_best = c->best_epoch == 0 || (in_band && !c->best_in_band) ||
               (in_band == c->best_in_band && c->val_nll < c->best_val_nll);
    if (*is_best) {
        c->best_epoch = c->epochs_done;
        c->best_val_nll = c->val_nll;
        c->best_in_band = in_band;
    }
    if (c->epochs_done == 1 || c->val_nll < c->min_val_nll) {
        c->min_val_nll = c->val_nll;
        c->nll_stall = 0;
    } else {
        c->nll_stall++;
    }
    c->above_band = above ? c->above_band + 1 : 0;
    if (c->best_in_band && c->above_band >= UF_VAL_ABOVE_EPOCHS) {
        snprintf(c->stop_reason, sizeof c->stop_reason,
                 "the held-out z^2 was above %.2f for %d epochs in a row (over-fitting)", UF_VAL_Z2_HIGH, c->above_band);
        return 1;
    }
    if (c->nll_stall >= patience) {
        snprintf(c->stop_reason, sizeof c->stop_reason, "the validation loss did not improve for %d epochs",
                 c->nll_stall);
        return 1;
    }
    return 0;
}


/* The data set's own folder of normal validation images, if its layout has one: MVTec 3D-AD's
 * validation/good/rgb (or a validation/good folder). 1 and its path in buf, or 0. */
static int dataset_validation_folder(const char *data_dir, char *buf, size_t cap) {
    static const char *const sub[2] = {"validation/good/rgb", "validation/good"};
    for (int k = 0; k < 2; k++) {
        if ((size_t)snprintf(buf, cap, "%s/%s", data_dir, sub[k]) >= cap) return 0;
        struct stat st;
        if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) return 1;
    }
    return 0;
}

/* Calibrates the NFA of the model file just written (model/calibration.h) on the held-out
 * images and writes it again, optimizer state kept. Fewer than UF_CALIB_MIN_IMAGES: a note,
 * the model keeps the spec's test. */
static int calibrate_model_file(const uf_train_options *o, const char *const *paths, int n, const char *source,
                                uf_train_report *rep) {
    if (n < UF_CALIB_MIN_IMAGES) {
        if (o->verbose)
            uf_log(UF_LOG_INFO, "NFA not calibrated: %d held-out images, fewer than %d", n, UF_CALIB_MIN_IMAGES);
        return UF_OK;
    }
    uf_adam opt;
    memset(&opt, 0, sizeof opt);
    int has_opt = 0;
    uf_model *cm = uf_model_load(o->out_path, o->weights, &opt, &has_opt);
    if (!cm) return uf_error_prefix("calibration");
    int rc = uf_calibrate(cm, paths, n, o->calib_rate, source, o->verbose);
    if (rc == UF_OK) rc = uf_model_save(cm, o->out_path, has_opt ? &opt : NULL);
    if (rc == UF_OK) rep->calib = cm->cfg.calib;
    if (opt.m) uf_adam_free(&opt);
    uf_model_free(cm);
    return rc;
}

int uf_train(const uf_train_options *o, uf_train_report *report) {
    uf_train_report rep;
    memset(&rep, 0, sizeof rep);
    if (o->batch < 1 || o->epochs < 1 || !(o->lr > 0))
        return uf_error("training needs epochs >= 1, batch >= 1 and lr > 0");
    /* Fail before hours of work if the model file cannot be written there. */
    uf_atomic_file probe;
    if (uf_atomic_begin(&probe, o->out_path) != UF_OK) return UF_ERR;
    uf_atomic_abort(&probe);
    uf_dataset *ds = uf_dataset_open(o->data_dir, "train");
    if (!ds) return UF_ERR;
    uf_model *m = NULL;
    uf_adam opt;
    memset(&opt, 0, sizeof opt);
    feature_cache cache, vcache;
    memset(&cache, 0, sizeof cache);
    memset(&vcache, 0, sizeof vcache);
    uf_dataset *vds = NULL;
    float *fb[UF_FLOW_MAX_SCALES] = {0}, *z[UF_FLOW_MAX_SCALES] = {0};
    double *logdet = NULL, *g_ld = NULL, *per_sample = NULL;
    int *order = NULL, *train_idx = NULL, *val_idx = NULL, *val_images = NULL, *batch_idx = NULL, rc = UF_ERR;
    int *tile_first = NULL, *tile_count = NULL; /* a tiled model's training images: their tiles in train_idx */
    float *best_params = NULL; /* early stopping: the best epoch's parameters and configuration */
    uf_model_config best_cfg;
    memset(&best_cfg, 0, sizeof best_cfg);
    uf_model *best_file = NULL;
    char *csv = NULL; /* the CSV log's text */
    size_t csv_len = 0;
    rep.val_nll = NAN;
    for (int l = 0; l < UF_FLOW_MAX_SCALES; l++) rep.val_z2[l] = NAN;

    char ckpt_file[4300];
    sibling_path(o->out_path, ".checkpoint.safetensors", ckpt_file, sizeof ckpt_file);
    const int from_ckpt = o->resume && file_exists(ckpt_file);
    if (o->resume) {
        int has_opt = 0;
        m = uf_model_load(from_ckpt ? ckpt_file : o->out_path, o->weights, &opt, &has_opt);
        if (!m) goto done;
        if (m->cfg.stopped_early && o->early_stop) {
            uf_error("%s: training stopped early at epoch %d (%s); resume with --early-stop off to go on",
                     o->out_path, m->cfg.epochs_done, m->cfg.stop_reason);
            goto done;
        }
        m->cfg.stopped_early = 0; /* going on: the earlier stop no longer describes the run */
        m->cfg.stop_reason[0] = '\0';
        if (!has_opt) {
            uf_error("%s: no optimizer state to resume from (not a checkpoint)", o->out_path);
            goto done;
        }
        if (m->cfg.epochs_done >= m->cfg.train.epochs && m->cfg.train.epochs >= o->epochs) {
            uf_error("%s: training already finished (%d of %d epochs)", o->out_path, m->cfg.epochs_done,
                     m->cfg.train.epochs);
            goto done;
        }
        if ((o->input.width || o->input.height) &&
            (o->input.width != m->cfg.input.width || o->input.height != m->cfg.input.height ||
             o->input.fit != m->cfg.input.fit)) {
            uf_error("%s: --resume with input %dx%d (%s), but the checkpoint was trained at %dx%d (%s)", o->out_path,
                     o->input.width, o->input.height, uf_fit_mode_name(o->input.fit), m->cfg.input.width,
                     m->cfg.input.height, uf_fit_mode_name(m->cfg.input.fit));
            goto done;
        }
        m->cfg.train.epochs = o->epochs > m->cfg.train.epochs ? o->epochs : m->cfg.train.epochs;
        if (o->map_sigma >= 0) m->cfg.map_sigma = o->map_sigma;
        if (o->max_images >= 0 && o->max_images != m->cfg.train_max_images && m->cfg.train_inputs_sha256[0]) {
            uf_error("%s: --resume with --max-images %d, but the checkpoint was trained with --max-images %d",
                     o->out_path, o->max_images, m->cfg.train_max_images);
            goto done;
        }
    } else {
        m = uf_model_create(o->backbone, o->weights, o->input, o->n_steps, o->ln_mode, o->seed);
        if (!m) goto done;
        m->cfg.train = (uf_train_settings){o->epochs, o->batch, o->lr, o->weight_decay, o->seed, o->anomalib_loss};
        snprintf(m->cfg.train_data, sizeof m->cfg.train_data, "%s", o->data_dir);
        m->cfg.train_max_images = o->max_images > 0 ? o->max_images : 0;
        m->cfg.map_sigma = o->map_sigma >= 0 ? o->map_sigma : UF_MAP_SIGMA_DEFAULT;
        if (!(o->val_split >= 0.0 && o->val_split < 1.0)) {
            uf_error("--val-split %g: expected a fraction in [0, 1)", o->val_split);
            goto done;
        }
        m->cfg.val_split = o->val_dir ? 0.0 : o->val_split;
        m->cfg.best_val_nll = m->cfg.min_val_nll = INFINITY;
        const char *val_dir_given = o->val_dir;
        char own_val[sizeof m->cfg.val_dir];
        if (!val_dir_given && o->val_split > 0 && dataset_validation_folder(o->data_dir, own_val, sizeof own_val)) {
            val_dir_given = own_val; /* the data set's own normal validation images (MVTec 3D-AD layout) */
            m->cfg.val_split = 0.0;
            if (o->verbose) uf_log(UF_LOG_INFO, "validation images: %s (the data set's own)", own_val);
        }
        snprintf(m->cfg.val_dir, sizeof m->cfg.val_dir, "%s", val_dir_given ? val_dir_given : "");
        if (uf_adam_init(&opt, m->flow->n_trainable, o->lr) != UF_OK) goto done;
        opt.weight_decay = o->weight_decay;
    }
    const uf_train_settings ts = m->cfg.train;
    const int L = m->cfg.flow.n_scales, B = ts.batch;
    const int max_images = o->resume && o->max_images < 0 ? m->cfg.train_max_images : o->max_images;
    int n = ds->count;
    if (max_images > 0 && max_images < n) n = max_images;
    if (!o->resume && choose_tiling(o, ds, n, m) != UF_OK) goto done;
    const int tiled = m->cfg.tiling.enabled;

    double t0 = uf_now();
    uf_feature_store store, *fs = NULL;
    char store_dir[4200];
    if (o->feature_cache && strcmp(o->feature_cache, "off")) {
        if (!strcmp(o->feature_cache, "auto"))
            snprintf(store_dir, sizeof store_dir, "%s.features", o->out_path);
        else
            snprintf(store_dir, sizeof store_dir, "%s", o->feature_cache);
        if (!tiled && (strcmp(o->feature_cache, "auto") || m->backbone->kind == UF_BACKBONE_MCAIT)) {
            if (uf_feature_store_open(&store, store_dir, m) != UF_OK) goto done;
            fs = &store;
        }
    }
    if ((tiled ? cache_build_tiled(m, ds, n, o->skip_bad_images, ts.seed, o->verbose, &cache)
               : cache_build(m, ds, n, o->skip_bad_images, fs, o->verbose, &cache)) != UF_OK)
        goto done;
    rep.features_from_cache = fs ? fs->n_hits : 0;
    if (o->resume && check_resume_data(m, &cache, o->out_path) != UF_OK) goto done;
    n = cache.n; /* entries: images, or tiles */
    rep.n_skipped = cache.n_skipped;
    m->cfg.train_images = cache.n_images;
    snprintf(m->cfg.train_inputs_sha256, sizeof m->cfg.train_inputs_sha256, "%s", cache.inputs_sha256);

    /* Validation: a folder of its own, or held out of the training images (a resumed run keeps
     * the checkpoint's choice: its settings are in the model, the split follows from the seed). */
    const char *val_dir = m->cfg.val_dir[0] ? m->cfg.val_dir : NULL;
    int n_val = 0, n_val_images = 0; /* held-out entries and images (equal when not tiled) */
    train_idx = malloc(sizeof(int) * (size_t)n);
    val_idx = malloc(sizeof(int) * (size_t)n);
    val_images = malloc(sizeof(int) * (size_t)cache.n_images);
    if (!train_idx || !val_idx || !val_images) {
        uf_error("out of memory");
        goto done;
    }
    const feature_cache *vc = &cache;
    if (val_dir) {
        if (!(vds = uf_dataset_open(val_dir, "train"))) goto done;
        if ((tiled ? cache_build_tiled(m, vds, vds->count, o->skip_bad_images, ts.seed, o->verbose, &vcache)
                   : cache_build(m, vds, vds->count, o->skip_bad_images, NULL, o->verbose, &vcache)) != UF_OK)
            goto done;
        n_val = vcache.n;
        n_val_images = vcache.n_images;
        vc = &vcache;
        int *grown = realloc(val_idx, sizeof(int) * (size_t)(n_val > 0 ? n_val : 1)); /* more than training's */
        if (!grown) {
            uf_error("out of memory");
            goto done;
        }
        val_idx = grown;
        for (int i = 0; i < n_val; i++) val_idx[i] = i;
        for (int i = 0; i < n; i++) train_idx[i] = i;
    } else {
        const int ni = cache.n_images;
        n_val_images = (int)floor(m->cfg.val_split * ni + 0.5);
        if (n_val_images >= ni) n_val_images = ni - 1;
        if (n_val_images < UF_VAL_MIN_IMAGES) {
            if (m->cfg.val_split > 0 && o->verbose)
                uf_log(UF_LOG_INFO, "no validation: %g of %d images is fewer than %d held-out images", m->cfg.val_split,
                       ni, UF_VAL_MIN_IMAGES);
            n_val_images = 0;
        }
        if (!tiled) {
            split_validation(ts.seed, n, n_val_images, train_idx, val_idx);
            n_val = n_val_images;
            memcpy(val_images, val_idx, sizeof(int) * (size_t)n_val);
        } else { /* held out by image: all the tiles of an image on the same side */
            int *img_train = malloc(sizeof(int) * (size_t)ni);
            char *held = calloc((size_t)ni, 1);
            if (!img_train || !held) {
                free(img_train), free(held);
                uf_error("out of memory");
                goto done;
            }
            split_validation(ts.seed, ni, n_val_images, img_train, val_images);
            for (int j = 0; j < n_val_images; j++) held[val_images[j]] = 1;
            int a = 0;
            for (int k = 0; k < n; k++) {
                if (held[cache.entry_image[k]])
                    val_idx[n_val++] = k;
                else
                    train_idx[a++] = k;
            }
            free(img_train), free(held);
        }
    }
    /* Training needs only the features: the backbone (1.3 GB for MS-CaiT) goes. */
    uf_backbone_free(m->backbone);
    m->backbone = NULL;
    rep.feature_seconds = uf_now() - t0;
    const int n_train = n - (val_dir ? 0 : n_val);
    char val_sha[65] = "";
    if (n_val) subset_sha256(vc, val_idx, n_val, val_sha);
    if (o->resume && m->cfg.val_images &&
        (n_val_images != m->cfg.val_images || strcmp(val_sha, m->cfg.val_inputs_sha256))) {
        uf_error("%s: --resume with other validation images than the checkpoint's (%d now, %d then)", o->out_path,
                 n_val_images, m->cfg.val_images);
        goto done;
    }
    m->cfg.val_images = n_val_images;
    snprintf(m->cfg.val_inputs_sha256, sizeof m->cfg.val_inputs_sha256, "%s", val_sha);
    rep.n_images = n_train; /* entries: tiles when tiled */
    rep.n_tiled_images = tiled ? cache.n_images - (val_dir ? 0 : n_val_images) : 0;
    rep.n_val = n_val_images;
    const int es = n_val > 0 && o->early_stop;
    if (!o->resume && !es && file_exists(ckpt_file)) {
        /* a checkpoint left by an earlier run to this model file: --resume must not pick it up */
        if (remove(ckpt_file) != 0) {
            uf_error("cannot remove the stale checkpoint '%s'", ckpt_file);
            goto done;
        }
        if (o->verbose) uf_log(UF_LOG_INFO, "removed %s, left by an earlier run", ckpt_file);
    }
    if (es) {
        if (!(best_params = malloc(sizeof(float) * m->flow->n_params))) {
            uf_error("out of memory");
            goto done;
        }
        best_cfg = m->cfg;
        if (from_ckpt && m->cfg.best_epoch > 0) { /* the best so far is the model file's */
            if (!(best_file = uf_model_load(o->out_path, o->weights, NULL, NULL))) goto done;
            if (best_file->flow->n_params != m->flow->n_params) {
                uf_error("%s does not match its checkpoint %s", o->out_path, ckpt_file);
                goto done;
            }
            memcpy(best_params, best_file->flow->params, sizeof(float) * m->flow->n_params);
            best_cfg = best_file->cfg;
            uf_model_free(best_file);
            best_file = NULL;
        }
    }

    size_t zn[UF_FLOW_MAX_SCALES];
    for (int l = 0; l < L; l++) {
        zn[l] = (size_t)m->flow->z_ch[l] * m->cfg.flow.height[l] * m->cfg.flow.width[l];
        fb[l] = uf_alloc((size_t)B * cache.per_image[l] * sizeof(float));
        z[l] = uf_alloc((size_t)B * zn[l] * sizeof(float));
        if (!fb[l] || !z[l]) goto done;
    }
    logdet = malloc(sizeof(double) * B);
    g_ld = malloc(sizeof(double) * B);
    per_sample = malloc(sizeof(double) * B);
    batch_idx = malloc(sizeof(int) * B);
    order = malloc(sizeof(int) * n);
    if (!logdet || !g_ld || !per_sample || !batch_idx || !order || uf_flow_alloc_grads(m->flow) != UF_OK) {
        uf_error("out of memory for training buffers");
        goto done;
    }
    if (o->verbose)
        uf_log(UF_LOG_INFO, "training %s@%dx%d%s flow (%zu trainable parameters, LayerNorm %s) on %d %s: %d epochs, "
                            "batch %d, lr %g, seed %llu, %d threads",
                m->cfg.backbone, m->cfg.input.width, m->cfg.input.height,
                m->cfg.input.fit == UF_FIT_KEEP_ASPECT ? " keep-aspect" : "", m->flow->n_trainable, uf_ln_mode_name(m->cfg.flow.ln_mode), n_train,
                tiled ? "tiles" : "images",
                ts.epochs, B, ts.lr, (unsigned long long)ts.seed, uf_get_num_threads());

    /* The CSV log beside the model: one row per epoch, this run's appended to a resumed one's. */
    char csv_file[4300];
    sibling_path(o->out_path, ".train.csv", csv_file, sizeof csv_file);
    if (o->resume && (csv = read_text(csv_file))) csv_len = strlen(csv);
    if (!csv_len) {
        free(csv);
        csv = NULL;
        if (append_text(&csv, &csv_len, "epoch,train_loss,val_nll") != UF_OK) goto done;
        for (int l = 0; l < L; l++)
            if (append_text(&csv, &csv_len, ",val_z2_scale%d", l) != UF_OK) goto done;
        if (append_text(&csv, &csv_len, ",seconds\n") != UF_OK) goto done;
    }

    /* A tiled model's epoch is one pass over the training images, each giving one of its cached
     * tiles drawn at random (seeded by the epoch): an epoch costs what it costs without tiling,
     * and the tiles of an image take turns. tile_first / tile_count: each training image's
     * entries in train_idx (consecutive: an image's tiles are cached one after the other). */
    int n_steps_epoch = n_train;
    if (tiled) {
        tile_first = malloc(sizeof(int) * (size_t)(n_train > 0 ? n_train : 1));
        tile_count = malloc(sizeof(int) * (size_t)(n_train > 0 ? n_train : 1));
        if (!tile_first || !tile_count) {
            uf_error("out of memory");
            goto done;
        }
        n_steps_epoch = 0;
        for (int k = 0; k < n_train; k++) {
            if (k == 0 || cache.entry_image[train_idx[k]] != cache.entry_image[train_idx[k - 1]])
                tile_first[n_steps_epoch] = k, tile_count[n_steps_epoch++] = 0;
            tile_count[n_steps_epoch - 1]++;
        }
    }
    const int start = m->cfg.epochs_done;
    double t_train = uf_now(), gemm0 = uf_gemm_seconds(), gflop0 = uf_gemm_flops();
    int epochs_run = 0;
    for (int epoch = start; epoch < ts.epochs; epoch++) {
        double te = uf_now(), loss_sum = 0.0;
        epoch_order(ts.seed, epoch, n_steps_epoch, order);
        if (tiled) { /* order[i]: image -> one of its tiles (an index into train_idx) */
            uf_rng r = uf_rng_seed(ts.seed * 0xA0761D6478BD642FULL + (uint64_t)epoch + 0x74696C65ULL);
            for (int i = 0; i < n_steps_epoch; i++) {
                const int img = order[i];
                order[i] = tile_first[img] + (int)uf_rng_below(&r, (uint64_t)tile_count[img]);
            }
        }
        for (int b0 = 0; b0 < n_steps_epoch; b0 += B) {
            int bs = n_steps_epoch - b0 < B ? n_steps_epoch - b0 : B;
            for (int i = 0; i < bs; i++) batch_idx[i] = train_idx[order[b0 + i]];
            gather_batch(&cache, batch_idx, bs, fb);
            if (uf_flow_forward(m->flow, bs, (const float *const *)fb, z, logdet, 1) != UF_OK) goto done;
            double loss = uf_flow_nll(bs, L, zn, (const float *const *)z, logdet, z, g_ld, NULL, ts.anomalib_loss);
            if (!isfinite(loss)) {
                uf_error("epoch %d: the loss became %g (try a smaller --lr)", epoch + 1, loss);
                goto done;
            }
            loss_sum += loss * bs;
            uf_flow_zero_grads(m->flow);
            if (uf_flow_backward(m->flow, bs, (const float *const *)z, g_ld, NULL) != UF_OK) goto done;
            uf_adam_step(&opt, m->flow->params, m->flow->grads);
        }
        double mean_loss = loss_sum / n_steps_epoch;
        if (epochs_run == 0) rep.first_loss = mean_loss;
        rep.last_loss = mean_loss;
        epochs_run++;
        m->cfg.epochs_done = epoch + 1;
        double dt = uf_now() - te;
        uf_epoch_progress p = {epoch + 1, ts.epochs, mean_loss, n_steps_epoch / dt, 0.0, n_val, NAN, {0}};
        for (int l = 0; l < UF_FLOW_MAX_SCALES; l++) p.val_z2[l] = NAN;
        char val_text[160] = "";
        if (n_val) {
            if (validate(m, vc, val_idx, n_val, B, fb, z, logdet, per_sample, zn, &p.val_nll, p.val_z2) != UF_OK) {
                uf_error_prefix("epoch %d", epoch + 1);
                goto done;
            }
            m->cfg.val_nll = rep.val_nll = p.val_nll;
            size_t used = (size_t)snprintf(val_text, sizeof val_text, "  val %12.2f  z2", p.val_nll);
            for (int l = 0; l < L; l++) {
                m->cfg.val_z2[l] = rep.val_z2[l] = p.val_z2[l];
                used += (size_t)snprintf(val_text + used, sizeof val_text - used, " %.3f", p.val_z2[l]);
            }
        }
        double per_epoch = (uf_now() - t_train) / epochs_run;
        p.eta_seconds = per_epoch * (ts.epochs - epoch - 1);
        if (o->verbose) {
            char eta[32];
            format_duration(p.eta_seconds, eta, sizeof eta);
            uf_log(UF_LOG_INFO, "epoch %4d/%d  loss %14.2f%s  %6.1f img/s  ETA %s", epoch + 1, ts.epochs, mean_loss,
                   val_text, n_steps_epoch / dt, eta);
        }
        if (append_text(&csv, &csv_len, "%d,%.17g,%.17g", epoch + 1, mean_loss, p.val_nll) != UF_OK) goto done;
        for (int l = 0; l < L; l++)
            if (append_text(&csv, &csv_len, ",%.17g", p.val_z2[l]) != UF_OK) goto done;
        if (append_text(&csv, &csv_len, ",%.3f\n", uf_now() - te) != UF_OK) goto done;
        int stop = 0;
        if (es) {
            int is_best = 0;
            stop = early_stop_update(&m->cfg, o->patience, &is_best);
            if (is_best) {
                memcpy(best_params, m->flow->params, sizeof(float) * m->flow->n_params);
                best_cfg = m->cfg;
            }
            if (stop) {
                m->cfg.stopped_early = 1;
                if (o->verbose)
                    uf_log(UF_LOG_INFO, "early stop after epoch %d: %s; the model keeps epoch %d", epoch + 1,
                           m->cfg.stop_reason, m->cfg.best_epoch);
            }
        }
        if (o->on_epoch && o->on_epoch(&p, o->on_epoch_user) != 0) stop = 1;
        int last = epoch + 1 == ts.epochs || (o->stop_after > 0 && epochs_run >= o->stop_after) || stop;
        if (last || (o->checkpoint_every > 0 && (epoch + 1) % o->checkpoint_every == 0)) {
            if (!es) {
                if (uf_model_save(m, o->out_path, &opt) != UF_OK) goto done;
            } else {
                /* the checkpoint: the last state; the model file: the best epoch, with the run's state */
                if (uf_model_save(m, ckpt_file, &opt) != UF_OK) goto done;
                uf_model_config last_cfg = m->cfg;
                m->cfg = best_cfg;
                m->cfg.train = last_cfg.train;
                memcpy(m->cfg.stop_reason, last_cfg.stop_reason, sizeof last_cfg.stop_reason);
                m->cfg.stopped_early = last_cfg.stopped_early, m->cfg.nll_stall = last_cfg.nll_stall;
                m->cfg.above_band = last_cfg.above_band, m->cfg.min_val_nll = last_cfg.min_val_nll;
                float *cur = m->flow->params;
                m->flow->params = best_params; /* views are taken from params at each use */
                int src = uf_model_save(m, o->out_path, NULL);
                m->flow->params = cur;
                m->cfg = last_cfg;
                if (src != UF_OK) goto done;
            }
            if (uf_write_file_atomic(csv_file, csv, csv_len) != UF_OK) goto done;
        }
        if (last) break;
    }
    rep.train_seconds = uf_now() - t_train;
    rep.gemm_seconds = uf_gemm_seconds() - gemm0;
    rep.gemm_flops = uf_gemm_flops() - gflop0;
    rep.epochs_done = m->cfg.epochs_done;
    rep.best_epoch = es ? m->cfg.best_epoch : m->cfg.epochs_done;
    rep.stopped_early = m->cfg.stopped_early;
    snprintf(rep.stop_reason, sizeof rep.stop_reason, "%s", m->cfg.stop_reason);
    rep.images_per_second = rep.train_seconds > 0 ? (double)n_steps_epoch * epochs_run / rep.train_seconds : 0.0;
    if (n_val_images > 0 && o->calib_rate > 0) {
        const char **paths = malloc(sizeof(char *) * (size_t)n_val_images);
        if (!paths) {
            uf_error("out of memory");
            goto done;
        }
        for (int j = 0; j < n_val_images; j++)
            paths[j] = val_dir ? vds->samples[vcache.image_sample[j]].image_path
                               : ds->samples[cache.image_sample[val_images[j]]].image_path;
        int crc = calibrate_model_file(o, paths, n_val_images, val_dir ? val_dir : "validation split", &rep);
        free(paths);
        if (crc != UF_OK) goto done;
    }
    rc = UF_OK;
done:
    for (int l = 0; l < UF_FLOW_MAX_SCALES; l++) uf_free(fb[l]), uf_free(z[l]);
    free(logdet), free(g_ld), free(per_sample), free(batch_idx), free(order), free(train_idx), free(val_idx), free(csv);
    free(val_images), free(tile_first), free(tile_count);
    free(best_params);
    uf_model_free(best_file);
    cache_free(&cache);
    cache_free(&vcache);
    uf_dataset_free(vds);
    if (opt.m) uf_adam_free(&opt);
    uf_model_free(m);
    uf_dataset_free(ds);
    if (report) *report = rep;
    return rc;
}
