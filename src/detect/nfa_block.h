/* nfa_block.h - the older block / binomial NFA (spec section 7.2).
 *
 * Per scale s (0 = finest) on z (C, h, w):
 *   tau = chi2_1 quantile of pthr;  hw = max(floor(win / 2^(s+1)), 1);  n = (2hw+1)^2
 *   K(q) = #{(c, q') : q' in the (2hw+1)^2 window around q (reflect padding), z[c,q']^2 >= tau}
 *   log10P_s(q) = log10 P( Bin(n, 1 - pthr) > floor(K(q) / C) )
 * Combination: log10P_s -> bicubic (align_corners=True) -> out size, SUM over scales,
 *   score = -( log10(sum_s h_s w_s) + sum_s log10P_s ),  detection: score > 0.
 * (anomalib's compute_anomaly_mask returns score < 0, the inverted mask; here
 * detection is score > 0 as in the official code.)
 * Defaults of the official training code: win 5, pthr 0.9 (anomalib: 7, 0.5).
 */
#ifndef UF_DETECT_NFA_BLOCK_H
#define UF_DETECT_NFA_BLOCK_H

#include "detect/latent.h"

/* log10 of the smallest positive double: stands for log10 0 (a tail that is exactly 0). */
#define UF_LOG10P_FLOOR (-323.3062153431158)

/* Quantile of the chi-square law with 1 degree of freedom: (Phi^-1((1+p)/2))^2, 0 < p < 1. */
double uf_chi2_1_ppf(double p);

/* log10 P(X > floor(x)) for X ~ Bin(n, p), like scipy.stats.binom.logsf(x, n, p) / ln 10.
 * 0 for x < 0; UF_LOG10P_FLOOR when floor(x) >= n (probability 0). */
double uf_binom_log10_sf(double x, int n, double p);

/* log10P_s map of one scale: lp (h, w). scale_index s selects the half window.
 * UF_ERR when the grid is smaller than the half window + 1 (reflect padding) or on bad input. */
int uf_nfa_block_log10p(const float *z, int c, int h, int w, int scale_index, int win_size, double pthr,
                        float *lp);

/* -log10 NFA map of one image: score (out_h, out_w). Detection is score > 0. */
int uf_nfa_block_score(const uf_latent_view *scales, int n_scales, int win_size, double pthr, int out_h,
                       int out_w, float *score);

#endif
