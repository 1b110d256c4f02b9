/* Validation and early stopping (model/train.h) on generated data where long training
 * over-fits: few images, many epochs. With early stopping, training ends before the last
 * epoch and the held-out normal images' mean z^2, measured afresh from the saved model's
 * latents (not read from its metadata), is inside the band; with --early-stop off it
 * leaves it. The held-out split is reproducible per seed; a run interrupted and resumed
 * writes what an uninterrupted one writes; test / predict warn about a model outside the
 * band and inspect says so. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "harness.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/synth.h"
#include "model/model.h"
#include "model/train.h"

#define WEIGHTS "models/resnet18-in1k-l3-bnfolded.safetensors"
#define SIDE 64
#define EPOCHS 50

static char g_data[512], g_val[600];

static void make_data(void) {
    snprintf(g_data, sizeof g_data, "%s/data", uf_test_tmpdir());
    CHECK(uf_synth_write_category_size(g_data, 5, 14, 6, 2, SIDE) == UF_OK, "synth: %s", uf_last_error());
    snprintf(g_val, sizeof g_val, "%s/test/good", g_data); /* 6 normal images the training never sees */
}

static uf_train_options options(const char *out) {
    uf_train_options o = uf_train_default_options();
    o.data_dir = g_data;
    o.weights = WEIGHTS;
    o.out_path = out;
    o.input = (uf_input_geometry){SIDE, SIDE, UF_FIT_STRETCH};
    o.epochs = EPOCHS;
    o.batch = 8;
    o.checkpoint_every = 0;
    o.val_dir = g_val;
    o.verbose = 0;
    return o;
}

/* Mean z^2 per scale of the images in dir under model file path, from its latents. */
static int measured_z2(const char *path, const char *dir, double z2[UF_FLOW_MAX_SCALES]) {
    uf_model *m = uf_model_load(path, NULL, NULL, NULL);
    uf_dataset *ds = m ? uf_dataset_open(dir, "train") : NULL;
    if (!ds) {
        uf_model_free(m);
        return UF_ERR;
    }
    const int n = ds->count, L = m->cfg.flow.n_scales;
    float *x = malloc(sizeof(float) * 3 * SIDE * SIDE * n), *z[UF_FLOW_MAX_SCALES] = {0};
    size_t zn[UF_FLOW_MAX_SCALES];
    for (int l = 0; l < L; l++) {
        int c, h, w;
        uf_model_latent_shape(m, l, &c, &h, &w);
        zn[l] = (size_t)c * h * w;
        z[l] = malloc(sizeof(float) * zn[l] * n);
    }
    int rc = UF_OK;
    for (int i = 0; i < n && rc == UF_OK; i++)
        rc = uf_image_load_fitted(ds->samples[i].image_path, &m->cfg.input, x + (size_t)i * 3 * SIDE * SIDE);
    if (rc == UF_OK) rc = uf_model_latents(m, x, n, z);
    for (int l = 0; l < L; l++) {
        double s = 0.0;
        for (size_t k = 0; rc == UF_OK && k < zn[l] * n; k++) s += (double)z[l][k] * z[l][k];
        z2[l] = s / ((double)zn[l] * n);
        free(z[l]);
    }
    free(x);
    uf_dataset_free(ds);
    uf_model_free(m);
    return rc;
}

/* Inside the band widened by tol (the measured z^2 comes from other batches than the
 * recorded one: their rounding, about 1e-4 here, may move a value at the edge across it). */
static int in_band(const double *z2, double tol) {
    for (int l = 0; l < 3; l++)
        if (!(z2[l] >= UF_VAL_Z2_LOW - tol && z2[l] <= UF_VAL_Z2_HIGH + tol)) return 0;
    return 1;
}

static void test_early_stop_keeps_calibration(void) {
    char on[600], off[600], ckpt[600];
    snprintf(on, sizeof on, "%s/on.safetensors", uf_test_tmpdir());
    snprintf(off, sizeof off, "%s/off.safetensors", uf_test_tmpdir());
    snprintf(ckpt, sizeof ckpt, "%s/on.checkpoint.safetensors", uf_test_tmpdir());
    uf_train_report r_on, r_off;
    uf_train_options o = options(on);
    CHECK(uf_train(&o, &r_on) == UF_OK, "%s", uf_last_error());
    o = options(off);
    o.early_stop = 0;
    CHECK(uf_train(&o, &r_off) == UF_OK, "%s", uf_last_error());
    double z_on[UF_FLOW_MAX_SCALES] = {0}, z_off[UF_FLOW_MAX_SCALES] = {0};
    CHECK(measured_z2(on, g_val, z_on) == UF_OK && measured_z2(off, g_val, z_off) == UF_OK, "%s", uf_last_error());
    printf("  early stop: ended after epoch %d of %d (%s), model keeps epoch %d: held-out z^2 %.3f %.3f %.3f; "
           "without: %.3f %.3f %.3f after %d epochs\n",
           r_on.epochs_done, EPOCHS, r_on.stop_reason, r_on.best_epoch, z_on[0], z_on[1], z_on[2], z_off[0], z_off[1],
           z_off[2], r_off.epochs_done);
    CHECK(r_on.stopped_early && r_on.epochs_done < EPOCHS && r_on.best_epoch <= r_on.epochs_done, "stopped early");
    CHECK(in_band(z_on, 2e-3), "early-stopped model: held-out z^2 inside [%.2f, %.2f]", UF_VAL_Z2_LOW, UF_VAL_Z2_HIGH);
    CHECK(r_off.epochs_done == EPOCHS && !r_off.stopped_early && !in_band(z_off, 0.05),
          "without early stop z^2 leaves the band");
    /* The recorded values are the measured ones (the same latents, up to batch rounding), and
     * inside the band exactly: the model file holds an epoch chosen inside it. */
    uf_model *m = uf_model_load(on, NULL, NULL, NULL);
    CHECK(m && m->cfg.epochs_done == r_on.best_epoch && m->cfg.val_images == 6 && m->cfg.best_in_band &&
              uf_model_val_calibrated(&m->cfg) == 1,
          "model file: epoch %d, recorded z^2 inside the band", m ? m->cfg.epochs_done : -1);
    for (int l = 0; m && l < 3; l++)
        CHECK(fabs(m->cfg.val_z2[l] - z_on[l]) < 1e-3, "scale %d: recorded z^2 %.5f, measured %.5f", l, m->cfg.val_z2[l],
              z_on[l]);
    uf_model_free(m);
    int has_opt = 0;
    uf_adam opt;
    memset(&opt, 0, sizeof opt);
    m = uf_model_load(ckpt, NULL, &opt, &has_opt);
    CHECK(m && has_opt && m->cfg.epochs_done == r_on.epochs_done, "checkpoint holds the last epoch with Adam's state");
    if (opt.m) uf_adam_free(&opt);
    uf_model_free(m);

    /* Resuming an early-stopped run is refused unless early stopping is off. */
    o = options(on);
    o.resume = 1;
    CHECK(uf_train(&o, NULL) == UF_ERR && strstr(uf_last_error(), "stopped early"), "%s", uf_last_error());

    /* test and predict warn about the uncalibrated model; inspect says it is outside the band. */
    char pred[600], po[600], pe[600];
    snprintf(pred, sizeof pred, "%s/pred", uf_test_tmpdir());
    snprintf(po, sizeof po, "%s/p.out", uf_test_tmpdir());
    snprintf(pe, sizeof pe, "%s/p.err", uf_test_tmpdir());
    const char *pa[] = {"predict", "--model", off, "-o", pred, g_val, NULL};
    CHECK(uf_test_run_uflow(pa, po, pe) == 0, "predict");
    char *err = uf_test_read_text(pe);
    CHECK(err && strstr(err, "warning") && strstr(err, "not trustworthy"), "predict warns: %s", err ? err : "");
    free(err);
    const char *ta[] = {"test", "--model", off, "--data", g_data, NULL};
    CHECK(uf_test_run_uflow(ta, po, pe) == 0, "test");
    err = uf_test_read_text(pe);
    CHECK(err && strstr(err, "not trustworthy"), "test warns: %s", err ? err : "");
    free(err);
    const char *ta2[] = {"test", "--model", on, "--data", g_data, NULL};
    CHECK(uf_test_run_uflow(ta2, po, pe) == 0, "test");
    err = uf_test_read_text(pe);
    CHECK(err && !strstr(err, "not trustworthy"), "no warning for the calibrated model: %s", err ? err : "");
    free(err);
    const char *ia[] = {"inspect", off, NULL};
    CHECK(uf_test_run_uflow(ia, po, pe) == 0, "inspect");
    char *out = uf_test_read_text(po);
    CHECK(out && strstr(out, "validation: 6 held-out") && strstr(out, "outside the band"), "inspect: %s",
          out ? "no calibration line" : "");
    free(out);
}

static void test_resumed_early_stop_equals_uninterrupted(void) {
    char a[600], b[600], ca[600], cb[600];
    snprintf(a, sizeof a, "%s/ra.safetensors", uf_test_tmpdir());
    snprintf(b, sizeof b, "%s/rb.safetensors", uf_test_tmpdir());
    snprintf(ca, sizeof ca, "%s/ra.checkpoint.safetensors", uf_test_tmpdir());
    snprintf(cb, sizeof cb, "%s/rb.checkpoint.safetensors", uf_test_tmpdir());
    uf_train_report ra, rb;
    uf_train_options o = options(a);
    o.val_dir = NULL, o.val_split = 0.3, o.epochs = 12; /* 4 of the 14 training images held out */
    CHECK(uf_train(&o, &ra) == UF_OK, "%s", uf_last_error());
    o.out_path = b, o.stop_after = 5;
    CHECK(uf_train(&o, &rb) == UF_OK && rb.epochs_done == 5, "%s", uf_last_error());
    o.stop_after = 0, o.resume = 1;
    CHECK(uf_train(&o, &rb) == UF_OK, "%s", uf_last_error());
    CHECK(ra.n_val == 4 && rb.epochs_done == ra.epochs_done && rb.best_epoch == ra.best_epoch,
          "held out %d; epochs %d / %d, best %d / %d", ra.n_val, ra.epochs_done, rb.epochs_done, ra.best_epoch,
          rb.best_epoch);
    CHECK(uf_test_files_equal(a, b) && uf_test_files_equal(ca, cb), "interrupted + resumed = uninterrupted, bit for bit");
    /* A new run without validation to the same file removes the old checkpoint, so that a later
     * --resume continues this run, not the old one. */
    o = options(a);
    o.val_dir = NULL, o.val_split = 0, o.epochs = 1;
    FILE *f = fopen(ca, "rb");
    CHECK(f != NULL, "checkpoint before");
    if (f) fclose(f);
    CHECK(uf_train(&o, NULL) == UF_OK && !(f = fopen(ca, "rb")), "stale checkpoint removed");
    if (f) fclose(f);
}

/* The held-out images are chosen by the seed: the same seed, the same ones. */
static void test_val_split_reproducible(void) {
    char p[3][600];
    uint64_t seeds[3] = {7, 7, 8};
    uf_model *m[3];
    for (int i = 0; i < 3; i++) {
        snprintf(p[i], sizeof p[i], "%s/split%d.safetensors", uf_test_tmpdir(), i);
        uf_train_options o = options(p[i]);
        o.val_dir = NULL, o.val_split = 0.25, o.epochs = 1, o.seed = seeds[i];
        uf_train_report r;
        CHECK(uf_train(&o, &r) == UF_OK && r.n_val == 4 && r.n_images == 10, "%s (%d held out, %d trained)",
              uf_last_error(), r.n_val, r.n_images);
        m[i] = uf_model_load(p[i], NULL, NULL, NULL);
    }
    if (m[0] && m[1] && m[2]) {
        CHECK(strlen(m[0]->cfg.val_inputs_sha256) == 64 &&
                  !strcmp(m[0]->cfg.val_inputs_sha256, m[1]->cfg.val_inputs_sha256),
              "same seed, same held-out images");
        CHECK(strcmp(m[0]->cfg.val_inputs_sha256, m[2]->cfg.val_inputs_sha256), "another seed, other held-out images");
        CHECK(m[0]->cfg.val_split == 0.25 && m[0]->cfg.val_images == 4, "recorded split");
    }
    for (int i = 0; i < 3; i++) uf_model_free(m[i]);
    /* Too few images to hold any out: validation is off, all of them train. */
    uf_train_options o = options(p[0]);
    o.val_dir = NULL, o.val_split = 0.05, o.epochs = 1, o.max_images = 10;
    uf_train_report r;
    CHECK(uf_train(&o, &r) == UF_OK && r.n_val == 0 && r.n_images == 10, "val split below 2 images: %d held out",
          r.n_val);
}

int main(void) {
    make_data();
    UF_TEST(test_early_stop_keeps_calibration);
    UF_TEST(test_resumed_early_stop_equals_uninterrupted);
    UF_TEST(test_val_split_reproducible);
    return uf_test_summary();
}
