/* uflow demo: the whole method on a built-in data set, with no input needed.
 * Generates a seeded synthetic textile category with defects and masks,
 * trains U-Flow with the shipped ResNet-18, evaluates it, and writes maps and
 * masks for the test images. */
#include <stdio.h>
#include <string.h>

#include "backbone/shipped.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/timer.h"
#include "io/synth.h"
#include "model/evaluate.h"
#include "model/predict.h"
#include "model/report.h"
#include "model/train.h"

int cmd_demo(int argc, char **argv) {
    uf_train_options to = uf_train_default_options();
    const char *out = "uflow-demo";
    const char *size = "256";
    double seed = 0;
    int threads = 0, keep_aspect = 0;
    to.epochs = 12;
    to.batch = 8;
    to.checkpoint_every = 0;
    to.weights = uf_shipped_weights();
    const cli_opt opts[] = {
        {"output", OPT_STRING, &out, 0, 0, "folder for the data set, model, metrics and maps (-o)"},
        {"weights", OPT_STRING, &to.weights, 0, 0, "backbone weights"},
        {"epochs", OPT_INT, &to.epochs, 1, 100000, "training epochs"},
        {"size", OPT_STRING, &size, 0, 0,
         "image and model size N or WxH, e.g. 512x128 strips (cut from larger renders; multiples of 16)"},
        {"keep-aspect", OPT_FLAG, &keep_aspect, 0, 0, "train with --keep-aspect"},
        {"seed", OPT_DOUBLE, &seed, 0, 9007199254740992.0, "seed of the data set and the training"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
    };
    char *pos[1];
    int npos;
    int r = cli_parse(argc, argv, "[-o OUTDIR] [options]", opts, (int)(sizeof opts / sizeof *opts), pos, &npos, 0);
    if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
    int width, height;
    if (uf_parse_size(size, &width, &height) != UF_OK) {
        fprintf(stderr, "uflow demo: error: --size: %s\n", uf_last_error());
        return 2;
    }
    to.input = (uf_input_geometry){width, height, keep_aspect ? UF_FIT_KEEP_ASPECT : UF_FIT_STRETCH};
    if (cli_make_dir("demo", out)) return 1;
    if (uf_blas_init() != UF_OK) return cli_fail("demo", NULL);
    uf_set_num_threads(threads);
    double t0 = uf_now();
    char data[4200], model[4200], preds[4200], metrics[4200], report[4200];
    snprintf(data, sizeof data, "%s/data", out);
    snprintf(model, sizeof model, "%s/model.safetensors", out);
    snprintf(preds, sizeof preds, "%s/predictions", out);
    snprintf(metrics, sizeof metrics, "%s/metrics.json", out);
    snprintf(report, sizeof report, "%s/report.html", out);

    printf("[1/4] writing a synthetic textile data set to %s (seed %.0f, %dx%d): %d normal training images, "
           "%d normal and %d defective test images with masks\n",
           data, seed, width, height, UF_SYNTH_DEMO_TRAIN, UF_SYNTH_DEMO_TEST_GOOD, UF_SYNTH_DEMO_TEST_DEFECT);
    fflush(stdout);
    if (uf_synth_write_category_wh(data, (uint64_t)seed, UF_SYNTH_DEMO_TRAIN, UF_SYNTH_DEMO_TEST_GOOD,
                                   UF_SYNTH_DEMO_TEST_DEFECT, width, height) != UF_OK)
        return cli_fail("demo", NULL);

    printf("[2/4] training U-Flow on %s/train/good with %s\n", data, to.weights);
    fflush(stdout);
    to.data_dir = data;
    to.out_path = model;
    to.seed = (uint64_t)seed;
    uf_train_report tr;
    if (uf_train(&to, &tr) != UF_OK) return cli_fail("demo", NULL);

    printf("[3/4] evaluating on %s/test\n", data);
    fflush(stdout);
    uf_model *m = uf_model_load(model, NULL, NULL, NULL);
    if (!m) return cli_fail("demo", NULL);
    uf_evaluate_options eo = {.data_dir = data, .eval_size = 256, .batch = 8, .verbose = 0};
    uf_evaluate_report er;
    int rc = uf_evaluate(m, &eo, &er);
    if (rc == UF_OK) rc = uf_evaluate_write_json(m, &eo, &er, metrics);
    if (rc == UF_OK) rc = uf_report_write_html(m, &eo, &er, report);
    if (rc == UF_OK) cli_print_metrics(m, &er);
    uf_evaluate_report_free(&er);
    if (rc != UF_OK) {
        uf_model_free(m);
        return cli_fail("demo", NULL);
    }

    printf("[4/4] writing anomaly maps, heat-map overlays and NFA masks of the test images to %s\n", preds);
    fflush(stdout);
    char test_dir[4300];
    snprintf(test_dir, sizeof test_dir, "%s/test", data);
    uf_predict_options po = {.out_dir = preds, .batch = 8, .verbose = 0};
    uf_predict_report pr;
    rc = cli_make_dir("demo", preds) ? UF_ERR : UF_OK;
    if (rc == UF_OK) {
        /* every defect folder and good/ */
        const char *folders[1 + UF_SYNTH_N_DEFECTS];
        char buf[1 + UF_SYNTH_N_DEFECTS][4400];
        int nf = 0;
        snprintf(buf[nf], sizeof buf[nf], "%s/good", test_dir);
        folders[nf] = buf[nf];
        nf++;
        for (int d = 0; d < UF_SYNTH_N_DEFECTS; d++, nf++) {
            snprintf(buf[nf], sizeof buf[nf], "%s/%s", test_dir, uf_synth_defect_name(d));
            folders[nf] = buf[nf];
        }
        rc = uf_predict(m, folders, nf, &po, &pr);
    }
    uf_model_free(m);
    if (rc != UF_OK) return cli_fail("demo", NULL);
    printf("done in %.0f s: model %s, metrics %s, report %s, maps in %s (%d of %d test images with a "
           "detection)\n", uf_now() - t0, model, metrics, report, preds, pr.n_anomalous, pr.n_images);
    return 0;
}
