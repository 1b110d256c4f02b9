/* resnet.h - frozen ResNet feature extractors (torchvision / timm ResNet-18,
 * Wide-ResNet-50-2 and their relatives), run up to layer3 in eval mode.
 *
 * The forward pass is conv1 -> bn1 -> ReLU -> maxpool(3x3, s2, p1) -> layer1 ->
 * layer2 -> layer3 and returns the three layer outputs (strides 4, 8, 16). No
 * layer4, no head. BatchNorm is folded into each convolution at load time.
 *
 * Weights come from a .safetensors file with timm / torchvision key names:
 *   conv1.weight, bn1.{weight,bias,running_mean,running_var},
 *   layer{k}.{j}.conv{1,2[,3]}.weight, layer{k}.{j}.bn{1,2[,3]}.*,
 *   layer{k}.0.downsample.0.weight, layer{k}.0.downsample.1.*
 * either as shipped (BatchNorm tensors, eps 1e-5) or already folded (every conv
 * has a `.bias` and there are no BatchNorm tensors). Other tensors (layer4, fc,
 * num_batches_tracked, ...) are ignored. The block type (BasicBlock or
 * Bottleneck), the number of blocks per layer and every channel width are read
 * from the tensors, so reduced-width test models load too.
 *
 * Usage:
 *     uf_resnet *m = uf_resnet_load("models/resnet18-in1k-l3-bnfolded.safetensors");
 *     int c, fh, fw;
 *     uf_resnet_feature_shape(m, 0, 256, 256, &c, &fh, &fw);   // 64, 64, 64
 *     float *out[3] = {...};  // out[l]: (N, C_l, H_l, W_l)
 *     uf_resnet_forward(m, x, n, 256, 256, out);               // x: (N, 3, 256, 256)
 *     uf_resnet_free(m);
 */
#ifndef UF_BACKBONE_RESNET_H
#define UF_BACKBONE_RESNET_H

#include <stddef.h>

#include "io/safetensors.h"

#define UF_RESNET_LEVELS 3

typedef struct uf_resnet uf_resnet;

/* Loads a model from a .safetensors file (see the header comment for the
 * accepted layouts). NULL + error naming the file and tensor on failure. */
uf_resnet *uf_resnet_load(const char *path);
/* The same from an open file; `what` names it in error messages. The model
 * copies what it needs: st may be closed afterwards. */
uf_resnet *uf_resnet_from_safetensors(const uf_safetensors *st, const char *what);
void uf_resnet_free(uf_resnet *m);

/* A model of architecture "resnet18" or "wide_resnet50_2" (full widths) with
 * random He-scaled weights and small random biases (benchmarks, where no real
 * weights exist). NULL + error for another name or no memory. */
uf_resnet *uf_resnet_random(const char *arch, unsigned seed);

/* "resnet18", "resnet34", "resnet50", "wide_resnet50_2", "resnet101", ... from
 * the block type, block counts and width ratio; "resnet-basic[a,b,c]" or
 * "resnet-bottleneck[a,b,c]" for other block counts. */
const char *uf_resnet_arch(const uf_resnet *m);
/* 1 when the weights came with BatchNorm tensors (folded at load), 0 when pre-folded. */
int uf_resnet_had_batchnorm(const uf_resnet *m);

/* Shape of feature level (0: layer1, 1: layer2, 2: layer3) for an h x w input. */
void uf_resnet_feature_shape(const uf_resnet *m, int level, int h, int w, int *c, int *fh, int *fw);

/* Multiply-adds x 2 of all convolutions for one h x w image (the forward's FLOPs). */
double uf_resnet_conv_flops(const uf_resnet *m, int h, int w);

/* Runs the extractor on x (N, 3, H, W) (ImageNet-normalised RGB); writes
 * out[l] (N, C_l, H_l, W_l) for l = 0..2. Images are processed in groups so
 * that the activation scratch stays bounded (it is kept in the model and grown
 * on demand): one model must not run two forwards at the same time. UF_OK, or
 * UF_ERR (out of memory, input smaller than 32x32 ... see the message). */
int uf_resnet_forward(uf_resnet *m, const float *x, int n, int h, int w, float *out[UF_RESNET_LEVELS]);

/* How the forward runs: oneDNN primitives with layouts kept across layers
 * (the default; about twice as fast where it is available), with the 3x3
 * stride-1 convolutions as Winograd (oneDNN's on AVX-512: another 1.4x on resnet18;
 * core/conv_winograd.h's on AVX2: 1.8x at batch 8) and direct otherwise; the same with direct kernels only
 * (UF_RESNET_DNNL_DIRECT, for A/B runs and tests); or layer by layer through
 * core/conv.h in nchw (also used when oneDNN cannot build the network), whose
 * convolutions are im2col + OpenBLAS when uf_conv_set_dnnl(0) (the reference).
 * Changing it drops the oneDNN plan. */
typedef enum { UF_RESNET_DNNL = 0, UF_RESNET_IM2COL = 1, UF_RESNET_DNNL_DIRECT = 2 } uf_resnet_engine;
void uf_resnet_set_engine(uf_resnet *m, uf_resnet_engine e);
uf_resnet_engine uf_resnet_get_engine(const uf_resnet *m);

/* BF16 inference: the oneDNN plan's activations and weights in bfloat16 (8-bit mantissa),
 * products accumulated in FP32, biases and the three outputs FP32; for CPUs with
 * AVX512-BF16 or AMX (uf_resnet_bf16_supported: oneDNN's ISA, which MS-CaiT's bf16 path
 * needs too). The im2col engine stays FP32. The caller checks the CPU before turning it on
 * (uf_backbone_set_precision refuses with one line); UF_OK. */
int uf_resnet_bf16_supported(void);
int uf_resnet_set_bf16(uf_resnet *m, int on);
int uf_resnet_get_bf16(const uf_resnet *m);
/* e.g. "oneDNN 2.6.3, ISA avx512_core_amx": the library and the instruction set it runs here. */
const char *uf_resnet_dnnl_info(void);

/* Per-stage timing of the last forward (seconds of conv GEMM+im2col and of the
 * rest), for `uflow bench backbone`. */
typedef struct uf_resnet_timing {
    double conv_s, other_s;
} uf_resnet_timing;
uf_resnet_timing uf_resnet_last_timing(const uf_resnet *m);

#endif
