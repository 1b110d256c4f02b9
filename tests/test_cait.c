/* CaiT and MS-CaiT extractors against PyTorch references made by
 * tools/make_cait_refs.py (timm's Cait written out in torch 1.13): tiny
 * random models with timm's key names (every block's output and the final
 * maps; 4, 12 and 16 heads), a deep pair for the block cut-off at 40 / 20, the bicubic resize of
 * the coarse branch, and the load errors (missing, swapped, wrong model). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/backbone.h"
#include "backbone/cait.h"
#include "backbone/mcait.h"
#include "core/error.h"
#include "core/interp.h"
#include "core/tensor.h"
#include "harness.h"
#include "io/safetensors.h"

#define DATA "tests/data/cait/"
/* Relative tolerance of the issue: max |ours - torch| / max |torch| per tensor. Every value is a
 * chain of dot products of <= 4D = 192 terms (tiny) through <= 3 blocks (43 for the deep pair);
 * each errs by ~sqrt(K) u = 8e-7 relative in either implementation, in an order that depends on
 * the BLAS kernel. LayerNorms renormalise after every block, so errors do not compound much. */
#define REL_TOL 1e-5

static uf_tensor *ref_tensor(uf_safetensors *io, const char *name) {
    uf_tensor *t = uf_st_read_f32(io, name, -1, NULL);
    CHECK(t != NULL, "%s: %s", name, uf_last_error());
    return t;
}

/* Runs one model on `xname` of io and compares its embedding, every block and the map. */
static void check_model(const char *weights, int last_block, uf_safetensors *io, const char *xname,
                        const char *prefix, int expect_dim, int expect_grid) {
    uf_cait *m = uf_cait_load(weights, last_block);
    CHECK(m != NULL, "load %s: %s", weights, uf_last_error());
    uf_tensor *x = ref_tensor(io, xname);
    if (!m || !x) goto done;
    const int n = (int)x->shape[0], D = uf_cait_dim(m), g = uf_cait_grid(m), N = g * g, B = uf_cait_blocks_run(m);
    CHECK(D == expect_dim && g == expect_grid, "%s: D %d grid %d", weights, D, g);
    CHECK(uf_cait_input_size(m) == x->shape[2], "%s: input size %d", weights, uf_cait_input_size(m));
    float **trace = calloc((size_t)B + 1, sizeof *trace);
    for (int k = 0; k <= B; k++) trace[k] = uf_alloc(sizeof(float) * (size_t)n * N * D);
    float *out = uf_alloc(sizeof(float) * (size_t)n * D * N);
    CHECK(uf_cait_forward(m, x->data, n, out, trace) == UF_OK, "forward: %s", uf_last_error());
    char name[64];
    for (int k = 0; k <= B; k++) {
        if (k == 0)
            snprintf(name, sizeof name, "%s.embed", prefix);
        else
            snprintf(name, sizeof name, "%s.block%d", prefix, k - 1);
        if (!uf_st_find(io, name)) continue; /* the deep pair stores only the maps */
        uf_tensor *r = ref_tensor(io, name);
        if (r) {
            CHECK(uf_tensor_numel(r) == (int64_t)n * N * D, "%s: %lld values", name, (long long)uf_tensor_numel(r));
            double e = uf_test_scaled_max_err(trace[k], r->data, (size_t)n * N * D);
            CHECK(e <= REL_TOL, "%s %s: max err %.3g of the scale", weights, name, e);
            printf("  %-34s %-10s max err %.2g of the scale\n", weights, name, e);
        }
        uf_tensor_free(r);
    }
    snprintf(name, sizeof name, "%s.feature", prefix);
    uf_tensor *r = ref_tensor(io, name);
    if (r) {
        CHECK(r->ndim == 4 && r->shape[1] == D && r->shape[2] == g && r->shape[3] == g, "%s shape", name);
        double e = uf_test_scaled_max_err(out, r->data, (size_t)n * N * D);
        CHECK(e <= REL_TOL, "%s %s: max err %.3g of the scale", weights, name, e);
        printf("  %-34s %-10s max err %.2g of the scale (%d of %d blocks)\n", weights, name, e, B,
               uf_cait_depth(m));
        /* The maps with all blocks differ: the cut-off is what makes them match. */
        snprintf(name, sizeof name, "%s.feature_all", prefix);
        if (uf_st_find(io, name)) {
            uf_tensor *all = ref_tensor(io, name);
            double d = all ? uf_test_scaled_max_err(out, all->data, (size_t)n * N * D) : 0;
            CHECK(d > 0.1, "%s: the cut-off made no difference (%.3g)", name, d);
            uf_tensor_free(all);
        }
    }
    uf_tensor_free(r);
    for (int k = 0; k <= B; k++) uf_free(trace[k]);
    free(trace);
    uf_free(out);
done:
    uf_tensor_free(x);
    uf_cait_free(m);
}

static void test_tiny_models(void) {
    uf_safetensors *io = uf_st_open(DATA "tiny_io.safetensors");
    CHECK(io != NULL, "%s", uf_last_error());
    if (!io) return;
    check_model(DATA "tiny_m.safetensors", UF_MCAIT_LAST_BLOCK_FINE, io, "x", "m", 48, 4);
    check_model(DATA "tiny_s.safetensors", UF_MCAIT_LAST_BLOCK_COARSE, io, "x2", "s", 32, 2);
    uf_st_close(io);
}

static void test_deep_models_cut_off(void) {
    uf_safetensors *io = uf_st_open(DATA "deep_io.safetensors");
    CHECK(io != NULL, "%s", uf_last_error());
    if (!io) return;
    uf_cait *m = uf_cait_load(DATA "deep_m.safetensors", UF_MCAIT_LAST_BLOCK_FINE);
    CHECK(m && uf_cait_depth(m) == 43 && uf_cait_blocks_run(m) == 41, "deep_m: depth/run");
    uf_cait_free(m);
    check_model(DATA "deep_m.safetensors", UF_MCAIT_LAST_BLOCK_FINE, io, "x", "m", 16, 2);
    check_model(DATA "deep_s.safetensors", UF_MCAIT_LAST_BLOCK_COARSE, io, "x2", "s", 16, 1);
    uf_st_close(io);
}

/* 16 and 12 heads: the talking-heads kernel's 8-head vector groups, its remainder heads, and a
 * token count (25) that is not a multiple of its 16-column tiles. */
static void test_more_heads(void) {
    uf_safetensors *io = uf_st_open(DATA "heads_io.safetensors");
    CHECK(io != NULL, "%s", uf_last_error());
    if (!io) return;
    check_model(DATA "heads16.safetensors", UF_MCAIT_LAST_BLOCK_FINE, io, "h16.x", "h16", 64, 5);
    check_model(DATA "heads12.safetensors", UF_MCAIT_LAST_BLOCK_FINE, io, "h12.x", "h12", 48, 4);
    uf_st_close(io);
}

/* The pair: resize + both models, against the references of each scale. */
static void test_mcait_pair(void) {
    uf_safetensors *io = uf_st_open(DATA "tiny_io.safetensors");
    uf_mcait *m = uf_mcait_load(DATA "tiny_m.safetensors", DATA "tiny_s.safetensors");
    CHECK(io && m, "%s", uf_last_error());
    if (!io || !m) goto done;
    CHECK(uf_mcait_input_size(m) == 64, "input size %d", uf_mcait_input_size(m));
    CHECK(!strcmp(uf_mcait_arch(m), "mcait(cait-d48-h4-b3-64,cait-d32-h4-b3-32)"), "arch %s", uf_mcait_arch(m));
    uf_tensor *x = ref_tensor(io, "x"), *f0 = ref_tensor(io, "m.feature"), *f1 = ref_tensor(io, "s.feature");
    if (x && f0 && f1) {
        float *out[2] = {uf_alloc(sizeof(float) * (size_t)uf_tensor_numel(f0)),
                         uf_alloc(sizeof(float) * (size_t)uf_tensor_numel(f1))};
        for (int l = 0; l < 2; l++) {
            int c, h, w;
            uf_mcait_feature_shape(m, l, &c, &h, &w);
            const uf_tensor *r = l ? f1 : f0;
            CHECK(c == r->shape[1] && h == r->shape[2] && w == r->shape[3], "level %d shape %dx%dx%d", l, c, h, w);
        }
        CHECK(uf_mcait_forward(m, x->data, (int)x->shape[0], out) == UF_OK, "forward: %s", uf_last_error());
        double e0 = uf_test_scaled_max_err(out[0], f0->data, (size_t)uf_tensor_numel(f0));
        double e1 = uf_test_scaled_max_err(out[1], f1->data, (size_t)uf_tensor_numel(f1));
        CHECK(e0 <= REL_TOL && e1 <= REL_TOL, "mcait maps: max err %.3g, %.3g of the scale", e0, e1);
        printf("  mcait pair: max err %.2g / %.2g of the scale\n", e0, e1);
        uf_free(out[0]), uf_free(out[1]);
    }
    uf_tensor_free(x), uf_tensor_free(f0), uf_tensor_free(f1);
done:
    uf_mcait_free(m);
    uf_st_close(io);
}

/* F.interpolate(mode='bicubic', align_corners=True), incl. an output size of 1 (torch: the corner). */
static void test_bicubic_align_corners(void) {
    uf_safetensors *io = uf_st_open(DATA "bicubic_io.safetensors");
    CHECK(io != NULL, "%s", uf_last_error());
    if (!io) return;
    for (int i = 0; i < 4; i++) {
        char a[16], b[16];
        snprintf(a, sizeof a, "in%d", i), snprintf(b, sizeof b, "out%d", i);
        uf_tensor *in = ref_tensor(io, a), *out = ref_tensor(io, b);
        if (in && out) {
            float *y = uf_alloc(sizeof(float) * (size_t)uf_tensor_numel(out));
            uf_interp_bicubic_ac(in->data, (int)in->shape[1], (int)in->shape[2], (int)in->shape[3], y,
                                 (int)out->shape[2], (int)out->shape[3]);
            /* 16 taps with weights up to 1.1 on values of the inputs' scale, combined in
             * another order than torch's: a few ulp of that scale (seen: 3.2e-6). */
            double e = uf_test_scaled_max_err(y, out->data, (size_t)uf_tensor_numel(out));
            CHECK(e <= REL_TOL, "%s: max err %.3g of the scale", b, e);
            uf_free(y);
        }
        uf_tensor_free(in), uf_tensor_free(out);
    }
    uf_st_close(io);
}

/* Writes an F16 copy of `src` without tensor `drop` (NULL: all tensors). */
static void copy_without(const char *src, const char *dst, const char *drop) {
    uf_safetensors *st = uf_st_open(src);
    uf_st_writer *w = uf_st_writer_new();
    for (int i = 0; st && i < uf_st_count(st); i++) {
        const uf_st_tensor *t = uf_st_at(st, i);
        if (drop && !strcmp(t->name, drop)) continue;
        uf_tensor *v = uf_st_read_f32(st, t->name, -1, NULL);
        CHECK(v != NULL, "%s", uf_last_error());
        if (v) uf_st_writer_add_f32(w, t->name, UF_DT_F16, t->ndim, t->shape, v->data);
        uf_tensor_free(v);
    }
    CHECK(uf_st_writer_save(w, dst) == UF_OK, "save %s: %s", dst, uf_last_error());
    uf_st_writer_free(w);
    uf_st_close(st);
}

static void expect_load_error(const char *a, const char *b, const char *needle1, const char *needle2) {
    uf_mcait *m = uf_mcait_load(a, b);
    CHECK(m == NULL, "loaded %s,%s", a, b);
    const char *e = uf_last_error();
    CHECK(strstr(e, needle1) && strstr(e, needle2) && !strchr(e, '\n'), "message '%s' lacks '%s' / '%s'", e,
          needle1, needle2);
    uf_mcait_free(m);
}

static void test_load_errors(void) {
    /* swapped */
    expect_load_error(DATA "tiny_s.safetensors", DATA "tiny_m.safetensors", "swapped", "tiny_s.safetensors");
    /* a ResNet instead of a CaiT */
    expect_load_error(DATA "tiny_m.safetensors", "tests/data/resnet/r18_small.safetensors", "r18_small",
                      "patch_embed.proj.weight");
    /* missing file */
    expect_load_error("tests/data/cait/nope.safetensors", DATA "tiny_s.safetensors", "nope.safetensors", "open");
    /* a missing block tensor, a missing talking-heads tensor (a ViT) */
    char p1[512], p2[512], p3[512];
    snprintf(p1, sizeof p1, "%s", uf_test_path("no_fc2.safetensors"));
    snprintf(p2, sizeof p2, "%s", uf_test_path("no_proj_l.safetensors"));
    snprintf(p3, sizeof p3, "%s", uf_test_path("tiny_m_f16.safetensors"));
    copy_without(DATA "tiny_m.safetensors", p1, "blocks.1.mlp.fc2.bias");
    expect_load_error(p1, DATA "tiny_s.safetensors", "no_fc2.safetensors", "blocks.1.mlp.fc2.bias");
    copy_without(DATA "tiny_m.safetensors", p2, "blocks.0.attn.proj_l.weight");
    expect_load_error(p2, DATA "tiny_s.safetensors", "no_proj_l.safetensors", "proj_l");
    /* the same weights as F16 load (converted once) and agree with F32 to F16's precision */
    copy_without(DATA "tiny_m.safetensors", p3, NULL);
    uf_cait *a = uf_cait_load(DATA "tiny_m.safetensors", 40), *b = uf_cait_load(p3, 40);
    CHECK(a && b, "%s", uf_last_error());
    if (a && b) {
        const int n = 4 * 4 * 48;
        float *x = uf_calloc(3 * 64 * 64, sizeof(float)), *ya = uf_alloc(sizeof(float) * n),
              *yb = uf_alloc(sizeof(float) * n);
        for (int i = 0; i < 3 * 64 * 64; i++) x[i] = sinf(0.1f * (float)i);
        CHECK(uf_cait_forward(a, x, 1, ya, NULL) == UF_OK && uf_cait_forward(b, x, 1, yb, NULL) == UF_OK, "fwd");
        double e = uf_test_scaled_max_err(yb, ya, (size_t)n);
        CHECK(e > 0 && e < 2e-2, "F16 copy: max err %.3g of the scale", e);
        uf_free(x), uf_free(ya), uf_free(yb);
    }
    uf_cait_free(a), uf_cait_free(b);
}

/* --precision bf16 for CaiT: the dense layers in bfloat16 stay close to FP32 (and differ from
 * it: the path ran); refused where the CPU has no BF16. */
static void test_bf16_dense_layers(void) {
    uf_cait *m = uf_cait_random("cait_s24_224", 1, 7);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m) return;
    if (!uf_resnet_bf16_supported()) {
        uf_backbone b = {UF_BACKBONE_MCAIT, NULL, NULL};
        uf_mcait pair = {{m, m}, NULL, 0, ""};
        b.mcait = &pair;
        CHECK(uf_backbone_set_precision(&b, UF_PRECISION_BF16) == UF_ERR && strstr(uf_last_error(), "AVX512-BF16"),
              "bf16 on a CPU without it: %s", uf_last_error());
        printf("  this CPU has no BF16: refused\n");
        uf_cait_free(m);
        return;
    }
    const int S = uf_cait_input_size(m), D = uf_cait_dim(m), g = uf_cait_grid(m);
    const size_t nx = (size_t)3 * S * S, ny = (size_t)D * g * g;
    float *x = malloc(sizeof(float) * nx), *y32 = malloc(sizeof(float) * ny), *y16 = malloc(sizeof(float) * ny);
    for (size_t i = 0; i < nx; i++) x[i] = (float)sin(0.37 * (double)i) * 1.5f;
    CHECK(uf_cait_forward(m, x, 1, y32, NULL) == UF_OK, "%s", uf_last_error());
    CHECK(uf_cait_set_bf16(m, 1) == UF_OK && uf_cait_get_bf16(m), "%s", uf_last_error());
    CHECK(uf_cait_forward(m, x, 1, y16, NULL) == UF_OK && uf_cait_get_bf16(m), "%s", uf_last_error());
    double err = 0, norm = 0;
    for (size_t i = 0; i < ny; i++) err += (y16[i] - y32[i]) * (double)(y16[i] - y32[i]), norm += y32[i] * (double)y32[i];
    const double rel = sqrt(err / norm);
    printf("  bf16 dense layers: features' relative RMS difference to FP32 %.2e\n", rel);
    CHECK(rel > 0 && rel < 2e-2, "relative RMS difference %g", rel);
    CHECK(uf_cait_set_bf16(m, 0) == UF_OK && uf_cait_forward(m, x, 1, y16, NULL) == UF_OK &&
              !memcmp(y16, y32, sizeof(float) * ny),
          "back to FP32: not FP32's features");
    free(x), free(y32), free(y16);
    uf_cait_free(m);
}

int main(void) {
    UF_TEST(test_bf16_dense_layers);
    UF_TEST(test_tiny_models);
    UF_TEST(test_deep_models_cut_off);
    UF_TEST(test_more_heads);
    UF_TEST(test_mcait_pair);
    UF_TEST(test_bicubic_align_corners);
    UF_TEST(test_load_errors);
    return uf_test_summary();
}
