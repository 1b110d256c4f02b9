/* `--backbone mcait` end to end through the uflow program, on the tiny CaiT pair
 * of tests/data/cait (64x64 input): train writes a 2-scale model without
 * LayerNorm and stores the features; a second run with the same cache takes
 * every image from it and writes the same model byte for byte; predict and
 * test run the model; presets set the paper's settings unless overridden; bad
 * weight arguments get one line naming the file and the tensor. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/resnet.h"
#include "core/error.h"
#include "harness.h"
#include "io/safetensors.h"
#include "io/synth.h"

#define TINY "tests/data/cait/tiny_m.safetensors,tests/data/cait/tiny_s.safetensors"

static char data[512], out_txt[512], err_txt[512];

static int run(const char *const *args) {
    return uf_test_run_uflow(args, out_txt, err_txt);
}

static char *err_text(void) { return uf_test_read_text(err_txt); }

static const char *meta(uf_safetensors *st, const char *k) {
    const char *v = st ? uf_st_metadata_get(st, k) : NULL;
    return v ? v : "(none)";
}

static void setup(void) {
    snprintf(data, sizeof data, "%s", uf_test_path("fabric"));
    snprintf(out_txt, sizeof out_txt, "%s", uf_test_path("out.txt"));
    snprintf(err_txt, sizeof err_txt, "%s", uf_test_path("err.txt"));
    CHECK(uf_synth_write_category_size(data, 3, 6, 2, 4, 64) == UF_OK, "%s", uf_last_error());
}

static void test_train_cache_predict_test(void) {
    char m1[512], m2[512], cache[512], pred[512];
    snprintf(m1, sizeof m1, "%s", uf_test_path("a.safetensors"));
    snprintf(m2, sizeof m2, "%s", uf_test_path("b.safetensors"));
    snprintf(cache, sizeof cache, "%s", uf_test_path("a.safetensors.features"));
    snprintf(pred, sizeof pred, "%s", uf_test_path("pred"));
    const char *train1[] = {"train", "--backbone", "mcait", "--weights", TINY, "--data", data, "-o", m1,
                            "--epochs", "2", "--batch", "3", "--threads", "1", NULL};
    CHECK(run(train1) == 0, "train: %s", err_text());
    uf_safetensors *st = uf_st_open(m1);
    CHECK(st != NULL, "%s", uf_last_error());
    CHECK(!strcmp(meta(st, "uflow.backbone"), "mcait(cait-d48-h4-b3-64,cait-d32-h4-b3-32)"), "backbone %s",
          meta(st, "uflow.backbone"));
    CHECK(!strcmp(meta(st, "uflow.scales"), "2") && !strcmp(meta(st, "uflow.channels"), "48,32") &&
              !strcmp(meta(st, "uflow.heights"), "4,2") && !strcmp(meta(st, "uflow.ln_mode"), "none") &&
              !strcmp(meta(st, "uflow.input_size"), "64"),
          "config: scales %s channels %s heights %s ln %s size %s", meta(st, "uflow.scales"),
          meta(st, "uflow.channels"), meta(st, "uflow.heights"), meta(st, "uflow.ln_mode"),
          meta(st, "uflow.input_size"));
    CHECK(strchr(meta(st, "uflow.backbone_sha256"), ',') != NULL, "two weight hashes: %s",
          meta(st, "uflow.backbone_sha256"));
    CHECK(!uf_st_find(st, "feature_extractor.feature_normalizations.0.weight"), "a LayerNorm in an mcait model");
    uf_st_close(st);
    /* the default cache of mcait: MODEL.features, one file per image */
    char probe[1400];
    snprintf(probe, sizeof probe, "ls %s | wc -l > %s", cache, out_txt);
    CHECK(system(probe) == 0, "ls");
    char *count = uf_test_read_text(out_txt);
    CHECK(count && atoi(count) == 6, "cache holds %s files, expected 6", count ? count : "?");
    free(count);

    /* Same cache, another model file: all 6 from the cache, same model bytes. */
    const char *train2[] = {"train", "--backbone", "mcait", "--weights", TINY, "--data", data, "-o", m2,
                            "--epochs", "2", "--batch", "3", "--threads", "1", "--feature-cache", cache, NULL};
    CHECK(run(train2) == 0, "train 2: %s", err_text());
    char *o = uf_test_read_text(out_txt);
    CHECK(o && strstr(o, "(6 from the cache)"), "second run: %s", o ? o : "");
    free(o);
    /* A model file records neither its own name nor the cache: equal training, equal bytes. */
    CHECK(uf_test_files_equal(m1, m2), "the model trained from cached features differs");

    /* A resume takes the features from the cache too, and continues bit for bit. */
    char m3[512];
    snprintf(m3, sizeof m3, "%s", uf_test_path("c.safetensors"));
    const char *part1[] = {"train", "--backbone", "mcait", "--weights", TINY, "--data", data, "-o", m3, "--epochs", "1",
                           "--batch", "3", "--threads", "1", "--feature-cache", cache, NULL};
    const char *part2[] = {"train", "--resume", "-o", m3, "--data", data, "--epochs", "2", "--threads", "1",
                           "--feature-cache", cache, NULL};
    CHECK(run(part1) == 0, "train part 1: %s", err_text());
    CHECK(run(part2) == 0, "resume (weights from the checkpoint): %s", err_text());
    o = uf_test_read_text(out_txt);
    CHECK(o && strstr(o, "(6 from the cache)"), "resume: %s", o ? o : "");
    free(o);
    CHECK(uf_test_files_equal(m1, m3), "1 + 1 resumed epochs differ from 2 epochs");

    /* A damaged cache file is a miss (warned about), recomputed and replaced: same model. */
    snprintf(probe, sizeof probe, "f=$(ls %s/*.safetensors | head -1); head -c 100 \"$f\" > \"$f.x\" && mv \"$f.x\" \"$f\"",
             cache);
    CHECK(system(probe) == 0, "truncate a cache file");
    CHECK(run(train2) == 0, "train with a damaged cache file: %s", err_text());
    o = uf_test_read_text(out_txt);
    char *e = err_text();
    CHECK(o && strstr(o, "(5 from the cache)") && e && strstr(e, "unusable"), "damaged cache: %s / %s", o ? o : "",
          e ? e : "");
    free(o), free(e);
    CHECK(uf_test_files_equal(m1, m2), "the model trained after a cache repair differs");
    CHECK(run(train2) == 0, "train after the repair: %s", err_text());
    o = uf_test_read_text(out_txt);
    CHECK(o && strstr(o, "(6 from the cache)"), "after the repair: %s", o ? o : "");
    free(o);

    char test_good[600];
    snprintf(test_good, sizeof test_good, "%s/test/good", data);
    const char *predict[] = {"predict", "--model", m1, "-o", pred, test_good, "--threads", "1", NULL};
    CHECK(run(predict) == 0, "predict: %s", err_text());
    snprintf(probe, sizeof probe, "%s/results.csv", pred);
    char *csv = uf_test_read_text(probe);
    CHECK(csv && uf_test_count_lines(csv) == 3, "results.csv: %s", csv ? csv : "(missing)");
    /* --precision bf16: the same rows within bf16's rounding where the CPU has it, refused elsewhere */
    char pred16[600];
    snprintf(pred16, sizeof pred16, "%s16", pred);
    const char *predict16[] = {"predict", "--model", m1, "-o", pred16, test_good, "--threads", "1", "--precision",
                               "bf16", "--outputs", "none", NULL};
    const int rc16 = run(predict16);
    if (uf_resnet_bf16_supported()) {
        CHECK(rc16 == 0, "predict --precision bf16: %s", err_text());
        snprintf(probe, sizeof probe, "%s/results.csv", pred16);
        char *csv16 = uf_test_read_text(probe);
        /* the score column of both files' first image row */
        const char *a = csv ? strchr(strchr(csv, '\n') + 1, ',') : NULL, *b = csv16 ? strchr(strchr(csv16, '\n') + 1, ',') : NULL;
        CHECK(a && b && fabs(atof(a + 1) - atof(b + 1)) < 0.05, "bf16 score %s vs fp32 %s", b ? b + 1 : "-",
              a ? a + 1 : "-");
        free(csv16);
    } else {
        char *e16 = err_text();
        CHECK(rc16 == 1 && e16 && strstr(e16, "AVX512-BF16"), "bf16 without BF16: %s", e16 ? e16 : "");
        free(e16);
    }
    free(csv);
    const char *wrong[] = {"test", "--model", m1, "--data", data, "--backbone", "resnet18", NULL};
    CHECK(run(wrong) == 1, "test --backbone resnet18 on an mcait model accepted");
    const char *test[] = {"test", "--model", m1, "--data", data, "--backbone", "mcait", "--weights", TINY,
                          "--threads", "1", NULL};
    CHECK(run(test) == 0, "test: %s", err_text());
    o = uf_test_read_text(out_txt);
    CHECK(o && strstr(o, "pixel AUROC"), "test output: %s", o ? o : "");
    free(o);
}

static void test_preset_and_overrides(void) {
    char m[512];
    snprintf(m, sizeof m, "%s", uf_test_path("preset.safetensors"));
    /* mvtec/bottle: mcait, 448, 200 epochs, batch 23, lr 1.129e-4; --size, --epochs given win */
    const char *train[] = {"train", "--preset", "mvtec/bottle", "--weights", TINY, "--size", "64", "--epochs", "1",
                           "--data", data, "-o", m, "--feature-cache", "off", "--threads", "1", NULL};
    CHECK(run(train) == 0, "train: %s", err_text());
    uf_safetensors *st = uf_st_open(m);
    CHECK(st != NULL, "%s", uf_last_error());
    CHECK(!strcmp(meta(st, "uflow.epochs"), "1") && !strcmp(meta(st, "uflow.batch"), "23") &&
              !strcmp(meta(st, "uflow.lr"), "0.00011289990475381853") && !strncmp(meta(st, "uflow.backbone"), "mcait", 5),
          "preset: epochs %s batch %s lr %s backbone %s", meta(st, "uflow.epochs"), meta(st, "uflow.batch"),
          meta(st, "uflow.lr"), meta(st, "uflow.backbone"));
    uf_st_close(st);
    /* the preset's own size (448) does not fit these weights: one clear line */
    const char *bad[] = {"train", "--preset", "mvtec/bottle", "--weights", TINY, "--data", data, "-o", m, NULL};
    CHECK(run(bad) == 1, "448 with 64-pixel weights accepted");
    char *e = err_text();
    CHECK(e && strstr(e, "448") && strstr(e, "64x64") && uf_test_count_lines(e) == 1, "message: %s", e ? e : "");
    free(e);
    const char *unknown[] = {"train", "--preset", "mvtec/nope", "--data", data, "-o", m, NULL};
    CHECK(run(unknown) == 1, "unknown preset accepted");
}

/* One line naming the file (and the tensor) for each bad --weights. */
static void expect_train_error(const char *weights, const char *needle1, const char *needle2) {
    char m[512];
    snprintf(m, sizeof m, "%s", uf_test_path("bad.safetensors"));
    const char *args[] = {"train", "--backbone", "mcait", "--data", data, "-o", m, weights ? "--weights" : NULL,
                          weights, NULL};
    CHECK(run(args) == 1, "--weights %s accepted", weights ? weights : "(none)");
    char *e = err_text();
    CHECK(e && strstr(e, needle1) && strstr(e, needle2) && uf_test_count_lines(e) == 1,
          "--weights %s: message '%s' lacks '%s' / '%s'", weights ? weights : "(none)", e ? e : "", needle1, needle2);
    free(e);
}

static void test_bad_weights(void) {
    expect_train_error(NULL, "--weights", "cait_m48_448");
    expect_train_error("tests/data/cait/tiny_m.safetensors", "two files", "tiny_m");
    expect_train_error("tests/data/cait/tiny_s.safetensors,tests/data/cait/tiny_m.safetensors", "swapped",
                       "tiny_s.safetensors");
    expect_train_error("tests/data/cait/tiny_m.safetensors,tests/data/cait/missing.safetensors", "missing.safetensors",
                       "open");
    expect_train_error("tests/data/cait/tiny_m.safetensors,models/resnet18-in1k-l3-bnfolded.safetensors",
                       "resnet18-in1k-l3-bnfolded.safetensors", "patch_embed.proj.weight");
}

int main(void) {
    setup();
    UF_TEST(test_train_cache_predict_test);
    UF_TEST(test_preset_and_overrides);
    UF_TEST(test_bad_weights);
    return uf_test_summary();
}
