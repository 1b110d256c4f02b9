/* ResNet extractor throughput (images/s) and the GFLOP/s its convolutions
 * reach, next to the SGEMM GFLOP/s measured in the same run. */
#include <stdio.h>
#include <string.h>

#include "backbone/resnet.h"
#include "bench.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/timer.h"


typedef struct {
    uf_resnet *m;
    const float *x;
    float *out[UF_RESNET_LEVELS];
    int n, size, failed;
} fwd_ctx;

/* Benchmarks one model; returns the conv GFLOP/s (0 on error). The SGEMM reference is re-measured
 * between the forwards (best of each): on a shared machine both then see the same quiet moments. */
static double bench_model(uf_resnet *m, const char *label, int n, int size, bench_square *sq) {
    fwd_ctx f = {.m = m, .n = n, .size = size};
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
        /* warm-up: arena, page faults, BLAS buffers */
        ok = uf_resnet_forward(m, x, n, size, size, f.out) == UF_OK;
    }
    double best_total = 1e30, best_conv = 1e30, best_gemm = 1e30, start = uf_now();
    for (int rep = 0; ok && (rep < 4 || uf_now() - start < 3.0); rep++) {
        double t0 = uf_now();
        bench_square_run(sq);
        double t1 = uf_now();
        ok = uf_resnet_forward(m, x, n, size, size, f.out) == UF_OK;
        double t2 = uf_now();
        if (t1 - t0 < best_gemm) best_gemm = t1 - t0;
        if (t2 - t1 < best_total) best_total = t2 - t1;
        double conv = uf_resnet_last_timing(m).conv_s;
        if (conv < best_conv) best_conv = conv;
    }
    if (ok) {
        double flops = uf_resnet_conv_flops(m, size, size) * n;
        double sgemm = bench_square_gflops(sq, best_gemm);
        rate = flops / best_conv * 1e-9;
        printf("  %-16s %dx%d batch %d: %7.1f images/s (%6.1f ms/image), %5.2f GFLOP/image\n", label, size, size, n,
               n / best_total, 1e3 * best_total / n, flops / n * 1e-9);
        printf("  %-16s convolutions %6.1f GFLOP/s = %3.0f%% of SGEMM 1024^3 measured alongside (%.1f GFLOP/s)\n", "",
               rate, 100.0 * rate / sgemm, sgemm);
        printf("  %-16s %.1f%% of the forward time outside the convolutions\n", "",
               100.0 * (1.0 - best_conv / best_total));
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
    bench_square sq;
    uf_resnet *r18 = NULL, *wrn = NULL;
    int rc = UF_ERR;
    if (bench_square_init(&sq, 1024) != UF_OK) return UF_ERR;
    printf("ResNet up to layer3 (%s kernels, %d threads)\n", uf_blas_corename(), uf_get_num_threads());
    r18 = uf_resnet_load(cli_default_weights());
    const char *r18_label = "resnet18";
    if (!r18) {
        printf("  (%s: %s; using random weights)\n", cli_default_weights(), uf_last_error());
        r18 = uf_resnet_random("resnet18", 1);
        r18_label = "resnet18 (random)";
    }
    wrn = uf_resnet_random("wide_resnet50_2", 2);
    if (!r18 || !wrn || bench_model(r18, r18_label, batch, size, &sq) <= 0.0 ||
        bench_model(wrn, "wide_resnet50_2", batch, size, &sq) <= 0.0)
        goto done;
    printf("  (wide_resnet50_2 has random weights: no real weights are shipped)\n");
    rc = UF_OK;
done:
    uf_resnet_free(r18);
    uf_resnet_free(wrn);
    bench_square_free(&sq);
    return rc;
}
