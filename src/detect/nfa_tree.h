/* nfa_tree.h - a-contrario segmentation with the tree NFA (spec section 7.1).
 *
 * Per image and per scale, on z (C, h, w):
 *   Q(p) = sum_c z[c,p]^2; component tree of the upper level sets of Q (same
 *   tree as for S = Q/C) with 4-connectivity; for every node n
 *     x(n) = min_{p in R(n)} Q(p) / C,
 *     log10P(n) = |R(n)| * ( -(C/2) * (x - 1 - ln x) / ln 10 )      (Chernoff, chi2_C)
 *   simplification PRUNE; m = MERGE; while (m) { PRUNE; m = MERGE; } PRUNE;
 *   LP(p) = log10P of the final leaf whose region holds p, NaN if none.
 * Combination over scales:
 *   LP_l (NaN -> 0) -> bilinear (align_corners=False) -> out_h x out_w,
 *   score = -( log10 N_T + min_l LP_l ),  N_T = sum_l h_l w_l sum_{r=1}^{h_l w_l} alpha beta^r / r,
 *   detection: score > 0  (NFA < 1).
 *
 * Usage:
 *     uf_latent_view v[2] = {{z1, 816, 28, 28}, {z2, 192, 14, 14}};
 *     float *score = malloc(sizeof(float) * 256 * 256);
 *     if (uf_nfa_tree_score(v, 2, 256, 256, score) != UF_OK) ... uf_last_error() ...
 *     detected(p) = score[p] > 0;
 *
 * All functions are reentrant (no globals): callers may run images in parallel.
 */
#ifndef UF_DETECT_NFA_TREE_H
#define UF_DETECT_NFA_TREE_H

#include "detect/latent.h"

#define UF_NFA_ALPHA 0.316915 /* polyomino count ~ alpha * beta^r / r */
#define UF_NFA_BETA 4.062570

/* log10 N_T for scales with cells[l] = h_l * w_l cells (computed in the log domain). */
double uf_nfa_log10_ntests(const int *cells, int n_scales);

typedef struct uf_nfa_tree_stats {
    int n_nodes;       /* nodes of the component tree */
    int n_final;       /* final leaves after the simplification */
    int n_merges;      /* MERGE passes that merged something */
    int n_uncovered;   /* cells in no final leaf (NaN in lp) */
    double min_log10p; /* smallest log10P among final leaves (+inf when none) */
} uf_nfa_tree_stats;

/* Tree NFA of one scale from its energies q (h, w) = sum_c z^2 with c channels.
 * lp (h, w): log10P of the covering final leaf, NaN for uncovered cells.
 * stats may be NULL. UF_ERR for bad sizes, a non-finite or negative q, or no memory. */
int uf_nfa_tree_log10p_q(const double *q, int c, int h, int w, float *lp, uf_nfa_tree_stats *stats);

/* Same from the latent z (c, h, w). */
int uf_nfa_tree_log10p(const float *z, int c, int h, int w, float *lp, uf_nfa_tree_stats *stats);

/* -log10 NFA map of one image: score (out_h, out_w). Detection is score > 0. */
int uf_nfa_tree_score(const uf_latent_view *scales, int n_scales, int out_h, int out_w, float *score);

/* The null hypothesis of the test and its number of tests, when they differ from the
 * spec's (N(0, 1) latents, one image = one grid of tests):
 *  - z2_scale[l] > 0: under H0 the latents of scale l are N(0, z2_scale[l]) (a variance
 *    measured on held-out normal images, model/calibration.h); the energies become
 *    Q_l / z2_scale[l] before the Chernoff bound. 1 = the spec.
 *  - log10_extra_tests >= 0: added to log10 N_T, i.e. N_T multiplied by 10^extra: the
 *    tests of the other tiles of a tiled image (log10 of their count) plus the calibrated
 *    offset. 0 = the spec.
 * With every z2_scale 1 and extra 0 the result is uf_nfa_tree_score's, bit for bit. */
typedef struct uf_nfa_null {
    double z2_scale[UF_MAX_SCALES];
    double log10_extra_tests;
} uf_nfa_null;

/* The spec's null hypothesis (z2_scale 1, no extra tests). */
uf_nfa_null uf_nfa_null_standard(void);

int uf_nfa_tree_score_null(const uf_latent_view *scales, int n_scales, const uf_nfa_null *null, int out_h, int out_w,
                           float *score);

#endif
