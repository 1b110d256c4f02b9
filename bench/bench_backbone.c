/* ResNet extractor throughput (images/s) and the GFLOP/s its convolutions
 * reach, next to the SGEMM GFLOP/s measured in the same run. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <sys/resource.h>

#include "backbone/shipped.h"
#include "backbone/backbone.h"
#include "backbone/resnet.h"
#include "bench.h"
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
        /* direct-convolution FLOPs over the time: Winograd does fewer multiplies, so it can pass 100% */
        printf("  %-16s convolutions %6.1f GFLOP/s = %3.0f%% of SGEMM 1024^3 measured alongside (%.1f GFLOP/s)%s\n",
               "", rate, 100.0 * rate / sgemm, sgemm,
               uf_resnet_get_engine(m) == UF_RESNET_DNNL ? "; direct-equivalent FLOPs, 3x3 by Winograd where oneDNN has it" : "");
        printf("  %-16s %.1f%% of the forward time outside the convolutions\n", "",
               100.0 * (1.0 - best_conv / best_total));
    }
    uf_free(x);
    for (int l = 0; l < UF_RESNET_LEVELS; l++) uf_free(f.out[l]);
    return rate;
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* MS-CaiT (M48 at 448 + S24 at 224): seconds per image, GFLOP/s of the whole
 * forward next to SGEMM measured in between, and the process's peak memory. */
static int bench_mcait(const char *weights) {
    char files[UF_BACKBONE_MAX_FILES][1024];
    uf_mcait *m = NULL;
    int rc = UF_ERR;
    if (weights && uf_backbone_weight_files(UF_BACKBONE_MCAIT, weights, files) < 0) return UF_ERR;
    double t0 = uf_now();
    m = weights ? uf_mcait_load(files[0], files[1]) : uf_mcait_random(1);
    if (!m) return UF_ERR;
    const double t_load = uf_now() - t0;
    const int S = uf_mcait_input_size(m);
    printf("MS-CaiT %s (%s kernels, %d threads), %s weights (%s in %.1f s)\n", uf_mcait_arch(m), uf_blas_corename(),
           uf_get_num_threads(), weights ? "real" : "random", weights ? "mapped" : "generated", t_load);
    bench_square sq;
    if (bench_square_init(&sq, 1024) != UF_OK) goto done;
    float *x = uf_alloc(sizeof(float) * 3 * S * S), *out[2] = {0};
    int ok = x != NULL;
    for (int l = 0; l < 2 && ok; l++) {
        int c, h, w;
        uf_mcait_feature_shape(m, l, &c, &h, &w);
        ok = (out[l] = uf_alloc(sizeof(float) * (size_t)c * h * w)) != NULL;
    }
    uint32_t s = 12345;
    for (int i = 0; ok && i < 3 * S * S; i++) {
        s ^= s << 13, s ^= s >> 17, s ^= s << 5;
        x[i] = (float)(s >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    ok = ok && uf_mcait_forward(m, x, 1, out) == UF_OK; /* warm-up: page faults, scratch */
    double best = 1e30, best_gemm = 1e30;
    uf_cait_timing split[2];
    for (int rep = 0; ok && rep < 3; rep++) {
        double a = uf_now();
        for (int k = 0; k < 5; k++) bench_square_run(&sq);
        double b = uf_now();
        ok = uf_mcait_forward(m, x, 1, out) == UF_OK;
        double c = uf_now();
        if ((b - a) / 5 < best_gemm) best_gemm = (b - a) / 5;
        if (c - b < best) {
            best = c - b;
            for (int l = 0; l < 2; l++) split[l] = uf_cait_last_timing(m->model[l]);
        }
    }
    if (ok) {
        const double flops = uf_mcait_flops(m), sgemm = bench_square_gflops(&sq, best_gemm), rate = flops / best * 1e-9;
        printf("  %dx%d, 1 image per forward: %.2f s/image, %.1f GFLOP/image (matrix products)\n", S, S, best,
               flops * 1e-9);
        printf("  forward %.1f GFLOP/s = %.0f%% of SGEMM 1024^3 measured alongside (%.1f GFLOP/s)\n", rate,
               100.0 * rate / sgemm, sgemm);
        for (int l = 0; l < 2; l++) {
            const uf_cait_timing *t = &split[l];
            printf("  %-13s dense layers %.2f s (%.0f GFLOP/s, %.0f%% of SGEMM), attention %.2f s (%.0f GFLOP/s, "
                   "%.0f%%), other %.2f s\n",
                   uf_cait_arch(m->model[l]), t->dense_s, t->dense_flops / t->dense_s * 1e-9,
                   100.0 * t->dense_flops / t->dense_s * 1e-9 / sgemm, t->attention_s,
                   t->attention_flops / t->attention_s * 1e-9, 100.0 * t->attention_flops / t->attention_s * 1e-9 / sgemm,
                   t->other_s);
        }
        printf("  peak memory (RSS) %.0f MiB, of which used weights %.0f MiB (%zu + %zu parameters)\n", peak_rss_mib(),
               4.0 * (uf_mcait_used_params(m, 0) + uf_mcait_used_params(m, 1)) / 1048576.0, uf_mcait_used_params(m, 0),
               uf_mcait_used_params(m, 1));
        rc = UF_OK;
    }
    /* --precision bf16 in the same run, where the CPU has it: time and distance to FP32's features */
    if (ok && uf_resnet_bf16_supported()) {
        float *ref[2] = {0};
        size_t cnt[2] = {0, 0};
        for (int l = 0; l < 2 && ok; l++) {
            int c, h, w;
            uf_mcait_feature_shape(m, l, &c, &h, &w);
            cnt[l] = (size_t)c * h * w;
            ok = (ref[l] = uf_alloc(sizeof(float) * cnt[l])) != NULL;
            if (ok) memcpy(ref[l], out[l], sizeof(float) * cnt[l]);
        }
        ok = ok && uf_mcait_set_bf16(m, 1) == UF_OK && uf_mcait_forward(m, x, 1, out) == UF_OK; /* warm-up */
        /* FP32 and bf16 forwards in turns, best of 3 each: on a shared host whose speed drifts
         * both see the same spells (one phase after the other, the ratio moved by 0.2 between
         * runs). The bf16 forward last, so that out holds its features. */
        double best16 = 1e30, best32 = 1e30;
        uf_cait_timing split16 = {0};
        for (int rep = 0; ok && rep < 3; rep++) {
            ok = uf_mcait_set_bf16(m, 0) == UF_OK;
            double a = uf_now();
            ok = ok && uf_mcait_forward(m, x, 1, out) == UF_OK;
            if (uf_now() - a < best32) best32 = uf_now() - a;
            ok = ok && uf_mcait_set_bf16(m, 1) == UF_OK;
            a = uf_now();
            ok = ok && uf_mcait_forward(m, x, 1, out) == UF_OK;
            if (uf_now() - a < best16) best16 = uf_now() - a, split16 = uf_cait_last_timing(m->model[0]);
        }
        if (ok && uf_mcait_get_bf16(m)) {
            double err = 0, norm = 0;
            for (int l = 0; l < 2; l++)
                for (size_t i = 0; i < cnt[l]; i++) {
                    const double d = (double)out[l][i] - ref[l][i];
                    err += d * d, norm += (double)ref[l][i] * ref[l][i];
                }
            printf("  bf16 (dense layers and attention): %.2f s/image against FP32's %.2f in turns: %.2fx; features' "
                   "relative RMS difference to FP32 %.2e; peak memory %.0f MiB\n",
                   best16, best32, best32 / best16, sqrt(err / (norm > 0 ? norm : 1)), peak_rss_mib());
            printf("  bf16 %-13s dense layers %.2f s, attention %.2f s, other %.2f s\n", uf_cait_arch(m->model[0]),
                   split16.dense_s, split16.attention_s, split16.other_s);
        } else if (ok) {
            printf("  bf16: not run (oneDNN fell back to FP32)\n");
        }
        uf_free(ref[0]), uf_free(ref[1]);
        if (!ok) rc = UF_ERR;
    }
    uf_free(x), uf_free(out[0]), uf_free(out[1]);
    bench_square_free(&sq);
done:
    uf_mcait_free(m);
    return rc;
}

int bench_backbone(int verbose, const char *backbone, const char *weights) {
    (void)verbose;
    if (uf_blas_init() != UF_OK) return UF_ERR;
    if (backbone && !strcmp(backbone, "mcait")) return bench_mcait(weights);
    if (backbone && strcmp(backbone, "resnet"))
        return uf_error("bench backbone: --backbone must be resnet (ResNet-18 and Wide-ResNet-50-2) or mcait");
    if (uf_blas_init() != UF_OK) return UF_ERR;
    const int batch = 8, size = 256;
    bench_square sq;
    uf_resnet *r18 = NULL, *wrn = NULL;
    int rc = UF_ERR;
    if (bench_square_init(&sq, 1024) != UF_OK) return UF_ERR;
    printf("ResNet up to layer3 (%s kernels, %d threads)\n", uf_blas_corename(), uf_get_num_threads());
    r18 = uf_resnet_load(uf_shipped_weights());
    const char *r18_label = "resnet18";
    if (!r18) {
        printf("  (%s: %s; using random weights)\n", uf_shipped_weights(), uf_last_error());
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
