/* anomaly_map.h - the U-Flow anomaly map and image score (spec section 6).
 *
 * Per scale l:  P_l(p) = exp(-0.5 * mean_c z_l[c,p]^2)      (mean, not sum)
 *               U_l    = bilinear(P_l -> out_h x out_w, align_corners=False)
 * A = 1 - (1/L) sum_l U_l;  image score = max_p A(p).
 */
#ifndef UF_DETECT_ANOMALY_MAP_H
#define UF_DETECT_ANOMALY_MAP_H

#include "detect/latent.h"

/* mean_c z[c,p]^2 for every cell (summed in double): z (c, h, w) -> out (h, w). */
void uf_latent_mean_sq(const float *z, int c, int h, int w, float *out);

/* Anomaly map of one image from its n_scales latents.
 * amap: (out_h, out_w), written. image_score: max of amap (may be NULL).
 * Returns UF_ERR (with a message) for bad shapes, a non-finite latent, or no memory. */
int uf_anomaly_map(const uf_latent_view *scales, int n_scales, int out_h, int out_w, float *amap,
                   float *image_score);

/* Gaussian smoothing of a map (h, w) in place, separable, sigma_x / sigma_y in pixels of that map
 * (0 on an axis: that axis untouched). The kernel is cut at 4 sigma (radius floor(4 sigma + 0.5),
 * as scipy.ndimage.gaussian_filter) and normalised; borders mirror the map's edge pixels
 * (d c b a | a b c d | d c b a, again and again where the kernel is wider than the map): this is
 * scipy.ndimage.gaussian_filter(mode='reflect', truncate=4), the test's reference. The radius is
 * at most 64 (sigma 16). UF_ERR (message) only when out of memory. */
int uf_map_smooth(float *map, int h, int w, float sigma_x, float sigma_y);

#endif
