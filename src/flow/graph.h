/* graph.h - the U-shaped normalizing flow (spec 4.1) with its LayerNorms, parameters and gradients.
 *
 * Scales l = 0 (finest) .. L-1 (coarsest); feature f_l is (B, C_l, H_l, W_l) with
 * H_l = 2 H_{l+1}, W_l = 2 W_{l+1}. Starting at the coarsest scale:
 *     cur = LN(f_{L-1})
 *     for l = L-1 .. 1:
 *         cur = T AllInOneBlocks(cur)                 V_l channels, k = 3,1,3,1,...
 *         n0 = 4 floor(V_l / 8): cur[0:n0] goes up, z_l = cur[n0:V_l]
 *         cur = concat(LN(f_{l-1}), IRevNetUpsample(cur[0:n0]))     feature FIRST
 *     z_0 = T AllInOneBlocks(cur)
 *     logdet = sum of all block log-dets (+ sum log|w| of the LN affines in mode logdet)
 *
 * Memory (llm.c style): all parameters live in one float buffer `params`:
 * blocks in FrEIA module_list order (coarsest scale first), each laid out as
 * uf_block_params_map() says, then per scale the LayerNorm weight and bias
 * (C_l*H_l*W_l each) when a LayerNorm is used. The first n_trainable floats
 * are trained (the LN affines are not, in mode frozen). Gradients (`grads`,
 * same layout) are allocated by uf_flow_alloc_grads() when training starts.
 *
 * Activations are allocated for the largest batch seen (uf_flow_reserve). In
 * training mode a forward keeps, per block, its input (B, V, H, W), r (B, C1,
 * H, W) and st (B, 2 C2, H, W), plus each stage's output and each scale's
 * normalized feature xhat (B, C_l, H_l, W_l): (2.5 T + 1) floats per stage
 * element plus one per feature element, per sample (resnet18@256, batch 16:
 * 413 MB). uf_flow_activation_floats() gives the exact number. Inference keeps
 * the T + 1 stage tensors and one r/st scratch.
 *
 * Usage:
 *     uf_flow_config cfg = uf_flow_default_config();   // then set scales, ln_mode
 *     uf_flow *m = uf_flow_new(&cfg, seed);             // PyTorch-default init
 *     uf_flow_alloc_grads(m);
 *     uf_flow_forward(m, B, feats, z, logdet, 1);
 *     loss = uf_flow_nll(...)   (loss.h)  -> gz, g_ld
 *     uf_flow_zero_grads(m); uf_flow_backward(m, B, gz, g_ld, NULL);
 *     uf_adam_step(...)         (adam.h) on m->params[0:n_trainable], m->grads
 */
#ifndef UF_FLOW_GRAPH_H
#define UF_FLOW_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "flow/coupling.h"
#include "flow/layernorm.h"

#define UF_FLOW_MAX_SCALES 6

typedef struct uf_flow_config {
    int n_scales;                          /* L >= 1 */
    int channels[UF_FLOW_MAX_SCALES];      /* C_l of feature l (0 = finest) */
    int height[UF_FLOW_MAX_SCALES];        /* H_l */
    int width[UF_FLOW_MAX_SCALES];         /* W_l */
    int n_steps;                           /* AllInOneBlocks per scale (4) */
    uf_ln_mode ln_mode;                    /* LayerNorm of the features (none for MS-CaiT) */
} uf_flow_config;

/* n_steps 4, ln_mode none, no scales. */
uf_flow_config uf_flow_default_config(void);

typedef struct uf_flow_block {
    int scale, step, module; /* module: index i of flow.module_list.{i} */
    int c, h, w, k;
    size_t param_off;        /* offset of its parameters in params/grads */
    int32_t *perm;           /* (C) into the model's permutation buffer */
} uf_flow_block;

typedef struct uf_flow_acts uf_flow_acts; /* activation buffers (private) */

typedef struct uf_flow {
    uf_flow_config cfg;
    int v[UF_FLOW_MAX_SCALES];      /* channels of the flow stage at scale l */
    int n_up[UF_FLOW_MAX_SCALES];   /* channels scale l sends up (l >= 1; 0 at l = 0) */
    int z_ch[UF_FLOW_MAX_SCALES];   /* latent channels of z_l */
    size_t ln_off[UF_FLOW_MAX_SCALES]; /* offset of LN weight (bias follows), when used */
    int n_blocks;
    uf_flow_block *blocks;          /* module_list order: scale L-1 first */
    float *params;                  /* (n_params) */
    float *grads;                   /* (n_params) or NULL */
    size_t n_params, n_trainable;
    int32_t *perms;
    uf_flow_acts *acts;
} uf_flow;

/* Validates the configuration (sizes halve from scale to scale, V_l >= 8 for l >= 1 and
 * >= 2 at l = 0, L <= UF_FLOW_MAX_SCALES, n_steps >= 1) and initialises the parameters
 * like PyTorch/FrEIA (seeded). NULL + error on bad configuration or no memory. */
uf_flow *uf_flow_new(const uf_flow_config *cfg, uint64_t seed);
/* Number of floats uf_flow_new allocates for the parameters of cfg (n_params),
 * computed without allocating; 0 (+ error) for a configuration it refuses. */
size_t uf_flow_param_floats(const uf_flow_config *cfg);
void uf_flow_free(uf_flow *m);

/* Views of block i's parameters / gradients (grad views are NULL before uf_flow_alloc_grads). */
void uf_flow_block_params(const uf_flow *m, int i, uf_block_params *p);
void uf_flow_block_grads(const uf_flow *m, int i, uf_block_params *p);
/* LayerNorm weight/bias of scale l (NULL in mode none). */
float *uf_flow_ln_weight(const uf_flow *m, int l);
float *uf_flow_ln_bias(const uf_flow *m, int l);

int uf_flow_alloc_grads(uf_flow *m);
void uf_flow_zero_grads(uf_flow *m);

/* Floats of activations a forward with this batch keeps (training or inference). */
size_t uf_flow_activation_floats(const uf_flow *m, int batch, int training);
/* Makes room for a batch (done by forward/inverse too). */
int uf_flow_reserve(uf_flow *m, int batch, int training);

/* feats[l]: (B, C_l, H_l, W_l) features (before the LayerNorm). Writes z[l]
 * (B, z_ch[l], H_l, W_l) and logdet (B). training = 1 keeps what backward needs;
 * feats need not stay alive after the call. */
int uf_flow_forward(uf_flow *m, int batch, const float *const *feats, float *const *z, double *logdet,
                    int training);

/* After a training forward of the same batch: ACCUMULATES the loss gradient into
 * m->grads given gz[l] (B, z_ch[l], H_l, W_l) and g_ld (B), and into gfeats[l]
 * (B, C_l, H_l, W_l) when gfeats and gfeats[l] are not NULL. */
int uf_flow_backward(uf_flow *m, int batch, const float *const *gz, const double *g_ld, float *const *gfeats);

/* Inverse of the flow graph: from z[l] gives the normalized features fn[l]
 * (B, C_l, H_l, W_l), i.e. the LayerNorm outputs (a LayerNorm is not invertible). */
int uf_flow_inverse(uf_flow *m, int batch, const float *const *z, float *const *fn);

/* IRevNet upsampling of one sample: in (c, h, w), c % 4 == 0 -> out (c/4, 2h, 2w),
 * out[g, 2i+p, 2j+q] = in[4g+2p+q, i, j]; and its inverse (space-to-depth). */
void uf_irevnet_upsample(const float *in, int c, int h, int w, float *out);
void uf_irevnet_downsample(const float *in, int c, int h, int w, float *out);

/* ---- named tensors, FrEIA / official state_dict layout (spec 4.6) ----
 * flow.module_list.{i}.global_scale [1,C,1,1], .global_offset [1,C,1,1],
 * .w_perm [C,C,1,1], .w_perm_inv [C,C,1,1], .subnet.0.weight, .subnet.0.bias,
 * .subnet.2.weight, .subnet.2.bias; flow.module_list.{i}.downsample_kernel
 * [n0,1,2,2] for each IRevNet upsampling; and
 * feature_extractor.feature_normalizations.{l}.weight / .bias [C,H,W]. */
typedef enum {
    UF_PARAM_TRAINABLE, /* a view into params (and grads) */
    UF_PARAM_FROZEN,    /* a view into params that is not trained (LN affine in mode frozen) */
    UF_PARAM_PERM,      /* one-hot w_perm[c, perm[c]] = 1, derived from the permutation */
    UF_PARAM_PERM_INV,  /* its transpose */
    UF_PARAM_UPSAMPLE,  /* IRevNet's fixed 0/1 kernel */
} uf_param_kind;

typedef struct uf_flow_param {
    char name[96];
    uf_param_kind kind;
    int ndim;
    int64_t shape[4];
    size_t numel;
    float *data; /* TRAINABLE/FROZEN: view into params; else NULL */
    float *grad; /* TRAINABLE with grads allocated: view into grads; else NULL */
    int index;   /* PERM kinds: block index; UPSAMPLE: scale */
} uf_flow_param;

int uf_flow_param_count(const uf_flow *m);
/* Describes named tensor i (0 <= i < count), in module_list order then the LayerNorms. */
void uf_flow_param_get(const uf_flow *m, int i, uf_flow_param *out);
/* out (numel floats) <- tensor i's values (derived ones are materialized). */
void uf_flow_param_read(const uf_flow *m, int i, float *out);
/* Sets tensor i from in (numel floats). A permutation must be one-hot (it sets the
 * block's permutation; w_perm_inv must then be its transpose); a fixed kernel must
 * equal the IRevNet one. UF_ERR + message naming the tensor otherwise. */
int uf_flow_param_write(uf_flow *m, int i, const float *in);
/* Index of the named tensor, or -1. */
int uf_flow_param_find(const uf_flow *m, const char *name);

#endif
