#include "model/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#include "model/batch.h"
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
    o.verbose = 1;
    return o;
}

/* Cache of backbone features: feat[l] (n, C_l, H_l, W_l) of the n images
 * that were read; inputs_sha256 fingerprints their normalised inputs in order
 * (what makes a resumed run bit-identical, whatever the files are called). */
typedef struct feature_cache {
    int n, n_scales, n_skipped;
    size_t per_image[UF_FLOW_MAX_SCALES];
    float *feat[UF_FLOW_MAX_SCALES];
    char inputs_sha256[65];
} feature_cache;

static void cache_free(feature_cache *c) {
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
            if (store) { /* the image's own hash keys the store */
                uf_sha256_ctx one;
                uf_sha256_init(&one);
                uf_sha256_update(&one, xi, per_x * sizeof(float));
                uf_sha256_hex(&one, input_sha[todo]);
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
    if (rc != UF_OK) cache_free(c);
    return rc;
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
    feature_cache cache;
    memset(&cache, 0, sizeof cache);
    float *fb[UF_FLOW_MAX_SCALES] = {0}, *z[UF_FLOW_MAX_SCALES] = {0};
    double *logdet = NULL, *g_ld = NULL;
    int *order = NULL, rc = UF_ERR;

    if (o->resume) {
        int has_opt = 0;
        m = uf_model_load(o->out_path, o->weights, &opt, &has_opt);
        if (!m) goto done;
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
        if (uf_adam_init(&opt, m->flow->n_trainable, o->lr) != UF_OK) goto done;
        opt.weight_decay = o->weight_decay;
    }
    const uf_train_settings ts = m->cfg.train;
    const int L = m->cfg.flow.n_scales, B = ts.batch;
    const int max_images = o->resume && o->max_images < 0 ? m->cfg.train_max_images : o->max_images;
    int n = ds->count;
    if (max_images > 0 && max_images < n) n = max_images;

    double t0 = uf_now();
    uf_feature_store store, *fs = NULL;
    char store_dir[4200];
    if (o->feature_cache && strcmp(o->feature_cache, "off")) {
        if (!strcmp(o->feature_cache, "auto"))
            snprintf(store_dir, sizeof store_dir, "%s.features", o->out_path);
        else
            snprintf(store_dir, sizeof store_dir, "%s", o->feature_cache);
        if (strcmp(o->feature_cache, "auto") || m->backbone->kind == UF_BACKBONE_MCAIT) {
            if (uf_feature_store_open(&store, store_dir, m) != UF_OK) goto done;
            fs = &store;
        }
    }
    if (cache_build(m, ds, n, o->skip_bad_images, fs, o->verbose, &cache) != UF_OK) goto done;
    rep.features_from_cache = fs ? fs->n_hits : 0;
    /* Training needs only the features: the backbone (1.3 GB for MS-CaiT) goes. */
    uf_backbone_free(m->backbone);
    m->backbone = NULL;
    rep.feature_seconds = uf_now() - t0;
    if (o->resume && check_resume_data(m, &cache, o->out_path) != UF_OK) goto done;
    n = cache.n;
    rep.n_images = n;
    rep.n_skipped = cache.n_skipped;
    m->cfg.train_images = n;
    snprintf(m->cfg.train_inputs_sha256, sizeof m->cfg.train_inputs_sha256, "%s", cache.inputs_sha256);

    size_t zn[UF_FLOW_MAX_SCALES];
    for (int l = 0; l < L; l++) {
        zn[l] = (size_t)m->flow->z_ch[l] * m->cfg.flow.height[l] * m->cfg.flow.width[l];
        fb[l] = uf_alloc((size_t)B * cache.per_image[l] * sizeof(float));
        z[l] = uf_alloc((size_t)B * zn[l] * sizeof(float));
        if (!fb[l] || !z[l]) goto done;
    }
    logdet = malloc(sizeof(double) * B);
    g_ld = malloc(sizeof(double) * B);
    order = malloc(sizeof(int) * n);
    if (!logdet || !g_ld || !order || uf_flow_alloc_grads(m->flow) != UF_OK) {
        uf_error("out of memory for training buffers");
        goto done;
    }
    if (o->verbose)
        uf_log(UF_LOG_INFO, "training %s@%dx%d%s flow (%zu trainable parameters, LayerNorm %s) on %d images: %d epochs, "
                            "batch %d, lr %g, seed %llu, %d threads",
                m->cfg.backbone, m->cfg.input.width, m->cfg.input.height,
                m->cfg.input.fit == UF_FIT_KEEP_ASPECT ? " keep-aspect" : "", m->flow->n_trainable, uf_ln_mode_name(m->cfg.flow.ln_mode), n,
                ts.epochs, B, ts.lr, (unsigned long long)ts.seed, uf_get_num_threads());

    const int start = m->cfg.epochs_done;
    double t_train = uf_now(), gemm0 = uf_gemm_seconds(), gflop0 = uf_gemm_flops();
    int epochs_run = 0;
    for (int epoch = start; epoch < ts.epochs; epoch++) {
        double te = uf_now(), loss_sum = 0.0;
        epoch_order(ts.seed, epoch, n, order);
        for (int b0 = 0; b0 < n; b0 += B) {
            int bs = n - b0 < B ? n - b0 : B;
            for (int l = 0; l < L; l++)
                for (int i = 0; i < bs; i++)
                    memcpy(fb[l] + (size_t)i * cache.per_image[l],
                           cache.feat[l] + (size_t)order[b0 + i] * cache.per_image[l],
                           cache.per_image[l] * sizeof(float));
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
        double mean_loss = loss_sum / n;
        if (epochs_run == 0) rep.first_loss = mean_loss;
        rep.last_loss = mean_loss;
        epochs_run++;
        m->cfg.epochs_done = epoch + 1;
        double dt = uf_now() - te, per_epoch = (uf_now() - t_train) / epochs_run;
        if (o->verbose) {
            char eta[32];
            format_duration(per_epoch * (ts.epochs - epoch - 1), eta, sizeof eta);
            uf_log(UF_LOG_INFO, "epoch %4d/%d  loss %14.2f  %6.1f img/s  ETA %s", epoch + 1, ts.epochs, mean_loss,
                    n / dt, eta);
        }
        int stop = 0;
        if (o->on_epoch) {
            uf_epoch_progress p = {epoch + 1, ts.epochs, mean_loss, n / dt, per_epoch * (ts.epochs - epoch - 1)};
            stop = o->on_epoch(&p, o->on_epoch_user) != 0;
        }
        int last = epoch + 1 == ts.epochs || (o->stop_after > 0 && epochs_run >= o->stop_after) || stop;
        if (last || (o->checkpoint_every > 0 && (epoch + 1) % o->checkpoint_every == 0))
            if (uf_model_save(m, o->out_path, &opt) != UF_OK) goto done;
        if (last) break;
    }
    rep.train_seconds = uf_now() - t_train;
    rep.gemm_seconds = uf_gemm_seconds() - gemm0;
    rep.gemm_flops = uf_gemm_flops() - gflop0;
    rep.epochs_done = m->cfg.epochs_done;
    rep.images_per_second = rep.train_seconds > 0 ? (double)n * epochs_run / rep.train_seconds : 0.0;
    rc = UF_OK;
done:
    for (int l = 0; l < UF_FLOW_MAX_SCALES; l++) uf_free(fb[l]), uf_free(z[l]);
    free(logdet), free(g_ld), free(order);
    cache_free(&cache);
    if (opt.m) uf_adam_free(&opt);
    uf_model_free(m);
    uf_dataset_free(ds);
    if (report) *report = rep;
    return rc;
}
