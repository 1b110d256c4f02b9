/* The U-shaped flow at resnet18@256 shapes (stages 84x64x64, 160x32x32, 256x16x16, 4 blocks
 * each): training-step images/s and the convolutions' GFLOP/s, next to SGEMM measured in the
 * same run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "core/blas.h"
#include "core/conv.h"
#include "core/conv_blocked.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "flow/adam.h"
#include "flow/graph.h"
#include "flow/loss.h"

typedef struct {
    uf_flow *m;
    uf_adam adam;
    int batch;
    float *f[3], *z[3];
    size_t zn[3];
    double *ld, *gld;
    int train;
} flow_ctx;

static void run_step(void *p) {
    flow_ctx *c = p;
    uf_flow_forward(c->m, c->batch, (const float *const *)c->f, c->z, c->ld, c->train);
    if (!c->train) return;
    uf_flow_nll(c->batch, 3, c->zn, (const float *const *)c->z, c->ld, c->z, c->gld, NULL, 0);
    uf_flow_zero_grads(c->m);
    uf_flow_backward(c->m, c->batch, (const float *const *)c->z, c->gld, NULL);
    uf_adam_step(&c->adam, c->m->params, c->m->grads);
}

/* All the flow's convolutions alone: forward conv1, conv2, backward conv2, conv1 (with dx). */
typedef struct {
    const uf_flow *m;
    int batch;
    float *x, *y, *dx, *dw, *db, *work;
} conv_ctx;

static void run_convs(void *p) {
    conv_ctx *c = p;
    for (int i = 0; i < c->m->n_blocks; i++) {
        const uf_flow_block *b = &c->m->blocks[i];
        int c1 = uf_block_c1(b->c), c2 = uf_block_c2(b->c);
        uf_block_params prm;
        uf_flow_block_params(c->m, i, &prm);
        uf_conv_geom g1 = {c->batch, c1, b->h, b->w, c1, b->k, 1, b->k / 2};
        uf_conv_geom g2 = {c->batch, c1, b->h, b->w, 2 * c2, b->k, 1, b->k / 2};
        uf_conv2d_forward(&g1, c->x, prm.w1, prm.b1, c->y, c->work);
        uf_conv2d_forward(&g2, c->y, prm.w2, prm.b2, c->x, c->work);
        uf_conv2d_backward(&g2, c->y, prm.w2, c->x, c->dx, c->dw, c->db, c->work);
        uf_conv2d_backward(&g1, c->x, prm.w1, c->dx, c->y, c->dw, c->db, c->work);
    }
}

double bench_flow(int verbose, int batch) {
    if (uf_blas_init() != UF_OK) return 0.0;
    /* SGEMM reference, same run */
    double gemm = bench_square_rate();
    if (gemm <= 0.0) return 0.0;

    uf_flow_config cfg = uf_flow_default_config();
    cfg.n_scales = 3;
    cfg.ln_mode = UF_LN_REFERENCE;
    const int ch[3] = {64, 128, 256};
    for (int l = 0; l < 3; l++) cfg.channels[l] = ch[l], cfg.height[l] = cfg.width[l] = 64 >> l;
    flow_ctx c;
    memset(&c, 0, sizeof c);
    c.batch = batch;
    c.m = uf_flow_new(&cfg, 1);
    if (!c.m || uf_flow_alloc_grads(c.m) != UF_OK || uf_adam_init(&c.adam, c.m->n_trainable, 1e-4) != UF_OK)
        return 0.0;
    double conv_flops = 0; /* forward, per batch */
    size_t max_act = 0;
    for (int i = 0; i < c.m->n_blocks; i++) {
        const uf_flow_block *b = &c.m->blocks[i];
        double c1 = uf_block_c1(b->c), c2 = uf_block_c2(b->c), pix = (double)batch * b->h * b->w;
        conv_flops += 2.0 * pix * b->k * b->k * c1 * (c1 + 2 * c2);
        size_t a = (size_t)batch * b->c * b->h * b->w;
        if (a > max_act) max_act = a;
    }
    srand(3);
    for (int l = 0; l < 3; l++) {
        size_t n = (size_t)batch * ch[l] * cfg.height[l] * cfg.width[l];
        c.zn[l] = (size_t)c.m->z_ch[l] * cfg.height[l] * cfg.width[l];
        c.f[l] = uf_alloc(4 * n);
        c.z[l] = uf_alloc(4 * (size_t)batch * c.zn[l]);
        if (!c.f[l] || !c.z[l]) return 0.0;
        for (size_t i = 0; i < n; i++) c.f[l][i] = (float)rand() / RAND_MAX;
    }
    c.ld = uf_calloc((size_t)batch, 8), c.gld = uf_calloc((size_t)batch, 8);

    conv_ctx cc = {c.m, batch, uf_calloc(max_act, 4), uf_calloc(max_act, 4), uf_calloc(max_act, 4),
                   uf_calloc(256 * 256 * 9, 4), uf_calloc(256, 4), NULL};
    size_t ws = 0;
    for (int i = 0; i < c.m->n_blocks; i++) {
        const uf_flow_block *b = &c.m->blocks[i];
        uf_conv_geom g = {batch, uf_block_c1(b->c), b->h, b->w, 2 * uf_block_c2(b->c), b->k, 1, b->k / 2};
        size_t w = uf_conv2d_workspace(&g);
        if (w > ws) ws = w;
    }
    cc.work = uf_calloc(ws, 4);
    if (!cc.x || !cc.y || !cc.dx || !cc.dw || !cc.db || !cc.work) return 0.0;
    for (size_t i = 0; i < max_act; i++) cc.x[i] = (float)(i % 11) * 0.1f;
    run_convs(&cc);
    double t_conv = bench_best_time(run_convs, &cc, 1.0, 2);

    /* the flow as it runs (channel-blocked subnets where oneDNN has them, 3x3 by Winograd where
     * there is a kernel: oneDNN's with AVX-512, ours with AVX2), then blocked with direct kernels only (when Winograd ran), then the plain layout */
    const uf_conv_geom probe = {batch, 42, 64, 64, 84, 3, 1, 1};
    const int wino = uf_cblk_supported(&probe, 1) && uf_cblk_winograd(&probe, 1);
    double t_inf[3] = {0}, t_train[3] = {0};
    for (int v = 0; v < 3; v++) {
        if (v == 1 && !wino) continue;
        uf_cblk_set_enabled(v < 2);
        uf_cblk_set_winograd(v == 0);
        c.train = 0;
        run_step(&c);
        t_inf[v] = bench_best_time(run_step, &c, 1.0, 2);
        c.train = 1;
        run_step(&c);
        t_train[v] = bench_best_time(run_step, &c, 1.0, 2);
    }
    uf_cblk_set_enabled(1);
    uf_cblk_set_winograd(1);
    double conv_rate = 3 * conv_flops / t_conv * 1e-9, train_rate = 3 * conv_flops / t_train[0] * 1e-9;
    if (verbose) {
        printf("U-Flow flow, resnet18@256 shapes (stages 84x64x64, 160x32x32, 256x16x16; 4 blocks each), batch %d, "
               "%d threads, %s kernels\n",
               batch, uf_get_num_threads(), uf_blas_corename());
        printf("  SGEMM 1024^3                           %8.1f GFLOP/s\n", gemm);
        printf("  flow convolutions alone, plain layout  %8.1f GFLOP/s  (%.0f%% of SGEMM), %.1f GFLOP per batch\n",
               conv_rate, 100 * conv_rate / gemm, 3 * conv_flops * 1e-9);
        printf("  training step (fwd+loss+bwd+Adam)      %8.3f s/batch  %6.1f images/s  conv-equivalent %.1f GFLOP/s "
               "(%.0f%% of SGEMM)\n",
               t_train[0], batch / t_train[0], train_rate, 100 * train_rate / gemm);
        printf("  inference forward                      %8.3f s/batch  %6.1f images/s\n", t_inf[0], batch / t_inf[0]);
        if (wino)
            printf("  the same with direct kernels only (Winograd off): training %.1f images/s, inference %.1f "
                   "images/s\n", batch / t_train[1], batch / t_inf[1]);
        printf("  the same on the plain layout (blocked subnets off): training %.1f images/s, inference %.1f images/s\n"
               "  channel-blocked subnets: %s (lanes %d); 3x3 by Winograd: %s\n",
               batch / t_train[2], batch / t_inf[2], uf_cblk_lanes() ? "on" : "not available", uf_cblk_lanes(),
               wino ? (uf_cblk_lanes() == 8 ? "yes (uflow's AVX2 kernels)" : "yes (oneDNN's)")
                    : "no (off, or no kernel for this CPU)");
        printf("  training activations %.0f MB, parameters %zu\n",
               uf_flow_activation_floats(c.m, batch, 1) * 4.0 / (1 << 20), c.m->n_params);
    }
    for (int l = 0; l < 3; l++) uf_free(c.f[l]), uf_free(c.z[l]);
    uf_free(c.ld), uf_free(c.gld);
    uf_free(cc.x), uf_free(cc.y), uf_free(cc.dx), uf_free(cc.dw), uf_free(cc.db), uf_free(cc.work);
    uf_adam_free(&c.adam);
    uf_flow_free(c.m);
    return train_rate / gemm;
}
