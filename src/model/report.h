/* report.h - the HTML report of `uflow test -o DIR` (DIR/report.html).
 *
 * One self-contained file (no scripts, no external links; pictures inline as SVG
 * and base64 PNG) that any browser shows: the metric table, the image ROC, pixel
 * ROC and PRO curves of the evaluation, and a grid of the worst cases as heat-map
 * overlays (anomaly map, automatic NFA segmentation outlined in white, ground truth
 * in magenta): the good test images with the highest scores (false positives first)
 * and the defective ones with the lowest (false negatives). The overlays are made by
 * running the model again on just those images, at its input size.
 * tools/check_report.sh renders a report in headless Chromium and checks the page.
 */
#ifndef UF_MODEL_REPORT_H
#define UF_MODEL_REPORT_H

#include "model/evaluate.h"

/* Images of each kind in the worst-case grid. */
#define UF_REPORT_WORST 8

/* Writes the report of an evaluation (rep from uf_evaluate(m, o, ...)) to path, atomically. */
int uf_report_write_html(uf_model *m, const uf_evaluate_options *o, const uf_evaluate_report *rep,
                         const char *path);

#endif
