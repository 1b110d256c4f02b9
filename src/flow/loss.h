/* loss.h - the training objective (spec 5.1), in double.
 *
 *     L = (1/B) sum_b [ sum_l 0.5 ||z_l^(b)||^2 - logdet^(b) ]       (official HEAD)
 * so dL/dz = z / B and dL/dlogdet_b = -1/B. With anomalib_sum = 1 the z term is
 * summed over the batch instead (paper-time code and anomalib: L = sum_b sum_l
 * 0.5 ||z||^2 - mean_b logdet, dL/dz = z). No log(2 pi) constant.
 */
#ifndef UF_FLOW_LOSS_H
#define UF_FLOW_LOSS_H

#include <stddef.h>

/* z[l]: (B, zn[l]) latents of scale l (zn = channels*H*W per sample), logdet (B).
 * Returns L. When gz is not NULL writes gz[l] (B, zn[l]) = dL/dz (gz may alias z);
 * when g_ld is not NULL writes g_ld (B) = dL/dlogdet; when per_sample is not NULL
 * writes each sample's 0.5 ||z||^2 - logdet. */
double uf_flow_nll(int batch, int n_scales, const size_t *zn, const float *const *z, const double *logdet,
                   float *const *gz, double *g_ld, double *per_sample, int anomalib_sum);

#endif
