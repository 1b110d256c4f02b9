/* The public API (include/uflow.h) as an embedding program uses it: training with an
 * epoch callback that can stop and resume, prediction from pixels in memory (gray, RGB,
 * RGBA, with a row stride, any size) against prediction from the same image's file,
 * batch prediction with bad files among good ones, bad arguments, the log callback
 * (silent by default), output stems, uflow_test against `uflow test`, and two models
 * used from two threads at once against the same work done one after the other. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "io/image.h"
#include "io/synth.h"
#include "uflow.h"

#define SIDE 64

static char g_data[600], g_model[600];

typedef struct {
    int calls, last_epoch, epochs, stop_at;
    double loss[16];
} epoch_log;

static int on_epoch(int epoch, int epochs, double loss, double eta, void *user) {
    epoch_log *l = user;
    if (l->calls < 16) l->loss[l->calls] = loss;
    l->calls++, l->last_epoch = epoch, l->epochs = epochs;
    (void)eta;
    return l->stop_at > 0 && epoch >= l->stop_at;
}

/* The data set and model every other test uses. */
static void test_train_with_epoch_callback(void) {
    snprintf(g_data, sizeof g_data, "%s/cat", uf_test_tmpdir());
    snprintf(g_model, sizeof g_model, "%s/m.safetensors", uf_test_tmpdir());
    CHECK(uf_synth_write_category_size(g_data, 3, 16, 6, 8, SIDE) == 0, "synth");
    uflow_train_options o = uflow_train_default_options();
    CHECK(!strcmp(o.backbone, "resnet18") && o.epochs == 100 && o.batch == 16 && o.flow_steps == 4 &&
              o.val_split == 0.1 && o.early_stop == 1 && o.patience == 10,
          "defaults");
    o.data_dir = g_data, o.out_path = g_model, o.width = o.height = SIDE, o.epochs = 3, o.batch = 8;
    epoch_log log = {0};
    o.on_epoch = on_epoch, o.user = &log;
    uflow_train_summary s;
    CHECK(uflow_train(&o, &s) == UFLOW_OK, "%s", uflow_last_error());
    CHECK(log.calls == 3 && log.last_epoch == 3 && log.epochs == 3, "callback %d times, last %d/%d", log.calls,
          log.last_epoch, log.epochs);
    /* 16 images: 10% held out for validation is 2 (see uflow.h). */
    CHECK(s.epochs_done == 3 && s.images == 14 && s.val_images == 2 && s.best_epoch >= 1 && s.best_epoch <= 3 &&
              s.last_loss == log.loss[2] && s.first_loss == log.loss[0] && s.val_z2[0] > 0,
          "summary %d epochs %d images (%d held out) loss %g", s.epochs_done, s.images, s.val_images, s.last_loss);

    /* Stopped by the callback after 1 of 4 epochs, then resumed to the end. */
    char stopped[700];
    snprintf(stopped, sizeof stopped, "%s/stopped.safetensors", uf_test_tmpdir());
    o.out_path = stopped, o.epochs = 4;
    epoch_log l2 = {.stop_at = 1};
    o.user = &l2;
    CHECK(uflow_train(&o, &s) == UFLOW_OK && s.epochs_done == 1 && l2.calls == 1, "stop: %d epochs, %d calls",
          s.epochs_done, l2.calls);
    uflow_model *m = uflow_model_load(stopped, NULL);
    CHECK(m && uflow_model_epochs(m) == 1, "stopped model: %s", m ? "epochs" : uflow_last_error());
    uflow_model_free(m);
    epoch_log l3 = {0};
    o.user = &l3, o.resume = 1;
    CHECK(uflow_train(&o, &s) == UFLOW_OK && s.epochs_done == 4 && l3.calls == 3 && l3.last_epoch == 4,
          "resume: %d epochs, %d calls (%s)", s.epochs_done, l3.calls, uflow_last_error());

    o = uflow_train_default_options();
    o.data_dir = "/nonexistent/data", o.out_path = stopped;
    CHECK(uflow_train(&o, NULL) == UFLOW_ERROR && strstr(uflow_last_error(), "/nonexistent/data"), "missing data: %s",
          uflow_last_error());
    o.data_dir = g_data, o.backbone = "vgg16";
    CHECK(uflow_train(&o, NULL) == UFLOW_ERROR && strstr(uflow_last_error(), "vgg16"), "bad backbone: %s",
          uflow_last_error());
}

static int same_result(const uflow_result *a, const uflow_result *b) {
    const int w = uflow_result_width(a), h = uflow_result_height(a);
    if (!a || !b || w != uflow_result_width(b) || h != uflow_result_height(b)) return 0;
    const size_t n = (size_t)w * h;
    return uflow_result_score(a) == uflow_result_score(b) && uflow_result_anomalous(a) == uflow_result_anomalous(b) &&
           !memcmp(uflow_result_anomaly_map(a), uflow_result_anomaly_map(b), n * sizeof(float)) &&
           !memcmp(uflow_result_neg_log10_nfa(a), uflow_result_neg_log10_nfa(b), n * sizeof(float)) &&
           !memcmp(uflow_result_mask(a), uflow_result_mask(b), n);
}

/* The fields agree with each other: mask = (-log10 NFA > 0), detected = its count. */
static int consistent(const uflow_result *r) {
    const size_t n = (size_t)uflow_result_width(r) * uflow_result_height(r);
    const float *nfa = uflow_result_neg_log10_nfa(r), *map = uflow_result_anomaly_map(r);
    const unsigned char *mask = uflow_result_mask(r);
    int count = 0;
    for (size_t p = 0; p < n; p++) {
        if (mask[p] != (nfa[p] > 0.0f) || !(map[p] >= 0.0f && map[p] <= 1.0f)) return 0;
        count += mask[p];
    }
    return count == uflow_result_detected_pixels(r);
}

static void test_pixels_match_files(void) {
    uflow_model *m = uflow_model_load(g_model, NULL);
    CHECK(m != NULL, "%s", uflow_last_error());
    if (!m) return;
    CHECK(uflow_model_input_width(m) == SIDE && uflow_model_input_height(m) == SIDE &&
              !strcmp(uflow_model_backbone(m), "resnet18") && uflow_model_epochs(m) >= 1 && uflow_model_epochs(m) <= 3,
          "model accessors");
    char path[800], crop_path[800], gray_path[800];
    snprintf(path, sizeof path, "%s/test/hole/000.png", g_data);
    uf_image *img = uf_image_load(path, 3);
    CHECK(img != NULL, "%s", uflow_last_error());
    if (!img) return;
    uflow_result *rf = uflow_predict_file(m, path, NULL);
    uflow_result *rp = uflow_predict_pixels(m, img->pixels, img->width, img->height, 3, 0, NULL);
    CHECK(rf && rp && same_result(rf, rp), "RGB pixels = file");
    CHECK(rf && consistent(rf) && uflow_result_width(rf) == SIDE, "fields consistent");
    CHECK(rf && uflow_result_anomalous(rf) == (uflow_result_max_neg_log10_nfa(rf) > 0.0f), "anomalous = max NFA");

    /* RGBA: alpha ignored. */
    unsigned char *rgba = malloc((size_t)SIDE * SIDE * 4);
    for (int p = 0; p < SIDE * SIDE; p++) memcpy(rgba + 4 * p, img->pixels + 3 * p, 3), rgba[4 * p + 3] = (unsigned char)p;
    uflow_result *ra = uflow_predict_pixels(m, rgba, SIDE, SIDE, 4, 0, NULL);
    CHECK(ra && same_result(rf, ra), "RGBA pixels = file");

    /* A 40 x 24 region, passed with the full image's stride, against the region saved as a file. */
    const int X = 13, Y = 21, W = 40, H = 24;
    uf_image *crop = uf_image_new(W, H, 3);
    for (int y = 0; y < H; y++) memcpy(crop->pixels + (size_t)y * W * 3, img->pixels + ((size_t)(Y + y) * SIDE + X) * 3, W * 3);
    snprintf(crop_path, sizeof crop_path, "%s/crop.png", uf_test_tmpdir());
    CHECK(uf_image_write_png(crop_path, crop) == 0, "write crop");
    uflow_result *rc = uflow_predict_file(m, crop_path, NULL);
    uflow_result *rs = uflow_predict_pixels(m, img->pixels + ((size_t)Y * SIDE + X) * 3, W, H, 3, (size_t)SIDE * 3, NULL);
    CHECK(rc && rs && same_result(rc, rs) && uflow_result_width(rs) == W && uflow_result_height(rs) == H,
          "strided region = its file, at its own size");
    CHECK(rs && consistent(rs), "region fields consistent");
    uflow_predict_options mo = uflow_predict_default_options();
    mo.model_size = 1;
    uflow_result *rm = uflow_predict_pixels(m, crop->pixels, W, H, 3, 0, &mo);
    CHECK(rm && uflow_result_width(rm) == SIDE && uflow_result_height(rm) == SIDE && consistent(rm), "model_size");
    if (rm) {
        float mx = 0.0f;
        for (int p = 0; p < SIDE * SIDE; p++) mx = uflow_result_anomaly_map(rm)[p] > mx ? uflow_result_anomaly_map(rm)[p] : mx;
        CHECK(mx == uflow_result_score(rm), "score %g = max of the model-size map %g", uflow_result_score(rm), mx);
    }

    /* Gray: one channel in memory = the gray file. */
    uf_image *gray = uf_image_load(path, 1);
    snprintf(gray_path, sizeof gray_path, "%s/gray.png", uf_test_tmpdir());
    CHECK(gray && uf_image_write_png(gray_path, gray) == 0, "gray");
    uflow_result *rg = gray ? uflow_predict_pixels(m, gray->pixels, SIDE, SIDE, 1, 0, NULL) : NULL;
    uflow_result *rgf = uflow_predict_file(m, gray_path, NULL);
    CHECK(rg && rgf && same_result(rg, rgf), "gray pixels = gray file");

    uflow_result *all[] = {rf, rp, ra, rc, rs, rm, rg, rgf};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) uflow_result_free(all[i]);
    uf_image_free(gray), uf_image_free(crop), uf_image_free(img);
    free(rgba);
    uflow_model_free(m);
}

/* Whole file into memory (malloc'ed), or NULL. */
static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = n > 0 ? malloc((size_t)n) : NULL;
    if (d && fread(d, 1, (size_t)n, f) != (size_t)n) free(d), d = NULL;
    fclose(f);
    *len = d ? (size_t)n : 0;
    return d;
}

/* uflow_predict_encoded = uflow_predict_file on the same bytes; a bad body gets NULL and a
 * message with the given name; uflow_result_png's images decode to the result's fields. */
static void test_encoded_and_png(void) {
    uflow_model *m = uflow_model_load(g_model, NULL);
    CHECK(m != NULL, "%s", uflow_last_error());
    if (!m) return;
    char path[800], out[800];
    snprintf(path, sizeof path, "%s/test/hole/000.png", g_data);
    size_t len = 0;
    unsigned char *data = slurp(path, &len);
    CHECK(data != NULL, "read %s", path);
    uflow_result *rf = uflow_predict_file(m, path, NULL);
    uflow_result *re = data ? uflow_predict_encoded(m, data, len, "upload", NULL) : NULL;
    CHECK(rf && re && same_result(rf, re), "encoded bytes = file: %s", uflow_last_error());
    CHECK(!uflow_predict_encoded(m, data, len / 2, "upload", NULL) && strstr(uflow_last_error(), "upload"),
          "truncated body: %s", uflow_last_error());
    CHECK(!uflow_predict_encoded(m, "garbage", 7, NULL, NULL) && strstr(uflow_last_error(), "image in memory"),
          "garbage body: %s", uflow_last_error());
    CHECK(!uflow_predict_encoded(m, NULL, 0, "empty", NULL), "empty body refused");
    if (re) {
        const int W = uflow_result_width(re), H = uflow_result_height(re);
        const char *what[3] = {"map", "mask", "overlay"};
        for (int k = 0; k < 3; k++) {
            unsigned char *png = NULL;
            size_t n = 0;
            CHECK(uflow_result_png(re, what[k], &png, &n) == UFLOW_OK && png && n > 8, "%s: %s", what[k], uflow_last_error());
            snprintf(out, sizeof out, "%s/mem_%s.png", uf_test_tmpdir(), what[k]);
            FILE *f = fopen(out, "wb");
            if (f && png) fwrite(png, 1, n, f);
            if (f) fclose(f);
            free(png);
            uf_image *img = uf_image_load(out, 0);
            CHECK(img && img->width == W && img->height == H && img->channels == (k == 2 ? 3 : 1), "%s decodes at %dx%d",
                  what[k], W, H);
            if (img && k == 1) { /* the mask: 255 exactly where detected */
                int same = 1;
                for (int p = 0; p < W * H; p++) same &= img->pixels[p] == (uflow_result_mask(re)[p] ? 255 : 0);
                CHECK(same, "mask PNG = the result's mask");
            }
            if (img && k == 0) { /* the map: its high byte (the decoder keeps 8 bits) */
                int worst = 0;
                for (int p = 0; p < W * H; p++) {
                    int want = (int)lrintf(uflow_result_anomaly_map(re)[p] * 65535.0f) >> 8, d = abs(img->pixels[p] - want);
                    worst = d > worst ? d : worst;
                }
                CHECK(worst == 0, "map PNG = the anomaly map (worst %d levels)", worst);
            }
            uf_image_free(img);
        }
        unsigned char *png = NULL;
        size_t n = 0;
        CHECK(uflow_result_png(re, "nfa", &png, &n) == UFLOW_ERROR && !png, "unknown image name refused");
    }
    uflow_result_free(rf), uflow_result_free(re);
    free(data);
    uflow_model_free(m);
}

/* uflow_model_info_json: the model file's uflow.* metadata without paths. */
static void test_model_info(void) {
    char *json = NULL;
    CHECK(uflow_model_info_json(g_model, &json) == UFLOW_OK && json, "%s", uflow_last_error());
    if (json) {
        CHECK(strstr(json, "\"backbone\":\"resnet18\"") && strstr(json, "\"epochs\":") && strstr(json, "\"backbone_sha256\":"),
              "info has the backbone, epochs and hash: %.200s", json);
        CHECK(!strchr(json, '/') && !strstr(json, "backbone_file") && !strstr(json, "train_data"),
              "info names no path: %.300s", json);
        free(json);
    }
    json = (char *)1;
    CHECK(uflow_model_info_json("/nonexistent/m.safetensors", &json) == UFLOW_ERROR && !json &&
              strstr(uflow_last_error(), "/nonexistent/m.safetensors"),
          "a missing file: %s", uflow_last_error());
}

static void test_bad_arguments(void) {
    uflow_model *m = uflow_model_load("/nonexistent/model.safetensors", NULL);
    CHECK(!m && strstr(uflow_last_error(), "/nonexistent/model.safetensors"), "missing model: %s", uflow_last_error());
    char trunc[700];
    snprintf(trunc, sizeof trunc, "%s/trunc.safetensors", uf_test_tmpdir());
    uf_test_write_file(trunc, "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", 13);
    CHECK(!uflow_model_load(trunc, NULL) && strstr(uflow_last_error(), "trunc.safetensors"), "truncated: %s",
          uflow_last_error());
    m = uflow_model_load(g_model, NULL);
    CHECK(m != NULL, "%s", uflow_last_error());
    if (!m) return;
    unsigned char px[16 * 16 * 3] = {0};
    CHECK(!uflow_predict_pixels(m, NULL, 16, 16, 3, 0, NULL) && *uflow_last_error(), "NULL pixels");
    CHECK(!uflow_predict_pixels(m, px, 16, 16, 2, 0, NULL) && strstr(uflow_last_error(), "2 channels"), "2 channels: %s",
          uflow_last_error());
    CHECK(!uflow_predict_pixels(m, px, 0, 16, 3, 0, NULL) && strstr(uflow_last_error(), "0x16"), "width 0: %s",
          uflow_last_error());
    CHECK(!uflow_predict_pixels(m, px, 70000, 16, 3, 0, NULL) && *uflow_last_error(), "too wide");
    CHECK(!uflow_predict_pixels(m, px, 16, 16, 3, 20, NULL) && strstr(uflow_last_error(), "stride"), "stride: %s",
          uflow_last_error());
    CHECK(!uflow_predict_pixels(NULL, px, 16, 16, 3, 0, NULL) && *uflow_last_error(), "NULL model");
    CHECK(!uflow_predict_file(m, "/nonexistent/x.png", NULL) && strstr(uflow_last_error(), "/nonexistent/x.png"),
          "missing image: %s", uflow_last_error());
    /* A 1 x 1 image is an image: it gets results at 1 x 1. */
    uflow_result *r = uflow_predict_pixels(m, px, 1, 1, 3, 0, NULL);
    CHECK(r && uflow_result_width(r) == 1 && uflow_result_height(r) == 1, "1x1: %s", r ? "" : uflow_last_error());
    uflow_result_free(r);
    uflow_result_free(NULL);
    uflow_model_free(NULL);
    CHECK(uflow_result_write(NULL, "x", "y", 0) == UFLOW_ERROR, "write NULL result");

    /* Bad files among good ones: the good ones get their results, each bad one its reason. */
    char good0[800], good1[800], corrupt[800];
    snprintf(good0, sizeof good0, "%s/test/good/000.png", g_data);
    snprintf(good1, sizeof good1, "%s/test/hole/000.png", g_data);
    snprintf(corrupt, sizeof corrupt, "%s/corrupt.png", uf_test_tmpdir());
    uf_test_write_file(corrupt, "\x89PNG\r\n\x1a\n garbage", 17);
    const char *paths[] = {good0, "/nonexistent/y.png", corrupt, good1};
    uflow_result *res[4];
    char *err[4];
    CHECK(uflow_predict_files(m, paths, 4, NULL, res, err) == 2, "2 failed");
    CHECK(res[0] && res[3] && !res[1] && !res[2], "results of the good ones only");
    CHECK(!err[0] && !err[3] && err[1] && strstr(err[1], "/nonexistent/y.png") && err[2] && strstr(err[2], "corrupt.png"),
          "errors: %s | %s", err[1] ? err[1] : "-", err[2] ? err[2] : "-");
    uflow_result *single = uflow_predict_file(m, good1, NULL);
    CHECK(single && res[3] && fabsf(uflow_result_score(single) - uflow_result_score(res[3])) <= 1e-5f &&
              uflow_result_anomalous(single) == uflow_result_anomalous(res[3]),
          "batch result = single result");
    uflow_result_free(single);

    /* Straight to files: the rows are the results', the files are there, the bad ones say why. */
    char out[700], f[900];
    snprintf(out, sizeof out, "%s/to_files", uf_test_tmpdir());
    const char *stems[] = {"g/000", "missing", "corrupt", "h000"};
    uflow_row rows[4];
    char *err2[4];
    CHECK(uflow_predict_to_files(m, paths, stems, 4, out, NULL, rows, err2) == 2, "%s", uflow_last_error());
    CHECK(rows[0].ok && rows[3].ok && !rows[1].ok && !rows[2].ok && err2[1] && strstr(err2[1], "/nonexistent/y.png") &&
              err2[2] && strstr(err2[2], "corrupt.png") && !err2[0] && !err2[3],
          "rows and errors");
    for (int i = 0; i < 4; i += 3)
        CHECK(res[i] && rows[i].score == uflow_result_score(res[i]) &&
                  rows[i].anomalous == uflow_result_anomalous(res[i]) &&
                  rows[i].detected_pixels == uflow_result_detected_pixels(res[i]) &&
                  rows[i].width == uflow_result_width(res[i]),
              "image %d: row differs from uflow_predict_files' result", i);
    static const char *files[] = {"g/000_map.png", "g/000_overlay.png", "g/000_mask.png", "h000_mask.png"};
    for (int i = 0; i < 4; i++) {
        snprintf(f, sizeof f, "%s/%s", out, files[i]);
        FILE *fp = fopen(f, "rb");
        CHECK(fp != NULL, "missing %s", f);
        if (fp) fclose(fp);
    }
    uflow_write_options wo = uflow_write_default_options();
    wo.outputs = "mask,bogus";
    CHECK(uflow_predict_to_files(m, paths, stems, 4, out, &wo, rows, NULL) == UFLOW_ERROR &&
              strstr(uflow_last_error(), "bogus"),
          "bad outputs: %s", uflow_last_error());
    for (int i = 0; i < 4; i++) uflow_result_free(res[i]), free(err[i]), free(err2[i]);
    uflow_model_free(m);
}

typedef struct {
    int n_info, n_warning, n_error;
} log_counts;

static void count_log(int level, const char *message, void *user) {
    log_counts *c = user;
    (void)message;
    c->n_info += level == UFLOW_LOG_INFO;
    c->n_warning += level == UFLOW_LOG_WARNING;
    c->n_error += level == UFLOW_LOG_ERROR;
}

/* uflow_test's metrics are those of `uflow test` on the same model and data; its files
 * are written; the library is silent on stderr without a log callback. */
static void test_uflow_test_and_logging(void) {
    uflow_model *m = uflow_model_load(g_model, NULL);
    CHECK(m != NULL, "%s", uflow_last_error());
    if (!m) return;
    char out[700], errf[700], cli_out[700], cli_json[800];
    snprintf(out, sizeof out, "%s/eval", uf_test_tmpdir());
    snprintf(errf, sizeof errf, "%s/stderr.txt", uf_test_tmpdir());
    uflow_test_options o = uflow_test_default_options();
    o.data_dir = g_data, o.out_dir = out;
    uflow_metrics mt;
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(errf, "w");
    dup2(fileno(f), 2);
    int rc = uflow_test(m, &o, &mt);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    CHECK(rc == UFLOW_OK, "%s", uflow_last_error());
    char *err_text = uf_test_read_text(errf);
    CHECK(err_text && !*err_text, "stderr without a log callback: '%s'", err_text ? err_text : "(none)");
    free(err_text);
    CHECK(mt.images == 14 && mt.good_images == 6 && mt.tp + mt.fn == 8 && mt.fp + mt.tn == 6, "counts %d %d", mt.images,
          mt.good_images);
    char p[800];
    snprintf(p, sizeof p, "%s/metrics.json", out);
    CHECK(access(p, R_OK) == 0, "metrics.json");
    snprintf(p, sizeof p, "%s/report.html", out);
    CHECK(access(p, R_OK) == 0, "report.html");
    snprintf(cli_out, sizeof cli_out, "%s/cli-eval", uf_test_tmpdir());
    const char *args[] = {"test", "--model", g_model, "--data", g_data, "-o", cli_out, NULL};
    CHECK(uf_test_run_uflow(args, uf_test_path("cli.out"), uf_test_path("cli.err")) == 0, "uflow test");
    snprintf(cli_json, sizeof cli_json, "%s/metrics.json", cli_out);
    char *j = uf_test_read_text(cli_json);
    const char *k = j ? strstr(j, "\"image_auroc\":") : NULL;
    const char *q = j ? strstr(j, "\"pixel_auroc\":") : NULL;
    CHECK(k && q && fabs(strtod(k + 14, NULL) - mt.image_auroc) < 1e-6 && fabs(strtod(q + 14, NULL) - mt.pixel_auroc) < 1e-6,
          "image AUROC %.6f, pixel AUROC %.6f against uflow test's", mt.image_auroc, mt.pixel_auroc);
    free(j);

    log_counts c = {0};
    uflow_set_log(count_log, &c);
    uflow_test_options o2 = uflow_test_default_options();
    o2.data_dir = g_data;
    CHECK(uflow_test(m, &o2, &mt) == UFLOW_OK && c.n_info >= 1, "info lines through the callback: %d", c.n_info);
    const char *paths[] = {"/nonexistent/z.png"};
    CHECK(!uflow_list_images(paths, 1) && strstr(uflow_last_error(), "/nonexistent/z.png"), "list missing: %s",
          uflow_last_error());
    uflow_set_log(NULL, NULL);
    uflow_model_free(m);
}

static void test_image_list(void) {
    char test_dir[700];
    snprintf(test_dir, sizeof test_dir, "%s/test", g_data);
    const char *in[] = {test_dir};
    uflow_image_list *l = uflow_list_images(in, 1);
    CHECK(l && uflow_image_list_count(l) == 14, "count %d", uflow_image_list_count(l));
    int found = 0;
    for (int i = 0; l && i < uflow_image_list_count(l); i++) {
        const char *s = uflow_image_list_stem(l, i), *p = uflow_image_list_path(l, i);
        if (strstr(p, "/test/good/000.png")) found += !strcmp(s, "good/000");
        if (strstr(p, "/test/hole/000.png")) found += !strcmp(s, "hole/000");
    }
    CHECK(found == 2, "stems mirror the tree");
    CHECK(l && !uflow_image_list_path(l, 99) && !uflow_image_list_stem(l, -1), "out of range");
    uflow_image_list_free(l);
}

typedef struct {
    uflow_model *m;
    const char *const *paths;
    int n;
    uflow_result **out;
} job;

static void *predict_job(void *arg) {
    job *j = arg;
    for (int i = 0; i < j->n; i++) j->out[i] = uflow_predict_file(j->m, j->paths[i], NULL);
    return NULL;
}

/* One model per thread: two threads at once give what one thread gives (to the
 * rounding of another thread count, which only the map's last bits may show). */
static void test_two_threads(void) {
    enum { N = 6 };
    char p[2 * N][800];
    const char *paths[2 * N];
    for (int i = 0; i < 2 * N; i++) {
        static const char *dirs[] = {"good", "hole", "color", "scratch", "stain"};
        snprintf(p[i], sizeof p[i], "%s/test/%s/%03d.png", g_data, dirs[i % 5], i % 5 ? (i / 5) % 2 : i / 5);
        paths[i] = p[i];
    }
    uflow_model *a = uflow_model_load(g_model, NULL), *b = uflow_model_load(g_model, NULL);
    CHECK(a && b, "%s", uflow_last_error());
    if (!a || !b) return;
    uflow_result *seq[2 * N], *par[2 * N];
    job ja = {a, paths, N, seq}, jb = {a, paths + N, N, seq + N};
    predict_job(&ja), predict_job(&jb);
    job pa = {a, paths, N, par}, pb = {b, paths + N, N, par + N};
    pthread_t ta, tb;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)64 << 20);
    CHECK(pthread_create(&ta, &attr, predict_job, &pa) == 0 && pthread_create(&tb, &attr, predict_job, &pb) == 0, "threads");
    pthread_attr_destroy(&attr);
    pthread_join(ta, NULL), pthread_join(tb, NULL);
    int same = 0, close = 0;
    for (int i = 0; i < 2 * N; i++) {
        if (!seq[i] || !par[i]) continue;
        same += same_result(seq[i], par[i]);
        const size_t n = (size_t)uflow_result_width(seq[i]) * uflow_result_height(seq[i]);
        double err = 0.0;
        for (size_t k = 0; k < n; k++)
            err = fmax(err, fabs(uflow_result_anomaly_map(seq[i])[k] - uflow_result_anomaly_map(par[i])[k]));
        close += err <= 1e-5 && uflow_result_anomalous(seq[i]) == uflow_result_anomalous(par[i]) &&
                 uflow_result_width(par[i]) == SIDE;
    }
    printf("  two threads: %d of %d results bit-identical to one thread, %d within 1e-5\n", same, 2 * N, close);
    CHECK(close == 2 * N, "%d of %d agree", close, 2 * N);
    for (int i = 0; i < 2 * N; i++) uflow_result_free(seq[i]), uflow_result_free(par[i]);
    uflow_model_free(a), uflow_model_free(b);
}

int main(void) {
    uflow_set_threads(2);
    CHECK(!strcmp(uflow_version(), UFLOW_VERSION_STRING), "version %s", uflow_version());
    UF_TEST(test_train_with_epoch_callback);
    UF_TEST(test_pixels_match_files);
    UF_TEST(test_encoded_and_png);
    UF_TEST(test_model_info);
    UF_TEST(test_bad_arguments);
    UF_TEST(test_uflow_test_and_logging);
    UF_TEST(test_image_list);
    UF_TEST(test_two_threads);
    return uf_test_summary();
}
