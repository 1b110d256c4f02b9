/* predict as a pipeline (issue 25), on generated images and an untrained model:
 *  - uf_predict's outputs and rows equal, bit for bit, those of the steps run one after
 *    the other on the same batches (uf_batch_load, uf_batch_run, uf_image_result_from_batch),
 *    with any number of writer threads; a corrupt file gets its error row in place;
 *  - a write that fails stops the run with a message naming the file, commits no
 *    results.csv and leaves no temporary file;
 *  - --outputs: which files appear; JPEG overlays; parsing;
 *  - the sha256 cache: used while the file is unchanged, bypassed once it is rewritten.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backbone/backbone.h"
#include "core/error.h"
#include "core/tensor.h"
#include "harness.h"
#include "io/atomic_file.h"
#include "io/file_hash.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/synth.h"
#include "model/batch.h"
#include "model/model.h"
#include "model/predict.h"

#define WEIGHTS "models/resnet18-in1k-l3-bnfolded.safetensors"
#define N_IMAGES 8 /* image 5 is corrupt */
#define BATCH 3

static char g_in[600];

/* N_IMAGES files in a fresh folder: sizes vary (the outputs are at each image's size). */
static const char *write_inputs(void) {
    snprintf(g_in, sizeof g_in, "%s/in", uf_test_tmpdir());
    mkdir(g_in, 0755);
    for (int i = 0; i < N_IMAGES; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%02d.png", g_in, i);
        if (i == 5) {
            uf_test_write_file(p, "\x89PNG\r\n\x1a\nnot really", 18);
            continue;
        }
        uf_image *img = NULL;
        const int size = 80 + 16 * (i % 3);
        CHECK(uf_synth_render(3, UF_SYNTH_STREAM_TEST_DEFECT, i, i % 2 ? UF_SYNTH_HOLE : UF_SYNTH_NONE, size, &img,
                              NULL) == UF_OK,
              "%s", uf_last_error());
        if (img) CHECK(uf_image_write_png(p, img) == UF_OK, "%s", uf_last_error());
        uf_image_free(img);
    }
    return g_in;
}

static uf_model *tiny_model(void) {
    uf_model *m = uf_model_create(UF_BACKBONE_RESNET, WEIGHTS, (uf_input_geometry){64, 64, UF_FIT_STRETCH}, 1,
                                  UF_LN_LOGDET, 5);
    CHECK(m != NULL, "%s", uf_last_error());
    return m;
}

/* The float32 field `name` of a safetensors file (malloc'ed), its element count in *n. */
static float *read_field(const char *path, const char *name, size_t *n) {
    uf_safetensors *st = uf_st_open(path);
    CHECK(st != NULL, "%s", uf_last_error());
    if (!st) return NULL;
    uf_tensor *t = uf_st_read_f32(st, name, -1, NULL);
    CHECK(t != NULL, "%s", uf_last_error());
    float *f = NULL;
    if (t) {
        *n = (size_t)uf_tensor_numel(t);
        f = malloc(sizeof(float) * *n);
        if (f) memcpy(f, t->data, sizeof(float) * *n);
        uf_tensor_free(t);
    }
    uf_st_close(st);
    return f;
}

static void test_pipeline_equals_sequential(void) {
    uf_model *m = tiny_model();
    if (!m) return;
    const char *in = write_inputs();
    char out1[700], out3[700];
    snprintf(out1, sizeof out1, "%s/out1", uf_test_tmpdir());
    snprintf(out3, sizeof out3, "%s/out3", uf_test_tmpdir());
    mkdir(out1, 0755), mkdir(out3, 0755);
    uf_predict_options po = {.out_dir = out3, .batch = BATCH, .map_safetensors = 1,
                             .outputs = UF_OUTPUT_MAP | UF_OUTPUT_MASK | UF_OUTPUT_NFA | UF_OUTPUT_OVERLAY,
                             .workers = 3};
    uf_predict_report pr;
    CHECK(uf_predict(m, &in, 1, &po, &pr) == UF_OK, "%s", uf_last_error());
    CHECK(pr.n_images == N_IMAGES && pr.n_failed == 1, "%d images, %d failed", pr.n_images, pr.n_failed);
    po.out_dir = out1, po.workers = 1;
    CHECK(uf_predict(m, &in, 1, &po, &pr) == UF_OK, "%s", uf_last_error());
    char a[800], b[800];
    snprintf(a, sizeof a, "%s/results.csv", out1);
    snprintf(b, sizeof b, "%s/results.csv", out3);
    CHECK(uf_test_files_equal(a, b), "results.csv differs between 1 and 3 writer threads");

    /* The steps one after the other, on the same batches. */
    uf_batch bt;
    CHECK(uf_batch_init(&bt, m, BATCH, 64, 64) == UF_OK, "%s", uf_last_error());
    bt.original = calloc(BATCH, sizeof *bt.original);
    char paths[N_IMAGES][700];
    const char *pp[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) snprintf(paths[i], sizeof paths[i], "%s/%02d.png", in, i), pp[i] = paths[i];
    char *csv = uf_test_read_text(b);
    int compared = 0;
    for (int i0 = 0; i0 < N_IMAGES; i0 += BATCH) {
        const int n = N_IMAGES - i0 < BATCH ? N_IMAGES - i0 : BATCH;
        uf_batch_load(&bt, m, pp + i0, n);
        CHECK(uf_batch_run(&bt, m, NULL, NULL) == UF_OK, "%s", uf_last_error());
        for (int i = 0; i < n; i++) {
            const int k = i0 + i;
            if (k == 5) {
                CHECK(bt.error[i][0] && csv && strstr(csv, "05.png\",,,,,,,,\""), "the corrupt file's row");
                continue;
            }
            uf_image_result r;
            CHECK(uf_image_result_from_batch(&bt, i, &m->cfg.input, &r) == UF_OK, "%s", uf_last_error());
            char p[800], row[300];
            size_t nm = 0, nn = 0;
            snprintf(p, sizeof p, "%s/%02d_map.safetensors", out3, k);
            float *map = read_field(p, "anomaly_map", &nm);
            snprintf(p, sizeof p, "%s/%02d_nfa.safetensors", out3, k);
            float *nfa = read_field(p, "neg_log10_nfa", &nn);
            const size_t np = (size_t)r.width * r.height;
            CHECK(map && nm == np && !memcmp(map, r.anomaly_map, sizeof(float) * np), "image %d: map differs", k);
            CHECK(nfa && nn == np && !memcmp(nfa, r.neg_log10_nfa, sizeof(float) * np), "image %d: NFA differs", k);
            snprintf(row, sizeof row, "%02d.png\",%.6f,%d,%d,%.3f,%d,%d,", k, r.score, r.anomalous, r.detected_pixels,
                     r.max_neg_log10_nfa, r.width, r.height);
            CHECK(csv && strstr(csv, row), "image %d: no row %s", k, row);
            compared += map && nfa;
            free(map), free(nfa);
            uf_image_result_free(&r);
        }
    }
    CHECK(compared == N_IMAGES - 1, "%d images compared", compared);
    /* rows in input order */
    const char *p7 = csv ? strstr(csv, "07.png") : NULL, *p0 = csv ? strstr(csv, "00.png") : NULL;
    CHECK(p0 && p7 && p0 < p7, "rows out of order");
    free(csv);
    uf_batch_free(&bt);
    uf_model_free(m);
}

static void test_pipeline_write_failure(void) {
    uf_model *m = tiny_model();
    if (!m) return;
    const char *in = g_in[0] ? g_in : write_inputs();
    char out[700], blocker[800], csv[800];
    snprintf(out, sizeof out, "%s/outfail", uf_test_tmpdir());
    mkdir(out, 0755);
    /* a folder where image 4's mask must go: its rename fails */
    snprintf(blocker, sizeof blocker, "%s/04_mask.png", out);
    mkdir(blocker, 0755);
    uf_predict_options po = {.out_dir = out, .batch = 2, .workers = 2};
    uf_predict_report pr;
    CHECK(uf_predict(m, &in, 1, &po, &pr) == UF_ERR && strstr(uf_last_error(), "04_mask.png"),
          "the failed write is not named: %s", uf_last_error());
    snprintf(csv, sizeof csv, "%s/results.csv", out);
    struct stat sb;
    CHECK(stat(csv, &sb) != 0, "results.csv committed after a failed write");
    CHECK(uf_test_count_temp_files(out) == 0, "temporary files left in %s", out);
    uf_model_free(m);
}

static void test_outputs_choice(void) {
    unsigned bits = 0;
    CHECK(uf_outputs_parse("map,nfa", &bits) == UF_OK && bits == (UF_OUTPUT_MAP | UF_OUTPUT_NFA), "bits %u", bits);
    CHECK(uf_outputs_parse("default", &bits) == UF_OK && bits == UF_OUTPUTS_DEFAULT, "default");
    CHECK(uf_outputs_parse("map,bogus", &bits) == UF_ERR && strstr(uf_last_error(), "'bogus'"), "%s",
          uf_last_error());
    CHECK(uf_outputs_parse("none,map", &bits) == UF_ERR, "none with others");
    CHECK(uf_outputs_parse("", &bits) == UF_ERR, "empty list");
    uf_model *m = tiny_model();
    if (!m) return;
    const char *in = g_in[0] ? g_in : write_inputs();
    char out[700], p[800];
    snprintf(out, sizeof out, "%s/outnone", uf_test_tmpdir());
    mkdir(out, 0755);
    uf_predict_options po = {.out_dir = out, .batch = 4, .outputs = UF_OUTPUT_NONE};
    uf_predict_report pr;
    CHECK(uf_predict(m, &in, 1, &po, &pr) == UF_OK && pr.n_images == N_IMAGES, "%s", uf_last_error());
    struct stat sb;
    snprintf(p, sizeof p, "%s/00_map.png", out);
    CHECK(stat(p, &sb) != 0, "outputs none wrote %s", p);
    snprintf(p, sizeof p, "%s/results.jsonl", out);
    char *text = uf_test_read_text(p);
    CHECK(uf_test_count_lines(text) == N_IMAGES, "results.jsonl lines");
    free(text);

    snprintf(out, sizeof out, "%s/outjpeg", uf_test_tmpdir());
    mkdir(out, 0755);
    po = (uf_predict_options){.out_dir = out, .batch = 4, .outputs = UF_OUTPUT_OVERLAY, .overlay_jpeg = 1};
    CHECK(uf_predict(m, &in, 1, &po, &pr) == UF_OK, "%s", uf_last_error());
    snprintf(p, sizeof p, "%s/01_overlay.jpg", out);
    uf_image *j = uf_image_load(p, 3);
    CHECK(j && j->width == 96 && j->height == 96, "JPEG overlay unreadable or of the wrong size: %s", uf_last_error());
    uf_image_free(j);
    snprintf(p, sizeof p, "%s/01_mask.png", out);
    CHECK(stat(p, &sb) != 0, "a mask was not asked for");
    uf_model_free(m);
}

/* --precision bf16: refused where the CPU cannot, else close to FP32 and not the same. */
static void test_bf16_backbone(void) {
    uf_model *m = tiny_model();
    if (!m) return;
    uf_precision p;
    CHECK(uf_precision_parse("fp16", &p) == UF_ERR && strstr(uf_last_error(), "fp16"), "bad name accepted");
    if (!uf_resnet_bf16_supported()) {
        CHECK(uf_backbone_set_precision(m->backbone, UF_PRECISION_BF16) == UF_ERR &&
                  strstr(uf_last_error(), "AVX512-BF16"),
              "bf16 on a CPU without it: %s", uf_last_error());
        CHECK(uf_backbone_set_precision(m->backbone, UF_PRECISION_AUTO) == UF_OK &&
                  !strcmp(uf_backbone_precision_name(m->backbone), "fp32"),
              "auto is fp32 without BF16");
        printf("  this CPU has no BF16: bf16 refused, auto = fp32\n");
        uf_model_free(m);
        return;
    }
    const char *in = g_in[0] ? g_in : write_inputs();
    char path[700];
    snprintf(path, sizeof path, "%s/01.png", in);
    const char *paths[1] = {path};
    float *amap[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        CHECK(uf_backbone_set_precision(m->backbone, k ? UF_PRECISION_BF16 : UF_PRECISION_FP32) == UF_OK, "%s",
              uf_last_error());
        CHECK(!strcmp(uf_backbone_precision_name(m->backbone), k ? "bf16" : "fp32"), "precision name");
        uf_batch b;
        CHECK(uf_batch_init(&b, m, 1, 64, 64) == UF_OK, "%s", uf_last_error());
        uf_batch_load(&b, m, paths, 1);
        CHECK(uf_batch_run(&b, m, NULL, NULL) == UF_OK && !b.error[0][0], "%s", uf_last_error());
        amap[k] = malloc(sizeof(float) * 64 * 64);
        memcpy(amap[k], b.amap, sizeof(float) * 64 * 64);
        uf_batch_free(&b);
    }
    float worst = 0;
    int differ = 0;
    for (int q = 0; q < 64 * 64; q++) {
        float d = fabsf(amap[0][q] - amap[1][q]);
        worst = d > worst ? d : worst;
        differ += d > 0;
    }
    printf("  bf16 against fp32 anomaly map: max |difference| %.2e, %d of 4096 cells differ\n", worst, differ);
    CHECK(differ > 0, "bf16 gave the FP32 map bit for bit: it did not run");
    CHECK(worst < 0.05f, "bf16 map off by %g", worst);
    free(amap[0]), free(amap[1]);
    uf_model_free(m);
}

static void test_hash_cache(void) {
    char dir[700], file[800], cache[800], plain[65], cached[65];
    snprintf(dir, sizeof dir, "%s/cache", uf_test_tmpdir());
    snprintf(file, sizeof file, "%s/weights.bin", uf_test_tmpdir());
    snprintf(cache, sizeof cache, "%s/sha256", dir);
    setenv("UFLOW_CACHE_DIR", dir, 1);
    uf_test_write_file(file, "first version of the weights", 28);
    CHECK(uf_sha256_file(file, plain) == UF_OK && uf_sha256_file_cached(file, cached) == UF_OK, "%s",
          uf_last_error());
    CHECK(!strcmp(plain, cached), "cached %s, plain %s", cached, plain);
    char *text = uf_test_read_text(cache);
    CHECK(text && uf_test_count_lines(text) == 1 && strstr(text, plain), "cache file: %s", text ? text : "(none)");
    /* The entry is what answers while the file is unchanged: forge it and see it come back. */
    if (text) {
        char *h = strstr(text, plain);
        memset(h, 'a', 64);
        uf_test_write_file(cache, text, strlen(text));
        CHECK(uf_sha256_file_cached(file, cached) == UF_OK && cached[0] == 'a' && cached[63] == 'a',
              "the cache was not consulted");
    }
    free(text);
    /* Rewritten (same size): hashed again. */
    uf_test_write_file(file, "other version of the weights", 28);
    CHECK(uf_sha256_file(file, plain) == UF_OK && uf_sha256_file_cached(file, cached) == UF_OK &&
              !strcmp(plain, cached),
          "a changed file answered from the cache");
    setenv("UFLOW_CACHE_DIR", "off", 1);
    CHECK(uf_sha256_file_cached(file, cached) == UF_OK && !strcmp(plain, cached), "cache off");
    unsetenv("UFLOW_CACHE_DIR");
}

int main(void) {
    /* the models' backbone hashes go to this binary's own cache */
    char cache[700];
    snprintf(cache, sizeof cache, "%s/model-cache", uf_test_tmpdir());
    setenv("UFLOW_CACHE_DIR", cache, 1);
    UF_TEST(test_pipeline_equals_sequential);
    UF_TEST(test_pipeline_write_failure);
    UF_TEST(test_outputs_choice);
    UF_TEST(test_bf16_backbone);
    UF_TEST(test_hash_cache);
    return uf_test_summary();
}
