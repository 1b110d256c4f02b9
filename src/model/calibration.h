/* calibration.h - the a-contrario test's null hypothesis measured on normal images.
 *
 * The tree NFA (spec 7.1) assumes that the latents of normal images are N(0, 1): then a
 * detection at NFA < 1 is a false one less than once per image in expectation. A flow
 * that has not seen an image's kind of normal variation (other lighting, other parts of the
 * line, an over-fitted flow) gives it wider latents, and the test fires on good parts. So
 * `uflow train` measures the latents of normal images the flow did not train on (the
 * validation images: the held-out split, --val DIR, or the data set's own validation
 * folder) and records in the model (uf_calibration, model.h):
 *
 *  1. z2[l], the null variance of scale l: the median over the images of their mean z^2.
 *     H0 becomes "z_l ~ N(0, z2[l])": the energies are divided by z2[l].
 *  2. log10_offset: with (1) applied, s_i = the largest -log10 NFA of calibration image i
 *     (over its pixels, and tiles); offset = max(0, s_(k)), the k-th smallest with
 *     k = ceil((n + 1)(1 - rate)), or the largest when k > n. The test then detects where
 *     -log10 NFA > offset, i.e. it counts 10^offset times more tests.
 *
 * What the corrected test guarantees: for a normal image drawn from the same law as the
 * calibration images (exchangeable with them), P(any detection) <= rate when k <= n (the
 * conformal quantile bound: the image's s falls above the k-th smallest of n + 1 values
 * with probability at most 1 - k/(n + 1)), and <= 1/(n + 1) otherwise. This is stronger
 * than the spec's promise (expected false detections per image <= 1), and it holds without
 * the N(0, 1) assumption. The variance step (1) only sets the shape of the test; (2) alone
 * gives the guarantee. It only holds for normal images like the calibration ones: images
 * of a kind not among them (a new product variant) can still be flagged, which is why
 * `test` and `predict` keep warning when the model's validation z^2 is off.
 *
 * When the latents are already N(0, 1) enough, every s_i is below 0 and the offset is 0:
 * the test is the spec's, up to the variance step.
 */
#ifndef UF_MODEL_CALIBRATION_H
#define UF_MODEL_CALIBRATION_H

#include "model/model.h"

/* The default share of normal images allowed a detection. */
#define UF_CALIB_RATE 0.05
/* Fewer calibration images than this: no calibration (the model keeps the spec's null). */
#define UF_CALIB_MIN_IMAGES 5

/* The offset of step 2 from s[0..n) (n >= 1; s is reordered): max(0, conformal quantile). */
double uf_calibration_offset(double *s, int n, double rate);

/* Calibrates model m (its calib is replaced) on the normal images paths[0..n): two passes
 * through the model as `predict` runs it (tiles included). An unreadable image is an error.
 * source names the images in the model ("validation split", or the folder). */
int uf_calibrate(uf_model *m, const char *const *paths, int n, double rate, const char *source, int verbose);

#endif
