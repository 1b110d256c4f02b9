/* The model layer end to end on a tiny synthetic category: training is
 * reproducible bit for bit, a resumed run equals an uninterrupted one, model
 * files round-trip, bad model files are refused with a clear message, and
 * evaluation / prediction produce their outputs. Uses the shipped ResNet-18. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "harness.h"
#include "io/safetensors.h"
#include "io/synth.h"
#include "model/evaluate.h"
#include "model/model.h"
#include "model/predict.h"
#include "model/report.h"
#include "model/train.h"

#define WEIGHTS "models/resnet18-in1k-l3-bnfolded.safetensors"

static char g_data[512];

static const char *data_dir(void) {
    if (!g_data[0]) {
        snprintf(g_data, sizeof g_data, "%s/data", uf_test_tmpdir());
        if (uf_synth_write_category_size(g_data, 3, 6, 2, 4, 64) != UF_OK)
            fprintf(stderr, "synth: %s\n", uf_last_error());
    }
    return g_data;
}

static uf_train_options tiny_options(const char *out) {
    uf_train_options o = uf_train_default_options();
    o.data_dir = data_dir();
    o.weights = WEIGHTS;
    o.out_path = out;
    o.input = (uf_input_geometry){64, 64, UF_FIT_STRETCH};
    o.n_steps = 2;
    o.epochs = 4;
    o.batch = 4;
    o.lr = 2e-3;
    o.seed = 11;
    o.checkpoint_every = 0;
    o.verbose = 0;
    return o;
}

static void test_training_reproducible_and_resumable(void) {
    char a[600], b[600], c[600];
    snprintf(a, sizeof a, "%s/a.safetensors", uf_test_tmpdir());
    snprintf(b, sizeof b, "%s/b.safetensors", uf_test_tmpdir());
    snprintf(c, sizeof c, "%s/c.safetensors", uf_test_tmpdir());
    uf_train_report ra, rb, rc;
    uf_train_options o = tiny_options(a);
    CHECK(uf_train(&o, &ra) == UF_OK, "%s", uf_last_error());
    CHECK(ra.epochs_done == 4 && ra.n_images == 6, "epochs %d images %d", ra.epochs_done, ra.n_images);
    CHECK(ra.last_loss < ra.first_loss, "loss must fall: %g -> %g", ra.first_loss, ra.last_loss);

    o = tiny_options(c);
    CHECK(uf_train(&o, &rc) == UF_OK, "%s", uf_last_error());
    CHECK(uf_test_files_equal(a, c), "two runs with the same seed must write identical files");

    /* Interrupted after 2 epochs, then resumed to 4. */
    o = tiny_options(b);
    o.stop_after = 2;
    CHECK(uf_train(&o, &rb) == UF_OK, "%s", uf_last_error());
    CHECK(rb.epochs_done == 2, "stopped after %d epochs", rb.epochs_done);
    CHECK(!uf_test_files_equal(a, b), "a 2-epoch checkpoint must differ from the 4-epoch model");
    o = tiny_options(b);
    o.resume = 1;
    CHECK(uf_train(&o, &rb) == UF_OK, "%s", uf_last_error());
    CHECK(rb.epochs_done == 4, "resumed to %d epochs", rb.epochs_done);
    CHECK(uf_test_files_equal(a, b), "resumed training must equal the uninterrupted one bit for bit");

    o = tiny_options(b);
    o.resume = 1;
    CHECK(uf_train(&o, &rb) == UF_ERR && strstr(uf_last_error(), "already finished"), "%s", uf_last_error());

    /* Another seed gives another model. */
    o = tiny_options(c);
    o.seed = 12;
    CHECK(uf_train(&o, &rc) == UF_OK, "%s", uf_last_error());
    CHECK(!uf_test_files_equal(a, c), "a different seed must give a different model");
}

static void test_model_file_roundtrip(void) {
    char a[600], a2[600];
    snprintf(a, sizeof a, "%s/a.safetensors", uf_test_tmpdir());
    snprintf(a2, sizeof a2, "%s/a2.safetensors", uf_test_tmpdir());
    uf_adam opt;
    memset(&opt, 0, sizeof opt);
    int has_opt = 0;
    uf_model *m = uf_model_load(a, NULL, &opt, &has_opt);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    CHECK(has_opt && opt.step == 4 * 2, "optimizer state: has %d, step %ld", has_opt, opt.step);
    CHECK(m->cfg.input.width == 64 && m->cfg.input.height == 64 && m->cfg.flow.n_scales == 3 && m->cfg.flow.n_steps == 2, "config");
    CHECK(!strcmp(m->cfg.backbone, "resnet18") && m->cfg.epochs_done == 4, "%s %d", m->cfg.backbone,
          m->cfg.epochs_done);
    CHECK(m->cfg.flow.ln_mode == UF_LN_LOGDET && m->cfg.train.seed == 11 && m->cfg.train.batch == 4, "config");
    CHECK(uf_model_save(m, a2, &opt) == UF_OK, "%s", uf_last_error());
    CHECK(uf_test_files_equal(a, a2), "load + save must reproduce the file");
    uf_adam_free(&opt);

    /* Latents of one image are finite and have the right count. */
    float x[3 * 64 * 64];
    for (int i = 0; i < 3 * 64 * 64; i++) x[i] = (float)sin(i * 0.01);
    float *z[3];
    size_t total = 0;
    for (int l = 0; l < 3; l++) {
        int c, h, w;
        uf_model_latent_shape(m, l, &c, &h, &w);
        z[l] = calloc((size_t)c * h * w, sizeof(float));
        total += (size_t)c * h * w;
    }
    CHECK(total == 84 * 16 * 16 + 80 * 8 * 8 + 128 * 4 * 4, "latent count %zu", total);
    CHECK(uf_model_latents(m, x, 1, z) == UF_OK, "%s", uf_last_error());
    int finite = 1;
    for (int l = 0; l < 3; l++) {
        int c, h, w;
        uf_model_latent_shape(m, l, &c, &h, &w);
        for (int i = 0; i < c * h * w; i++) finite &= isfinite(z[l][i]);
        free(z[l]);
    }
    CHECK(finite, "latents must be finite");
    uf_model_free(m);
}

/* Writes a copy of model file `src` with one metadata value or tensor changed. */
static void write_variant(const char *src, const char *dst, const char *meta_key, const char *meta_value,
                          const char *drop_tensor) {
    uf_safetensors *st = uf_st_open(src);
    uf_st_writer *w = uf_st_writer_new();
    for (int i = 0; st && i < uf_st_metadata_count(st); i++) {
        const char *k = uf_st_metadata_key(st, i);
        if (meta_key && !strcmp(k, meta_key)) {
            if (meta_value) uf_st_writer_set_metadata(w, k, meta_value);
        } else {
            uf_st_writer_set_metadata(w, k, uf_st_metadata_value(st, i));
        }
    }
    for (int i = 0; st && i < uf_st_count(st); i++) {
        const uf_st_tensor *t = uf_st_at(st, i);
        if (drop_tensor && !strcmp(t->name, drop_tensor)) continue;
        uf_tensor *v = uf_st_read_f32(st, t->name, -1, NULL);
        uf_st_writer_add_f32(w, t->name, UF_DT_F32, t->ndim, t->shape, v->data);
        uf_tensor_free(v);
    }
    uf_st_writer_save(w, dst);
    uf_st_writer_free(w);
    uf_st_close(st);
}

static void expect_load_error(const char *path, const char *weights, const char *needle) {
    uf_model *m = uf_model_load(path, weights, NULL, NULL);
    CHECK(m == NULL && strstr(uf_last_error(), needle) != NULL, "expected '%s', got '%s'", needle,
          m ? "(loaded)" : uf_last_error());
    uf_model_free(m);
}

static void test_bad_model_files(void) {
    char a[600], bad[600];
    snprintf(a, sizeof a, "%s/a.safetensors", uf_test_tmpdir());
    snprintf(bad, sizeof bad, "%s/bad.safetensors", uf_test_tmpdir());
    expect_load_error(uf_test_path("missing.safetensors"), NULL, "missing.safetensors");
    write_variant(a, bad, "uflow.backbone_sha256", "0000", NULL);
    expect_load_error(bad, NULL, "differ from the ones the model was trained with");
    write_variant(a, bad, "uflow.flow_steps", NULL, NULL);
    expect_load_error(bad, NULL, "uflow.flow_steps");
    write_variant(a, bad, "uflow.input_size", "65x", NULL);
    expect_load_error(bad, NULL, "uflow.input_size");
    write_variant(a, bad, "uflow.channels", "64,128", NULL);
    expect_load_error(bad, NULL, "uflow.channels");
    write_variant(a, bad, "uflow.ln_mode", "sometimes", NULL);
    expect_load_error(bad, NULL, "sometimes");
    /* found by fuzz/fuzz_model.c: a value with a newline made a two-line message */
    write_variant(a, bad, "uflow.ln_mode", "logdet\nx", NULL);
    expect_load_error(bad, NULL, "uflow.ln_mode' holds control characters");
    CHECK(!strchr(uf_last_error(), '\n'), "one line: %s", uf_last_error());
    /* a tiny file claiming a huge flow (3.6 GB of LayerNorm parameters at 8192, 64 steps) is
     * refused before anything is allocated */
    write_variant(a, bad, "uflow.input_size", "8192", NULL);
    write_variant(bad, bad, "uflow.heights", "2048,1024,512", NULL);
    write_variant(bad, bad, "uflow.widths", "2048,1024,512", NULL);
    expect_load_error(bad, NULL, "bytes of tensor data");
    write_variant(a, bad, "uflow.flow_steps", "64", NULL);
    expect_load_error(bad, NULL, "bytes of tensor data");
    /* a recorded backbone path that never ends when read */
    write_variant(a, bad, "uflow.backbone_file", "/dev/zero", NULL);
    expect_load_error(bad, NULL, "not a regular file");
    write_variant(a, bad, NULL, NULL, "flow.module_list.1.subnet.2.weight");
    expect_load_error(bad, NULL, "flow.module_list.1.subnet.2.weight");
    write_variant(a, bad, "uflow.backbone_file", "/nonexistent/resnet.safetensors", NULL);
    expect_load_error(bad, NULL, "not found");
    /* ...which --weights fixes. */
    uf_model *m = uf_model_load(bad, WEIGHTS, NULL, NULL);
    CHECK(m != NULL, "explicit weights: %s", uf_last_error());
    uf_model_free(m);
    /* Not a model at all: the backbone weights file. */
    expect_load_error(WEIGHTS, NULL, "not a uflow model");
}

static void test_evaluate_and_predict(void) {
    char a[600], out[600];
    snprintf(a, sizeof a, "%s/a.safetensors", uf_test_tmpdir());
    snprintf(out, sizeof out, "%s/pred", uf_test_tmpdir());
    uf_model *m = uf_model_load(a, NULL, NULL, NULL);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    uf_evaluate_options eo = {.data_dir = data_dir(), .eval_size = 64, .batch = 4};
    uf_evaluate_report er;
    CHECK(uf_evaluate(m, &eo, &er) == UF_OK, "%s", uf_last_error());
    CHECK(er.n_images == 6 && er.metrics.n_anomalous_images == 4 && er.n_good == 2, "images %d", er.n_images);
    CHECK(er.metrics.image_auroc >= 0 && er.metrics.image_auroc <= 1, "image AUROC %g", er.metrics.image_auroc);
    CHECK(er.metrics.pixel_auroc >= 0 && er.metrics.pixel_auroc <= 1, "pixel AUROC %g", er.metrics.pixel_auroc);
    CHECK(isfinite(er.good_mean_z2[0]) && er.good_mean_z2[0] > 0, "mean z2 %g", er.good_mean_z2[0]);
    char json[700];
    snprintf(json, sizeof json, "%s/metrics.json", uf_test_tmpdir());
    CHECK(uf_evaluate_write_json(m, &eo, &er, json) == UF_OK, "%s", uf_last_error());
    /* what the report is made of: every test image with its score, and the image ROC */
    int n_labelled = 0, exact = 1;
    for (int i = 0; i < er.n_images; i++) {
        n_labelled += er.images[i].label;
        exact &= er.images[i].image_path != NULL && (er.images[i].mask_path != NULL) == er.images[i].label;
    }
    CHECK(n_labelled == 4 && exact, "per-image records: %d anomalous", n_labelled);
    CHECK(er.image_roc.n >= 2 && er.image_roc.x[er.image_roc.n - 1] == 1 && er.image_roc.y[er.image_roc.n - 1] == 1,
          "image ROC of %d points", er.image_roc.n);
    double roc_area = 0; /* 6 images: nothing thinned, so the area is the AUROC */
    for (int i = 1; i < er.image_roc.n; i++)
        roc_area += (er.image_roc.x[i] - er.image_roc.x[i - 1]) * (er.image_roc.y[i] + er.image_roc.y[i - 1]) * 0.5;
    CHECK_CLOSE(roc_area, er.metrics.image_auroc, 1e-6, 0);
    /* the HTML report: self-contained, three plots, one overlay per test image (2 good + 4
     * defective, fewer than UF_REPORT_WORST each), names in the captions */
    char html[700];
    snprintf(html, sizeof html, "%s/report.html", uf_test_tmpdir());
    CHECK(uf_report_write_html(m, &eo, &er, html) == UF_OK, "%s", uf_last_error());
    char *page = uf_test_read_text(html);
    CHECK(page != NULL, "no %s", html);
    if (page) {
        int n_svg = 0, n_png = 0;
        for (const char *q = page; (q = strstr(q, "<svg ")); q++) n_svg++;
        /* "iVBORw0KGgo" is the PNG signature in base64 */
        for (const char *q = page; (q = strstr(q, "src=\"data:image/png;base64,iVBORw0KGgo")); q++) n_png++;
        CHECK(n_svg == 3 && n_png == 6, "%d plots, %d inline PNGs", n_svg, n_png);
        CHECK(!strstr(page, "src=\"http") && !strstr(page, "href=") && !strstr(page, "<script"),
              "the report refers outside itself");
        CHECK(strstr(page, "hole/000.png") && strstr(page, "good/000.png") && strstr(page, "<polyline"),
              "captions or curves missing");
        free(page);
    }
    uf_evaluate_report_free(&er);

    mkdir(out, 0755);
    char inputs[2][600];
    snprintf(inputs[0], sizeof inputs[0], "%s/test/good", data_dir());
    snprintf(inputs[1], sizeof inputs[1], "%s/test/hole/000.png", data_dir());
    const char *in[2] = {inputs[0], inputs[1]};
    uf_predict_options po = {.out_dir = out, .batch = 2};
    uf_predict_report pr;
    CHECK(uf_predict(m, in, 2, &po, &pr) == UF_OK, "%s", uf_last_error());
    CHECK(pr.n_images == 3, "predicted %d", pr.n_images);
    const char *expect[] = {"000_map.png", "000_overlay.png", "000_mask.png", "001_map.png", "hole_000_map.png",
                            "hole_000_mask.png", "results.csv", "results.jsonl"};
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++) {
        char p[800];
        snprintf(p, sizeof p, "%s/%s", out, expect[i]);
        FILE *f = fopen(p, "rb");
        CHECK(f != NULL, "missing output %s", p);
        if (f) fclose(f);
    }
    char jl[700];
    snprintf(jl, sizeof jl, "%s/results.jsonl", out);
    char *text = uf_test_read_text(jl);
    int lines = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n"), lines++) {
        cJSON *o = cJSON_Parse(line);
        CHECK(o && cJSON_IsNumber(cJSON_GetObjectItem(o, "score")) && cJSON_IsString(cJSON_GetObjectItem(o, "image")),
              "bad results.jsonl line: %s", line);
        cJSON_Delete(o);
    }
    free(text);
    CHECK(lines == 3, "results.jsonl has %d lines", lines);
    const char *bad_in[1] = {"/nonexistent/image.png"};
    CHECK(uf_predict(m, bad_in, 1, &po, &pr) == UF_ERR && strstr(uf_last_error(), "/nonexistent/image.png"),
          "%s", uf_last_error());
    uf_model_free(m);
}

int main(void) {
    UF_TEST(test_training_reproducible_and_resumable);
    UF_TEST(test_model_file_roundtrip);
    UF_TEST(test_bad_model_files);
    UF_TEST(test_evaluate_and_predict);
    return uf_test_summary();
}
