/* Non-square models end to end (shipped ResNet-18): a model trained at 512x128 on
 * a generated strip data set finds its planted defects; the model file carries the
 * size and the rectangular LayerNorm shapes and loads back; predict writes its
 * outputs at each image's own size; a keep-aspect model's outputs cover only the
 * centre crop it saw. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "harness.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/synth.h"
#include "model/evaluate.h"
#include "model/model.h"
#include "model/predict.h"
#include "model/train.h"

#define WEIGHTS "models/resnet18-in1k-l3-bnfolded.safetensors"

static char g_strip_model[600], g_strip_data[600];

/* 512x128 strips: 16 normal training images, 6 normal and 8 defective test images. */
static void test_strip_model_finds_planted_defects(void) {
    snprintf(g_strip_data, sizeof g_strip_data, "%s/strips", uf_test_tmpdir());
    snprintf(g_strip_model, sizeof g_strip_model, "%s/strip.safetensors", uf_test_tmpdir());
    CHECK(uf_synth_write_category_wh(g_strip_data, 21, 16, 6, 8, 512, 128) == UF_OK, "%s", uf_last_error());
    uf_image *probe = uf_image_load(uf_test_path("strips/test/hole/000.png"), 0);
    CHECK(probe && probe->width == 512 && probe->height == 128, "strip images are 512x128");
    uf_image_free(probe);

    uf_train_options o = uf_train_default_options();
    o.data_dir = g_strip_data;
    o.weights = WEIGHTS;
    o.out_path = g_strip_model;
    o.input = (uf_input_geometry){512, 128, UF_FIT_STRETCH};
    o.n_steps = 2;
    o.epochs = 8;
    o.batch = 8;
    o.lr = 2e-3;
    o.seed = 5;
    o.checkpoint_every = 0;
    o.verbose = 0;
    uf_train_report tr;
    CHECK(uf_train(&o, &tr) == UF_OK, "%s", uf_last_error());
    CHECK(tr.last_loss < tr.first_loss, "loss must fall: %g -> %g", tr.first_loss, tr.last_loss);

    /* the model file: size "WxH", LayerNorm (C, h, w) per scale */
    uf_safetensors *st = uf_st_open(g_strip_model);
    CHECK(st != NULL, "%s", uf_last_error());
    if (st) {
        const char *size = uf_st_metadata_get(st, "uflow.input_size"), *fit = uf_st_metadata_get(st, "uflow.input_fit");
        CHECK(size && !strcmp(size, "512x128") && fit && !strcmp(fit, "stretch"), "metadata %s %s", size, fit);
        const int64_t want[3][3] = {{64, 32, 128}, {128, 16, 64}, {256, 8, 32}};
        for (int l = 0; l < 3; l++) {
            char name[96];
            snprintf(name, sizeof name, "feature_extractor.feature_normalizations.%d.weight", l);
            const uf_st_tensor *t = uf_st_find(st, name);
            CHECK(t && t->ndim == 3 && t->shape[0] == want[l][0] && t->shape[1] == want[l][1] &&
                      t->shape[2] == want[l][2],
                  "%s shape", name);
        }
        uf_st_close(st);
    }
    uf_model *m = uf_model_load(g_strip_model, NULL, NULL, NULL);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    CHECK(m->cfg.input.width == 512 && m->cfg.input.height == 128 && m->cfg.input.fit == UF_FIT_STRETCH &&
              m->cfg.flow.height[0] == 32 && m->cfg.flow.width[0] == 128 && m->cfg.flow.height[2] == 8 &&
              m->cfg.flow.width[2] == 32,
          "loaded configuration");

    uf_evaluate_options eo = {.data_dir = g_strip_data, .eval_size = 256, .batch = 8};
    uf_evaluate_report er;
    CHECK(uf_evaluate(m, &eo, &er) == UF_OK, "%s", uf_last_error());
    printf("  512x128, %d images x %d epochs (%.1f s): image AUROC %.3f, pixel AUROC %.3f, AUPRO %.3f; "
           "detected %d/%d defective, %d/%d good\n",
           tr.n_images, tr.epochs_done, tr.train_seconds, er.metrics.image_auroc, er.metrics.pixel_auroc,
           er.metrics.aupro, er.at_nfa.tp, er.at_nfa.tp + er.at_nfa.fn, er.at_nfa.fp, er.at_nfa.fp + er.at_nfa.tn);
    CHECK(er.n_images == 14, "%d test images", er.n_images);
    CHECK(er.metrics.image_auroc > 0.9, "image AUROC %.3f", er.metrics.image_auroc);
    CHECK(er.metrics.pixel_auroc > 0.9, "pixel AUROC %.3f", er.metrics.pixel_auroc);
    uf_evaluate_report_free(&er);
    uf_model_free(m);
}

/* Reads <dir>/<stem>_map.safetensors into a new buffer; *w, *h its size. */
static float *read_map(const char *dir, const char *stem, int *w, int *h) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s_map.safetensors", dir, stem);
    uf_safetensors *st = uf_st_open(path);
    if (!st) return NULL;
    uf_tensor *t = uf_st_read_f32(st, "anomaly_map", -1, NULL);
    uf_st_close(st);
    if (!t || t->ndim != 2) {
        uf_tensor_free(t);
        return NULL;
    }
    *h = (int)t->shape[0], *w = (int)t->shape[1];
    float *out = malloc(sizeof(float) * (size_t)*w * *h);
    memcpy(out, t->data, sizeof(float) * (size_t)*w * *h);
    uf_tensor_free(t);
    return out;
}

static void write_image(const char *name, int w, int h) {
    uf_image *im = uf_image_new(w, h, 3);
    for (int i = 0; i < w * h * 3; i++) im->pixels[i] = (uint8_t)(37 * i % 251);
    CHECK(uf_image_write_png(uf_test_path(name), im) == UF_OK, "%s", uf_last_error());
    uf_image_free(im);
}

/* The strip model on images of other shapes: outputs at each image's own size. */
static void test_strip_model_outputs_at_image_size(void) {
    uf_model *m = g_strip_model[0] ? uf_model_load(g_strip_model, NULL, NULL, NULL) : NULL;
    CHECK(m != NULL, "needs the strip model: %s", uf_last_error());
    if (!m) return;
    const char *in = uf_test_path("shapes");
    CHECK(uf_make_dirs(in) == UF_OK, "%s", uf_last_error());
    const struct { const char *name; int w, h; } shapes[] = {
        {"shapes/model.png", 512, 128}, {"shapes/square.png", 200, 200}, {"shapes/wider.png", 900, 100},
        {"shapes/tall.png", 40, 160}, {"shapes/tiny.png", 5, 3}};
    for (int i = 0; i < 5; i++) write_image(shapes[i].name, shapes[i].w, shapes[i].h);
    char out[600];
    snprintf(out, sizeof out, "%s/shapes_out", uf_test_tmpdir());
    CHECK(uf_make_dirs(out) == UF_OK, "%s", uf_last_error());
    uf_predict_options po = {.out_dir = out, .batch = 3, .map_safetensors = 1};
    uf_predict_report pr;
    const char *inputs[1] = {uf_test_path("shapes")};
    CHECK(uf_predict(m, inputs, 1, &po, &pr) == UF_OK, "%s", uf_last_error());
    CHECK(pr.n_images == 5 && pr.n_failed == 0, "%d images, %d failed", pr.n_images, pr.n_failed);
    static const char *stems[] = {"model", "square", "wider", "tall", "tiny"};
    for (int i = 0; i < 5; i++) {
        int w = 0, h = 0;
        float *map = read_map(out, stems[i], &w, &h);
        CHECK(map && w == shapes[i].w && h == shapes[i].h, "%s: map %dx%d, image %dx%d", stems[i], w, h, shapes[i].w,
              shapes[i].h);
        char path[1200];
        snprintf(path, sizeof path, "%s/%s_mask.png", out, stems[i]);
        uf_image *mask = uf_image_load(path, 0);
        snprintf(path, sizeof path, "%s/%s_overlay.png", out, stems[i]);
        uf_image *ov = uf_image_load(path, 0);
        CHECK(mask && ov && mask->width == shapes[i].w && mask->height == shapes[i].h && ov->width == shapes[i].w &&
                  ov->height == shapes[i].h,
              "%s: mask and overlay at the image's size", stems[i]);
        uf_image_free(mask), uf_image_free(ov);
        free(map);
    }
    uf_model_free(m);
}

/* A keep-aspect model (96x32 input) on a 100x100 image sees rows 25..74 only: its map is
 * 0 above and below them and positive within (1 - mean exp(-z^2/2) > 0). */
static void test_keep_aspect_outputs_cover_the_crop(void) {
    const char *data = uf_test_path("small");
    CHECK(uf_synth_write_category_size(data, 9, 4, 1, 1, 64) == UF_OK, "%s", uf_last_error());
    char model[600];
    snprintf(model, sizeof model, "%s/keep.safetensors", uf_test_tmpdir());
    uf_train_options o = uf_train_default_options();
    o.data_dir = uf_test_path("small");
    o.weights = WEIGHTS;
    o.out_path = model;
    o.input = (uf_input_geometry){96, 32, UF_FIT_KEEP_ASPECT};
    o.n_steps = 1;
    o.epochs = 1;
    o.batch = 4;
    o.checkpoint_every = 0;
    o.verbose = 0;
    uf_train_report tr;
    CHECK(uf_train(&o, &tr) == UF_OK, "%s", uf_last_error());
    uf_model *m = uf_model_load(model, NULL, NULL, NULL);
    CHECK(m && m->cfg.input.fit == UF_FIT_KEEP_ASPECT && m->cfg.input.width == 96 && m->cfg.input.height == 32,
          "keep-aspect recorded: %s", m ? "" : uf_last_error());
    if (!m) return;
    CHECK(uf_make_dirs(uf_test_path("keep_in")) == UF_OK, "%s", uf_last_error());
    write_image("keep_in/sq.png", 100, 100);
    char out[600];
    snprintf(out, sizeof out, "%s/keep_out", uf_test_tmpdir());
    CHECK(uf_make_dirs(out) == UF_OK, "%s", uf_last_error());
    uf_predict_options po = {.out_dir = out, .batch = 2, .map_safetensors = 1};
    uf_predict_report pr;
    const char *inputs[1] = {uf_test_path("keep_in")};
    CHECK(uf_predict(m, inputs, 1, &po, &pr) == UF_OK && pr.n_failed == 0, "%s", uf_last_error());
    int w = 0, h = 0;
    float *map = read_map(out, "sq", &w, &h);
    CHECK(map && w == 100 && h == 100, "map %dx%d", w, h);
    if (map && w == 100 && h == 100) {
        /* the window: 100x100 -> 96x96 cover, crop top 32 -> rows 33.3..66.7 -> 33..66 */
        int win[4];
        uf_fit_window(&m->cfg.input, 100, 100, win);
        CHECK(win[0] == 0 && win[1] == 33 && win[2] == 100 && win[3] == 34, "window %d %d %d %d", win[0], win[1],
              win[2], win[3]);
        int outside_nonzero = 0, inside_zero = 0;
        for (int y = 0; y < 100; y++)
            for (int x = 0; x < 100; x++) {
                const int in = y >= win[1] && y < win[1] + win[3];
                outside_nonzero += !in && map[y * 100 + x] != 0.0f;
                inside_zero += in && !(map[y * 100 + x] > 0.0f);
            }
        CHECK(outside_nonzero == 0 && inside_zero == 0, "%d non-zero outside the crop, %d zero inside",
              outside_nonzero, inside_zero);
    }
    free(map);
    uf_model_free(m);
    /* resuming with another size is refused */
    o.epochs = 2;
    o.resume = 1;
    o.input = (uf_input_geometry){96, 32, UF_FIT_STRETCH};
    CHECK(uf_train(&o, &tr) == UF_ERR && strstr(uf_last_error(), "checkpoint was trained at 96x32 (keep-aspect)"),
          "resume with another fit: %s", uf_last_error());
}

int main(void) {
    UF_TEST(test_strip_model_finds_planted_defects);
    UF_TEST(test_strip_model_outputs_at_image_size);
    UF_TEST(test_keep_aspect_outputs_cover_the_crop);
    return uf_test_summary();
}
