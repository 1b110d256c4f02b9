/* `uflow bench rows`: the uflow side of bench/compare (make bench-compare). Prints one line per
 * measurement, "<row>\t<value>\t<unit>", each value the median of a few repeats, for the same rows
 * that bench/compare/baseline.py measures in PyTorch: image loading, backbones at batch 1 and 8,
 * full inference, flow + map, tree NFA, flow training on cached features, and the GFLOP/s reached
 * next to SGEMM. Weights: the shipped ResNet-18 (both sides load the same file); Wide-ResNet-50-2,
 * MS-CaiT and the flow have random weights (the cost does not depend on the values). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/shipped.h"
#include "backbone/backbone.h"
#include "bench.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "detect/anomaly_map.h"
#include "detect/nfa_tree.h"
#include "flow/adam.h"
#include "flow/loss.h"
#include "io/dataset.h"
#include "io/image.h"
#include "model/model.h"
#include "model/predict.h"

#define MAX_REPS 15

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds of fn over reps calls (after one warm-up call). */
static double median_time(void (*fn)(void *), void *ctx, int reps) {
    double t[MAX_REPS];
    if (reps > MAX_REPS) reps = MAX_REPS;
    fn(ctx);
    for (int i = 0; i < reps; i++) {
        double t0 = uf_now();
        fn(ctx);
        t[i] = uf_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    return reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
}

static void row(const char *name, double value, const char *unit) {
    printf("%s\t%.6g\t%s\n", name, value, unit);
    fflush(stdout);
}

static void fill_random(float *x, size_t n, uint64_t seed) {
    uf_rng r = uf_rng_seed(seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(uf_rng_uniform(&r) * 4.0 - 2.0);
}

/* ---- image loading ---- */
typedef struct {
    const uf_dataset *ds;
    float *x;
} load_ctx;

static void run_load(void *p) {
    load_ctx *c = p;
    for (int i = 0; i < c->ds->count; i++) uf_image_load_for_backbone(c->ds->samples[i].image_path, 256, c->x);
}

/* ---- backbone ---- */
typedef struct {
    uf_backbone *b;
    const float *x;
    float *out[UF_BACKBONE_MAX_LEVELS];
    int n, size;
} bb_ctx;

static void run_backbone(void *p) {
    bb_ctx *c = p;
    uf_backbone_forward(c->b, c->x, c->n, c->size, c->size, c->out);
}

static int bench_backbone_row(uf_backbone *b, const char *label, int size, int batch, int reps) {
    bb_ctx c = {.b = b, .n = batch, .size = size};
    float *x = uf_alloc(sizeof(float) * (size_t)batch * 3 * size * size);
    int ok = x != NULL;
    for (int l = 0; l < uf_backbone_levels(b) && ok; l++) {
        int ch, h, w;
        uf_backbone_feature_shape(b, l, size, size, &ch, &h, &w);
        ok = (c.out[l] = uf_alloc(sizeof(float) * (size_t)batch * ch * h * w)) != NULL;
    }
    if (ok) {
        fill_random(x, (size_t)batch * 3 * size * size, 7);
        c.x = x;
        double t = median_time(run_backbone, &c, reps);
        char name[96];
        snprintf(name, sizeof name, "backbone %s@%d batch %d", label, size, batch);
        row(name, 1e3 * t / batch, "ms/image");
        if (batch > 1) {
            snprintf(name, sizeof name, "backbone %s@%d GFLOP/s", label, size);
            row(name, uf_backbone_flops(b, size, size) * batch / t * 1e-9, "GFLOP/s");
        }
    }
    uf_free(x);
    for (int l = 0; l < UF_BACKBONE_MAX_LEVELS; l++) uf_free(c.out[l]);
    return ok ? UF_OK : UF_ERR;
}

/* ---- full inference, flow + map ---- */
typedef struct {
    uf_model *m;
    const float *x;
    float *feats[UF_FLOW_MAX_SCALES], *z[UF_FLOW_MAX_SCALES], *amap;
    double logdet[16];
    int n, with_backbone;
} infer_ctx;

static void run_infer(void *p) {
    infer_ctx *c = p;
    const int L = c->m->cfg.flow.n_scales;
    if (c->with_backbone)
        uf_model_latents(c->m, c->x, c->n, c->z);
    else
        uf_flow_forward(c->m->flow, c->n, (const float *const *)c->feats, c->z, c->logdet, 0);
    for (int i = 0; i < c->n; i++) {
        uf_latent_view v[UF_FLOW_MAX_SCALES];
        for (int l = 0; l < L; l++) {
            uf_model_latent_shape(c->m, l, &v[l].c, &v[l].h, &v[l].w);
            v[l].z = c->z[l] + (size_t)i * v[l].c * v[l].h * v[l].w;
        }
        float score;
        uf_anomaly_map(v, L, 256, 256, c->amap + (size_t)i * 256 * 256, &score);
    }
}

/* ---- tree NFA ---- */
typedef struct {
    uf_latent_view v[UF_FLOW_MAX_SCALES];
    int L;
    float *score;
} nfa_ctx;

static void run_nfa(void *p) {
    nfa_ctx *c = p;
    uf_nfa_tree_score(c->v, c->L, 256, 256, c->score);
}

/* ---- training step on cached features ---- */
typedef struct {
    uf_flow *f;
    uf_adam adam;
    float *feats[UF_FLOW_MAX_SCALES], *z[UF_FLOW_MAX_SCALES];
    size_t zn[UF_FLOW_MAX_SCALES];
    double ld[16], gld[16];
    int batch;
} train_ctx;

static void run_train(void *p) {
    train_ctx *c = p;
    const int L = c->f->cfg.n_scales;
    uf_flow_forward(c->f, c->batch, (const float *const *)c->feats, c->z, c->ld, 1);
    uf_flow_nll(c->batch, L, c->zn, (const float *const *)c->z, c->ld, c->z, c->gld, NULL, 0);
    uf_flow_zero_grads(c->f);
    uf_flow_backward(c->f, c->batch, (const float *const *)c->z, c->gld, NULL);
    uf_adam_step(&c->adam, c->f->params, c->f->grads);
}

/* predict end to end (uf_predict, default outputs) over the images of folder dir: median ms/image. */
static int predict_row(uf_model *m, const char *dir, int reps) {
    const uf_predict_options o = {.batch = 8};
    double t[MAX_REPS];
    const int n = reps > MAX_REPS ? MAX_REPS : reps;
    if (bench_predict_runs(m, dir, &o, 1, n, t) != UF_OK) return UF_ERR;
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    row("predict end to end, default outputs, 900x900 PNG", 1e3 * t[n / 2], "ms/image");
    return UF_OK;
}

int bench_rows(const char *images, const char *predict_images, const char *weights, int reps, int with_mcait) {
    if (uf_blas_init() != UF_OK) return UF_ERR;
    const double sgemm = bench_square_rate();
    row("SGEMM 1024^3", sgemm, "GFLOP/s");
    int rc = UF_ERR;
    uf_dataset *ds = NULL;
    uf_model *m = NULL;
    uf_backbone *wrn = NULL, *mc = NULL;
    infer_ctx ic;
    memset(&ic, 0, sizeof ic);
    train_ctx tc;
    memset(&tc, 0, sizeof tc);
    float *x = NULL, *nfa_score = NULL;

    if (images) {
        if (!(ds = uf_dataset_open(images, "train"))) goto done;
        load_ctx lc = {ds, uf_alloc(sizeof(float) * 3 * 256 * 256)};
        if (!lc.x) goto done;
        double t = median_time(run_load, &lc, reps);
        uf_free(lc.x);
        row("load + resize to 256 + normalise", 1e3 * t / ds->count, "ms/image");
    }
    /* backbones */
    if (!(m = uf_model_create(UF_BACKBONE_RESNET, weights, (uf_input_geometry){256, 256, UF_FIT_STRETCH}, 4, UF_LN_REFERENCE, 1))) goto done;
    if (bench_backbone_row(m->backbone, "resnet18", 256, 1, reps) != UF_OK ||
        bench_backbone_row(m->backbone, "resnet18", 256, 8, reps) != UF_OK)
        goto done;
    if (!(wrn = uf_backbone_random("wide_resnet50_2", 2)) ||
        bench_backbone_row(wrn, "wide_resnet50_2", 256, 1, reps) != UF_OK ||
        bench_backbone_row(wrn, "wide_resnet50_2", 256, 8, (reps + 1) / 2) != UF_OK)
        goto done;
    uf_backbone_free(wrn);
    wrn = NULL;
    if (with_mcait) {
        if (!(mc = uf_backbone_random("mcait", 3)) || bench_backbone_row(mc, "mcait", 448, 1, 1) != UF_OK)
            goto done;
        uf_backbone_free(mc);
        mc = NULL;
    }
    /* full inference and flow + map, resnet18@256 */
    const int L = m->cfg.flow.n_scales;
    if (!(x = uf_alloc(sizeof(float) * 8 * 3 * 256 * 256)) || !(ic.amap = uf_alloc(sizeof(float) * 8 * 256 * 256)))
        goto done;
    fill_random(x, (size_t)8 * 3 * 256 * 256, 11);
    ic.m = m, ic.x = x;
    for (int l = 0; l < L; l++) {
        const uf_flow_config *c = &m->cfg.flow;
        size_t nf = (size_t)c->channels[l] * c->height[l] * c->width[l],
               nz = (size_t)m->flow->z_ch[l] * c->height[l] * c->width[l];
        if (!(ic.feats[l] = uf_alloc(sizeof(float) * 16 * nf)) || !(ic.z[l] = uf_alloc(sizeof(float) * 16 * nz)))
            goto done;
        fill_random(ic.feats[l], 16 * nf, 20 + (uint64_t)l);
    }
    for (int b = 1; b <= 8; b += 7) {
        char name[96];
        ic.n = b, ic.with_backbone = 1;
        snprintf(name, sizeof name, "full inference resnet18@256 batch %d", b);
        row(name, 1e3 * median_time(run_infer, &ic, reps) / b, "ms/image");
    }
    ic.n = 8, ic.with_backbone = 0;
    double t_flow = median_time(run_infer, &ic, reps);
    row("flow + map resnet18@256 batch 8", 1e3 * t_flow / 8, "ms/image");
    double flow_flops = 0; /* the flow's convolutions, forward, per image */
    for (int i = 0; i < m->flow->n_blocks; i++) {
        const uf_flow_block *b = &m->flow->blocks[i];
        const double c1 = uf_block_c1(b->c), c2 = uf_block_c2(b->c);
        flow_flops += 2.0 * b->h * b->w * b->k * b->k * c1 * (c1 + 2 * c2);
    }
    char fname[96];
    snprintf(fname, sizeof fname, "flow + map GFLOP/s (convolutions)");
    row(fname, flow_flops * 8 / t_flow * 1e-9, "GFLOP/s");
    /* tree NFA on the latents of one image of the last run */
    nfa_ctx nc = {.L = L};
    if (!(nfa_score = uf_alloc(sizeof(float) * 256 * 256))) goto done;
    for (int l = 0; l < L; l++) {
        uf_model_latent_shape(m, l, &nc.v[l].c, &nc.v[l].h, &nc.v[l].w);
        nc.v[l].z = ic.z[l];
    }
    nc.score = nfa_score;
    row("tree NFA resnet18@256", 1e3 * median_time(run_nfa, &nc, reps), "ms/image");
    if (predict_images && predict_row(m, predict_images, (reps + 1) / 2) != UF_OK) goto done;
    /* training on cached features, batch 16 */
    tc.f = m->flow, tc.batch = 16;
    if (uf_flow_alloc_grads(tc.f) != UF_OK || uf_adam_init(&tc.adam, tc.f->n_trainable, 1e-4) != UF_OK) goto done;
    for (int l = 0; l < L; l++) {
        tc.feats[l] = ic.feats[l], tc.z[l] = ic.z[l];
        tc.zn[l] = (size_t)m->flow->z_ch[l] * m->cfg.flow.height[l] * m->cfg.flow.width[l];
    }
    double t_step = median_time(run_train, &tc, reps);
    row("training resnet18@256 batch 16", 16 / t_step, "images/s");
    uf_adam_free(&tc.adam);
    rc = UF_OK;
done:
    uf_free(x), uf_free(nfa_score), uf_free(ic.amap);
    for (int l = 0; l < UF_FLOW_MAX_SCALES; l++) uf_free(ic.feats[l]), uf_free(ic.z[l]);
    uf_backbone_free(wrn);
    uf_backbone_free(mc);
    uf_model_free(m);
    uf_dataset_free(ds);
    return rc;
}
