#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backbone/backbone.h"
#include "backbone/shipped.h"
#include "bench.h"
#include "cli/args.h"
#include "core/blas.h"
#include "core/error.h"
#include "cli/commands.h"
#include "knn.h"
#include "model/model.h"
#include "model/predict.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: uflow bench <what>\n"
            "  gemm      SGEMM GFLOP/s, 1024^3 and U-Flow-shaped problems\n"
            "  flow      flow training step at resnet18@256 shapes, batch 16: images/s, conv GFLOP/s vs SGEMM\n"
            "  train     the training pipeline at resnet18@256: images/s, share of time in SGEMM\n"
            "  backbone  ResNet-18 / Wide-ResNet-50-2 images/s at 256x256 (batch 8) and the GFLOP/s of\n"
            "            their convolutions next to SGEMM's\n"
            "  backbone --backbone mcait [--weights M48,S24]\n"
            "            MS-CaiT s/image at 448, GFLOP/s next to SGEMM's, peak memory (random\n"
            "            weights without --weights)\n"
            "  rows      the uflow side of make bench-compare: one \"row<TAB>value<TAB>unit\" line per\n"
            "            measurement (uflow bench rows --help)\n"
            "  predict   end-to-end images/s of uflow predict (900x900 PNGs, default outputs) next to the\n"
            "            model-only images/s of the same run (uflow bench predict --help)\n"
            "  serve     requests/s and p50 / p99 latency of uflow serve on loopback at 1, 4 and 8\n"
            "            concurrent clients (900x900 PNGs; uflow bench serve --help)\n"
            "  knn       --model M --data DIR: a nearest-neighbour score (PatchCore-style, no coreset) on\n"
            "            the model's backbone features, with uflow test's metrics (uflow bench knn --help)\n"
            "options: --threads N (default: all cores)\n");
}

static int bench_predict_command(int argc, char **argv) {
    const char *model = NULL, *images = NULL, *outputs = "map,mask,overlay", *overlay_format = "png",
               *precision = "fp32";
    int threads = 0, n = 48, size = 900, reps = 3;
    uf_predict_options o = {.batch = 8};
    const cli_opt opts[] = {
        {"model", OPT_STRING, &model, 0, 0, "model file (default: an untrained ResNet-18 U-Flow at 256)"},
        {"images", OPT_STRING, &images, 0, 0, "folder of images (default: generated PNGs)"},
        {"count", OPT_INT, &n, 1, 10000, "generated images (6 batches: the pipeline's start and end weigh little)"},
        {"size", OPT_INT, &size, 32, 8192, "side of the generated images"},
        {"reps", OPT_INT, &reps, 1, 20, "turns of a model-only and an end-to-end run (the best of each counts)"},
        {"batch", OPT_INT, &o.batch, 1, 256, "images per batch"},
        {"outputs", OPT_STRING, &outputs, 0, 0, "as uflow predict --outputs (default: map,mask,overlay)"},
        {"overlay-format", OPT_STRING, &overlay_format, 0, 0, "png | jpeg"},
        {"precision", OPT_STRING, &precision, 0, 0, "the backbone's arithmetic: fp32 | bf16 | auto"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
    };
    char *pos[1];
    int npos;
    argv[1] = (char *)"bench predict";
    int r = cli_parse(argc - 1, argv + 1, "[options]   (end to end against the model alone, same run)", opts,
                      (int)(sizeof opts / sizeof *opts), pos, &npos, 0);
    if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
    if (cli_output_options("bench predict", outputs, overlay_format, &o) != 0) return 1;
    if (uf_blas_init() != UF_OK) return cli_fail("bench predict", NULL);
    uf_set_num_threads(threads);
    cli_keep_freed_memory(); /* as uflow predict does */
    uf_precision prec;
    if (uf_precision_parse(precision, &prec) != UF_OK) return cli_fail("bench predict", NULL);
    return bench_predict(model, images, n, size, reps, prec, &o) == UF_OK ? 0 : cli_fail("bench predict", NULL);
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "gemm")) return bench_gemm(1) > 0.0 ? 0 : cli_fail("bench", NULL);
    if (!strcmp(argv[1], "flow")) return bench_flow(1, 16) > 0.0 ? 0 : cli_fail("bench", NULL);
    if (!strcmp(argv[1], "train")) return bench_train(1, argc > 2 ? argv[2] : NULL) == 0 ? 0 : cli_fail("bench", NULL);
    if (!strcmp(argv[1], "backbone")) {
        const char *backbone = NULL, *weights = NULL;
        int threads = 0;
        const cli_opt opts[] = {
            {"backbone", OPT_STRING, &backbone, 0, 0, "resnet | mcait"},
            {"weights", OPT_STRING, &weights, 0, 0, "mcait: M48.safetensors,S24.safetensors (default: random)"},
            {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
        };
        char *pos[1];
        int npos;
        argv[1] = (char *)"bench backbone"; /* the name usage messages show */
        int r = cli_parse(argc - 1, argv + 1, "[--backbone resnet|mcait] [--weights M48,S24] [--threads N]", opts,
                          (int)(sizeof opts / sizeof *opts), pos, &npos, 0);
        if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
        if (uf_blas_init() != UF_OK) return cli_fail("bench", NULL);
        uf_set_num_threads(threads);
        return bench_backbone(1, backbone, weights) == 0 ? 0 : cli_fail("bench", NULL);
    }
    if (!strcmp(argv[1], "rows")) {
        const char *images = NULL, *predict_images = NULL, *weights = NULL;
        int threads = 0, reps = 5, mcait = 0;
        const cli_opt opts[] = {
            {"images", OPT_STRING, &images, 0, 0, "folder of images for the loading row"},
            {"predict-images", OPT_STRING, &predict_images, 0, 0,
             "folder of large images for the end-to-end predict row (default outputs)"},
            {"weights", OPT_STRING, &weights, 0, 0, "ResNet-18 weights (default: the shipped file)"},
            {"reps", OPT_INT, &reps, 1, 15, "repeats per row (medians)"},
            {"mcait", OPT_FLAG, &mcait, 0, 0, "also MS-CaiT at 448 (about 3 s per image)"},
            {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
        };
        char *pos[1];
        int npos;
        argv[1] = (char *)"bench rows";
        int r = cli_parse(argc - 1, argv + 1, "[options]   (the uflow side of make bench-compare)", opts,
                          (int)(sizeof opts / sizeof *opts), pos, &npos, 0);
        if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
        if (uf_blas_init() != UF_OK) return cli_fail("bench", NULL);
        uf_set_num_threads(threads);
        return bench_rows(images, predict_images, weights ? weights : uf_shipped_weights(), reps, mcait) == UF_OK
                   ? 0
                   : cli_fail("bench", NULL);
    }
    if (!strcmp(argv[1], "predict")) return bench_predict_command(argc, argv);
    if (!strcmp(argv[1], "serve")) {
        const char *model = NULL;
        int size = 900, per_level = 48, workers = 1, threads = 0;
        const cli_opt opts[] = {
            {"model", OPT_STRING, &model, 0, 0, "model file (default: an untrained ResNet-18 U-Flow at 256)"},
            {"size", OPT_INT, &size, 32, 8192, "side of the generated PNGs"},
            {"requests", OPT_INT, &per_level, 8, 100000, "requests per concurrency level"},
            {"workers", OPT_INT, &workers, 1, 64, "the service's --workers"},
            {"threads", OPT_INT, &threads, 0, 1024, "the service's --threads (0: cores / workers)"},
        };
        char *pos[1];
        int npos;
        argv[1] = (char *)"bench serve";
        int r = cli_parse(argc - 1, argv + 1, "[options]   (uflow serve on loopback: 1, 4, 8 clients)", opts,
                          (int)(sizeof opts / sizeof *opts), pos, &npos, 0);
        if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
        if (!threads) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            threads = cores > workers ? (int)(cores / workers) : 1;
        }
        return bench_serve(model, size, per_level, workers, threads) == UF_OK ? 0 : cli_fail("bench serve", NULL);
    }
    if (!strcmp(argv[1], "knn")) {
        bench_knn_options o = bench_knn_default_options();
        const char *model = NULL, *json = NULL;
        int threads = 0;
        const cli_opt opts[] = {
            {"model", OPT_STRING, &model, 0, 0, "model file written by 'uflow train' (its backbone and input size)"},
            {"data", OPT_STRING, &o.data_dir, 0, 0, "category folder: its train split is the bank, its test split scored"},
            {"max-train-features", OPT_INT, &o.max_train_features, 1, 1e8,
             "memory bank size: a seeded random subset of the training locations"},
            {"eval-size", OPT_INT, &o.eval_size, 8, 4096, "size of the maps and masks the metrics use"},
            {"json", OPT_STRING, &json, 0, 0, "also write the metrics to this JSON file"},
            {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
        };
        char *pos[1];
        int npos;
        argv[1] = (char *)"bench knn";
        int r = cli_parse(argc - 1, argv + 1,
                          "--model MODEL --data DIR [--max-train-features N] [--eval-size N] [--json OUT.json]\n\n"
                          "Nearest-neighbour anomaly scores on the same backbone features as the model's flow\n"
                          "(scales 0 and 1, 3x3 mean; distance to the nearest training feature, PatchCore without\n"
                          "the coreset), scored like uflow test: image AUROC, pixel AUROC, AUPRO.",
                          opts, (int)(sizeof opts / sizeof *opts), pos, &npos, 0);
        if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
        if (!model || !o.data_dir) {
            fprintf(stderr, "uflow bench knn: error: --model and --data are required (see 'uflow bench knn --help')\n");
            return 2;
        }
        if (uf_blas_init() != UF_OK) return cli_fail("bench knn", NULL);
        uf_set_num_threads(threads);
        uf_model *m = cli_load_model("bench knn", model, NULL, NULL, NULL);
        if (!m) return 1;
        bench_knn_result res;
        int rc = bench_knn(m, &o, &res);
        uf_model_free(m);
        if (rc != UF_OK) return cli_fail("bench knn", NULL);
        printf("knn: image AUROC %.4f  pixel AUROC %.4f  AUPRO %.4f  (%d train features, %d test images, %.1f s)\n",
               res.image_auroc, res.pixel_auroc, res.aupro, res.n_train_features, res.n_test_images, res.seconds);
        if (json && bench_knn_write_json(&res, &o, json) != UF_OK) return cli_fail("bench knn", NULL);
        return 0;
    }
    fprintf(stderr, "uflow bench: error: unknown benchmark '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
