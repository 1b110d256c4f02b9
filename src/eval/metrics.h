/* metrics.h - evaluation as the official U-Flow code computes it (spec section 8).
 *
 * Streaming use: the caller adds test images one by one, then computes:
 *     uf_eval *ev = uf_eval_new();
 *     for each test image:
 *         uf_eval_add(ev, h, w, amap, nfa_score, gt, -1, NAN);  // label from gt, score = max amap
 *     uf_eval_result r;
 *     uf_eval_compute(ev, UF_AUPRO_FPR_LIMIT, &r);
 *     uf_eval_free(ev);
 *
 * What is kept per pixel: the anomaly-map value as a 32-bit sortable key
 * (4 bytes for a GT-normal pixel; 8 bytes, key + region id, for a GT-anomalous
 * one). The NFA score map is reduced at once to per-image counts over the
 * integer thresholds -400..1000 (mIoU); the GT mask is reduced to 8-connected
 * region ids. ~40 M pixels therefore cost about 170 MB (+ up to ~8 bytes per
 * distinct normal-pixel value below the FPR limit during uf_eval_compute).
 *
 * Metrics:
 *  - pixel / image AUROC: exactly sklearn.metrics.roc_auc_score (trapezoids over
 *    distinct thresholds; ties handled as one step), computed in exact integer
 *    arithmetic. Image score = max of the anomaly map unless given.
 *  - AUPRO (official; a copy of an older anomalib AUPRO): 8-connected GT regions
 *    labelled per image, per-region ROC over {all normal pixels} + {region},
 *    cut at the FPR limit with linear interpolation, resampled by point INDEX onto
 *    the global ROC's point count, averaged, trapezoid area / last FPR.
 *  - AUPRO (textbook): mean per-region overlap against the global FPR, trapezoid
 *    up to the limit, divided by the limit.
 *  - mIoU: per image IoU = (|P & G| + eps) / (|P | G| + eps), eps = 2^-52, P = {score > thr},
 *    averaged over ALL images (good ones too); automatic thr = 0; oracle = best of
 *    thr in {-400, ..., 1000} (the first best).
 *  - F1 at thr 0: pixel-level, pooled over all images: 2TP / (2TP + FP + FN)
 *    (1 when there is neither a GT pixel nor a detection).
 * A metric that is undefined for the data (e.g. one class only) is NaN.
 */
#ifndef UF_EVAL_METRICS_H
#define UF_EVAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define UF_AUPRO_FPR_LIMIT 0.3
#define UF_MIOU_THR_MIN (-400)
#define UF_MIOU_THR_MAX 1000
#define UF_MIOU_NTHR (UF_MIOU_THR_MAX - UF_MIOU_THR_MIN + 1)

typedef struct uf_eval uf_eval;

/* New empty accumulator; NULL + error when out of memory. */
uf_eval *uf_eval_new(void);
void uf_eval_free(uf_eval *ev);

/* Optional: reserve room for this many pixels in total (avoids regrowth). */
int uf_eval_reserve(uf_eval *ev, size_t n_pixels);

/* Adds one image of h x w pixels.
 *   amap      (h, w) anomaly map (higher = more anomalous), or NULL: no AUROC/AUPRO;
 *   nfa_score (h, w) -log10 NFA, or NULL: no mIoU/F1;
 *   gt        (h, w) ground truth, nonzero = anomalous (required);
 *   image_label 0 normal, 1 anomalous, -1: anomalous iff gt has an anomalous pixel;
 *   image_score NaN: max of amap (then amap is required).
 * Every image must give the same maps (both, or the same one). NaN in amap is an
 * error; NaN in nfa_score counts as "not detected" (like torch's NaN > thr). */
int uf_eval_add(uf_eval *ev, int h, int w, const float *amap, const float *nfa_score, const uint8_t *gt,
                int image_label, float image_score);

/* A curve for plotting, thinned: a point is kept when it lies at least 1/250 (L1, with
 * x divided by x_range) from the last kept one; the first and the last points always are.
 * A monotone curve over [0, x_range] x [0, 1] therefore keeps at most 502 points. */
#define UF_CURVE_MAX 512
typedef struct uf_curve {
    int n;
    float x[UF_CURVE_MAX], y[UF_CURVE_MAX];
} uf_curve;

typedef struct uf_eval_result {
    int n_images, n_anomalous_images, n_regions;
    int64_t n_pixels, n_anomalous_pixels;
    double pixel_auroc, image_auroc;
    double aupro;           /* official procedure (see above) */
    double aupro_textbook;  /* Bergmann et al. definition */
    int aupro_curve_points; /* the global ROC's point count with FPR <= limit */
    double miou_auto;       /* thr 0 */
    double miou_oracle;     /* best over thr in -400..1000 */
    int oracle_thr;
    double f1_auto;         /* thr 0, pooled pixels */
    uf_curve pixel_roc;     /* (FPR, TPR) over all pixels, from (0, 0) to (1, 1); n = 0 when undefined */
    uf_curve pro;           /* (global FPR, mean per-region overlap) up to FPR = fpr_limit (textbook PRO) */
} uf_eval_result;

/* Image-level decisions at one threshold: counts and F1 = 2 TP / (2 TP + FP + FN) (NaN
 * when there is no anomalous image and no detection). */
typedef struct uf_image_confusion {
    int tp, fp, tn, fn;
    double f1;
} uf_image_confusion;

/* The confusion of decided[i] (nonzero: called anomalous) against label[i] (nonzero:
 * anomalous), i < n. */
uf_image_confusion uf_image_confusion_of(const uint8_t *label, const uint8_t *decided, int n);

/* Computes every metric the added data allows (others NaN). fpr_limit in (0, 1],
 * normally UF_AUPRO_FPR_LIMIT. May be called again after more uf_eval_add calls.
 * Uses OpenMP threads for the sorts and the AUPRO resampling. */
int uf_eval_compute(uf_eval *ev, double fpr_limit, uf_eval_result *out);

/* mIoU per threshold: miou (UF_MIOU_NTHR) for thr = UF_MIOU_THR_MIN + i; NaN when no
 * NFA score was added. */
int uf_eval_miou_curve(const uf_eval *ev, double *miou);

/* Standalone sklearn-compatible roc_auc_score of n (score, label) pairs, label
 * nonzero = positive. NaN when a class is missing; UF_ERR-free (NaN also for NaN scores
 * or no memory, with the error message set). */
double uf_auroc(const float *scores, const uint8_t *labels, size_t n);

/* The ROC curve (FPR, TPR) of n (score, label) pairs (label nonzero = positive), one point
 * per distinct score from (0, 0) to (1, 1), thinned as uf_curve says. n = 0 when a class is
 * missing or a score is NaN. */
void uf_roc_curve(const float *scores, const uint8_t *labels, size_t n, uf_curve *out);

/* IoU of one image at a threshold: (|{s > thr} & G| + eps) / (|{s > thr} | G| + eps). */
double uf_iou(const float *score, const uint8_t *gt, size_t n, float thr);

/* In-place ascending radix sorts (American flag sort, no extra buffer). */
void uf_sort_u32(uint32_t *a, size_t n);
void uf_sort_u64(uint64_t *a, size_t n);

/* Order-preserving float -> uint32 key (-0 and +0 share a key); NaN not allowed. */
static inline uint32_t uf_float_key(float f) {
    union {
        float f;
        uint32_t u;
    } v = {f == 0.f ? 0.f : f};
    return (v.u >> 31) ? ~v.u : (v.u | 0x80000000u);
}

#endif
