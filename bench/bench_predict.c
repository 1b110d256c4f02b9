/* `uflow bench predict`: images/s of `uflow predict` end to end (files in, outputs written)
 * next to the model alone (backbone + flow + map + NFA on decoded batches), both measured in
 * the same run on the same images: generated 900 x 900 PNGs (the synthetic fabric of
 * io/synth.h, a quarter of them with a defect) unless a folder is given. The model is the
 * given one, or an untrained ResNet-18 U-Flow at 256 x 256 (the cost does not depend on the
 * flow's values). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backbone/backbone.h"
#include "backbone/shipped.h"
#include "bench.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/timer.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/atomic_file.h"
#include "io/synth.h"
#include "model/batch.h"
#include "model/predict.h"

#define BENCH_PREDICT_BATCH 8

void bench_remove_tree(const char *dir) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

int bench_predict_runs(uf_model *m, const char *dir, const uf_predict_options *po, int warmup, int reps, double *t) {
    char out[] = "/tmp/uflow-bench-predict-out-XXXXXX";
    if (!mkdtemp(out)) return uf_error("cannot create a temporary folder");
    uf_predict_options o = *po;
    o.out_dir = out;
    int rc = UF_OK;
    for (int r = warmup ? 0 : 1; r <= reps && rc == UF_OK; r++) { /* r = 0: warm-up */
        uf_predict_report rep;
        double t0 = uf_now();
        rc = uf_predict(m, &dir, 1, &o, &rep);
        if (rc == UF_OK && rep.n_failed) rc = uf_error("bench predict: %d of the images failed", rep.n_failed);
        if (rc == UF_OK && r > 0) t[r - 1] = (uf_now() - t0) / rep.n_images;
    }
    bench_remove_tree(out);
    return rc;
}

int bench_synth_image(int i, int size, uf_image **img) {
    const int defect = i % 4 == 3 ? (i / 4) % UF_SYNTH_N_DEFECTS : UF_SYNTH_NONE;
    return uf_synth_render(7, UF_SYNTH_STREAM_TEST_DEFECT, i, defect, size, img, NULL);
}

uf_model *bench_untrained_model(void) {
    uf_model *m = uf_model_create(UF_BACKBONE_RESNET, uf_shipped_weights(),
                                  (uf_input_geometry){256, 256, UF_FIT_STRETCH}, 4, UF_LN_LOGDET, 1);
    if (m) {
        m->cfg.train.batch = BENCH_PREDICT_BATCH; /* an untrained model records no training batch */
        m->cfg.map_sigma = UF_MAP_SIGMA_DEFAULT;  /* the map a trained model has by default */
    }
    return m;
}

/* n generated size x size PNGs in dir (bench_synth_image). */
static int write_images(const char *dir, int n, int size) {
    for (int i = 0; i < n; i++) {
        uf_image *img = NULL;
        if (bench_synth_image(i, size, &img) != UF_OK) return UF_ERR;
        char path[4300];
        snprintf(path, sizeof path, "%s/%03d.png", dir, i);
        int rc = uf_image_write_png(path, img);
        uf_image_free(img);
        if (rc != UF_OK) return UF_ERR;
    }
    return UF_OK;
}

/* Model alone: seconds per image of uf_batch_run on batches already decoded (best of reps). */
static double model_seconds_per_image(uf_model *m, const uf_dataset *ds, int reps) {
    uf_batch b;
    if (uf_batch_init(&b, m, BENCH_PREDICT_BATCH, m->cfg.input.width, m->cfg.input.height) != UF_OK) return -1.0;
    const int n = ds->count < BENCH_PREDICT_BATCH ? ds->count : BENCH_PREDICT_BATCH;
    const char *paths[BENCH_PREDICT_BATCH];
    for (int i = 0; i < n; i++) paths[i] = ds->samples[i].image_path;
    double best = -1.0;
    if (uf_batch_load(&b, m, paths, n) == 0) {
        for (int r = 0; r <= reps; r++) { /* r = 0: warm-up */
            double t0 = uf_now();
            if (uf_batch_run(&b, m, NULL, NULL) != UF_OK) {
                best = -1.0;
                break;
            }
            double s = (uf_now() - t0) / n;
            if (r > 0 && (best < 0 || s < best)) best = s;
        }
    } else {
        uf_error("bench predict: %s", b.error[uf_batch_first_error(&b)]);
    }
    uf_batch_free(&b);
    return best;
}

int bench_predict(const char *model_path, const char *images, int n_images, int size, int reps, int precision,
                  const uf_predict_options *po) {
    char tmp[] = "/tmp/uflow-bench-predict-XXXXXX";
    if (!mkdtemp(tmp)) return uf_error("cannot create a temporary folder");
    char in_dir[4200];
    snprintf(in_dir, sizeof in_dir, "%s/images", tmp);
    int rc = UF_ERR;
    uf_model *m = NULL;
    uf_dataset *ds = NULL;
    if (!images) {
        if (uf_make_dirs(in_dir) != UF_OK || write_images(in_dir, n_images, size) != UF_OK) goto done;
        images = in_dir;
    }
    m = model_path ? uf_model_load(model_path, NULL, NULL, NULL) : bench_untrained_model();
    if (!m) goto done;
    /* Start-up: loading the model file (the backbone's sha256 checked), without and with the
     * hash cache (io/file_hash.h). */
    char model_file[4200];
    snprintf(model_file, sizeof model_file, "%s/model.safetensors", tmp);
    if (!m->cfg.train.batch) m->cfg.train.batch = BENCH_PREDICT_BATCH; /* a model file without one */
    if (uf_model_save(m, model_file, NULL) != UF_OK) goto done;
    double load_s[2] = {0, 0};
    const char *cache_env = getenv("UFLOW_CACHE_DIR");
    char *saved_env = cache_env ? strdup(cache_env) : NULL;
    for (int cached = 0; cached < 2; cached++) {
        if (!cached) setenv("UFLOW_CACHE_DIR", "off", 1);
        else if (saved_env) setenv("UFLOW_CACHE_DIR", saved_env, 1);
        else unsetenv("UFLOW_CACHE_DIR");
        uf_model_free(uf_model_load(model_file, NULL, NULL, NULL)); /* fills the cache */
        double t0 = uf_now();
        uf_model *again = uf_model_load(model_file, NULL, NULL, NULL);
        load_s[cached] = uf_now() - t0;
        if (!again) {
            free(saved_env);
            goto done;
        }
        uf_model_free(again);
    }
    free(saved_env);
    if (uf_backbone_set_precision(m->backbone, (uf_precision)precision) != UF_OK) goto done;
    const char *inputs[1] = {images};
    if (!(ds = uf_dataset_from_paths(inputs, 1))) goto done;
    if (ds->count == 0) {
        uf_error("bench predict: no images in %s", images);
        goto done;
    }
    /* The two measured in turns, best of reps each: on a shared host whose speed drifts, both
     * see the same spells (measured back to back, the ratio moved by 0.1 between runs). */
    double model_s = -1.0, best = -1.0;
    for (int r = 0; r < reps; r++) {
        double t, ms = model_seconds_per_image(m, ds, 1);
        if (ms < 0 || bench_predict_runs(m, images, po, r == 0, 1, &t) != UF_OK) goto done;
        if (model_s < 0 || ms < model_s) model_s = ms;
        if (best < 0 || t < best) best = t;
    }
    const uf_predict_options o = *po;
    printf("predict, %d images of %s, model %s@%dx%d (backbone %s), batch %d, %d threads, best of %d\n",
           ds->count, images == in_dir ? "generated PNG" : images, m->cfg.backbone, m->cfg.input.width,
           m->cfg.input.height, uf_backbone_precision_name(m->backbone), o.batch, uf_get_num_threads(), reps);
    printf("  model only (backbone+flow+map+NFA)  %8.2f images/s  (%6.1f ms/image)\n", 1.0 / model_s,
           1e3 * model_s);
    printf("  end to end (files in, outputs out)  %8.2f images/s  (%6.1f ms/image)\n", 1.0 / best, 1e3 * best);
    printf("  end to end / model only             %8.2f\n", model_s / best);
    printf("  model load (start-up)               %8.1f ms  (%.1f ms hashing the backbone without the cache)\n",
           1e3 * load_s[1], 1e3 * load_s[0]);
    rc = UF_OK;
done:
    uf_dataset_free(ds);
    uf_model_free(m);
    bench_remove_tree(tmp);
    return rc;
}
