/* Bad input, as users meet it, through the `uflow` program: a corpus of bad
 * files made here (zero-byte, truncated and non-image files with image names,
 * decompression bombs, wrong masks, 16-bit PNGs, unreadable files, symbolic
 * link loops, model files whose metadata disagrees with their tensors, NaN/Inf
 * in weights and features, empty training sets), the training and prediction
 * policies of the README, --resume against other data, a run killed while it
 * writes a checkpoint, and a disk that fills up. Each case asserts the exit
 * status and the message, and that nothing already written is lost. */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/tensor.h"
#include "harness.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/synth.h"

#define WEIGHTS "models/resnet18-in1k-l3-bnfolded.safetensors"
#define SIZE "64"

static char g_out[600], g_err[600];

static int run_opts(const char *const *args, uf_test_run_opts *o) {
    snprintf(g_out, sizeof g_out, "%s/cli.out", uf_test_tmpdir());
    snprintf(g_err, sizeof g_err, "%s/cli.err", uf_test_tmpdir());
    return uf_test_run_uflow_opts(args, g_out, g_err, o);
}

static int run(const char *const *args) { return run_opts(args, NULL); }

/* The last run's stderr has exactly one error line ("uflow CMD: error: ...")
 * and it contains needle; progress and warning lines may come before it. */
static int error_line(const char *needle) {
    char *err = uf_test_read_text(g_err);
    int n_errors = 0, found = 0;
    for (char *line = err ? strtok(err, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "uflow ", 6) != 0 || !strstr(line, ": error: ")) continue;
        n_errors++;
        found = found || strstr(line, needle) != NULL;
    }
    free(err);
    if (n_errors != 1 || !found) {
        err = uf_test_read_text(g_err);
        fprintf(stderr, "  wanted one error line with '%s'; stderr was:\n%s\n", needle, err ? err : "(none)");
        free(err);
    }
    return n_errors == 1 && found;
}

/* The last run's stderr contains needle. */
static int stderr_has(const char *needle) {
    char *err = uf_test_read_text(g_err);
    int ok = err && strstr(err, needle);
    if (!ok) fprintf(stderr, "  wanted '%s' in stderr; it was:\n%s\n", needle, err ? err : "(none)");
    free(err);
    return ok;
}

static const char *tmp_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", uf_test_tmpdir(), name);
    return buf;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void copy_file(const char *src, const char *dst) {
    long n = file_size(src);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    FILE *f = fopen(src, "rb");
    int ok = buf && f && fread(buf, 1, (size_t)n, f) == (size_t)n;
    if (f) fclose(f);
    CHECK(ok, "cannot read %s", src);
    if (ok) uf_test_write_file(dst, buf, (size_t)n);
    free(buf);
}

/* A synthetic MVTec-AD category `name` in the temp folder at 64 x 64. */
static const char *category(char *buf, size_t cap, const char *name, uint64_t seed, int n_train) {
    tmp_path(buf, cap, name);
    CHECK(uf_synth_write_category_size(buf, seed, n_train, 2, 2, 64) == UF_OK, "%s", uf_last_error());
    return buf;
}

/* ---- the bad files ---- */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
    p[3] = (unsigned char)v;
}

/* A well-formed PNG signature and IHDR (CRC included) claiming width x height
 * RGB pixels, followed by nothing: a decompression bomb's header. */
static void write_png_bomb(const char *path, uint32_t width, uint32_t height) {
    unsigned char b[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    put_be32(b + 16, width);
    put_be32(b + 20, height);
    b[24] = 8, b[25] = 2; /* 8-bit RGB; compression, filter, interlace 0 */
    put_be32(b + 29, uf_test_crc32(b + 12, 17));
    uf_test_write_file(path, b, sizeof b);
}

/* The first half of a real PNG. */
static void write_truncated_copy(const char *src, const char *dst) {
    long n = file_size(src);
    char *buf = malloc((size_t)n);
    FILE *f = fopen(src, "rb");
    CHECK(buf && f && fread(buf, 1, (size_t)n, f) == (size_t)n, "read %s", src);
    if (f) fclose(f);
    uf_test_write_file(dst, buf, (size_t)n / 2);
    free(buf);
}

/* The bad image files of the corpus: file name, and what the error line says. */
enum { BAD_EMPTY, BAD_TRUNCATED, BAD_TEXT, BAD_BOMB, N_BAD_KINDS };
static const char *const bad_kinds[N_BAD_KINDS][2] = {
    {"bad_empty.png", "empty file"},
    {"bad_truncated.png", "bad_truncated.png"},
    {"bad_text.png", "not a PNG, JPEG, BMP or TIFF file"},
    {"bad_bomb.png", "too large"},
};

/* Writes bad file `kind` into dir (good_png: a real PNG to truncate). */
static void write_bad_image(int kind, const char *dir, const char *good_png) {
    char p[800];
    snprintf(p, sizeof p, "%s/%s", dir, bad_kinds[kind][0]);
    switch (kind) {
    case BAD_EMPTY: uf_test_write_file(p, "", 0); break;
    case BAD_TRUNCATED: write_truncated_copy(good_png, p); break;
    case BAD_TEXT: uf_test_write_file(p, "this is not an image\n", 21); break;
    case BAD_BOMB: write_png_bomb(p, 100000, 100000); break;
    }
}

/* Puts one bad file of each kind into dir; returns how many. */
static int add_bad_images(const char *dir, const char *good_png) {
    for (int k = 0; k < N_BAD_KINDS; k++) write_bad_image(k, dir, good_png);
    return N_BAD_KINDS;
}

static const char *train_args_base[] = {"train", "--size", SIZE, "--epochs", "1", "--batch", "2", "--steps", "1"};
#define N_BASE (sizeof train_args_base / sizeof *train_args_base)

/* Runs `uflow train` with the small base settings plus extra arguments. */
static int train(const char *data, const char *model, const char *const *extra, uf_test_run_opts *o) {
    const char *args[40];
    int n = 0;
    for (size_t i = 0; i < N_BASE; i++) args[n++] = train_args_base[i];
    args[n++] = "--data", args[n++] = data, args[n++] = "-o", args[n++] = model;
    for (; extra && *extra && n < 38; extra++) args[n++] = *extra;
    args[n] = NULL;
    return run_opts(args, o);
}

static int meta_int(const char *model, const char *key) {
    uf_safetensors *st = uf_st_open(model);
    const char *v = st ? uf_st_metadata_get(st, key) : NULL;
    int x = v ? atoi(v) : -1;
    uf_st_close(st);
    return x;
}

/* ---- training ---- */

static void test_train_stops_on_a_bad_image_and_writes_nothing(void) {
    char root[600], good[700], model[600], first[800];
    category(root, sizeof root, "train_bad", 1, 5);
    snprintf(good, sizeof good, "%s/train/good", root);
    snprintf(first, sizeof first, "%s/000.png", good);
    tmp_path(model, sizeof model, "train_bad.safetensors");
    char bad[800];
    for (int k = 0; k < N_BAD_KINDS; k++) {
        /* One bad file at a time among good ones, over an existing model file. */
        uf_test_write_file(model, "previous model", 14);
        write_bad_image(k, good, first);
        snprintf(bad, sizeof bad, "%s/%s", good, bad_kinds[k][0]);
        CHECK(train(good, model, NULL, NULL) == 1 && error_line(bad_kinds[k][0]) && error_line(bad_kinds[k][1]) &&
                  error_line("--skip-bad-images"),
              "training with %s", bad_kinds[k][0]);
        char *text = uf_test_read_text(model);
        CHECK(text && !strcmp(text, "previous model"), "the existing model file was changed (%s)",
              bad_kinds[k][0]);
        free(text);
        CHECK(uf_test_count_temp_files(uf_test_tmpdir()) == 0, "temporary files left");
        unlink(bad);
    }
    /* Every image bad (the double free of 0.1.0): one line, no crash. */
    char only[700];
    snprintf(only, sizeof only, "%s/all_bad", uf_test_tmpdir());
    mkdir(only, 0755);
    add_bad_images(only, first);
    CHECK(train(only, model, NULL, NULL) == 1 && error_line("bad_bomb.png"), "all images bad");
    const char *skip[] = {"--skip-bad-images", NULL};
    CHECK(train(only, model, skip, NULL) == 1 && error_line("no readable training images") && error_line("4 skipped"),
          "all images bad, skipped");
}

static void test_train_skip_bad_images(void) {
    char root[600], good[700], model[600], first[800];
    category(root, sizeof root, "train_skip", 2, 5);
    snprintf(good, sizeof good, "%s/train/good", root);
    snprintf(first, sizeof first, "%s/000.png", good);
    tmp_path(model, sizeof model, "train_skip.safetensors");
    int n_bad = add_bad_images(good, first);
    const char *skip[] = {"--skip-bad-images", NULL};
    CHECK(train(good, model, skip, NULL) == 0, "training with --skip-bad-images failed");
    CHECK(stderr_has("uflow train: warning: 4 unreadable images were left out"), "summary of skipped images");
    CHECK(stderr_has("skipped image '") && stderr_has("bad_text.png"), "each skipped image is named");
    CHECK(meta_int(model, "uflow.train_images") == 5, "trained on %d images, want 5 of %d files",
          meta_int(model, "uflow.train_images"), 5 + n_bad);
}

static void test_train_empty_and_odd_folders(void) {
    char root[600], good[700], model[600], p[800];
    category(root, sizeof root, "train_odd", 3, 3);
    snprintf(good, sizeof good, "%s/train/good", root);
    tmp_path(model, sizeof model, "train_odd.safetensors");
    /* Symbolic-link loops, a sub-folder and files of other types are left out with a note. */
    snprintf(p, sizeof p, "%s/loop.png", good);
    CHECK(symlink("loop.png", p) == 0, "symlink");
    snprintf(p, sizeof p, "%s/ring.png", good);
    CHECK(symlink("..", p) == 0, "symlink");
    snprintf(p, sizeof p, "%s/scan.gif", good);
    uf_test_write_file(p, "GIF8", 4);
    snprintf(p, sizeof p, "%s/scan.webp", good);
    uf_test_write_file(p, "RIFF", 4);
    CHECK(train(good, model, NULL, NULL) == 0, "training beside links and other files");
    CHECK(stderr_has("ignored 4 entries: 2 not a .png/.jpg/.jpeg/.bmp/.tif file (") && stderr_has(".gif") &&
              stderr_has(".webp") && stderr_has("), 1 sub-folder (not scanned), 1 dangling or looping symbolic link"),
          "folder scan note");
    CHECK(meta_int(model, "uflow.train_images") == 3, "trained on %d images", meta_int(model, "uflow.train_images"));

    char empty[700];
    snprintf(empty, sizeof empty, "%s/empty_cat", uf_test_tmpdir());
    mkdir(empty, 0755);
    snprintf(p, sizeof p, "%s/train", empty);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/train/good", empty);
    mkdir(p, 0755);
    CHECK(train(empty, model, NULL, NULL) == 1 && error_line("is empty") && error_line("train/good"),
          "empty training set");
    snprintf(p, sizeof p, "%s/train/good/a.gif", empty);
    uf_test_write_file(p, "GIF8", 4);
    CHECK(train(empty, model, NULL, NULL) == 1 && error_line("no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff)"),
          "training set of .gif files only");
    CHECK(meta_int(model, "uflow.train_images") == 3, "a failed run changed the model file");
}

/* ---- weights and model files ---- */

/* Copy of safetensors file src with float32 tensor `name` patched in place:
 * its first n elements set to value (n < 0: all). Bypasses the writer, which
 * refuses non-finite values. */
static void write_patched(const char *src, const char *dst, const char *name, float value, long n) {
    uf_safetensors *st = uf_st_open(src);
    const uf_st_tensor *t = st ? uf_st_find(st, name) : NULL;
    CHECK(t && t->dtype == UF_DT_F32, "tensor %s in %s", name, src);
    if (!t) {
        uf_st_close(st);
        return;
    }
    size_t start = (size_t)file_size(src) - uf_st_data_size(st) + t->offset;
    size_t count = n < 0 || n > t->numel ? (size_t)t->numel : (size_t)n;
    uf_st_close(st);
    copy_file(src, dst);
    FILE *f = fopen(dst, "r+b");
    CHECK(f && fseek(f, (long)start, SEEK_SET) == 0, "seek %s", dst);
    for (size_t i = 0; f && i < count; i++) fwrite(&value, sizeof value, 1, f);
    if (f) fclose(f);
}

/* NaN in the backbone weights. (Finite weights cannot make the features
 * non-finite: the ReLUs turn NaN into 0; the guard in training is tested
 * through the flow's weights below.) */
static void test_bad_weights(void) {
    char root[600], good[700], model[600], w[600];
    category(root, sizeof root, "weights_cat", 4, 3);
    snprintf(good, sizeof good, "%s/train/good", root);
    tmp_path(model, sizeof model, "weights_model.safetensors");
    tmp_path(w, sizeof w, "nan_weights.safetensors");
    write_patched(WEIGHTS, w, "layer2.0.conv1.weight", NAN, 1);
    const char *wa[] = {"--weights", w, NULL};
    CHECK(train(good, model, wa, NULL) == 1 && error_line("layer2.0.conv1.weight") && error_line("non-finite"),
          "NaN in the backbone weights");
    /* A truncated weights file. */
    write_truncated_copy(WEIGHTS, w);
    CHECK(train(good, model, wa, NULL) == 1 && error_line(w), "truncated weights");
    CHECK(file_size(model) < 0, "no model file may be written");
}

static void test_bad_model_files(void) {
    char root[600], good[700], model[600], bad[600], pred[600];
    category(root, sizeof root, "model_cat", 5, 3);
    snprintf(good, sizeof good, "%s/test/good", root);
    tmp_path(model, sizeof model, "model_ok.safetensors");
    tmp_path(bad, sizeof bad, "model_bad.safetensors");
    tmp_path(pred, sizeof pred, "model_pred");
    char train_dir[700];
    snprintf(train_dir, sizeof train_dir, "%s/train/good", root);
    CHECK(train(train_dir, model, NULL, NULL) == 0, "training failed");
    const char *pa[] = {"predict", "--model", bad, "-o", pred, good, NULL};

    write_patched(model, bad, "flow.module_list.0.subnet.0.weight", INFINITY, 3);
    CHECK(run(pa) == 1 && error_line("flow.module_list.0.subnet.0.weight") && error_line("non-finite"),
          "Inf in a flow tensor");
    /* Finite but huge LayerNorm weights: the latents overflow to Inf/NaN, so every image
     * gets an error row (the check that guards against NaN features and latents). */
    write_patched(model, bad, "feature_extractor.feature_normalizations.2.weight", 3e38f, -1);
    CHECK(run(pa) == 1 && stderr_has("non-finite latents") && stderr_has("2 of 2 images could not be processed"),
          "latents overflow");
    write_patched(model, bad, "optimizer.exp_avg_sq", NAN, 1);
    const char *ra[] = {"--resume", "--epochs", "2", NULL};
    CHECK(train(train_dir, bad, ra, NULL) == 1 && error_line("optimizer.exp_avg_sq"), "NaN in the optimizer state");

    /* Metadata that disagrees with the tensors: rewrite the header text in place. */
    long n = file_size(model);
    char *buf = malloc((size_t)n + 1);
    FILE *f = fopen(model, "rb");
    CHECK(buf && f && fread(buf, 1, (size_t)n, f) == (size_t)n, "read model");
    if (f) fclose(f);
    const char *edits[][3] = {{"\"uflow.flow_steps\":\"1\"", "\"uflow.flow_steps\":\"2\"", "flow.module_list.1"},
                              {"\"uflow.input_size\":\"64\"", "\"uflow.input_size\":\"96\"", "do not match"},
                              {"\"uflow.scales\":\"3\"", "\"uflow.scales\":\"9\"", "uflow.scales"}};
    for (size_t e = 0; buf && e < sizeof edits / sizeof *edits; e++) {
        char *at = NULL;
        for (long i = 8; i + (long)strlen(edits[e][0]) < n && !at; i++)
            if (!memcmp(buf + i, edits[e][0], strlen(edits[e][0]))) at = buf + i;
        CHECK(at != NULL, "metadata %s not found", edits[e][0]);
        if (!at) continue;
        memcpy(at, edits[e][1], strlen(edits[e][1])); /* same length: the header stays valid */
        uf_test_write_file(bad, buf, (size_t)n);
        memcpy(at, edits[e][0], strlen(edits[e][0]));
        CHECK(run(pa) == 1 && error_line(bad) && error_line(edits[e][2]), "metadata %s", edits[e][1]);
    }
    /* Truncated, and empty. */
    uf_test_write_file(bad, buf, (size_t)n - 100);
    CHECK(run(pa) == 1 && error_line(bad), "truncated model");
    uf_test_write_file(bad, "", 0);
    CHECK(run(pa) == 1 && error_line(bad), "empty model");
    free(buf);
}

/* ---- prediction ---- */

static void test_predict_goes_on_past_bad_images(void) {
    char root[600], train_dir[700], model[600], in[600], pred[600], p[800], first[800];
    category(root, sizeof root, "pred_cat", 6, 3);
    snprintf(train_dir, sizeof train_dir, "%s/train/good", root);
    snprintf(first, sizeof first, "%s/000.png", train_dir);
    /* The unprivileged run below must reach the program, the weights and the model wherever
     * the repository is: copies in the temp folder, which it may enter. */
    char prog[4200], prog_copy[600], weights[600];
    CHECK(uf_test_uflow_path(prog, sizeof prog) == 0, "uflow not built");
    tmp_path(prog_copy, sizeof prog_copy, "uflow");
    copy_file(prog, prog_copy);
    chmod(prog_copy, 0755);
    tmp_path(weights, sizeof weights, "pred_weights.safetensors");
    copy_file(WEIGHTS, weights);
    tmp_path(model, sizeof model, "pred_model.safetensors");
    const char *wa[] = {"--weights", weights, NULL};
    CHECK(train(train_dir, model, wa, NULL) == 0, "training failed");
    tmp_path(in, sizeof in, "pred_in");
    tmp_path(pred, sizeof pred, "pred_out");
    mkdir(in, 0755);
    mkdir(pred, 0777);
    chmod(pred, 0777);
    chmod(uf_test_tmpdir(), 0755); /* the unprivileged run below must reach its files */
    /* Good images: a colour one, and the same picture as 8-bit and as 16-bit gray. */
    uf_image *img = uf_image_load(first, 1);
    CHECK(img != NULL, "%s", uf_last_error());
    if (!img) return;
    snprintf(p, sizeof p, "%s/good_rgb.png", in);
    copy_file(first, p);
    snprintf(p, sizeof p, "%s/gray8.png", in);
    CHECK(uf_image_write_png(p, img) == UF_OK, "%s", uf_last_error());
    uint16_t *px16 = malloc(sizeof(uint16_t) * 64 * 64);
    for (int i = 0; i < 64 * 64; i++) px16[i] = (uint16_t)(img->pixels[i] * 256 + (i * 37) % 256); /* low byte: noise */
    snprintf(p, sizeof p, "%s/gray16.png", in);
    CHECK(uf_png_write_gray16(p, px16, 64, 64) == UF_OK, "%s", uf_last_error());
    free(px16);
    uf_image_free(img);
    int n_bad = add_bad_images(in, first);
    snprintf(p, sizeof p, "%s/bad_locked.png", in);
    copy_file(first, p);
    chmod(p, 0);
    n_bad++;
    snprintf(p, sizeof p, "%s/loop.png", in);
    CHECK(symlink("loop.png", p) == 0, "symlink");
    snprintf(p, sizeof p, "%s/camera.gif", in);
    uf_test_write_file(p, "GIF8", 4);
    snprintf(p, sizeof p, "%s/camera.webp", in);
    uf_test_write_file(p, "RIFF", 4);

    const char *pa[] = {"predict", "--model", model, "-o", pred, "--batch", "3", in, NULL};
    uf_test_run_opts o = {.unprivileged = 1, .program = prog_copy, .cwd = uf_test_tmpdir()};
    CHECK(run_opts(pa, &o) == 1, "predict over a folder with bad images must exit 1");
    CHECK(stderr_has("5 of 8 images could not be processed"), "summary line");
    CHECK(stderr_has("ignored 3 entries: 2 not a .png/.jpg/.jpeg/.bmp/.tif file (") && stderr_has(".gif") &&
              stderr_has(".webp") && stderr_has("), 1 dangling or looping symbolic link"),
          "folder scan note");
    const char *why[] = {"bad_empty.png': empty file", "bad_truncated.png",
                         "bad_text.png': not a PNG, JPEG, BMP or TIFF file",
                         "bad_bomb.png': image size 100000x100000 too large", "bad_locked.png': cannot open"};
    for (size_t i = 0; i < sizeof why / sizeof *why; i++) CHECK(stderr_has(why[i]), "reported: %s", why[i]);

    snprintf(p, sizeof p, "%s/results.csv", pred);
    char *csv = uf_test_read_text(p);
    CHECK(uf_test_count_lines(csv) == 9, "results.csv has %d lines, want 1 + 8", uf_test_count_lines(csv));
    CHECK(csv && strstr(csv, ",outputs,error\n"), "csv header: %.120s", csv);
    snprintf(p, sizeof p, "%s/results.jsonl", pred);
    char *jl = uf_test_read_text(p);
    int rows = 0, errors = 0;
    double score8 = -1, score16 = -2;
    for (char *line = jl ? strtok(jl, "\n") : NULL; line; line = strtok(NULL, "\n"), rows++) {
        cJSON *j = cJSON_Parse(line);
        const char *image = cJSON_GetStringValue(cJSON_GetObjectItem(j, "image"));
        const cJSON *err = cJSON_GetObjectItem(j, "error"), *score = cJSON_GetObjectItem(j, "score");
        CHECK(image && (cJSON_IsString(err) != cJSON_IsNumber(score)), "bad line %s", line);
        errors += cJSON_IsString(err);
        if (image && cJSON_IsString(err)) CHECK(strstr(image, "/bad_"), "%s reported as bad", image);
        if (image && strstr(image, "gray8.png")) score8 = cJSON_GetNumberValue(score);
        if (image && strstr(image, "gray16.png")) score16 = cJSON_GetNumberValue(score);
        cJSON_Delete(j);
    }
    CHECK(rows == 8 && errors == n_bad, "%d rows, %d errors", rows, errors);
    /* A 16-bit PNG is read as its high byte: the same picture as the 8-bit one. */
    CHECK(score8 >= 0 && score8 == score16, "gray8 score %g, gray16 score %g", score8, score16);
    const char *outputs[] = {"good_rgb_map.png", "good_rgb_overlay.png", "gray16_mask.png", "gray8_map.png"};
    for (size_t i = 0; i < sizeof outputs / sizeof *outputs; i++) {
        snprintf(p, sizeof p, "%s/%s", pred, outputs[i]);
        CHECK(file_size(p) > 0, "missing %s", p);
    }
    free(csv), free(jl);
}

static void test_bad_masks(void) {
    char root[600], train_dir[700], model[600], mask[1600], p[800];
    category(root, sizeof root, "mask_cat", 7, 3);
    snprintf(train_dir, sizeof train_dir, "%s/train/good", root);
    tmp_path(model, sizeof model, "mask_model.safetensors");
    CHECK(train(train_dir, model, NULL, NULL) == 0, "training failed");
    const char *ta[] = {"test", "--model", model, "--data", root, "--eval-size", SIZE, NULL};
    CHECK(run(ta) == 0, "test on good masks");
    /* The first defect's first mask, replaced. */
    snprintf(p, sizeof p, "%s/ground_truth", root);
    char *defect = NULL;
    const char *names[] = {"color", "hole", "scratch", "stain"};
    for (size_t i = 0; i < 4 && !defect; i++) {
        snprintf(mask, sizeof mask, "%s/%s/000_mask.png", p, names[i]);
        if (file_size(mask) > 0) defect = (char *)names[i];
    }
    CHECK(defect != NULL, "no mask found under %s", p);
    if (!defect) return;
    uf_image *small = uf_image_new(32, 32, 1);
    CHECK(uf_image_write_png(mask, small) == UF_OK, "%s", uf_last_error());
    uf_image_free(small);
    CHECK(run(ta) == 1 && error_line("000_mask.png' is 32x32 but its image"), "mask of the wrong size");
    /* A colour mask of the right size is converted to gray: accepted. */
    uf_image *rgb = uf_image_new(64, 64, 3);
    for (int i = 0; i < 20 * 64 * 3; i++) rgb->pixels[i] = 255;
    CHECK(uf_image_write_png(mask, rgb) == UF_OK, "%s", uf_last_error());
    uf_image_free(rgb);
    CHECK(run(ta) == 0, "RGB mask");
    /* A mask that is not an image. */
    uf_test_write_file(mask, "GIF8", 4);
    CHECK(run(ta) == 1 && error_line("000_mask.png"), "corrupt mask");
}

/* ---- resume and crashes ---- */

static void test_resume_checks_the_data(void) {
    char a[600], b[600], copy_root[600], model[600], da[700], db[700], dcopy[700];
    category(a, sizeof a, "resume_a", 8, 5);
    category(b, sizeof b, "resume_b", 9, 5);
    category(copy_root, sizeof copy_root, "resume_a_copy", 8, 5); /* the same images elsewhere */
    snprintf(da, sizeof da, "%s/train/good", a);
    snprintf(db, sizeof db, "%s/train/good", b);
    snprintf(dcopy, sizeof dcopy, "%s/train/good", copy_root);
    tmp_path(model, sizeof model, "resume.safetensors");
    const char *first[] = {"--max-images", "4", NULL};
    CHECK(train(da, model, first, NULL) == 0, "first run");
    CHECK(meta_int(model, "uflow.train_images") == 4, "trained on %d", meta_int(model, "uflow.train_images"));
    char saved[600];
    tmp_path(saved, sizeof saved, "resume_saved.safetensors");
    copy_file(model, saved);

    const char *other_max[] = {"--resume", "--epochs", "2", "--max-images", "5", NULL};
    CHECK(train(da, model, other_max, NULL) == 1 && error_line("--max-images 5") && error_line("--max-images 4"),
          "resume with another --max-images");
    const char *resume[] = {"--resume", "--epochs", "2", NULL};
    CHECK(train(db, model, resume, NULL) == 1 && error_line("other training images"), "resume with other data");
    CHECK(uf_test_files_equal(model, saved), "a refused resume changed the checkpoint");
    /* The same images under another path: accepted, and the stored --max-images applies. */
    CHECK(train(dcopy, model, resume, NULL) == 0, "resume with the same images elsewhere");
    CHECK(meta_int(model, "uflow.epochs_done") == 2 && meta_int(model, "uflow.train_images") == 4, "resumed model");
}

static void test_killed_while_checkpointing_then_resumed(void) {
    char root[600], data[700], whole[600], killed[600];
    category(root, sizeof root, "kill_cat", 10, 6);
    snprintf(data, sizeof data, "%s/train/good", root);
    tmp_path(whole, sizeof whole, "kill_whole.safetensors");
    tmp_path(killed, sizeof killed, "kill_killed.safetensors");
    const char *three[] = {"--epochs", "3", "--checkpoint-every", "1", "--threads", "1", NULL};
    CHECK(train(data, whole, three, NULL) == 0, "uninterrupted run");
    /* Killed in the middle of writing its second checkpoint (epoch 2). */
    const char *env[] = {"UFLOW_FAULT_KILL_AT_COMMIT=2", NULL};
    uf_test_run_opts o = {.env = env};
    CHECK(train(data, killed, three, &o) == -1 && o.term_signal == SIGKILL, "the run was not killed (signal %d)",
          o.term_signal);
    CHECK(meta_int(killed, "uflow.epochs_done") == 1, "after the kill the file holds epoch %d, want 1",
          meta_int(killed, "uflow.epochs_done"));
    const char *resume[] = {"--resume", "--epochs", "3", "--checkpoint-every", "1", "--threads", "1", NULL};
    CHECK(train(data, killed, resume, NULL) == 0, "resume after the kill");
    CHECK(uf_test_files_equal(whole, killed), "killed + resumed differs from the uninterrupted run");
}

static void test_disk_full_keeps_the_previous_file(void) {
    char root[600], data[700], model[600], saved[600];
    category(root, sizeof root, "full_cat", 11, 4);
    snprintf(data, sizeof data, "%s/train/good", root);
    tmp_path(model, sizeof model, "full.safetensors");
    tmp_path(saved, sizeof saved, "full_saved.safetensors");
    CHECK(train(data, model, NULL, NULL) == 0, "first run");
    copy_file(model, saved);
    int temps = uf_test_count_temp_files(uf_test_tmpdir());
    const char *resume[] = {"--resume", "--epochs", "2", NULL};
    uf_test_run_opts o = {.fsize_limit = file_size(model) / 2};
    CHECK(train(data, model, resume, &o) == 1 && error_line(model) && error_line("File too large"),
          "saving on a full disk");
    CHECK(uf_test_files_equal(model, saved), "the previous model file was damaged");
    CHECK(uf_test_count_temp_files(uf_test_tmpdir()) == temps, "temporary file left behind");
    /* The same with predict's outputs: an error, not a crash. */
    char pred[600];
    tmp_path(pred, sizeof pred, "full_pred");
    const char *pa[] = {"predict", "--model", model, "-o", pred, data, NULL};
    uf_test_run_opts small = {.fsize_limit = 2000};
    CHECK(run_opts(pa, &small) == 1 && error_line("File too large"), "predict on a full disk");
}

int main(void) {
    UF_TEST(test_train_stops_on_a_bad_image_and_writes_nothing);
    UF_TEST(test_train_skip_bad_images);
    UF_TEST(test_train_empty_and_odd_folders);
    UF_TEST(test_bad_weights);
    UF_TEST(test_bad_model_files);
    UF_TEST(test_predict_goes_on_past_bad_images);
    UF_TEST(test_bad_masks);
    UF_TEST(test_resume_checks_the_data);
    UF_TEST(test_killed_while_checkpointing_then_resumed);
    UF_TEST(test_disk_full_keeps_the_previous_file);
    return uf_test_summary();
}
