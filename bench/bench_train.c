/* The real training pipeline (uf_train) at resnet18@256 on a generated
 * synthetic category: feature-caching and training images/s, the share of
 * training time spent in SGEMM and the GFLOP/s SGEMM reached there, next to
 * SGEMM 1024^3 measured in the same run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backbone/shipped.h"
#include "bench.h"
#include "core/blas.h"
#include "core/error.h"
#include "io/synth.h"
#include "model/train.h"

#define BENCH_TRAIN_IMAGES 48

int bench_train(int verbose, const char *weights) {
    char dir[] = "/tmp/uflow-bench-XXXXXX";
    if (!mkdtemp(dir)) return uf_error("cannot create a temporary folder");
    char data[64], model[64];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    int rc = uf_synth_write_category(data, 1, BENCH_TRAIN_IMAGES, 1, 1);
    double square = rc == UF_OK ? bench_square_rate() : 0.0;
    uf_train_options o = uf_train_default_options();
    o.data_dir = data;
    o.out_path = model;
    o.weights = weights ? weights : uf_shipped_weights();
    o.epochs = 2;
    o.batch = 16;
    o.checkpoint_every = 0;
    o.verbose = 0;
    uf_train_report r;
    if (rc == UF_OK) rc = uf_train(&o, &r);
    if (rc == UF_OK && verbose) {
        printf("training resnet18@256, batch %d, %d images, %d epochs, %d threads, %s kernels\n", o.batch,
               r.n_images, r.epochs_done, uf_get_num_threads(), uf_blas_corename());
        printf("  SGEMM 1024^3 (same run)        %8.1f GFLOP/s\n", square);
        printf("  feature caching (backbone)     %8.1f images/s\n", r.n_images / r.feature_seconds);
        printf("  training (flow fwd+bwd+Adam)   %8.1f images/s\n", r.images_per_second);
        printf("  time in SGEMM during training  %8.0f %%  (SGEMM ran at %.1f GFLOP/s = %.0f%% of 1024^3)\n",
               100.0 * r.gemm_seconds / r.train_seconds, r.gemm_flops / r.gemm_seconds * 1e-9,
               100.0 * r.gemm_flops / r.gemm_seconds * 1e-9 / square);
    }
    bench_remove_tree(dir);
    return rc;
}
