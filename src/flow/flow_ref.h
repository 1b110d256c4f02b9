/* flow_ref.h - slow, obviously-correct double-precision reference of the flow, for tests.
 *
 * Naive loops, no BLAS, everything recomputed. Parameters are a double array with
 * exactly the float model's layout (uf_flow.params: n_params values), so a test
 * can run finite differences on it and copy it into the float model. Geometry,
 * LayerNorm mode and permutations come from the uf_flow.
 */
#ifndef UF_FLOW_FLOW_REF_H
#define UF_FLOW_FLOW_REF_H

#include "flow/graph.h"

/* Block blk of m with parameters at prm (its param_off already applied):
 * y (B, C, H, W) from x; logdet[b] += the sample's log-det. */
void uf_ref_block_forward(const uf_flow_block *blk, int batch, const double *prm, const double *x, double *y,
                          double *logdet);
void uf_ref_block_inverse(const uf_flow_block *blk, int batch, const double *prm, const double *y, double *x);
/* ACCUMULATES dx (B, C, H, W; may be NULL) and dprm (the block's parameter layout). */
void uf_ref_block_backward(const uf_flow_block *blk, int batch, const double *prm, const double *x,
                           const double *dy, const double *g_ld, double *dx, double *dprm);

/* Whole model (LayerNorms + U graph), as uf_flow_forward / uf_flow_backward.
 * params: (n_params); feats[l], z[l], gz[l], gfeats[l] as in graph.h. UF_ERR on no memory. */
int uf_ref_flow_forward(const uf_flow *m, const double *params, int batch, const double *const *feats,
                        double *const *z, double *logdet);
/* ACCUMULATES gparams (n_params, all of them, frozen ones included) and gfeats[l] (when not NULL). */
int uf_ref_flow_backward(const uf_flow *m, const double *params, int batch, const double *const *feats,
                         const double *const *gz, const double *g_ld, double *gparams, double *const *gfeats);

#endif
