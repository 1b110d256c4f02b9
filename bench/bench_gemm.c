/* SGEMM throughput on square and U-Flow-shaped problems. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/timer.h"

double bench_best_time(void (*fn)(void *), void *ctx, double min_seconds, int min_reps) {
    double best = 1e30, start = uf_now();
    for (int rep = 0; rep < min_reps || uf_now() - start < min_seconds; rep++) {
        double t0 = uf_now();
        fn(ctx);
        double dt = uf_now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

int bench_square_init(bench_square *s, int n) {
    s->n = n;
    s->a = uf_alloc(sizeof(float) * n * n);
    s->b = uf_alloc(sizeof(float) * n * n);
    s->c = uf_alloc(sizeof(float) * n * n);
    if (!s->a || !s->b || !s->c) {
        bench_square_free(s);
        return UF_ERR;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) s->a[i] = (float)(i % 17) * 0.01f, s->b[i] = (float)(i % 13) * 0.01f;
    bench_square_run(s); /* warm-up */
    return UF_OK;
}

void bench_square_free(bench_square *s) {
    uf_free(s->a), uf_free(s->b), uf_free(s->c);
    s->a = s->b = s->c = NULL;
}

void bench_square_run(void *ctx) {
    bench_square *s = ctx;
    uf_sgemm(false, false, s->n, s->n, s->n, 1.0f, s->a, s->n, s->b, s->n, 0.0f, s->c, s->n);
}

double bench_square_gflops(const bench_square *s, double seconds) {
    return 2e-9 * s->n * (double)s->n * s->n / seconds;
}

double bench_square_rate(void) {
    bench_square s;
    if (uf_blas_init() != UF_OK || bench_square_init(&s, 1024) != UF_OK) return 0.0;
    double rate = bench_square_gflops(&s, bench_best_time(bench_square_run, &s, 1.0, 3));
    bench_square_free(&s);
    return rate;
}

typedef struct {
    const char *what;
    int m, n, k;
    float *a, *b, *c;
} gemm_case;

static void run_gemm(void *ctx) {
    gemm_case *g = ctx;
    uf_sgemm(false, false, g->m, g->n, g->k, 1.0f, g->a, g->k, g->b, g->n, 0.0f, g->c, g->n);
}

double bench_gemm(int verbose) {
    if (uf_blas_init() != UF_OK) return 0.0;
    /* (M, N, K) = (out channels, batch*H*W, in channels*k*k) of convolutions uflow runs. */
    gemm_case cases[] = {
        {"square 1024^3", 1024, 1024, 1024, 0, 0, 0},
        {"resnet18 layer1 3x3 conv, 8x64x64", 64, 8 * 64 * 64, 64 * 9, 0, 0, 0},
        {"resnet18 layer3 3x3 conv, 8x16x16", 256, 8 * 16 * 16, 256 * 9, 0, 0, 0},
        {"flow scale1 3x3 conv 42->42, 16x64x64", 42, 16 * 64 * 64, 42 * 9, 0, 0, 0},
        {"flow scale2 3x3 conv 80->80, 16x32x32", 80, 16 * 32 * 32, 80 * 9, 0, 0, 0},
        {"flow scale3 3x3 conv 128->128, 16x16x16", 128, 16 * 16 * 16, 128 * 9, 0, 0, 0},
    };
    double square = 0.0;
    if (verbose) printf("SGEMM (%s kernels, %d threads)\n", uf_blas_corename(), uf_get_num_threads());
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gemm_case *g = &cases[i];
        g->a = uf_calloc((size_t)g->m * g->k, sizeof(float));
        g->b = uf_calloc((size_t)g->k * g->n, sizeof(float));
        g->c = uf_calloc((size_t)g->m * g->n, sizeof(float));
        if (!g->a || !g->b || !g->c) return 0.0;
        for (size_t j = 0; j < (size_t)g->m * g->k; j++) g->a[j] = (float)(j % 17) * 0.01f;
        for (size_t j = 0; j < (size_t)g->k * g->n; j++) g->b[j] = (float)(j % 13) * 0.01f;
        run_gemm(g); /* warm-up */
        double t = bench_best_time(run_gemm, g, 1.0, 3);
        double gflops = 2.0 * g->m * g->n * g->k / t * 1e-9;
        if (i == 0) square = gflops;
        if (verbose)
            printf("  %-42s M=%-5d N=%-7d K=%-5d %8.1f GFLOP/s\n", g->what, g->m, g->n, g->k, gflops);
        uf_free(g->a), uf_free(g->b), uf_free(g->c);
    }
    return square;
}
