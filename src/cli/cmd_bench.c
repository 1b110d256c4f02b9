#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "cli/commands.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: uflow bench <what>\n"
            "  gemm      SGEMM GFLOP/s, 1024^3 and U-Flow-shaped problems\n"
            "  flow      flow training step at resnet18@256 shapes, batch 16: images/s, conv GFLOP/s vs SGEMM\n"
            "  train     the training pipeline at resnet18@256: images/s, share of time in SGEMM\n"
            "  backbone  ResNet-18 / Wide-ResNet-50-2 images/s at 256x256 (batch 8, 2 threads) and\n"
            "            the GFLOP/s of their convolutions next to SGEMM's\n");
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "gemm")) return bench_gemm(1) > 0.0 ? 0 : cli_fail("bench", NULL);
    if (!strcmp(argv[1], "flow")) return bench_flow(1, 16) > 0.0 ? 0 : cli_fail("bench", NULL);
    if (!strcmp(argv[1], "train")) return bench_train(1, argc > 2 ? argv[2] : NULL) == 0 ? 0 : cli_fail("bench", NULL);
    if (!strcmp(argv[1], "backbone")) return bench_backbone(1) == 0 ? 0 : cli_fail("bench", NULL);
    fprintf(stderr, "uflow bench: error: unknown benchmark '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
