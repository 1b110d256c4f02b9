/* layernorm.h - the per-scale LayerNorm of ResNet features (spec 3.3).
 *
 * nn.LayerNorm([C, H, W], elementwise_affine=True, eps=1e-5): per sample, one
 * mean and one biased variance over all n = C*H*W elements, then
 *     y = (x - mean) / sqrt(var + eps) * w + b      w, b: (C, H, W)
 *
 * How the affine enters the likelihood is a choice (uf_ln_mode):
 *   reference  as the official code: w, b trained by the NLL but sum log|w| is
 *              NOT in the log-det. The loss is then unbounded below (shrink w,
 *              expand in the flow); kept to reproduce the reference.
 *   logdet     w, b trained and sum_{c,h,w} log|w| added to every sample's
 *              log-det (the affine is part of the flow): a proper likelihood.
 *   frozen     w = 1, b = 0 fixed (not trained): a proper likelihood.
 *   none       no LayerNorm (MS-CaiT features come normalized already).
 */
#ifndef UF_FLOW_LAYERNORM_H
#define UF_FLOW_LAYERNORM_H

#include <stddef.h>

#define UF_LN_EPS 1e-5

typedef enum { UF_LN_NONE, UF_LN_REFERENCE, UF_LN_LOGDET, UF_LN_FROZEN } uf_ln_mode;

const char *uf_ln_mode_name(uf_ln_mode m);
/* "none", "reference", "logdet", "frozen" -> mode; UF_ERR + message otherwise. */
int uf_ln_mode_parse(const char *s, uf_ln_mode *out);
/* 1 when the mode trains the affine parameters. */
int uf_ln_mode_trains(uf_ln_mode m);

/* x (B, n) -> y (B, n) with affine w, b (n). Optionally saves xhat (B, n) and
 * rstd (B) for the backward (either may be NULL). y may alias x. */
void uf_layernorm_forward(int batch, size_t n, const float *x, const float *w, const float *b, float *y,
                          float *xhat, float *rstd);

/* ACCUMULATES dw, db (n; sums over the batch) and dx (B, n); any may be NULL.
 * dy (B, n) is the gradient of y. */
void uf_layernorm_backward(int batch, size_t n, const float *xhat, const float *rstd, const float *w,
                           const float *dy, float *dx, float *dw, float *db);

/* sum_i log|w_i| (the affine's log-det, same for every sample), in double. */
double uf_layernorm_logabsdet(size_t n, const float *w);
/* dw += g_ld_sum / w, with g_ld_sum the log-det gradient summed over the batch. */
void uf_layernorm_logdet_backward(size_t n, const float *w, double g_ld_sum, float *dw);

#endif
