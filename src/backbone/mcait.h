/* mcait.h - U-Flow's multi-scale CaiT extractor (spec 3.1): two frozen CaiTs.
 *
 * Fine scale: model 1 (cait_m48_448) on the normalised S x S image, blocks
 * 0..40, final norm -> f_0 (768, 28, 28). Coarse scale: the same image
 * resized by bicubic interpolation (align_corners=True, A = -0.75, no
 * antialias) to model 2's input size, model 2 (cait_s24_224), blocks 0..20,
 * norm -> f_1 (384, 14, 14). The flow needs f_0's grid to be twice f_1's.
 *
 * Usage:
 *     uf_mcait *m = uf_mcait_load("cait_m48_448.safetensors", "cait_s24_224.safetensors");
 *     float *out[2] = {f0, f1};                // (n, C_l, H_l, W_l)
 *     uf_mcait_forward(m, x, n, out);          // x (n, 3, S, S), S = uf_mcait_input_size(m)
 *     uf_mcait_free(m);
 */
#ifndef UF_BACKBONE_MCAIT_H
#define UF_BACKBONE_MCAIT_H

#include "backbone/cait.h"

#define UF_MCAIT_LEVELS 2
/* The last block each model runs (the method's choice, paper Table 6). */
#define UF_MCAIT_LAST_BLOCK_FINE 40
#define UF_MCAIT_LAST_BLOCK_COARSE 20

typedef struct uf_mcait {
    uf_cait *model[UF_MCAIT_LEVELS]; /* 0: fine (m48), 1: coarse (s24) */
    float *resized;                  /* (cap, 3, S1, S1) coarse inputs */
    int resized_cap;
    char arch[112];
} uf_mcait;

/* Loads the two weight files. Errors name the file and the tensor; files given
 * the wrong way round are reported as swapped. NULL on failure. */
uf_mcait *uf_mcait_load(const char *fine_path, const char *coarse_path);
/* The same from two open files or views, which the model takes over. */
uf_mcait *uf_mcait_from_safetensors(struct uf_safetensors *fine, struct uf_safetensors *coarse);
/* cait_m48_448 + cait_s24_224 shapes with random weights (benchmarks). */
uf_mcait *uf_mcait_random(unsigned seed);
void uf_mcait_free(uf_mcait *m);

/* S: the fine model's input size (448 for m48). */
int uf_mcait_input_size(const uf_mcait *m);
void uf_mcait_feature_shape(const uf_mcait *m, int level, int *c, int *h, int *w);
/* "mcait" for the paper's pair, else "mcait(<fine arch>,<coarse arch>)". */
const char *uf_mcait_arch(const uf_mcait *m);
size_t uf_mcait_used_params(const uf_mcait *m, int level);
/* FLOPs of both models' matrix products for one image. */
double uf_mcait_flops(const uf_mcait *m);

/* x (n, 3, S, S) -> out[0] (n, C_0, H_0, W_0), out[1] (n, C_1, H_1, W_1). UF_OK or UF_ERR. */
int uf_mcait_forward(uf_mcait *m, const float *x, int n, float *const out[UF_MCAIT_LEVELS]);

/* Both extractors' dense layers in bfloat16 (uf_cait_set_bf16). */
int uf_mcait_set_bf16(uf_mcait *m, int on);
int uf_mcait_get_bf16(const uf_mcait *m);

#endif
