/* backbone.h - the frozen feature extractor of a model, whichever kind:
 *   resnet: one weights file (ResNet-18, Wide-ResNet-50-2, ...), 3 scales
 *           (layer1..3), inputs H x W with sides multiples of 16; the flow
 *           puts a trainable LayerNorm in front of each scale (spec 3.3).
 *   mcait:  two weights files "FINE,COARSE" (cait_m48_448, cait_s24_224),
 *           2 scales, the one input size the fine model's pos_embed allows
 *           (448); no LayerNorm in front of the flow (the CaiTs' own final
 *           norm is frozen).
 * The rest of uflow sees only this interface.
 *
 * Usage:
 *     uf_backbone *b = uf_backbone_load(UF_BACKBONE_MCAIT, "m48.safetensors,s24.safetensors");
 *     int S = uf_backbone_fixed_size(b);         // 448; 0 for resnet (any valid H x W)
 *     uf_backbone_feature_shape(b, l, S, S, &c, &h, &w);
 *     uf_backbone_forward(b, x, n, S, S, out);   // out[l] (n, C_l, H_l, W_l)
 */
#ifndef UF_BACKBONE_BACKBONE_H
#define UF_BACKBONE_BACKBONE_H

#include "backbone/mcait.h"
#include "backbone/resnet.h"

struct uf_safetensors;

#define UF_BACKBONE_MAX_LEVELS 3
#define UF_BACKBONE_MAX_FILES 2

typedef enum { UF_BACKBONE_RESNET, UF_BACKBONE_MCAIT } uf_backbone_kind;

typedef struct uf_backbone {
    uf_backbone_kind kind;
    uf_resnet *resnet; /* kind resnet */
    uf_mcait *mcait;   /* kind mcait */
} uf_backbone;

/* The frozen backbone's arithmetic. The flow and the NFA are always FP32. */
typedef enum { UF_PRECISION_FP32 = 0, UF_PRECISION_BF16, UF_PRECISION_AUTO } uf_precision;

/* "fp32" | "bf16" | "auto"; UF_ERR + message otherwise. */
int uf_precision_parse(const char *name, uf_precision *p);

/* Sets b's precision. bf16: ResNet's oneDNN plan in BF16 (resnet.h), MS-CaiT's dense layers in
 * BF16 (cait.h); refused with one line where the CPU has neither AVX512-BF16 nor AMX.
 * auto: bf16 for a ResNet where the CPU has it (it moves MTD's pixel AUROC and AUPRO by
 * less than 0.1 point: docs/results.md), fp32 otherwise (MS-CaiT's accuracy in BF16 is not
 * measured). */
int uf_backbone_set_precision(uf_backbone *b, uf_precision p);
/* "fp32" or "bf16": what b runs in. */
const char *uf_backbone_precision_name(const uf_backbone *b);

/* The kind of a --backbone / model-file name: "mcait" (or "mcait(...)")
 * is mcait, "resnet18", "wide_resnet50_2" and other "resnet..." names are
 * resnet. UF_ERR + message for anything else. */
int uf_backbone_kind_of(const char *name, uf_backbone_kind *kind);

/* Splits a weights argument into its files: one for resnet, exactly two
 * separated by a comma for mcait ("FINE,COARSE"). Returns the count, or
 * UF_ERR with a message saying what is expected. */
int uf_backbone_weight_files(uf_backbone_kind kind, const char *weights, char files[UF_BACKBONE_MAX_FILES][1024]);

/* Loads the weights (see uf_backbone_weight_files). NULL + one line naming
 * the file and the tensor. */
uf_backbone *uf_backbone_load(uf_backbone_kind kind, const char *weights);
/* A model file can carry its backbone, under the official U-Flow state_dict
 * names: file i of the weights (see uf_backbone_weight_files) becomes the
 * tensors "<prefix i><its name>". */
const char *uf_backbone_embed_prefix(uf_backbone_kind kind, int i);
/* Loads the backbone embedded in an open model file (which stays usable and
 * must be closed by the caller; the backbone keeps what it needs). */
uf_backbone *uf_backbone_load_embedded(uf_backbone_kind kind, struct uf_safetensors *model_file);

/* Random weights of a standard architecture ("resnet18", "wide_resnet50_2",
 * "mcait"), for benchmarks. */
uf_backbone *uf_backbone_random(const char *arch, unsigned seed);
void uf_backbone_free(uf_backbone *b);

int uf_backbone_levels(const uf_backbone *b);
/* "resnet18", "wide_resnet50_2", ..., "mcait" (see uf_mcait_arch). */
const char *uf_backbone_arch(const uf_backbone *b);
/* Name of level l in feature files: "layer1".."layer3", or "extractor1", "extractor2". */
const char *uf_backbone_level_name(const uf_backbone *b, int l);
/* 1 when the flow normalises the features with a trainable LayerNorm (resnet). */
int uf_backbone_needs_layernorm(const uf_backbone *b);
/* The (square) input size the weights require, or 0 when the size is free
 * (see uf_backbone_check_size). */
int uf_backbone_fixed_size(const uf_backbone *b);
/* UF_OK when a model can use height x width inputs, else UF_ERR saying why and
 * naming the nearest valid sizes. mcait: its fixed size only. resnet: each side
 * in 32..8192 and a multiple of 16, so that the three scales (1/4, 1/8, 1/16)
 * halve exactly from one to the next, as the flow's up/downsampling needs; the
 * rule is checked on the feature shapes themselves. Sides need not be equal. */
int uf_backbone_check_size(const uf_backbone *b, int height, int width);
void uf_backbone_feature_shape(const uf_backbone *b, int level, int height, int width, int *c, int *h, int *w);
/* FLOPs of one height x width image's forward (convolutions / matrix products). */
double uf_backbone_flops(const uf_backbone *b, int height, int width);

/* x (n, 3, height, width) ImageNet-normalised -> out[l] (n, C_l, H_l, W_l).
 * One backbone must not run two forwards at once. UF_OK or UF_ERR. */
int uf_backbone_forward(uf_backbone *b, const float *x, int n, int height, int width, float *const *out);

#endif
