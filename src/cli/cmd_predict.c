/* uflow predict: anomaly maps, scores and NFA masks for images or folders. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/error.h"
#include "model/predict.h"

/* The bad-input policy, for --help (also in the README). */
#define PREDICT_POLICY                                                                                        \
    "Bad images: every readable image is processed. One that cannot be read is reported on stderr and gets\n" \
    "a row with an error field in results.csv / results.jsonl; the exit status is 1 if any failed. A folder\n"  \
    "is walked recursively for .png, .jpg, .jpeg and .bmp files (outputs mirror its tree under -o); a note\n"    \
    "says how many other entries were ignored and why."

int cmd_predict(int argc, char **argv) {
    uf_predict_options o = {.batch = 8, .verbose = 1};
    const char *model = NULL, *weights = NULL, *backbone = NULL, *format = "png16", *out_size = "input",
               *labels = NULL, *outputs = "map,mask,overlay", *overlay_format = "png",
               *precision = "fp32";
    int threads = 0;
    const cli_opt opts[] = {
        {"model", OPT_STRING, &model, 0, 0, "model file written by 'uflow train'"},
        {"output", OPT_STRING, &o.out_dir, 0, 0, "output folder (-o), created if missing"},
        {"weights", OPT_STRING, &weights, 0, 0,
         "backbone weights (default: the paths recorded in the model); mcait: M48,S24"},
        {"backbone", OPT_STRING, &backbone, 0, 0, "the model's backbone (resnet18 | wide_resnet50_2 | mcait), checked"},
        {"outputs", OPT_STRING, &outputs, 0, 0,
         "files per image: any of map,mask,overlay,nfa (nfa: <stem>_nfa.safetensors, the -log10 NFA field), "
         "or none (results.csv / .jsonl only)"},
        {"map-format", OPT_STRING, &format, 0, 0, "png16 | safetensors"},
        {"overlay-format", OPT_STRING, &overlay_format, 0, 0, "png | jpeg (libjpeg-turbo, quality 90: smaller, faster)"},
        {"output-size", OPT_STRING, &out_size, 0, 0,
         "input (maps, masks and overlays at each image's own size) | model (at the model's input size; a tiled "
         "model always writes at the image's size)"},
        {"labels", OPT_STRING, &labels, 0, 0,
         "good=DIR,defect=DIR[,...]: folders of known label, predicted too; prints image AUROC, F1 and the "
         "confusion at NFA = 1"},
        {"precision", OPT_STRING, &precision, 0, 0,
         "the backbone's arithmetic: fp32 | bf16 (ResNet on CPUs with AVX512-BF16 or AMX) | auto (bf16 where it "
         "runs)"},
        {"batch", OPT_INT, &o.batch, 1, 256, "images per batch"},
        {"writers", OPT_INT, &o.workers, 0, 1024, "threads that encode and write the outputs (0: one per core)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
    };
    int cap = argc > 1 ? argc : 1;
    char **inputs = malloc(sizeof(char *) * cap);
    if (!inputs) return cli_fail("predict", "out of memory");
    int n_inputs;
    int r = cli_parse(argc, argv, "--model MODEL -o OUTDIR IMAGE|DIR... [options]\n\n" PREDICT_POLICY, opts,
                      (int)(sizeof opts / sizeof *opts), inputs, &n_inputs, cap);
    if (r != CLI_PARSED) {
        free(inputs);
        return r == CLI_HELP ? 0 : 2;
    }
    int rc = 2;
    uf_predict_label lab[UF_PREDICT_MAX_LABELS];
    char *lab_text = labels ? strdup(labels) : NULL;
    if (labels && !lab_text) {
        rc = cli_fail("predict", "out of memory");
        goto done;
    }
    /* good=DIR,defect=DIR: good / normal / ok label 0; defect / anomalous / bad / ko label 1 */
    for (char *save = NULL, *item = lab_text ? strtok_r(lab_text, ",", &save) : NULL; item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || !eq[1] || o.n_labels == UF_PREDICT_MAX_LABELS) {
            fprintf(stderr, "uflow predict: error: --labels wants good=DIR,defect=DIR (at most %d folders), not '%s'\n",
                    UF_PREDICT_MAX_LABELS, item);
            goto done;
        }
        *eq = '\0';
        int a = !strcmp(item, "defect") || !strcmp(item, "anomalous") || !strcmp(item, "bad") || !strcmp(item, "ko");
        if (!a && strcmp(item, "good") && strcmp(item, "normal") && strcmp(item, "ok")) {
            fprintf(stderr, "uflow predict: error: --labels: '%s' is neither good (normal, ok) nor defect "
                            "(anomalous, bad, ko)\n", item);
            goto done;
        }
        lab[o.n_labels++] = (uf_predict_label){eq + 1, a};
    }
    o.labels = lab;
    if (!model || !o.out_dir || n_inputs + o.n_labels == 0) {
        fprintf(stderr, "uflow predict: error: --model, -o and at least one image or folder are required\n");
        goto done;
    }
    if (strcmp(format, "png16") && strcmp(format, "safetensors")) {
        rc = cli_fail("predict", "--map-format must be png16 or safetensors");
        goto done;
    }
    o.map_safetensors = !strcmp(format, "safetensors");
    if (strcmp(out_size, "input") && strcmp(out_size, "model")) {
        rc = cli_fail("predict", "--output-size must be input or model");
        goto done;
    }
    o.model_size_outputs = !strcmp(out_size, "model");
    if ((rc = cli_output_options("predict", outputs, overlay_format, &o)) != 0) goto done;
    rc = 1;
    if (cli_make_dir("predict", o.out_dir)) goto done;
    if (uf_blas_init() != UF_OK) {
        cli_fail("predict", NULL);
        goto done;
    }
    uf_set_num_threads(threads);
    cli_keep_freed_memory();
    uf_model *m = cli_load_model("predict", model, weights, backbone, precision);
    if (!m) goto done;
    uf_predict_report rep;
    if (uf_predict(m, (const char *const *)inputs, n_inputs, &o, &rep) == UF_OK) {
        printf("%d images, %d with a detection (NFA < 1); %.1f ms/image; results in %s/results.csv\n",
               rep.n_images, rep.n_anomalous, rep.n_images ? 1000.0 * rep.seconds / rep.n_images : 0.0, o.out_dir);
        rc = 0;
        if (o.n_labels) {
            const uf_image_confusion *c = &rep.at_nfa;
            printf("labelled images %d: image AUROC %.4f; at NFA = 1: F1 %.4f (TP %d, FP %d, TN %d, FN %d)\n",
                   rep.n_labelled, rep.image_auroc, c->f1, c->tp, c->fp, c->tn, c->fn);
        }
        if (rep.n_failed) {
            fprintf(stderr, "uflow predict: error: %d of %d images could not be processed (rows with an error in "
                            "%s/results.csv)\n",
                    rep.n_failed, rep.n_images, o.out_dir);
            rc = 1;
        }
    } else {
        cli_fail("predict", NULL);
    }
    uf_model_free(m);
done:
    free(lab_text);
    free(inputs);
    return rc;
}
