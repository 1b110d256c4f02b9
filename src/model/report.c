#include "model/report.h"

#include <math.h>
#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/version.h"
#include "io/atomic_file.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/render.h"
#include "model/batch.h"

/* Pictures in the grid are at most this many pixels on their longer side (the model
 * input is shown as it is when smaller), so that a large model keeps the page small. */
#define SHOWN_MAX_SIDE 320

/* Colours: the curves are drawn in CURVE_RGB (checked by tools/check_report.sh), the page
 * itself uses grays only, so that the blue of the heat maps is the only blue on it. */
#define CURVE_COLOUR "#d62728"
static const uint8_t SEGMENTATION_RGB[3] = {255, 255, 255};
static const uint8_t GROUND_TRUTH_RGB[3] = {255, 0, 255}; /* magenta: not in the jet map */

/* ------------------------------------------------------------------ text */

/* s with & < > " ' escaped for HTML text and attribute values. */
static void put_text(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A metric with 4 decimals, or "n/a" when it is not defined for the data (NaN). */
static void put_metric(FILE *f, double v) {
    if (isfinite(v))
        fprintf(f, "%.4f", v);
    else
        fputs("n/a", f);
}

/* The last two components of a path ("crack/012.png"): enough to find the file. */
static const char *short_name(const char *path) {
    const char *last = strrchr(path, '/');
    if (!last) return path;
    const char *p = last;
    while (p > path && p[-1] != '/') p--;
    return p == path && *p == '/' ? p + 1 : p;
}

/* ------------------------------------------------------------------ plots */

#define PLOT_W 340
#define PLOT_H 300
#define PLOT_L 52 /* margins */
#define PLOT_R 14
#define PLOT_T 28
#define PLOT_B 44

/* An SVG line plot of curve c over [0, x_max] x [0, 1], with grid, axes and labels;
 * diagonal: also the chance line y = x. An empty curve (undefined for the data) gets a
 * note instead of a line. */
static void put_plot(FILE *f, const char *title, const char *x_label, const char *y_label, const uf_curve *c,
                     double x_max, int diagonal) {
    const double pw = PLOT_W - PLOT_L - PLOT_R, ph = PLOT_H - PLOT_T - PLOT_B;
#define PX(x) (PLOT_L + (x) / x_max * pw)
#define PY(y) (PLOT_T + (1.0 - (y)) * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\" aria-label=\"", PLOT_W, PLOT_H, PLOT_W, PLOT_H);
    put_text(f, title);
    fputs("\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n", f);
    fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"14\" text-anchor=\"middle\" font-weight=\"bold\">",
            PLOT_W / 2);
    put_text(f, title);
    fputs("</text>\n", f);
    for (int k = 0; k <= 5; k++) { /* grid and tick labels */
        const double gx = x_max * k / 5, gy = k / 5.0;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", PX(gx), PY(0.0),
                PX(gx), PY(1.0));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", PX(0.0), PY(gy),
                PX(x_max), PY(gy));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%.*f</text>\n", PX(gx),
                PY(0.0) + 15, x_max < 1.0 ? 2 : 1, gx);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%.1f</text>\n", PX(0.0) - 5,
                PY(gy) + 4, gy);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", PLOT_L,
            PLOT_T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">", PLOT_L + pw / 2, PLOT_H - 6);
    put_text(f, x_label);
    fprintf(f, "</text>\n<text x=\"14\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" "
               "transform=\"rotate(-90 14 %.1f)\">", PLOT_T + ph / 2, PLOT_T + ph / 2);
    put_text(f, y_label);
    fputs("</text>\n", f);
    if (diagonal)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" stroke-dasharray=\"4 4\"/>\n",
                PX(0.0), PY(0.0), PX(x_max), PY(x_max < 1.0 ? x_max : 1.0));
    if (c->n == 0) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\">not defined for this data"
                   "</text>\n", PLOT_L + pw / 2, PLOT_T + ph / 2);
    } else {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", CURVE_COLOUR);
        for (int i = 0; i < c->n; i++) fprintf(f, "%s%.1f,%.1f", i ? " " : "", PX(c->x[i]), PY(c->y[i]));
        fputs("\"/>\n", f);
    }
    fputs("</svg>\n", f);
#undef PX
#undef PY
}

/* ------------------------------------------------------------------ metric table */

static void put_row(FILE *f, const char *name, double v, const char *note) {
    fputs("<tr><th>", f);
    put_text(f, name);
    fputs("</th><td>", f);
    put_metric(f, v);
    fputs("</td><td>", f);
    put_text(f, note);
    fputs("</td></tr>\n", f);
}

static void put_confusion(FILE *f, const char *name, const uf_image_confusion *c) {
    fputs("<tr><th>", f);
    put_text(f, name);
    fprintf(f, "</th><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>", c->tp, c->fp, c->tn, c->fn);
    put_metric(f, c->f1);
    fputs("</td></tr>\n", f);
}

static void put_tables(FILE *f, const uf_model *m, const uf_evaluate_report *rep) {
    const uf_eval_result *r = &rep->metrics;
    fputs("<h2>Metrics</h2>\n<table>\n<tr><th>metric</th><th>value</th><th>over</th></tr>\n", f);
    char over_all[96], over_px[128];
    snprintf(over_all, sizeof over_all, "%d test images (%d anomalous)", rep->n_images, r->n_anomalous_images);
    snprintf(over_px, sizeof over_px, "%d images with pixel ground truth, %d defect regions",
             rep->n_images - rep->n_skipped, r->n_regions);
    put_row(f, "image AUROC", r->image_auroc, over_all);
    put_row(f, "pixel AUROC", r->pixel_auroc, over_px);
    put_row(f, "AUPRO (FPR \xe2\x89\xa4 0.3, official)", r->aupro, over_px);
    put_row(f, "AUPRO (textbook)", r->aupro_textbook, over_px);
    put_row(f, "mIoU, automatic threshold (NFA = 1)", r->miou_auto, over_px);
    char oracle[96];
    snprintf(oracle, sizeof oracle, "best threshold: -log10 NFA > %d", r->oracle_thr);
    put_row(f, "mIoU, oracle threshold", r->miou_oracle, oracle);
    put_row(f, "pixel F1, automatic threshold", r->f1_auto, over_px);
    fputs("</table>\n", f);

    fputs("<h2>Image-level decisions</h2>\n<table>\n<tr><th>an image is called anomalous when</th><th>TP</th>"
          "<th>FP</th><th>TN</th><th>FN</th><th>F1</th></tr>\n", f);
    put_confusion(f, "some pixel has NFA < 1 (automatic)", &rep->at_nfa);
    if (isnan(rep->score_threshold)) {
        fputs("<tr><th>score above every training image</th><td colspan=\"5\">no training split to score</td></tr>\n",
              f);
    } else {
        char name[160];
        snprintf(name, sizeof name, "score > %.6f (the largest of %d training images)", rep->score_threshold,
                 rep->n_train_scored);
        put_confusion(f, name, &rep->at_train_max);
    }
    fputs("</table>\n", f);
    fprintf(f, "<p>Good test images with a detection: %d of %d. Mean z\xc2\xb2 of the good images per scale "
               "(about 1 when the automatic threshold is calibrated):", rep->n_good_with_detection, rep->n_good);
    for (int l = 0; l < m->cfg.flow.n_scales; l++) fprintf(f, " %.3f", rep->good_mean_z2[l]);
    fputs(".", f);
    if (rep->n_skipped)
        fprintf(f, " %d anomalous images have no mask: they count in the image-level figures only.", rep->n_skipped);
    fputs("</p>\n", f);
}

/* ------------------------------------------------------------------ worst cases */

typedef struct shown {
    int index; /* into rep->images */
    float score;
} shown;

static int by_score_desc(const void *a, const void *b) {
    const float x = ((const shown *)a)->score, y = ((const shown *)b)->score;
    return (x < y) - (x > y);
}

static int by_score_asc(const void *a, const void *b) { return by_score_desc(b, a); }

/* Up to UF_REPORT_WORST images of label `label` from rep, in out: good ones (label 0)
 * by score from the highest, defective ones from the lowest. Returns how many. */
static int pick_worst(const uf_evaluate_report *rep, int label, shown *out) {
    shown *all = malloc(sizeof *all * (size_t)(rep->n_images > 0 ? rep->n_images : 1));
    if (!all) return -1;
    int n = 0;
    for (int i = 0; i < rep->n_images; i++)
        if (rep->images[i].label == label) all[n].index = i, all[n].score = rep->images[i].score, n++;
    qsort(all, (size_t)n, sizeof *all, label ? by_score_asc : by_score_desc);
    if (n > UF_REPORT_WORST) n = UF_REPORT_WORST;
    memcpy(out, all, sizeof *all * (size_t)n);
    free(all);
    return n;
}

/* The overlay of batch image i: heat map of its anomaly map (lo..hi), the automatic
 * segmentation outlined in white, the ground truth (mask_path, may be NULL) in magenta;
 * scaled down to SHOWN_MAX_SIDE. NULL + error. */
static uf_image *overlay_of(const uf_batch *b, int i, const uf_model *m, const char *mask_path, float lo,
                            float hi) {
    /* a tiled model's fields are at the image's own size, on the image as loaded */
    const int W = b->tiled ? b->orig_w[i] : b->out_w, H = b->tiled ? b->orig_h[i] : b->out_h;
    const size_t np = (size_t)W * H;
    const float *amap = b->tiled ? b->tiled_amap[i] : b->amap + i * np;
    const float *nfa = b->tiled ? b->tiled_nfa[i] : b->nfa + i * np;
    uint8_t *mask = malloc(np);
    uf_image *ov = mask ? uf_render_overlay(b->tiled ? b->original[i] : b->resized[i], amap, W, H, lo, hi, 0.5f) : NULL;
    if (!ov) goto fail;
    for (size_t p = 0; p < np; p++) mask[p] = nfa[p] > 0.0f;
    uf_render_outline(ov, mask, SEGMENTATION_RGB);
    if (mask_path) {
        uf_image *gt = uf_mask_load(mask_path, b->paths[i], b->orig_w[i], b->orig_h[i]);
        uf_image *fit = gt && b->tiled ? gt : gt ? uf_image_fit(gt, &m->cfg.input) : NULL;
        if (fit == gt) gt = NULL;
        uf_image_free(gt);
        if (!fit) goto fail;
        for (size_t p = 0; p < np; p++) mask[p] = fit->pixels[p] > 127;
        uf_image_free(fit);
        uf_render_outline(ov, mask, GROUND_TRUTH_RGB);
    }
    free(mask);
    mask = NULL;
    const int side = W > H ? W : H;
    if (side > SHOWN_MAX_SIDE) {
        int sw = (int)lround((double)W * SHOWN_MAX_SIDE / side), sh = (int)lround((double)H * SHOWN_MAX_SIDE / side);
        uf_image *small = uf_image_resize_pil_bilinear(ov, sw > 0 ? sw : 1, sh > 0 ? sh : 1);
        uf_image_free(ov);
        ov = small;
    }
    return ov;
fail:
    free(mask);
    uf_image_free(ov);
    if (!mask && !ov) uf_error("out of memory");
    return NULL;
}

/* <img> of an RGB image as an inline base64 PNG. */
static int put_png(FILE *f, const uf_image *img, const char *alt) {
    unsigned char *png;
    size_t len;
    if (uf_image_encode_png(img, &png, &len) != UF_OK) return UF_ERR;
    char *b64 = malloc(BASE64_ENCODE_RAW_LENGTH(len) + 1);
    if (!b64) {
        free(png);
        return uf_error("out of memory");
    }
    base64_encode_raw((char *)b64, len, png);
    b64[BASE64_ENCODE_RAW_LENGTH(len)] = 0;
    free(png);
    fprintf(f, "<img width=\"%d\" height=\"%d\" alt=\"", img->width, img->height);
    put_text(f, alt);
    fprintf(f, "\" src=\"data:image/png;base64,%s\">", b64);
    free(b64);
    return UF_OK;
}

/* The two worst-case grids. The chosen images are run through the model again (at its
 * input size, so that the overlay lies on the input the model saw). An image that can no
 * longer be read gets its error in the caption; the report is still written. */
static int put_worst(FILE *f, uf_model *m, const uf_evaluate_options *o, const uf_evaluate_report *rep) {
    shown pick[2 * UF_REPORT_WORST];
    const int n_good = pick_worst(rep, 0, pick);
    const int n_bad = n_good < 0 ? -1 : pick_worst(rep, 1, pick + n_good);
    if (n_good < 0 || n_bad < 0) return uf_error("out of memory");
    const int n = n_good + n_bad;
    if (n == 0) return UF_OK;
    const char *paths[2 * UF_REPORT_WORST];
    for (int k = 0; k < n; k++) paths[k] = rep->images[pick[k].index].image_path;
    const int W = m->cfg.input.width, H = m->cfg.input.height;
    uf_batch b;
    if (uf_batch_init(&b, m, n, W, H) != UF_OK) return UF_ERR;
    b.nfa_block = o->nfa_block;
    uf_batch_load(&b, m, paths, n);
    int rc = uf_batch_run(&b, m, NULL, NULL);
    /* one colour scale for every picture, so that they can be compared */
    float lo = INFINITY, hi = -INFINITY;
    const size_t np = (size_t)W * H;
    for (int k = 0; rc == UF_OK && k < n; k++) {
        if (b.error[k][0]) continue;
        const size_t nk = b.tiled ? (size_t)b.orig_w[k] * b.orig_h[k] : np;
        const float *a = b.tiled ? b.tiled_amap[k] : b.amap + k * np;
        for (size_t p = 0; p < nk; p++) lo = a[p] < lo ? a[p] : lo, hi = a[p] > hi ? a[p] : hi;
    }
    if (!(hi > lo)) lo = 0.0f, hi = 1.0f;
    if (rc == UF_OK)
        fprintf(f, "<h2>Worst cases</h2>\n<p class=\"legend\">Heat map of the anomaly map on the model input "
                   "(%dx%d, %s), one colour scale for all pictures: dark blue = %.4f, red = %.4f. White outline: "
                   "the automatic segmentation (NFA &lt; 1). Magenta outline: the ground truth.</p>\n",
                W, H, uf_fit_mode_name(m->cfg.input.fit), lo, hi);
    for (int k = 0; rc == UF_OK && k < n; k++) {
        if (k == 0 || k == n_good) {
            if (k) fputs("</div>\n", f);
            fputs(k < n_good ? "<h3>Good images with the highest scores (false positives first)</h3>\n"
                             : "<h3>Defective images with the lowest scores (false negatives first)</h3>\n",
                  f);
            fputs("<div class=\"grid\">\n", f);
        }
        const uf_evaluated_image *e = &rep->images[pick[k].index];
        fputs("<figure>", f);
        if (b.error[k][0]) {
            fputs("<div class=\"missing\">", f);
            put_text(f, b.error[k]);
            fputs("</div>", f);
        } else {
            uf_image *ov = overlay_of(&b, k, m, e->mask_path, lo, hi);
            rc = ov ? put_png(f, ov, short_name(e->image_path)) : UF_ERR;
            uf_image_free(ov);
        }
        fputs("<figcaption>", f);
        put_text(f, short_name(e->image_path));
        fprintf(f, "<br>score %.4f", e->score);
        if (!isnan(rep->score_threshold))
            fputs(e->score > rep->score_threshold ? ", above every training image" : ", within the training scores",
                  f);
        fputs(e->detected ? "<br>detected (NFA &lt; 1)" : "<br>no detection", f);
        fputs("</figcaption></figure>\n", f);
    }
    if (rc == UF_OK) fputs("</div>\n", f);
    uf_batch_free(&b);
    return rc;
}

/* ------------------------------------------------------------------ page */

static const char STYLE[] =
    "body{font-family:sans-serif;margin:24px;color:#222;background:#fff;max-width:1400px}"
    "h1{font-size:22px}h2{font-size:18px;margin-top:28px}h3{font-size:15px}"
    "table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #bbb;padding:4px 10px;text-align:left}"
    "td{font-variant-numeric:tabular-nums}.plots{display:flex;flex-wrap:wrap;gap:16px}"
    ".grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:min-content}"
    "figcaption{font-size:12px;margin-top:4px;overflow-wrap:anywhere}"
    ".missing{width:200px;height:120px;border:1px dashed #999;font-size:12px;padding:6px}"
    ".legend{font-size:13px}code{background:#eee;padding:1px 4px}";

int uf_report_write_html(uf_model *m, const uf_evaluate_options *o, const uf_evaluate_report *rep,
                         const char *path) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return uf_error("%s: out of memory", path);
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>uflow test report"
               "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>uflow test report</h1>\n<p>", STYLE);
    fputs("Data: <code>", f);
    if (o->data_dir) {
        put_text(f, o->data_dir);
    } else {
        put_text(f, o->normal_dir);
        if (o->abnormal_dir) fputs(" + ", f), put_text(f, o->abnormal_dir);
    }
    fputs("</code>. Model: ", f);
    put_text(f, m->cfg.backbone);
    int ew, eh;
    uf_evaluate_grid(m, o->eval_size, &ew, &eh);
    char grid[64];
    if (uf_evaluate_at_image_size(m, o))
        snprintf(grid, sizeof grid, "at each image's own size");
    else
        snprintf(grid, sizeof grid, "on %dx%d maps", ew, eh);
    fprintf(f, " at %dx%d (%s), %d epochs; NFA: %s. Metrics %s. uflow %s.</p>\n", m->cfg.input.width,
            m->cfg.input.height, uf_fit_mode_name(m->cfg.input.fit), m->cfg.epochs_done,
            o->nfa_block ? "block" : "tree", grid, UFLOW_VERSION);
    put_tables(f, m, rep);
    fputs("<h2>Curves</h2>\n<div class=\"plots\">\n", f);
    put_plot(f, "Image ROC", "false positive rate", "true positive rate", &rep->image_roc, 1.0, 1);
    put_plot(f, "Pixel ROC", "false positive rate", "true positive rate", &rep->metrics.pixel_roc, 1.0, 1);
    put_plot(f, "PRO (per-region overlap)", "false positive rate", "mean region overlap", &rep->metrics.pro,
             UF_AUPRO_FPR_LIMIT, 0);
    fputs("</div>\n", f);
    int rc = put_worst(f, m, o, rep);
    fputs("</body>\n</html>\n", f);
    if (fclose(f) != 0 && rc == UF_OK) rc = uf_error("%s: out of memory", path);
    if (rc == UF_OK) {
        rc = uf_write_file_atomic(path, text, len);
    } else {
        uf_error_prefix("%s", path);
    }
    free(text);
    return rc;
}
