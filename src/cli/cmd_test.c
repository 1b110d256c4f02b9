/* uflow test: evaluate a model on a labelled test split and print the metrics. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/error.h"
#include "model/evaluate.h"
#include "model/report.h"

void cli_print_metrics(const uf_model *m, const uf_evaluate_report *rep) {
    const uf_eval_result *r = &rep->metrics;
    printf("images %d (%d anomalous, %d GT regions)\n", rep->n_images, r->n_anomalous_images, r->n_regions);
    printf("  image AUROC          %8.4f\n", r->image_auroc);
    printf("  pixel AUROC          %8.4f\n", r->pixel_auroc);
    printf("  AUPRO (FPR <= 0.3)   %8.4f   (textbook %.4f)\n", r->aupro, r->aupro_textbook);
    printf("  mIoU, NFA = 1 (auto) %8.4f\n", r->miou_auto);
    printf("  mIoU, oracle         %8.4f   (threshold %d on -log10 NFA)\n", r->miou_oracle, r->oracle_thr);
    printf("  F1, NFA = 1 (auto)   %8.4f\n", r->f1_auto);
    printf("  good images with a detection: %d of %d\n", rep->n_good_with_detection, rep->n_good);
    const uf_image_confusion *a = &rep->at_nfa, *t = &rep->at_train_max;
    printf("  image level, NFA = 1:  F1 %.4f  (TP %d, FP %d, TN %d, FN %d)\n", a->f1, a->tp, a->fp, a->tn, a->fn);
    if (isnan(rep->score_threshold))
        printf("  image level, score above every training image: no train split to score\n");
    else
        printf("  image level, score > %.6f (the largest of %d training images):  F1 %.4f  (TP %d, FP %d, TN %d, "
               "FN %d)\n", rep->score_threshold, rep->n_train_scored, t->f1, t->tp, t->fp, t->tn, t->fn);
    if (rep->n_skipped)
        printf("  %d anomalous images without a mask: in the image-level figures only\n", rep->n_skipped);
    printf("  mean z^2 of good images per scale (1 = calibrated):");
    for (int l = 0; l < m->cfg.flow.n_scales; l++) printf(" %.3f", rep->good_mean_z2[l]);
    printf("\n  time: load %.1f s, backbone+flow %.1f s, map+NFA %.1f s, metrics %.1f s, total %.1f s "
           "(%.1f ms/image)\n",
           rep->t_load, rep->t_latents, rep->t_detect, rep->t_metrics, rep->t_total,
           rep->n_images ? 1000.0 * rep->t_total / rep->n_images : 0.0);
}

int cmd_test(int argc, char **argv) {
    uf_evaluate_options o = {.eval_size = 256, .batch = 8, .verbose = 1};
    const char *model = NULL, *weights = NULL, *backbone = NULL, *out = NULL, *nfa = "tree", *precision = "fp32";
    int threads = 0;
    double map_sigma = -1.0;
    const cli_opt opts[] = {
        {"model", OPT_STRING, &model, 0, 0, "model file written by 'uflow train'"},
        {"data", OPT_STRING, &o.data_dir, 0, 0,
         "category folder: MVTec-AD, MVTec 3D-AD, BTAD or VisA layout (uses its test split and masks)"},
        {"normal", OPT_STRING, &o.normal_dir, 0, 0, "instead of --data: folder of normal test images"},
        {"abnormal", OPT_STRING, &o.abnormal_dir, 0, 0, "with --normal: folder of defective test images"},
        {"masks", OPT_STRING, &o.mask_dir, 0, 0, "with --abnormal: their masks (same name, or <stem>.png)"},
        {"train", OPT_STRING, &o.train_dir, 0, 0,
         "training images for the score threshold (default: --data's train split; none with --normal)"},
        {"output", OPT_STRING, &out, 0, 0, "folder for metrics.json and report.html (-o)"},
        {"weights", OPT_STRING, &weights, 0, 0,
         "backbone weights (default: the paths recorded in the model); mcait: M48,S24"},
        {"backbone", OPT_STRING, &backbone, 0, 0, "the model's backbone (resnet18 | wide_resnet50_2 | mcait), checked"},
        {"eval-size", OPT_INT, &o.eval_size, 8, 4096, "size of the maps and masks the metrics use"},
        {"eval-native", OPT_FLAG, &o.eval_native, 0, 0,
         "score at each image's own size (the maps resized from the eval-size grid; tiled models always are)"},
        {"batch", OPT_INT, &o.batch, 1, 256, "images per batch"},
        {"nfa", OPT_STRING, &nfa, 0, 0, "tree (current official) | block (older binomial NFA)"},
        {"precision", OPT_STRING, &precision, 0, 0, "the backbone's arithmetic: fp32 | bf16 | auto (as uflow predict)"},
        {"map-sigma", OPT_DOUBLE, &map_sigma, 0, UF_MAP_SIGMA_MAX,
         "the anomaly map's smoothing in input pixels instead of the model's (0: the spec's map)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
    };
    char *pos[1];
    int npos;
    int r = cli_parse(argc, argv,
                      "--model MODEL (--data DIR | --normal DIR [--abnormal DIR [--masks DIR]]) [-o OUTDIR] [options]",
                      opts,
                      (int)(sizeof opts / sizeof *opts), pos, &npos, 0);
    if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
    if (!model || !o.data_dir == !o.normal_dir || (o.data_dir && (o.abnormal_dir || o.mask_dir)) ||
        (o.mask_dir && !o.abnormal_dir)) {
        fprintf(stderr, "uflow test: error: --model and either --data or --normal [--abnormal [--masks]] are "
                        "required (see 'uflow test --help')\n");
        return 2;
    }
    if (strcmp(nfa, "tree") && strcmp(nfa, "block")) return cli_fail("test", "--nfa must be tree or block");
    o.nfa_block = !strcmp(nfa, "block");
    if (out && cli_make_dir("test", out)) return 1;
    if (uf_blas_init() != UF_OK) return cli_fail("test", NULL);
    uf_set_num_threads(threads);
    uf_model *m = cli_load_model("test", model, weights, backbone, precision);
    if (!m) return 1;
    if (map_sigma >= 0) m->cfg.map_sigma = map_sigma;
    uf_evaluate_report rep;
    int rc = uf_evaluate(m, &o, &rep);
    if (rc == UF_OK) {
        cli_print_metrics(m, &rep);
        if (out) {
            char path[4200];
            snprintf(path, sizeof path, "%s/metrics.json", out);
            rc = uf_evaluate_write_json(m, &o, &rep, path);
            if (rc == UF_OK) printf("metrics written to %s\n", path);
            snprintf(path, sizeof path, "%s/report.html", out);
            if (rc == UF_OK) rc = uf_report_write_html(m, &o, &rep, path);
            if (rc == UF_OK) printf("report written to %s\n", path);
        }
    }
    uf_evaluate_report_free(&rep);
    uf_model_free(m);
    return rc == UF_OK ? 0 : cli_fail("test", NULL);
}
