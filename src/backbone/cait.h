/* cait.h - a frozen CaiT vision transformer (timm `Cait`: LayerScaleBlock with
 * TalkingHeadAttn) run as a feature extractor, inference only (spec 3.1).
 *
 * Per image x (3, S, S), S = grid * patch:
 *     tokens = patch_embed(x) + pos_embed            (N = grid^2, D), no class token
 *     for i = 0 .. last: tokens = block_i(tokens)    (LayerScale, talking heads, erf GELU)
 *     feature = norm(tokens) as (D, grid, grid)      (LayerNorm eps 1e-6, token n = grid*h + w)
 * The class-attention blocks (blocks_token_only.*), cls_token and head are
 * never read. The block count, width D, heads H (from attn.proj_l), patch
 * size and grid (from pos_embed) are read from the tensors, so reduced test
 * models load the same way as cait_m48_448 / cait_s24_224.
 *
 * Weights: a .safetensors file with timm's key names (spec 3.1.3). The file
 * stays mapped while the model lives: F32 tensors are used in place (no
 * second copy of m48's 1.2 GB); F16 / BF16 / F64 tensors are converted to
 * float32 once, at load. Every used tensor is checked at load (shape, finite).
 *
 * Usage:
 *     uf_cait *m = uf_cait_load("cait_m48_448.safetensors", 40);  // blocks 0..40
 *     int S = uf_cait_input_size(m), D = uf_cait_dim(m), g = uf_cait_grid(m);
 *     uf_cait_forward(m, x, n, out, NULL);    // x (n, 3, S, S) -> out (n, D, g, g)
 *     uf_cait_free(m);
 */
#ifndef UF_BACKBONE_CAIT_H
#define UF_BACKBONE_CAIT_H

#include <stddef.h>

typedef struct uf_cait uf_cait;
struct uf_safetensors;

/* Loads the model of file `path`, to run blocks 0..last_block (all of them
 * when the file has fewer). NULL + one line naming the file and the tensor
 * (missing, wrong shape, non-finite, not a CaiT) on failure. */
uf_cait *uf_cait_load(const char *path, int last_block);
/* The same from an open file or view (see uf_st_view), which the model takes
 * over: it stays open while the model lives and is closed with it (or at once
 * on failure). */
uf_cait *uf_cait_from_safetensors(struct uf_safetensors *st, int last_block);

/* A model with timm's shapes for `arch` ("cait_m48_448" or "cait_s24_224")
 * and random weights of realistic scale, running blocks 0..last_block: for
 * benchmarks where no weights file exists. NULL + error for another name. */
uf_cait *uf_cait_random(const char *arch, int last_block, unsigned seed);

void uf_cait_free(uf_cait *m);

int uf_cait_dim(const uf_cait *m);        /* D */
int uf_cait_heads(const uf_cait *m);      /* H */
int uf_cait_depth(const uf_cait *m);      /* self-attention blocks in the file */
int uf_cait_blocks_run(const uf_cait *m); /* min(depth, last_block + 1) */
int uf_cait_grid(const uf_cait *m);       /* tokens per side */
int uf_cait_input_size(const uf_cait *m); /* grid * patch */
/* "cait_m48_448" / "cait_s24_224" (or another timm name) when the shapes are
 * those of a timm model, else e.g. "cait-d48-h4-b3-64". */
const char *uf_cait_arch(const uf_cait *m);
/* The file the weights came from ("random" for uf_cait_random). */
const char *uf_cait_path(const uf_cait *m);
/* Parameters the forward uses (patch embedding, pos_embed, the blocks run, norm). */
size_t uf_cait_used_params(const uf_cait *m);
/* FLOPs (2 x multiply-adds) of the matrix products of one image's forward. */
double uf_cait_flops(const uf_cait *m);

/* Runs x (n, 3, S, S) (ImageNet-normalised; S = uf_cait_input_size) and writes
 * the feature maps out (n, D, grid, grid). When trace is not NULL, trace[0]
 * receives the embedded tokens (n, N, D) and trace[1 + i] the output of block
 * i (n, N, D), for tests. Scratch is kept in the model: one model must not
 * run two forwards at once. UF_OK, or UF_ERR (out of memory). */
int uf_cait_forward(uf_cait *m, const float *x, int n, float *out, float *const *trace);

/* Wall-clock split of the last forward: the dense layers (patch embedding,
 * qkv, proj, fc1, fc2: large GEMMs), the attention (Q K^T, the talking-heads
 * mixings, softmax, P V), and the rest (LayerNorms, GELU, residuals). FLOPs
 * are those of uf_cait_flops split the same way (dense + attention). */
typedef struct uf_cait_timing {
    double dense_s, attention_s, other_s;
    double dense_flops, attention_flops;
} uf_cait_timing;
uf_cait_timing uf_cait_last_timing(const uf_cait *m);

/* The blocks' dense layers (qkv, proj, fc1, fc2: 85% of the FLOPs) in bfloat16 (core/matmul_bf16.h;
 * their bf16 weights are made at the first call with on = 1 and kept); attention, norms and the
 * patch embedding stay FP32. The caller checks that the CPU has BF16. UF_OK / UF_ERR (memory). */
int uf_cait_set_bf16(uf_cait *m, int on);
int uf_cait_get_bf16(const uf_cait *m);

#endif
