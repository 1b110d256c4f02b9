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
 *     (over its pixels, and tiles); sorted, s_(1) <= ... <= s_(n). offset = max(0, s_(n-j)):
 *     the test then detects where -log10 NFA > offset, i.e. it counts 10^offset times more
 *     tests, and j of the n calibration images keep a detection. j is the largest count with
 *     P(Bin(n, rate) <= j) <= 1 - UF_CALIB_CONFIDENCE (0 when even j = 0 does not reach it:
 *     the largest s_i is used).
 *
 * What the corrected test guarantees, for normal images drawn from the same law as the
 * calibration images (exchangeable with them): with probability at least UF_CALIB_CONFIDENCE
 * (0.9) over the draw of the calibration images, the share of such normal images that get a
 * detection is at most `rate` (the share above the (n-j)-th smallest of n values is a
 * Beta(n - j, j + 1) variable: the training-conditional conformal bound). That needs
 * n >= ln(1 - 0.9) / ln(1 - rate) images (45 for 5%); with fewer, the bound is the weaker
 * marginal one, P(detection) <= 1/(n + 1). Both are stronger than the spec's promise
 * (expected false detections per image <= 1) and hold without the N(0, 1) assumption. The
 * variance step (1) only shapes the test (which regions stand out); (2) alone gives the
 * guarantee. It holds only for normal images like the calibration ones: a kind of normal
 * image not among them (a new product variant) can still be flagged, which is why `test`
 * and `predict` keep warning when the model's validation z^2 is off.
 *
 * When the latents are already N(0, 1) enough, every s_i is below 0 and the offset is 0:
 * the test is the spec's, up to the variance step.
 */
#ifndef UF_MODEL_CALIBRATION_H
#define UF_MODEL_CALIBRATION_H

#include "model/model.h"

/* The default share of normal images allowed a detection, and the confidence of that bound. */
#define UF_CALIB_RATE 0.05
#define UF_CALIB_CONFIDENCE 0.9
/* Fewer calibration images than this: no calibration (the model keeps the spec's null). */
#define UF_CALIB_MIN_IMAGES 5

/* The offset of step 2 from s[0..n) (n >= 1; s is reordered): max(0, s_(n-j)). */
double uf_calibration_offset(double *s, int n, double rate);
/* j of step 2: the calibration images allowed to keep a detection. */
int uf_calibration_allowed(int n, double rate);

/* Calibrates model m (its calib is replaced) on the normal images paths[0..n): two passes
 * through the model as `predict` runs it (tiles included). An unreadable image is an error.
 * source names the images in the model ("validation split", or the folder). */
int uf_calibrate(uf_model *m, const char *const *paths, int n, double rate, const char *source, int verbose);

#endif
