#include "backbone/backbone.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor.h"
#include "io/safetensors.h"

int uf_backbone_kind_of(const char *name, uf_backbone_kind *kind) {
    if (!strcmp(name, "mcait") || !strncmp(name, "mcait(", 6)) {
        *kind = UF_BACKBONE_MCAIT;
        return UF_OK;
    }
    if (!strncmp(name, "resnet", 6) || !strncmp(name, "wide_resnet", 11)) {
        *kind = UF_BACKBONE_RESNET;
        return UF_OK;
    }
    return uf_error("unknown backbone '%s' (resnet18, wide_resnet50_2 or mcait)", name);
}

int uf_backbone_weight_files(uf_backbone_kind kind, const char *weights, char files[UF_BACKBONE_MAX_FILES][1024]) {
    if (kind == UF_BACKBONE_RESNET) {
        if (strlen(weights) >= 1024) return uf_error("weights path too long: '%.60s...'", weights);
        snprintf(files[0], 1024, "%s", weights);
        return 1;
    }
    const char *comma = strchr(weights, ',');
    if (!comma || strchr(comma + 1, ',') || comma == weights || !comma[1])
        return uf_error("--weights '%s': mcait needs two files, FINE,COARSE (cait_m48_448 then cait_s24_224 "
                        ".safetensors, separated by one comma)", weights);
    size_t n0 = (size_t)(comma - weights);
    if (n0 >= 1024 || strlen(comma + 1) >= 1024) return uf_error("weights path too long: '%.60s...'", weights);
    snprintf(files[0], 1024, "%.*s", (int)n0, weights);
    snprintf(files[1], 1024, "%s", comma + 1);
    return 2;
}

uf_backbone *uf_backbone_load(uf_backbone_kind kind, const char *weights) {
    char files[UF_BACKBONE_MAX_FILES][1024];
    if (uf_backbone_weight_files(kind, weights, files) < 0) return NULL;
    uf_backbone *b = uf_calloc(1, sizeof *b);
    if (!b) return NULL;
    b->kind = kind;
    if (kind == UF_BACKBONE_RESNET)
        b->resnet = uf_resnet_load(files[0]);
    else
        b->mcait = uf_mcait_load(files[0], files[1]);
    if (!b->resnet && !b->mcait) {
        uf_free(b);
        return NULL;
    }
    return b;
}

const char *uf_backbone_embed_prefix(uf_backbone_kind kind, int i) {
    if (kind == UF_BACKBONE_RESNET) return i == 0 ? "feature_extractor.extractor." : NULL;
    return i == 0 ? "feature_extractor.extractor1." : i == 1 ? "feature_extractor.extractor2." : NULL;
}

uf_backbone *uf_backbone_load_embedded(uf_backbone_kind kind, uf_safetensors *model_file) {
    uf_backbone *b = uf_calloc(1, sizeof *b);
    if (!b) return NULL;
    b->kind = kind;
    uf_safetensors *v[UF_BACKBONE_MAX_FILES] = {0};
    const int n = kind == UF_BACKBONE_RESNET ? 1 : 2;
    for (int i = 0; i < n; i++)
        if (!(v[i] = uf_st_view(model_file, uf_backbone_embed_prefix(kind, i)))) {
            uf_st_close(v[0]);
            uf_free(b);
            return NULL;
        }
    if (kind == UF_BACKBONE_RESNET) {
        b->resnet = uf_resnet_from_safetensors(v[0], uf_st_path(v[0])); /* copies what it needs */
        uf_st_close(v[0]);
    } else {
        b->mcait = uf_mcait_from_safetensors(v[0], v[1]); /* keeps the views */
    }
    if (!b->resnet && !b->mcait) {
        uf_free(b);
        return NULL;
    }
    return b;
}

uf_backbone *uf_backbone_random(const char *arch, unsigned seed) {
    uf_backbone *b = uf_calloc(1, sizeof *b);
    if (!b) return NULL;
    if (!strcmp(arch, "mcait")) {
        b->kind = UF_BACKBONE_MCAIT;
        b->mcait = uf_mcait_random(seed);
    } else {
        b->kind = UF_BACKBONE_RESNET;
        b->resnet = uf_resnet_random(arch, seed);
    }
    if (!b->resnet && !b->mcait) {
        uf_free(b);
        return NULL;
    }
    return b;
}

void uf_backbone_free(uf_backbone *b) {
    if (!b) return;
    uf_resnet_free(b->resnet);
    uf_mcait_free(b->mcait);
    uf_free(b);
}

int uf_backbone_levels(const uf_backbone *b) {
    return b->kind == UF_BACKBONE_MCAIT ? UF_MCAIT_LEVELS : UF_RESNET_LEVELS;
}

const char *uf_backbone_arch(const uf_backbone *b) {
    return b->kind == UF_BACKBONE_MCAIT ? uf_mcait_arch(b->mcait) : uf_resnet_arch(b->resnet);
}

const char *uf_backbone_level_name(const uf_backbone *b, int l) {
    static const char *const resnet[] = {"layer1", "layer2", "layer3"}, *const mcait[] = {"extractor1", "extractor2"};
    UF_ASSERT(l >= 0 && l < uf_backbone_levels(b));
    return b->kind == UF_BACKBONE_MCAIT ? mcait[l] : resnet[l];
}

int uf_backbone_needs_layernorm(const uf_backbone *b) { return b->kind == UF_BACKBONE_RESNET; }

int uf_backbone_fixed_size(const uf_backbone *b) {
    return b->kind == UF_BACKBONE_MCAIT ? uf_mcait_input_size(b->mcait) : 0;
}

#define RESNET_MIN_SIDE 32
#define RESNET_MAX_SIDE 8192

/* 1 when a resnet's three scales halve exactly for a side of s pixels. Some other
 * sides halve too (109 gives 28, 14, 7 through the stem's padding), but their cells
 * do not tile the image evenly, so the rule is multiples of 16, checked here on the
 * actual shapes. */
static int resnet_side_ok(const uf_backbone *b, int s) {
    if (s < RESNET_MIN_SIDE || s > RESNET_MAX_SIDE || s % 16 != 0) return 0;
    int c, h[UF_RESNET_LEVELS], w[UF_RESNET_LEVELS];
    for (int l = 0; l < UF_RESNET_LEVELS; l++) uf_resnet_feature_shape(b->resnet, l, s, s, &c, &h[l], &w[l]);
    for (int l = 0; l + 1 < UF_RESNET_LEVELS; l++)
        if (h[l] != 2 * h[l + 1]) return 0;
    return 1;
}

/* Error for a side that is not valid, naming the nearest valid ones. */
static int resnet_side_error(const uf_backbone *b, const char *which, int s, int height, int width) {
    int below = s < RESNET_MIN_SIDE ? 0 : (s > RESNET_MAX_SIDE ? RESNET_MAX_SIDE : s), above = s;
    while (below > 0 && !resnet_side_ok(b, below)) below--;
    if (above < RESNET_MIN_SIDE) above = RESNET_MIN_SIDE;
    while (above <= RESNET_MAX_SIDE && !resnet_side_ok(b, above)) above++;
    char nearest[64];
    if (below > 0 && above <= RESNET_MAX_SIDE)
        snprintf(nearest, sizeof nearest, "%d or %d", below, above);
    else
        snprintf(nearest, sizeof nearest, "%d", below > 0 ? below : above);
    return uf_error("input size %dx%d: the %s %d is not valid for %s (sides must be multiples of 16 in %d..%d, so that "
                    "the scales 1/4, 1/8, 1/16 halve); nearest valid %s: %s", width, height, which, s,
                    uf_backbone_arch(b), RESNET_MIN_SIDE, RESNET_MAX_SIDE, which, nearest);
}

int uf_backbone_check_size(const uf_backbone *b, int height, int width) {
    const int fixed = uf_backbone_fixed_size(b);
    if (fixed) {
        if (height != fixed || width != fixed)
            return uf_error("input size %dx%d: the %s backbone takes %dx%d images only (its position embeddings are "
                            "learnt for that size)", width, height, uf_backbone_arch(b), fixed, fixed);
        return UF_OK;
    }
    if (!resnet_side_ok(b, width)) return resnet_side_error(b, "width", width, height, width);
    if (!resnet_side_ok(b, height)) return resnet_side_error(b, "height", height, height, width);
    return UF_OK;
}

void uf_backbone_feature_shape(const uf_backbone *b, int level, int height, int width, int *c, int *h, int *w) {
    if (b->kind == UF_BACKBONE_MCAIT)
        uf_mcait_feature_shape(b->mcait, level, c, h, w);
    else
        uf_resnet_feature_shape(b->resnet, level, height, width, c, h, w);
}

double uf_backbone_flops(const uf_backbone *b, int height, int width) {
    return b->kind == UF_BACKBONE_MCAIT ? uf_mcait_flops(b->mcait) : uf_resnet_conv_flops(b->resnet, height, width);
}

int uf_backbone_forward(uf_backbone *b, const float *x, int n, int height, int width, float *const *out) {
    if (uf_backbone_fixed_size(b) && uf_backbone_check_size(b, height, width) != UF_OK) return UF_ERR;
    if (b->kind == UF_BACKBONE_MCAIT) return uf_mcait_forward(b->mcait, x, n, out);
    float *o[UF_RESNET_LEVELS] = {out[0], out[1], out[2]};
    return uf_resnet_forward(b->resnet, x, n, height, width, o);
}

int uf_precision_parse(const char *name, uf_precision *p) {
    if (!strcmp(name, "fp32")) *p = UF_PRECISION_FP32;
    else if (!strcmp(name, "bf16")) *p = UF_PRECISION_BF16;
    else if (!strcmp(name, "auto")) *p = UF_PRECISION_AUTO;
    else return uf_error("precision '%s': fp32, bf16 or auto", name);
    return UF_OK;
}

int uf_backbone_set_precision(uf_backbone *b, uf_precision p) {
    /* auto: bf16 only where its accuracy was measured (ResNet on MTD, docs/results.md); MS-CaiT's
     * was not (no real MS-CaiT weights in the dev data), so auto keeps it FP32 */
    if (p == UF_PRECISION_AUTO)
        p = b->kind == UF_BACKBONE_RESNET && uf_resnet_bf16_supported() ? UF_PRECISION_BF16 : UF_PRECISION_FP32;
    const int bf16 = p == UF_PRECISION_BF16;
    if (bf16 && !uf_resnet_bf16_supported())
        return uf_error("bf16: this CPU has neither AVX512-BF16 nor AMX (%s); use --precision fp32",
                        uf_resnet_dnnl_info());
    return b->kind == UF_BACKBONE_MCAIT ? uf_mcait_set_bf16(b->mcait, bf16) : uf_resnet_set_bf16(b->resnet, bf16);
}

const char *uf_backbone_precision_name(const uf_backbone *b) {
    const int bf16 = b->kind == UF_BACKBONE_RESNET ? uf_resnet_get_bf16(b->resnet) : uf_mcait_get_bf16(b->mcait);
    return bf16 ? "bf16" : "fp32";
}
