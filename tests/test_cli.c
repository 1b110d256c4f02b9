/* The `uflow` program as a user runs it: the train / test / predict / features
 * commands on a tiny synthetic category, and bad input: wrong options exit 2,
 * bad files exit 1 with exactly one line on stderr naming the problem, and a
 * failed run leaves earlier outputs untouched. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backbone/resnet.h"
#include "core/error.h"
#include "harness.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/synth.h"

#define WEIGHTS "models/resnet18-in1k-l3-bnfolded.safetensors"

static char g_out[600], g_err[600];

/* Runs uflow with args; returns the exit status. */
static int run(const char *const *args) {
    snprintf(g_out, sizeof g_out, "%s/cli.out", uf_test_tmpdir());
    snprintf(g_err, sizeof g_err, "%s/cli.err", uf_test_tmpdir());
    return uf_test_run_uflow(args, g_out, g_err);
}

/* stderr of the last run is one line that contains needle. */
static int one_error_line(const char *needle) {
    char *err = uf_test_read_text(g_err);
    int ok = err && strstr(err, needle) && strchr(err, '\n') == err + strlen(err) - 1;
    if (!ok) fprintf(stderr, "  stderr was: %s\n", err ? err : "(none)");
    free(err);
    return ok;
}

static void test_usage_errors_exit_2(void) {
    const char *a1[] = {"bogus", NULL};
    CHECK(run(a1) == 2, "unknown command");
    const char *a2[] = {"train", NULL};
    CHECK(run(a2) == 2, "train without --data");
    const char *a3[] = {"train", "--data", "x", "-o", "m", "--epochs", "abc", NULL};
    CHECK(run(a3) == 2, "non-numeric --epochs");
    const char *a4[] = {"train", "--data", "x", "-o", "m", "--size", "-5", NULL};
    CHECK(run(a4) == 2, "negative --size");
    const char *a5[] = {"predict", "--model", "m", "-o", "out", NULL};
    CHECK(run(a5) == 2, "predict without images");
    const char *a6[] = {"test", "--nope", NULL};
    CHECK(run(a6) == 2, "unknown option");
    const char *a7[] = {"train", "--help", NULL};
    CHECK(run(a7) == 0, "--help");
    char *help = uf_test_read_text(g_out);
    CHECK(help && strstr(help, "--ln-affine") && strstr(help, "(default 100)") && strstr(help, "mvtec/bottle") &&
              strstr(help, "--preset"),
          "help text: %.200s", help);
    free(help);
}

static void test_bad_inputs_exit_1_with_one_line(void) {
    const char *a1[] = {"train", "--data", "/nonexistent/category", "-o", uf_test_path("m.safetensors"), NULL};
    CHECK(run(a1) == 1 && one_error_line("/nonexistent/category"), "missing data folder");
    const char *a2[] = {"test", "--model", "/nonexistent/model.safetensors", "--data", ".", NULL};
    CHECK(run(a2) == 1 && one_error_line("/nonexistent/model.safetensors"), "missing model");
    const char *a3[] = {"predict", "--model", WEIGHTS, "-o", uf_test_path("p"), "tests/data/resnet/crop0.png", NULL};
    CHECK(run(a3) == 1 && one_error_line("not a uflow model"), "weights file given as a model");
    /* A folder of images only, so that no folder-scan note comes before the error line. */
    char imgs[600];
    snprintf(imgs, sizeof imgs, "%s/imgs", uf_test_tmpdir());
    mkdir(imgs, 0755);
    uf_image *im = uf_image_load("tests/data/resnet/crop0.png", 3);
    CHECK(im && uf_image_write_png(uf_test_path("imgs/a.png"), im) == UF_OK, "%s", uf_last_error());
    uf_image_free(im);
    const char *a4[] = {"train", "--data", imgs, "-o", uf_test_path("m.safetensors"), "--weights",
                        "tests/data/image/gray.png", NULL};
    CHECK(run(a4) == 1 && one_error_line("gray.png"), "an image given as weights");
    const char *a5[] = {"train", "--data", imgs, "-o", uf_test_path("m.safetensors"), "--size", "100", NULL};
    CHECK(run(a5) == 1 && one_error_line("multiples of 16") && one_error_line("nearest valid width: 96 or 112"),
          "bad input size");
    const char *a5b[] = {"train", "--data", imgs, "-o", uf_test_path("m.safetensors"), "--size", "512x100", NULL};
    CHECK(run(a5b) == 1 && one_error_line("the height 100") && one_error_line("96 or 112"), "bad input height");
    const char *a5c[] = {"train", "--data", imgs, "-o", uf_test_path("m.safetensors"), "--size", "64x", NULL};
    CHECK(run(a5c) == 2 && one_error_line("is not N or WxH"), "malformed --size");
    const char *a6[] = {"train", "--data", "tests/data/resnet", "-o", "/nonexistent-dir/m.safetensors", NULL};
    CHECK(run(a6) == 1 && one_error_line("/nonexistent-dir/m.safetensors"), "unwritable output");
}

static void test_features_command_matches_library(void) {
    const char *img = "tests/data/resnet/crop0.png";
    const char *out = uf_test_path("feat.safetensors");
    const char *args[] = {"features", "--size", "64", img, "-o", out, NULL};
    CHECK(run(args) == 0, "features failed");
    uf_safetensors *st = uf_st_open(out);
    CHECK(st != NULL, "%s", uf_last_error());
    uf_resnet *m = uf_resnet_load(WEIGHTS);
    float *x = malloc(sizeof(float) * 3 * 64 * 64), *f[3];
    CHECK(uf_image_load_for_backbone(img, 64, x) == UF_OK, "%s", uf_last_error());
    for (int l = 0; l < 3; l++) {
        int c, h, w;
        uf_resnet_feature_shape(m, l, 64, 64, &c, &h, &w);
        f[l] = malloc(sizeof(float) * c * h * w);
    }
    CHECK(uf_resnet_forward(m, x, 1, 64, 64, f) == UF_OK, "%s", uf_last_error());
    for (int l = 0; st && l < 3; l++) {
        char name[32];
        snprintf(name, sizeof name, "0.layer%d", l + 1);
        uf_tensor *t = uf_st_read_f32(st, name, -1, NULL);
        CHECK(t != NULL, "%s", uf_last_error());
        if (!t) continue;
        int c, h, w;
        uf_resnet_feature_shape(m, l, 64, 64, &c, &h, &w);
        CHECK(uf_tensor_numel(t) == (int64_t)c * h * w, "%s numel", name);
        CHECK(uf_tensor_numel(t) != (int64_t)c * h * w || !memcmp(t->data, f[l], sizeof(float) * c * h * w),
              "%s differs from uf_resnet_forward", name);
        uf_tensor_free(t);
    }
    for (int l = 0; l < 3; l++) free(f[l]);
    free(x);
    uf_resnet_free(m);
    uf_st_close(st);
}

/* 1 when every row of results.csv text a is in b, the same but for rounding: the batch
 * differs (the bad image takes a slot), and oneDNN's Winograd kernels (AVX-512) may sum
 * in another order for another batch size, so score and max -log10 NFA may move in the
 * last printed digit; the name, the decision and the detected pixels must not. */
static int same_result_rows(const char *a, const char *b) {
    const char *la = strchr(a, '\n'), *lb = strchr(b, '\n');
    if (!la || !lb || la - a != lb - b || strncmp(a, b, (size_t)(la - a))) return 0; /* header */
    for (la++, lb++; *la; la = strchr(la, '\n') + 1, lb = strchr(lb, '\n') + 1) {
        char na[512], nb[512];
        double sa, sb, ma, mb;
        int aa, ab, da, db;
        if (!strchr(la, '\n') || !strchr(lb, '\n')) return 0;
        if (sscanf(la, "%511[^,],%lf,%d,%d,%lf", na, &sa, &aa, &da, &ma) != 5 ||
            sscanf(lb, "%511[^,],%lf,%d,%d,%lf", nb, &sb, &ab, &db, &mb) != 5)
            return 0;
        if (strcmp(na, nb) || fabs(sa - sb) > 2e-6 || aa != ab || da != db || fabs(ma - mb) > 1e-3 * (1 + fabs(ma)))
            return 0;
    }
    return 1;
}

/* The value after "key": in a JSON text (first occurrence), or NAN. */
static double json_number(const char *text, const char *key) {
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = text ? strstr(text, pat) : NULL;
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* `uflow test` on a labelled set without masks (good / defective folders): image AUROC
 * against the pair-counting definition (sklearn's roc_auc_score: P(score_anomalous >
 * score_good) + ties / 2) on predict's scores of the same images; the image-level
 * confusion at NFA = 1 against predict's decisions; pixel metrics absent. Some normal
 * images are filed as defective and a defective one as good, so the AUROC is not 1. */
static void check_test_without_masks(const char *model, const char *data) {
    char root[700], p[900], q[900], evdir[700], pred[700];
    snprintf(root, sizeof root, "%s/nomask", uf_test_tmpdir());
    static const char *const moves[][2] = {{"test/good/000.png", "good/a.png"}, {"test/good/001.png", "defect/b.png"},
                                           {"train/good/000.png", "defect/c.png"}, {"test/hole/000.png", "good/d.png"},
                                           {"test/scratch/000.png", "defect/e.png"}, {"test/stain/000.png", "defect/f.png"},
                                           {"test/color/000.png", "defect/g.png"}, {"train/good/001.png", "good/h.png"}};
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/test/%s", root, k ? "defect" : "good");
        CHECK(uf_make_dirs(p) == UF_OK, "%s", uf_last_error());
    }
    for (size_t i = 0; i < sizeof moves / sizeof *moves; i++) {
        snprintf(p, sizeof p, "%s/%s", data, moves[i][0]);
        snprintf(q, sizeof q, "%s/test/%s", root, moves[i][1]);
        CHECK(uf_test_copy_file(p, q) == 0, "copy %s", q);
    }
    snprintf(p, sizeof p, "%s/train/good", root);
    CHECK(uf_make_dirs(p) == UF_OK, "%s", uf_last_error());
    for (int i = 2; i < 4; i++) {
        snprintf(p, sizeof p, "%s/train/good/%03d.png", data, i);
        snprintf(q, sizeof q, "%s/train/good/%03d.png", root, i);
        CHECK(uf_test_copy_file(p, q) == 0, "copy %s", q);
    }
    snprintf(evdir, sizeof evdir, "%s/nomask_eval", uf_test_tmpdir());
    const char *te[] = {"test", "--model", model, "--data", root, "--eval-size", "64", "-o", evdir, NULL};
    CHECK(run(te) == 0, "test without masks failed");
    snprintf(p, sizeof p, "%s/metrics.json", evdir);
    char *js = uf_test_read_text(p);
    CHECK(js && strstr(js, "\"pixel_auroc\":\tnull") && strstr(js, "\"miou_auto\":\tnull"),
          "pixel metrics must be null without masks: %.400s", js ? js : "");
    double auroc = json_number(js, "image_auroc");
    /* predict's scores of the same images; labels from the folder */
    snprintf(pred, sizeof pred, "%s/nomask_pred", uf_test_tmpdir());
    snprintf(p, sizeof p, "%s/test", root);
    const char *pr[] = {"predict", "--model", model, "-o", pred, "--output-size", "model", p, NULL};
    CHECK(run(pr) == 0, "predict failed");
    snprintf(q, sizeof q, "%s/results.csv", pred);
    char *csv = uf_test_read_text(q);
    double sc[16];
    int lab[16], dec[16], n = 0;
    for (const char *l = csv ? strchr(csv, '\n') : NULL; l && l[1] && n < 16; l = strchr(l + 1, '\n')) {
        char name[600];
        int det;
        double mx;
        if (sscanf(l + 1, "\"%599[^\"]\",%lf,%d,%d,%lf", name, &sc[n], &dec[n], &det, &mx) == 5)
            lab[n] = strstr(name, "/defect/") != NULL, n++;
    }
    CHECK(n == 8, "predict gave %d rows: %s", n, csv ? csv : "");
    double pairs = 0, wins = 0;
    int tp = 0, fp = 0, tn = 0, fn = 0;
    for (int i = 0; i < n; i++) {
        if (lab[i]) dec[i] ? tp++ : fn++;
        else dec[i] ? fp++ : tn++;
        for (int j = 0; j < n; j++)
            if (lab[i] && !lab[j]) pairs++, wins += sc[i] > sc[j] ? 1.0 : sc[i] == sc[j] ? 0.5 : 0.0;
    }
    double want = wins / pairs;
    printf("  no masks: image AUROC %.6f, pair count on predict's scores %.6f; at NFA = 1: TP %d FP %d TN %d FN %d\n",
           auroc, want, tp, fp, tn, fn);
    CHECK(fabs(auroc - want) < 1e-9 && want > 0.0 && want < 1.0, "image AUROC %.9f, want %.9f", auroc, want);
    const char *at = js ? strstr(js, "\"at_nfa_1\"") : NULL;
    CHECK(at && json_number(at, "tp") == tp && json_number(at, "fp") == fp && json_number(at, "tn") == tn &&
              json_number(at, "fn") == fn,
          "image-level confusion at NFA = 1: %.300s", at ? at : "(missing)");
    const char *tm = js ? strstr(js, "\"at_max_training_score\"") : NULL;
    CHECK(tm && isfinite(json_number(tm, "score_threshold")) && json_number(js, "training_images_scored") == 2,
          "threshold from the 2 training images: %.300s", tm ? tm : "(missing)");
    /* predict --labels: the same image-level figures from the labelled folders alone */
    char labels[2000], want_line[200];
    snprintf(labels, sizeof labels, "good=%s/test/good,defect=%s/test/defect", root, root);
    snprintf(pred, sizeof pred, "%s/nomask_pred_labels", uf_test_tmpdir());
    const char *pl[] = {"predict", "--model", model, "-o", pred, "--labels", labels, NULL};
    CHECK(run(pl) == 0, "predict --labels failed");
    char *out = uf_test_read_text(g_out);
    snprintf(want_line, sizeof want_line, "labelled images 8: image AUROC %.4f; at NFA = 1: F1 ", want);
    CHECK(out && strstr(out, want_line), "stdout: %s (want '%s')", out ? out : "", want_line);
    snprintf(want_line, sizeof want_line, "(TP %d, FP %d, TN %d, FN %d)", tp, fp, tn, fn);
    CHECK(out && strstr(out, want_line), "stdout: %s (want '%s')", out ? out : "", want_line);
    free(out);
    /* the same folders given as anomalib's Folder layout: the same image AUROC */
    char nd[800], ad[800], md[800], evf[700];
    snprintf(nd, sizeof nd, "%s/test/good", root);
    snprintf(ad, sizeof ad, "%s/test/defect", root);
    snprintf(evf, sizeof evf, "%s/folder_eval", uf_test_tmpdir());
    const char *tf[] = {"test", "--model", model, "--normal", nd, "--abnormal", ad, "--eval-size", "64", "-o", evf,
                        NULL};
    CHECK(run(tf) == 0, "test --normal --abnormal failed");
    snprintf(p, sizeof p, "%s/metrics.json", evf);
    char *jf = uf_test_read_text(p);
    CHECK(fabs(json_number(jf, "image_auroc") - want) < 1e-9 && strstr(jf, "\"pixel_auroc\":\tnull"),
          "folder layout: %.300s", jf ? jf : "");
    free(jf);
    /* with masks (the same file names as the images): pixel metrics come back */
    snprintf(ad, sizeof ad, "%s/folder_abnormal", uf_test_tmpdir());
    snprintf(md, sizeof md, "%s/folder_masks", uf_test_tmpdir());
    CHECK(uf_make_dirs(ad) == UF_OK && uf_make_dirs(md) == UF_OK, "%s", uf_last_error());
    snprintf(p, sizeof p, "%s/test/hole/000.png", data);
    snprintf(q, sizeof q, "%s/hole.png", ad);
    CHECK(uf_test_copy_file(p, q) == 0, "copy");
    snprintf(p, sizeof p, "%s/ground_truth/hole/000_mask.png", data);
    snprintf(q, sizeof q, "%s/hole.png", md);
    CHECK(uf_test_copy_file(p, q) == 0, "copy");
    const char *tm2[] = {"test", "--model", model, "--normal", nd, "--abnormal", ad, "--masks", md, "--eval-size",
                         "64", "-o", evf, NULL};
    CHECK(run(tm2) == 0, "test --normal --abnormal --masks failed");
    snprintf(p, sizeof p, "%s/metrics.json", evf);
    jf = uf_test_read_text(p);
    CHECK(isfinite(json_number(jf, "pixel_auroc")) && json_number(jf, "regions") == 1, "with masks: %.400s",
          jf ? jf : "");
    free(jf);
    const char *bad[] = {"predict", "--model", model, "-o", pred, "--labels", "maybe=x", NULL};
    CHECK(run(bad) == 2, "a bad --labels is a usage error (exit 2)");
    free(csv), free(js);
}

static void test_train_test_predict(void) {
    char data[600], model[600], eval[600], pred[600], good[700], bad_png[600];
    snprintf(data, sizeof data, "%s/data", uf_test_tmpdir());
    snprintf(model, sizeof model, "%s/model.safetensors", uf_test_tmpdir());
    snprintf(eval, sizeof eval, "%s/eval", uf_test_tmpdir());
    snprintf(pred, sizeof pred, "%s/pred", uf_test_tmpdir());
    snprintf(good, sizeof good, "%s/test/good", data);
    CHECK(uf_synth_write_category_size(data, 5, 4, 2, 4, 64) == UF_OK, "%s", uf_last_error());
    const char *tr[] = {"train", "--data", data, "-o", model, "--size", "64", "--epochs", "2", "--batch", "2",
                        "--steps", "1", NULL};
    CHECK(run(tr) == 0, "train failed");
    char *out = uf_test_read_text(g_out);
    CHECK(out && strstr(out, "2 epochs done"), "train output: %s", out ? out : "");
    free(out);
    const char *te[] = {"test", "--model", model, "--data", data, "--eval-size", "64", "-o", eval, NULL};
    CHECK(run(te) == 0, "test failed");
    out = uf_test_read_text(g_out);
    CHECK(out && strstr(out, "image AUROC") && strstr(out, "pixel AUROC") && strstr(out, "mIoU"), "%s", out);
    free(out);
    char json[700];
    snprintf(json, sizeof json, "%s/metrics.json", eval);
    char *js = uf_test_read_text(json);
    CHECK(js && strstr(js, "\"pixel_auroc\"") && strstr(js, "\"miou_auto\""), "metrics.json: %.300s", js);
    free(js);

    const char *pr[] = {"predict", "--model", model, "-o", pred, good, NULL};
    CHECK(run(pr) == 0, "predict failed");
    char csv_path[700];
    snprintf(csv_path, sizeof csv_path, "%s/results.csv", pred);
    char *csv = uf_test_read_text(csv_path);
    CHECK(uf_test_count_lines(csv) == 3, "results.csv has %d lines", uf_test_count_lines(csv));

    /* A corrupt image among good ones: the good ones get their results, the bad one
     * an error row and an error line, and the exit status is 1. */
    snprintf(bad_png, sizeof bad_png, "%s/broken.png", uf_test_tmpdir());
    FILE *f = fopen(bad_png, "wb");
    fwrite("\x89PNG\r\n\x1a\n\0\0", 1, 10, f);
    fclose(f);
    const char *pb[] = {"predict", "--model", model, "-o", pred, good, bad_png, NULL};
    CHECK(run(pb) == 1, "a corrupt image must give exit status 1");
    char *err = uf_test_read_text(g_err);
    CHECK(err && strstr(err, "uflow predict: error: image '") && strstr(err, "broken.png': not a readable image") &&
              strstr(err, "1 of 3 images could not be processed"),
          "stderr: %s", err);
    free(err);
    char *csv2 = uf_test_read_text(csv_path);
    CHECK(csv && csv2 && same_result_rows(csv, csv2), "the good images' rows must be as before:\n%s\n%s",
          csv ? csv : "", csv2 ? csv2 : "");
    CHECK(csv2 && strstr(csv2, "broken.png\",,,,,,,,\"image '") && uf_test_count_lines(csv2) == 4, "results.csv: %s",
          csv2);
    free(csv), free(csv2);

    /* A folder is walked recursively and the outputs mirror its tree; a symbolic link back
     * up the tree is reported and not followed. */
    char tree[700], p[900], out_tree[700], src[800];
    snprintf(tree, sizeof tree, "%s/tree", uf_test_tmpdir());
    snprintf(out_tree, sizeof out_tree, "%s/pred_tree", uf_test_tmpdir());
    snprintf(p, sizeof p, "%s/a/b", tree);
    CHECK(uf_make_dirs(p) == UF_OK, "%s", uf_last_error());
    snprintf(src, sizeof src, "%s/000.png", good);
    static const char *const copies[] = {"000.png", "a/000.png", "a/b/x.png"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", tree, copies[i]);
        CHECK(uf_test_copy_file(src, p) == 0, "copy to %s", p);
    }
    snprintf(p, sizeof p, "%s/a/b/up", tree);
    CHECK(symlink("..", p) == 0, "symlink");
    /* wide, tall and tiny images: outputs at their own size (the model's is 64 x 64) */
    static const int sizes[3][2] = {{160, 48}, {20, 70}, {5, 3}};
    static const char *const sized[3] = {"wide.png", "a/tall.png", "a/b/tiny.png"};
    for (int i = 0; i < 3; i++) {
        uf_image *im = uf_image_new(sizes[i][0], sizes[i][1], 3);
        CHECK(im != NULL, "%s", uf_last_error());
        if (!im) continue;
        for (size_t k = 0; k < (size_t)3 * im->width * im->height; k++) im->pixels[k] = (uint8_t)(37 * k % 251);
        snprintf(p, sizeof p, "%s/%s", tree, sized[i]);
        CHECK(uf_image_write_png(p, im) == UF_OK, "%s", uf_last_error());
        uf_image_free(im);
    }
    const char *pt[] = {"predict", "--model", model, "-o", out_tree, tree, NULL};
    CHECK(run(pt) == 0, "predict on a tree failed");
    static const char *const outs[] = {"000_map.png", "a/000_map.png", "a/000_mask.png", "a/b/x_overlay.png"};
    for (int i = 0; i < 4; i++) {
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", out_tree, outs[i]);
        CHECK(stat(p, &st) == 0, "missing output %s", p);
    }
    char csv_tree[800];
    snprintf(csv_tree, sizeof csv_tree, "%s/results.csv", out_tree);
    char *csv3 = uf_test_read_text(csv_tree);
    CHECK(csv3 && uf_test_count_lines(csv3) == 7 && strstr(csv3, ",64,64,\"a/000\",") &&
              strstr(csv3, ",64,64,\"a/b/x\",") && strstr(csv3, ",160,48,\"wide\",") &&
              strstr(csv3, ",20,70,\"a/tall\",") && strstr(csv3, ",5,3,\"a/b/tiny\","),
          "results.csv: %s", csv3 ? csv3 : "");
    free(csv3);
    static const char *const kinds[3] = {"map", "mask", "overlay"};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            char stem[64];
            snprintf(stem, sizeof stem, "%.*s", (int)(strlen(sized[i]) - 4), sized[i]);
            snprintf(p, sizeof p, "%s/%s_%s.png", out_tree, stem, kinds[k]);
            uf_image *im = uf_image_load(p, 0);
            CHECK(im && im->width == sizes[i][0] && im->height == sizes[i][1], "%s: %dx%d, want %dx%d", p,
                  im ? im->width : -1, im ? im->height : -1, sizes[i][0], sizes[i][1]);
            uf_image_free(im);
        }
    err = uf_test_read_text(g_err);
    CHECK(err && strstr(err, "a/b/up' leads back to a folder being scanned"), "stderr: %s", err ? err : "");
    free(err);
    /* --output-size model: today's 64 x 64 outputs, the same scores */
    snprintf(p, sizeof p, "%s/wide.png", tree);
    char out_model[700];
    snprintf(out_model, sizeof out_model, "%s/pred_model", uf_test_tmpdir());
    const char *pm[] = {"predict", "--model", model, "-o", out_model, "--output-size", "model", p, NULL};
    CHECK(run(pm) == 0, "predict --output-size model failed");
    snprintf(p, sizeof p, "%s/wide_map.png", out_model);
    uf_image *mm = uf_image_load(p, 0);
    CHECK(mm && mm->width == 64 && mm->height == 64, "%s: %dx%d", p, mm ? mm->width : -1, mm ? mm->height : -1);
    uf_image_free(mm);
    check_test_without_masks(model, data);
}

int main(void) {
    UF_TEST(test_usage_errors_exit_2);
    UF_TEST(test_bad_inputs_exit_1_with_one_line);
    UF_TEST(test_features_command_matches_library);
    UF_TEST(test_train_test_predict);
    return uf_test_summary();
}
