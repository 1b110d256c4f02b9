/* ResNet feature extractors against PyTorch (torchvision 0.14) references made by
 * tools/make_resnet_refs.py: reduced-width random-weight ResNet-18 and
 * Wide-ResNet-50-2 with non-trivial BatchNorm statistics (shipped and folded
 * layouts), the shipped real weights on a real image at 64x64 (full tensors) and
 * at 256x256 (strided subsets + full-tensor statistics), and strict loading. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/resnet.h"
#include "core/conv.h"
#include "core/error.h"
#include "core/tensor.h"
#include "harness.h"
#include "io/image.h"
#include "io/safetensors.h"

#define DATA "tests/data/resnet/"
#define SHIPPED "models/resnet18-in1k-l3-bnfolded.safetensors"

static const char *const LAYER[3] = {"layer1", "layer2", "layer3"};

/* Runs model `weights` on io's x and compares with io's layer1..3 (max err <= 1e-4 of the scale).
 * Tolerances: every conv is a GEMM whose summation order depends on the BLAS kernel (and on
 * the batch: one image alone is chunked differently), so the errors are relative to the
 * layer's scale. One conv of K = C k^2 <= 2304 terms (layer3; WRN bottlenecks: 1x1 of <= 1024,
 * 3x3 of <= 2304) errs by <= uf_test_dot_tol(K) = 8 sqrt(K) u = 2.3e-5 of its sum of |terms|
 * with high probability, typically sqrt(K) u = 3e-6; ~14 convs deep, the per-layer errors add
 * like a random walk (ReLU and BN-folded weights roughly preserve the scale), and torch has
 * its own error of the same size: 1e-4 vs torch, 1e-5 between our two orders. Seen under
 * Haswell, SkylakeX and Sandybridge kernels: <= 1.4e-6 vs torch, <= 8.2e-7 alone vs batch. */
static void check_against_io(const char *weights, const char *io_path, const char *arch, int had_bn) {
    uf_resnet *m = uf_resnet_load(weights);
    CHECK(m != NULL, "load %s: %s", weights, uf_last_error());
    uf_safetensors *io = uf_st_open(io_path);
    CHECK(io != NULL, "open %s: %s", io_path, uf_last_error());
    if (!m || !io) goto done;
    CHECK(!strcmp(uf_resnet_arch(m), arch), "%s: arch %s, expected %s", weights, uf_resnet_arch(m), arch);
    CHECK(uf_resnet_had_batchnorm(m) == had_bn, "%s: had_batchnorm %d", weights, uf_resnet_had_batchnorm(m));
    uf_tensor *x = uf_st_read_f32(io, "x", -1, NULL);
    CHECK(x && x->ndim == 4 && x->shape[1] == 3, "x: %s", uf_last_error());
    if (!x) goto done;
    int n = (int)x->shape[0], h = (int)x->shape[2], w = (int)x->shape[3];
    uf_tensor *ref[3] = {0};
    float *out[3] = {0};
    for (int l = 0; l < 3; l++) {
        int c, fh, fw;
        uf_resnet_feature_shape(m, l, h, w, &c, &fh, &fw);
        int64_t shape[4] = {n, c, fh, fw};
        ref[l] = uf_st_read_f32(io, LAYER[l], 4, shape); /* also checks our shape */
        CHECK(ref[l] != NULL, "%s: %s", LAYER[l], uf_last_error());
        out[l] = uf_calloc((size_t)n * c * fh * fw, sizeof(float));
    }
    if (ref[0] && ref[1] && ref[2]) {
        CHECK(uf_resnet_forward(m, x->data, n, h, w, out) == UF_OK, "forward: %s", uf_last_error());
        for (int l = 0; l < 3; l++) {
            double e = uf_test_scaled_max_err(out[l], ref[l]->data, (size_t)uf_tensor_numel(ref[l]));
            CHECK(e <= 1e-4, "%s %s: max err %.3g of the scale", weights, LAYER[l], e);
            printf("  %-44s %s: max err %.2g of the scale\n", weights, LAYER[l], e);
        }
        double worst_alone = 0;
        /* Image by image gives the same as the batch (other GEMM chunking). */
        for (int i = 0; i < n && n > 1; i++) {
            float *one[3];
            size_t sz[3];
            for (int l = 0; l < 3; l++) {
                sz[l] = (size_t)uf_tensor_numel(ref[l]) / n;
                one[l] = uf_calloc(sz[l], sizeof(float));
            }
            CHECK(uf_resnet_forward(m, x->data + (size_t)i * 3 * h * w, 1, h, w, one) == UF_OK, "forward 1");
            for (int l = 0; l < 3; l++) {
                double e = uf_test_scaled_max_err(one[l], out[l] + i * sz[l], sz[l]);
                CHECK(e <= 1e-5, "%s image %d alone vs in batch: %s differs by %.3g", weights, i, LAYER[l], e);
                worst_alone = fmax(worst_alone, e);
                uf_free(one[l]);
            }
        }
        if (n > 1) printf("  %-44s one image alone vs in the batch: max diff %.2g of the scale\n", weights, worst_alone);
    }
    for (int l = 0; l < 3; l++) uf_tensor_free(ref[l]), uf_free(out[l]);
    uf_tensor_free(x);
done:
    uf_resnet_free(m);
    uf_st_close(io);
}

static void test_resnet18_small_batchnorm(void) {
    check_against_io(DATA "r18_small.safetensors", DATA "r18_small_io.safetensors", "resnet18", 1);
}

static void test_resnet18_small_folded(void) {
    check_against_io(DATA "r18_small_folded.safetensors", DATA "r18_small_io.safetensors", "resnet18", 0);
}

static void test_wide_resnet50_2_small(void) {
    check_against_io(DATA "wrn_small.safetensors", DATA "wrn_small_io.safetensors", "wide_resnet50_2", 1);
}

static void test_shipped_real_image_64(void) {
    check_against_io(SHIPPED, DATA "real64_io.safetensors", "resnet18", 0);
    /* The same input from our own image pipeline. */
    uf_safetensors *io = uf_st_open(DATA "real64_io.safetensors");
    uf_tensor *x = io ? uf_st_read_f32(io, "x", -1, NULL) : NULL;
    float *mine = uf_calloc(3 * 64 * 64, sizeof(float));
    CHECK(x && uf_image_load_for_backbone(DATA "crop0.png", 64, mine) == UF_OK, "%s", uf_last_error());
    if (x) CHECK(uf_test_scaled_max_err(mine, x->data, 3 * 64 * 64) <= 1e-6, "pipeline input differs");
    uf_free(mine), uf_tensor_free(x), uf_st_close(io);
}

/* Shipped weights, two real 256x256 images in one batch, against torch at the
 * stored strided positions: normalized MSE < 1e-8, and full-tensor statistics. The same
 * budget as check_against_io in rms form: an rms error of 1e-4 of the rms value (seen:
 * <= 3.6e-12, i.e. 1.9e-6 rms, under Haswell, SkylakeX and Sandybridge kernels), and the
 * statistics within 1e-4 of the layer's scale. */
static void test_shipped_real_images_256(void) {
    const int S = 256, N = 2;
    uf_resnet *m = uf_resnet_load(SHIPPED);
    uf_safetensors *ref = uf_st_open(DATA "real256_ref.safetensors");
    CHECK(m && ref, "%s", uf_last_error());
    if (!m || !ref) goto done;
    const char *stride_s = uf_st_metadata_get(ref, "stride");
    const size_t stride = stride_s ? (size_t)atoi(stride_s) : 0;
    CHECK(stride > 0, "no stride metadata");
    float *x = uf_calloc((size_t)N * 3 * S * S, sizeof(float)), *out[3];
    size_t img_sz[4] = {(size_t)3 * S * S, 0, 0, 0};
    for (int l = 0; l < 3; l++) {
        int c, fh, fw;
        uf_resnet_feature_shape(m, l, S, S, &c, &fh, &fw);
        CHECK(fh == S >> (l + 2) && fw == fh && c == 64 << l, "layer%d shape %d x %d x %d", l + 1, c, fh, fw);
        img_sz[l + 1] = (size_t)c * fh * fw;
        out[l] = uf_calloc(N * img_sz[l + 1], sizeof(float));
    }
    for (int i = 0; i < N; i++) {
        char path[64];
        snprintf(path, sizeof path, DATA "crop%d.png", i);
        CHECK(uf_image_load_for_backbone(path, S, x + (size_t)i * 3 * S * S) == UF_OK, "%s", uf_last_error());
    }
    CHECK(uf_resnet_forward(m, x, N, S, S, out) == UF_OK, "forward: %s", uf_last_error());
    for (int i = 0; i < N && stride; i++)
        for (int t = 0; t < 4; t++) {
            const char *tname = t == 0 ? "input" : LAYER[t - 1];
            const float *mine = (t == 0 ? x : out[t - 1]) + i * img_sz[t];
            char name[64];
            size_t nsub = (img_sz[t] + stride - 1) / stride;
            snprintf(name, sizeof name, "%d.%s.sub", i, tname);
            const int64_t sub_shape[1] = {(int64_t)nsub}, st_shape[1] = {5};
            uf_tensor *sub = uf_st_read_f32(ref, name, 1, sub_shape);
            snprintf(name, sizeof name, "%d.%s.stats", i, tname);
            uf_tensor *stats = uf_st_read_f32(ref, name, 1, st_shape);
            CHECK(sub && stats, "%s", uf_last_error());
            if (sub && stats) {
                double se = 0.0, ss = 0.0;
                for (size_t k = 0; k < nsub; k++) {
                    double r = sub->data[k], d = mine[k * stride] - r;
                    se += d * d, ss += r * r;
                }
                double nmse = se / fmax(ss, 1e-30);
                CHECK(nmse < 1e-8, "crop%d %s: normalized MSE %.3g at the reference positions", i, tname, nmse);
                printf("  crop%d at 256: %-6s normalized MSE %.2g\n", i, tname, nmse);
                double sum = 0.0, sq = 0.0, mn = INFINITY, mx = -INFINITY;
                for (size_t k = 0; k < img_sz[t]; k++) {
                    double v = mine[k];
                    sum += v, sq += v * v, mn = fmin(mn, v), mx = fmax(mx, v);
                }
                double mean = sum / img_sz[t], msq = sq / img_sz[t], sd = sqrt(fmax(msq - mean * mean, 0.0));
                const float *r = stats->data; /* mean, std, min, max, mean of squares */
                double tol = 1e-4 * fmax(fabs(r[2]), fabs(r[3]));
                CHECK(fabs(mean - r[0]) <= tol && fabs(sd - r[1]) <= tol && fabs(mn - r[2]) <= tol &&
                          fabs(mx - r[3]) <= tol && fabs(msq - r[4]) <= 1e-4 * r[4],
                      "crop%d %s: stats mean %.6g/%.6g std %.6g/%.6g min %.6g/%.6g max %.6g/%.6g", i, tname, mean,
                      r[0], sd, r[1], mn, r[2], mx, r[3]);
            }
            uf_tensor_free(sub), uf_tensor_free(stats);
        }
    uf_free(x);
    for (int l = 0; l < 3; l++) uf_free(out[l]);
done:
    uf_resnet_free(m);
    uf_st_close(ref);
}

/* Copies the float tensors of `src` into a new file, dropping `drop`, renaming
 * `rename_from` to `rename_to`, and cutting the first dimension of `shrink` by one. */
static const char *write_variant(const char *src, const char *drop, const char *rename_from, const char *rename_to,
                                 const char *shrink, const char *out_name) {
    uf_safetensors *st = uf_st_open(src);
    uf_st_writer *w = uf_st_writer_new();
    const char *path = NULL;
    if (!st || !w) goto done;
    for (int i = 0; i < uf_st_count(st); i++) {
        const uf_st_tensor *t = uf_st_at(st, i);
        if (t->dtype != UF_DT_F32 || (drop && !strcmp(t->name, drop))) continue;
        uf_tensor *v = uf_st_read_f32(st, t->name, -1, NULL);
        if (!v) goto done;
        const char *name = rename_from && !strcmp(t->name, rename_from) ? rename_to : t->name;
        int64_t shape[UF_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (shrink && !strcmp(t->name, shrink)) shape[0]--;
        int rc = uf_st_writer_add_f32(w, name, UF_DT_F32, t->ndim, shape, v->data);
        uf_tensor_free(v);
        if (rc != UF_OK) goto done;
    }
    path = uf_test_path(out_name);
    if (uf_st_writer_save(w, path) != UF_OK) path = NULL;
done:
    uf_st_writer_free(w);
    uf_st_close(st);
    return path;
}

/* The load error names the tensor concerned. */
static void expect_load_error(const char *path, const char *tensor) {
    CHECK(path != NULL, "could not write the variant: %s", uf_last_error());
    if (!path) return;
    uf_error_clear();
    uf_resnet *m = uf_resnet_load(path);
    CHECK(m == NULL, "%s loaded although '%s' is bad", path, tensor);
    CHECK(strstr(uf_last_error(), tensor) != NULL, "error '%s' does not name '%s'", uf_last_error(), tensor);
    uf_resnet_free(m);
}

static void test_load_errors(void) {
    const char *bn = DATA "r18_small.safetensors", *folded = DATA "r18_small_folded.safetensors";
    const char *wrn = DATA "wrn_small.safetensors";
    expect_load_error(write_variant(bn, "layer2.0.downsample.1.running_var", NULL, NULL, NULL, "a.safetensors"),
                      "layer2.0.downsample.1.running_var");
    expect_load_error(write_variant(bn, NULL, "layer3.1.conv1.weight", "layer3.1.convl.weight", NULL,
                                    "b.safetensors"),
                      "layer3.1.conv1.weight");
    expect_load_error(write_variant(folded, "layer1.1.conv2.bias", NULL, NULL, NULL, "c.safetensors"),
                      "layer1.1.conv2.bias");
    expect_load_error(write_variant(folded, "layer3.0.downsample.0.weight", NULL, NULL, NULL, "d.safetensors"),
                      "layer3.0.downsample.0.weight");
    /* A mis-shaped weight: fewer output channels than the block's input channels. */
    expect_load_error(write_variant(bn, NULL, NULL, NULL, "layer1.0.conv2.weight", "e.safetensors"),
                      "layer1.0.conv2.weight");
    expect_load_error(write_variant(bn, NULL, NULL, NULL, "bn1.running_mean", "f.safetensors"), "bn1.running_mean");
    expect_load_error(write_variant(wrn, NULL, NULL, NULL, "layer2.1.conv3.weight", "g.safetensors"),
                      "layer2.1.conv3.weight");
    expect_load_error(write_variant(wrn, "layer3.5.bn3.bias", NULL, NULL, NULL, "h.safetensors"), "layer3.5.bn3.bias");
    /* Not a ResNet at all. */
    expect_load_error(DATA "r18_small_io.safetensors", "conv1.weight");
    /* Unused tensors (layer4, fc, num_batches_tracked) are ignored: the original loads. */
    uf_resnet *m = uf_resnet_load(bn);
    CHECK(m != NULL, "%s", uf_last_error());
    uf_resnet_free(m);
}

/* Max pooling against torch on negative inputs (the padding must never win), and NaN propagation. */
static void test_maxpool(void) {
    uf_safetensors *st = uf_st_open(DATA "maxpool.safetensors");
    CHECK(st != NULL, "%s", uf_last_error());
    for (int i = 0; st && i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        uf_tensor *x = uf_st_read_f32(st, name, -1, NULL);
        snprintf(name, sizeof name, "y%d", i);
        uf_tensor *y = uf_st_read_f32(st, name, -1, NULL);
        CHECK(x && y && x->ndim == 4 && y->ndim == 4, "%s", uf_last_error());
        if (!x || !y) continue;
        int h = (int)x->shape[2], w = (int)x->shape[3];
        CHECK(y->shape[2] == (h - 1) / 2 + 1 && y->shape[3] == (w - 1) / 2 + 1, "pooled shape");
        float *out = uf_calloc((size_t)uf_tensor_numel(y), sizeof(float));
        CHECK(uf_maxpool2d_3s2p1(x->data, (int)(x->shape[0] * x->shape[1]), h, w, out) == UF_OK, "maxpool");
        for (int64_t k = 0; k < uf_tensor_numel(y); k++) CHECK(out[k] == y->data[k], "%s[%lld]", name, (long long)k);
        uf_free(out), uf_tensor_free(x), uf_tensor_free(y);
    }
    uf_st_close(st);
    float x[25], y[9];
    for (int i = 0; i < 25; i++) x[i] = (float)i;
    x[12] = NAN; /* (2,2) lies in the windows of outputs with |2*o - 2| <= 1 */
    CHECK(uf_maxpool2d_3s2p1(x, 1, 5, 5, y) == UF_OK, "maxpool");
    for (int oy = 0; oy < 3; oy++)
        for (int ox = 0; ox < 3; ox++) {
            int has_nan = abs(2 * oy - 2) <= 1 && abs(2 * ox - 2) <= 1;
            CHECK(has_nan == isnan(y[oy * 3 + ox]), "NaN at (%d,%d): %g", oy, ox, y[oy * 3 + ox]);
        }
}

/* The oneDNN engine (default) against the im2col + OpenBLAS reference, on every test model and
 * the shipped weights, batch 2 and alone: within 1e-5 of the scale (two summation orders, as in
 * check_against_io). */
static double g_dnnl_worst[2];
static void test_dnnl_matches_im2col(void) {
    static const char *const files[] = {DATA "r18_small.safetensors", DATA "r18_small_folded.safetensors",
                                        DATA "wrn_small.safetensors", SHIPPED};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        uf_resnet *m = uf_resnet_load(files[f]);
        CHECK(m != NULL && uf_resnet_get_engine(m) == UF_RESNET_DNNL, "%s: %s", files[f], uf_last_error());
        if (!m) continue;
        for (int n = 1; n <= 2; n++) {
            const int h = 64, w = 96;
            float *x = uf_alloc(sizeof(float) * (size_t)n * 3 * h * w), *a[3], *b[3];
            size_t sz[3];
            for (size_t i = 0; i < (size_t)n * 3 * h * w; i++) x[i] = sinf(0.37f * (float)i) * 2.0f;
            for (int l = 0; l < 3; l++) {
                int c, fh, fw;
                uf_resnet_feature_shape(m, l, h, w, &c, &fh, &fw);
                sz[l] = (size_t)n * c * fh * fw;
                a[l] = uf_alloc(sizeof(float) * sz[l]), b[l] = uf_alloc(sizeof(float) * sz[l]);
            }
            uf_resnet_set_engine(m, UF_RESNET_IM2COL);
            uf_conv_set_dnnl(0); /* the convolutions themselves as im2col + OpenBLAS too */
            CHECK(uf_resnet_forward(m, x, n, h, w, b) == UF_OK, "im2col: %s", uf_last_error());
            uf_conv_set_dnnl(1);
            /* the default (Winograd 3x3 where oneDNN has it) and direct kernels only */
            static const uf_resnet_engine engines[2] = {UF_RESNET_DNNL, UF_RESNET_DNNL_DIRECT};
            static const char *const names[2] = {"oneDNN", "oneDNN direct"};
            for (int k = 0; k < 2; k++) {
                uf_resnet_set_engine(m, engines[k]);
                CHECK(uf_resnet_forward(m, x, n, h, w, a) == UF_OK, "dnnl: %s", uf_last_error());
                CHECK(uf_resnet_get_engine(m) == engines[k], "%s: %s could not build the network", files[f], names[k]);
                for (int l = 0; l < 3; l++) {
                    double e = uf_test_scaled_max_err(a[l], b[l], sz[l]);
                    CHECK(e <= 1e-5, "%s batch %d %s: %s vs im2col max err %.3g of the scale", files[f], n, LAYER[l],
                          names[k], e);
                    g_dnnl_worst[k] = fmax(g_dnnl_worst[k], e);
                }
            }
            for (int l = 0; l < 3; l++) uf_free(a[l]), uf_free(b[l]);
            uf_free(x);
        }
        uf_resnet_free(m);
    }
}

static void test_bad_forward_input(void) {
    uf_resnet *m = uf_resnet_load(DATA "r18_small_folded.safetensors");
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    float x[3] = {0}, *out[3] = {x, x, x};
    CHECK(uf_resnet_forward(m, x, 0, 8, 8, out) == UF_ERR, "n = 0 accepted");
    CHECK(uf_resnet_forward(m, x, 1, 0, 8, out) == UF_ERR, "h = 0 accepted");
    /* A 1x1 input still runs (every stage has output size 1). */
    float y1[8], y2[16], y3[32], *o[3] = {y1, y2, y3};
    CHECK(uf_resnet_forward(m, x, 1, 1, 1, o) == UF_OK, "1x1: %s", uf_last_error());
    uf_resnet_free(m);
}

int main(void) {
    UF_TEST(test_resnet18_small_batchnorm);
    UF_TEST(test_resnet18_small_folded);
    UF_TEST(test_wide_resnet50_2_small);
    UF_TEST(test_shipped_real_image_64);
    UF_TEST(test_shipped_real_images_256);
    UF_TEST(test_load_errors);
    UF_TEST(test_maxpool);
    UF_TEST(test_dnnl_matches_im2col);
    printf("  oneDNN vs im2col, worst of the scale: default %.2g, direct only %.2g\n", g_dnnl_worst[0], g_dnnl_worst[1]);
    UF_TEST(test_bad_forward_input);
    return uf_test_summary();
}
