/* ResNet extractor throughput (images/s) and the GFLOP/s its convolutions
 * reach, next to the SGEMM GFLOP/s measured in the same run. */
#include <stdio.h>
#include <string.h>

#include "backbone/resnet.h"
#include "bench.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/timer.h"

#define SHIPPED "models/resnet18-in1k-l3-bnfolded.safetensors"

typedef struct {
    float *a, *b, *c;
    int n;
} square_ctx;

static void run_square(void *ctx) {
    square_ctx *s = ctx;
    uf_sgemm(false, false, s->n, s->n, s->n, 1.0f, s->a, s->n, s->b, s->n, 0.0f, s->c, s->n);
}

/* SGEMM GFLOP/s at n^3 (0 on error). */
static double sgemm_rate(int n) {
    square_ctx s = {uf_calloc((size_t)n * n, 4), uf_calloc((size_t)n * n, 4), uf_calloc((size_t)n * n, 4), n};
    double rate = 0.0;
    if (s.a && s.b && s.c) {
        for (size_t i = 0; i < (size_t)n * n; i++) s.a[i] = (float)(i % 17) * 0.01f, s.b[i] = (float)(i % 13) * 0.01f;
        run_square(&s);
        rate = 2.0 * n * n * (double)n / bench_best_time(run_square, &s, 1.0, 3) * 1e-9;
    }
    uf_free(s.a), uf_free(s.b), uf_free(s.c);
    return rate;
}

typedef struct {
    uf_resnet *m;
    const float *x;
    float *out[UF_RESNET_LEVELS];
    int n, size, failed;
    double best_conv_s, best_total_s;
} fwd_ctx;

static void run_forward(void *ctx) {
    fwd_ctx *f = ctx;
    double t0 = uf_now();
    if (uf_resnet_forward(f->m, f->x, f->n, f->size, f->size, f->out) != UF_OK) f->failed = 1;
    double dt = uf_now() - t0;
    if (dt < f->best_total_s) f->best_total_s = dt, f->best_conv_s = uf_resnet_last_timing(f->m).conv_s;
}

/* Benchmarks one model; returns the conv GFLOP/s (0 on error). */
static double bench_model(uf_resnet *m, const char *label, int n, int size, double sgemm) {
    fwd_ctx f = {.m = m, .n = n, .size = size, .best_conv_s = 1e30, .best_total_s = 1e30};
    float *x = uf_alloc(sizeof(float) * (size_t)n * 3 * size * size);
    double rate = 0.0;
    int ok = x != NULL;
    for (int l = 0; l < UF_RESNET_LEVELS && ok; l++) {
        int c, fh, fw;
        uf_resnet_feature_shape(m, l, size, size, &c, &fh, &fw);
        ok = (f.out[l] = uf_alloc(sizeof(float) * (size_t)n * c * fh * fw)) != NULL;
    }
    if (ok) {
        uint32_t s = 12345;
        for (size_t i = 0; i < (size_t)n * 3 * size * size; i++) {
            s ^= s << 13, s ^= s >> 17, s ^= s << 5;
            x[i] = (float)(s >> 8) / 16777216.0f * 4.0f - 2.0f;
        }
        f.x = x;
        run_forward(&f); /* warm-up: arena, page faults, BLAS buffers */
        f.best_conv_s = f.best_total_s = 1e30;
        bench_best_time(run_forward, &f, 2.0, 3);
        ok = !f.failed;
    }
    if (ok) {
        double flops = uf_resnet_conv_flops(m, size, size) * n;
        rate = flops / f.best_conv_s * 1e-9;
        printf("  %-16s %dx%d batch %d: %7.1f images/s (%6.1f ms/image), %5.2f GFLOP/image\n", label, size, size, n,
               n / f.best_total_s, 1e3 * f.best_total_s / n, flops / n * 1e-9);
        printf("  %-16s convolutions %6.1f GFLOP/s = %3.0f%% of SGEMM (%4.1f%% of the time outside convolutions)\n",
               "", rate, 100.0 * rate / sgemm, 100.0 * (1.0 - f.best_conv_s / f.best_total_s));
    }
    uf_free(x);
    for (int l = 0; l < UF_RESNET_LEVELS; l++) uf_free(f.out[l]);
    return rate;
}

int bench_backbone(int verbose) {
    (void)verbose;
    if (uf_blas_init() != UF_OK) return UF_ERR;
    const int threads = 2, batch = 8, size = 256;
    uf_set_num_threads(threads);
    double sgemm = sgemm_rate(1024);
    if (sgemm <= 0.0) return UF_ERR;
    printf("ResNet up to layer3 (%s kernels, %d threads); SGEMM 1024^3: %.1f GFLOP/s\n", uf_blas_corename(),
           uf_get_num_threads(), sgemm);
    uf_resnet *r18 = uf_resnet_load(SHIPPED);
    const char *r18_label = "resnet18";
    if (!r18) {
        printf("  (%s: %s; using random weights)\n", SHIPPED, uf_last_error());
        r18 = uf_resnet_random("resnet18", 1);
        r18_label = "resnet18 (random)";
    }
    uf_resnet *wrn = uf_resnet_random("wide_resnet50_2", 2);
    int rc = UF_OK;
    if (!r18 || !wrn || bench_model(r18, r18_label, batch, size, sgemm) <= 0.0 ||
        bench_model(wrn, "wide_resnet50_2", batch, size, sgemm) <= 0.0)
        rc = UF_ERR;
    if (wrn) printf("  (wide_resnet50_2 has random weights: no real weights are shipped)\n");
    /* On a shared machine the two SGEMM measurements differ when other work ran meanwhile. */
    if (rc == UF_OK) printf("SGEMM 1024^3 again after the models: %.1f GFLOP/s\n", sgemm_rate(1024));
    uf_resnet_free(r18);
    uf_resnet_free(wrn);
    return rc;
}
