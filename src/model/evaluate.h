/* evaluate.h - `uflow test`: a trained model on a labelled test split
 * (MVTec-AD or MVTec 3D-AD layout), with the metrics of spec 8 computed as the
 * official code does (maps and masks at eval_size x eval_size, 256 there; for a
 * non-square model eval_size is the longer side).
 * Masks are optional: without them (good / defective folders only, the usual case in
 * industry) the image-level metrics are still computed over every test image, and
 * the pixel-level ones over the images that have pixel ground truth (NaN if none).
 */
#ifndef UF_MODEL_EVALUATE_H
#define UF_MODEL_EVALUATE_H

#include <stdint.h>

#include "eval/metrics.h"
#include "model/model.h"

typedef struct uf_evaluate_options {
    const char *data_dir;     /* a category folder, or NULL with the three below (anomalib's Folder) */
    const char *normal_dir;   /* normal test images */
    const char *abnormal_dir; /* defective test images (may be NULL) */
    const char *mask_dir;     /* their masks (may be NULL) */
    const char *train_dir;    /* NULL: data_dir's train split; for the score threshold */
    int eval_size;   /* 256: the maps and masks of the metrics are eval_size on the longer side of the
                        model's input, the shorter side in proportion (eval_size^2 for square models) */
    int eval_native; /* 1: maps and masks at each image's own size instead (the maps resized bilinearly
                        from the eval_size grid); a tiled model is always scored so */
    int batch;       /* images per backbone+flow call, 8 */
    int nfa_block;   /* 1: older block NFA (spec 7.2) instead of the tree NFA */
    int verbose;
} uf_evaluate_options;

/* One test image as scored: what the report's worst-case grid is chosen from. */
typedef struct uf_evaluated_image {
    char *image_path, *mask_path; /* owned by the report; mask_path NULL without pixel ground truth */
    float score;                  /* image score: max of the anomaly map */
    uint8_t label;                /* 1 anomalous (its folder), 0 good */
    uint8_t detected;             /* some pixel with NFA < 1 */
} uf_evaluated_image;

typedef struct uf_evaluate_report {
    uf_eval_result metrics;          /* pixel metrics over the images with pixel ground truth; image_auroc
                                      * over ALL test images (with or without masks) */
    int n_images, n_skipped;         /* n_images: all test images; n_skipped: anomalous images without a
                                      * mask (in the image metrics, not in the pixel ones) */
    uf_image_confusion at_nfa;       /* anomalous = some pixel with NFA < 1 */
    uf_image_confusion at_train_max; /* anomalous = score above every training image's (score_threshold) */
    double score_threshold;          /* the largest training-image score; NaN when there is no train split */
    int n_train_scored;
    int n_good, n_good_with_detection;
    double good_mean_z2[UF_FLOW_MAX_SCALES]; /* mean z^2 per scale over good images: ~1 when calibrated */
    uf_curve image_roc;              /* ROC of the image scores over all test images */
    uf_evaluated_image *images;      /* (n_images), in test-set order */
    double t_load, t_latents, t_detect, t_metrics, t_total;
} uf_evaluate_report;

/* Fills rep (release it with uf_evaluate_report_free, also after an error). */
int uf_evaluate(uf_model *m, const uf_evaluate_options *o, uf_evaluate_report *rep);
void uf_evaluate_report_free(uf_evaluate_report *rep);

/* 1 when `test` scores m at each image's own size: a tiled model, or o->eval_native. */
int uf_evaluate_at_image_size(const uf_model *m, const uf_evaluate_options *o);

/* The evaluation grid of model m: eval_size on the longer side of the model's input,
 * the other side in proportion. */
void uf_evaluate_grid(const uf_model *m, int eval_size, int *width, int *height);

/* The ground truth of test sample s (an image of orig_w x orig_h) on an ew x eh grid, into gt
 * (0/1), as `test` scores it: the mask (0/255) fitted like the image to the model input (Pillow
 * bilinear; keep-aspect: the same centre crop), or with at_image_size (a tiled model, or
 * eval_native) the mask at the image's own size, then bilinear (align_corners False) to the grid
 * when its size differs, > 0.5. All zero without a mask. UF_ERR for a missing or wrong-size mask. */
struct uf_sample;
int uf_evaluate_gt(const uf_model *m, const struct uf_sample *s, int orig_w, int orig_h, int ew, int eh,
                   int at_image_size, uint8_t *gt);

/* Writes the report as JSON (atomically). */
int uf_evaluate_write_json(const uf_model *m, const uf_evaluate_options *o, const uf_evaluate_report *rep,
                           const char *path);

#endif
