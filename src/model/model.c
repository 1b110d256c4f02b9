#include "model/model.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/shipped.h"
#include "core/error.h"
#include "core/tensor.h"
#include "io/file_hash.h"
#include "io/safetensors.h"

#define MODEL_FORMAT "1"
/* Images per backbone+flow group in uf_model_latents (bounds activation memory). */
#define LATENT_GROUP 8

static int flow_config_for(const uf_backbone *bb, const uf_input_geometry *in, int n_steps, uf_ln_mode ln_mode,
                           uf_flow_config *fc) {
    *fc = uf_flow_default_config();
    fc->n_scales = uf_backbone_levels(bb);
    fc->n_steps = n_steps;
    fc->ln_mode = uf_backbone_needs_layernorm(bb) ? ln_mode : UF_LN_NONE;
    for (int l = 0; l < fc->n_scales; l++)
        uf_backbone_feature_shape(bb, l, in->height, in->width, &fc->channels[l], &fc->height[l], &fc->width[l]);
    for (int l = 0; l + 1 < fc->n_scales; l++)
        if (fc->height[l] != 2 * fc->height[l + 1] || fc->width[l] != 2 * fc->width[l + 1])
            return uf_error("input size %dx%d gives feature maps that do not halve from scale to scale "
                            "(use multiples of 16)", in->width, in->height);
    return UF_OK;
}

/* sha256 of each weights file, comma-separated, into out (132 bytes). */
static int hash_weights(uf_backbone_kind kind, const char *weights, char *out, size_t cap) {
    char files[UF_BACKBONE_MAX_FILES][1024], sha[65];
    int n = uf_backbone_weight_files(kind, weights, files);
    if (n < 0) return UF_ERR;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (uf_sha256_file_cached(files[i], sha) != UF_OK) return UF_ERR;
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s%s", i ? "," : "", sha);
    }
    return UF_OK;
}

uf_model *uf_model_create(uf_backbone_kind kind, const char *backbone_weights, uf_input_geometry input, int n_steps,
                          uf_ln_mode ln_mode, uint64_t seed) {
    uf_model *m = calloc(1, sizeof *m);
    if (!m) {
        uf_error("out of memory");
        return NULL;
    }
    m->backbone = uf_backbone_load(kind, backbone_weights);
    if (!m->backbone) goto fail;
    if (input.width == 0 && input.height == 0) {
        const int fixed = uf_backbone_fixed_size(m->backbone);
        input.width = input.height = fixed ? fixed : 256;
    }
    if (uf_backbone_check_size(m->backbone, input.height, input.width) != UF_OK) goto fail;
    if (hash_weights(kind, backbone_weights, m->cfg.backbone_sha256, sizeof m->cfg.backbone_sha256) != UF_OK)
        goto fail;
    snprintf(m->cfg.backbone, sizeof m->cfg.backbone, "%s", uf_backbone_arch(m->backbone));
    snprintf(m->cfg.backbone_file, sizeof m->cfg.backbone_file, "%s", backbone_weights);
    snprintf(m->backbone_source, sizeof m->backbone_source, "%s", backbone_weights);
    m->cfg.input = input;
    if (flow_config_for(m->backbone, &input, n_steps, ln_mode, &m->cfg.flow) != UF_OK) goto fail;
    m->flow = uf_flow_new(&m->cfg.flow, seed);
    if (!m->flow) goto fail;
    return m;
fail:
    uf_model_free(m);
    return NULL;
}

void uf_model_free(uf_model *m) {
    if (!m) return;
    uf_backbone_free(m->backbone);
    uf_flow_free(m->flow);
    free(m);
}

void uf_model_latent_shape(const uf_model *m, int l, int *c, int *h, int *w) {
    *c = m->flow->z_ch[l];
    *h = m->cfg.flow.height[l];
    *w = m->cfg.flow.width[l];
}

/* ---- metadata ---- */

static int meta_set(uf_st_writer *w, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int meta_set(uf_st_writer *w, const char *key, const char *fmt, ...) {
    char value[2300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    return uf_st_writer_set_metadata(w, key, value);
}

static void join_ints(char *buf, size_t cap, const int *v, int n) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < cap; i++) used += (size_t)snprintf(buf + used, cap - used, "%s%d", i ? "," : "", v[i]);
}

static int write_metadata(uf_st_writer *w, const uf_model *m, const uf_adam *opt, int with_backbone) {
    const uf_model_config *c = &m->cfg;
    char ch[128], hh[128], ww[128];
    join_ints(ch, sizeof ch, c->flow.channels, c->flow.n_scales);
    join_ints(hh, sizeof hh, c->flow.height, c->flow.n_scales);
    join_ints(ww, sizeof ww, c->flow.width, c->flow.n_scales);
    int rc = UF_OK;
    rc |= meta_set(w, "uflow.format", MODEL_FORMAT);
    rc |= meta_set(w, "uflow.method", "U-Flow (Tailanian, Pardo, Muse); AllInOneBlock as FrEIA 1779d1f");
    rc |= meta_set(w, "uflow.backbone", "%s", c->backbone);
    rc |= meta_set(w, "uflow.backbone_file", "%s", c->backbone_file);
    rc |= meta_set(w, "uflow.backbone_sha256", "%s", c->backbone_sha256);
    if (c->input.width == c->input.height)
        rc |= meta_set(w, "uflow.input_size", "%d", c->input.width);
    else
        rc |= meta_set(w, "uflow.input_size", "%dx%d", c->input.width, c->input.height);
    rc |= meta_set(w, "uflow.input_fit", "%s", uf_fit_mode_name(c->input.fit));
    rc |= meta_set(w, "uflow.scales", "%d", c->flow.n_scales);
    rc |= meta_set(w, "uflow.channels", "%s", ch);
    rc |= meta_set(w, "uflow.heights", "%s", hh);
    rc |= meta_set(w, "uflow.widths", "%s", ww);
    rc |= meta_set(w, "uflow.flow_steps", "%d", c->flow.n_steps);
    rc |= meta_set(w, "uflow.clamp", "2.0");
    rc |= meta_set(w, "uflow.ln_mode", "%s", uf_ln_mode_name(c->flow.ln_mode));
    rc |= meta_set(w, "uflow.epochs", "%d", c->train.epochs);
    rc |= meta_set(w, "uflow.batch", "%d", c->train.batch);
    rc |= meta_set(w, "uflow.lr", "%.17g", c->train.lr);
    rc |= meta_set(w, "uflow.weight_decay", "%.17g", c->train.weight_decay);
    rc |= meta_set(w, "uflow.seed", "%" PRIu64, c->train.seed);
    rc |= meta_set(w, "uflow.loss", "%s", c->train.anomalib_loss ? "anomalib" : "official");
    rc |= meta_set(w, "uflow.epochs_done", "%d", c->epochs_done);
    rc |= meta_set(w, "uflow.train_data", "%s", c->train_data);
    rc |= meta_set(w, "uflow.train_max_images", "%d", c->train_max_images);
    rc |= meta_set(w, "uflow.train_images", "%d", c->train_images);
    rc |= meta_set(w, "uflow.train_inputs_sha256", "%s", c->train_inputs_sha256);
    if (c->val_images > 0) {
        char z2[160];
        size_t used = 0;
        z2[0] = '\0';
        for (int l = 0; l < c->flow.n_scales; l++)
            used += (size_t)snprintf(z2 + used, sizeof z2 - used, "%s%.6f", l ? "," : "", c->val_z2[l]);
        rc |= meta_set(w, "uflow.val_split", "%.17g", c->val_split);
        rc |= meta_set(w, "uflow.val_dir", "%s", c->val_dir);
        rc |= meta_set(w, "uflow.val_images", "%d", c->val_images);
        rc |= meta_set(w, "uflow.val_inputs_sha256", "%s", c->val_inputs_sha256);
        rc |= meta_set(w, "uflow.val_nll", "%.17g", c->val_nll);
        rc |= meta_set(w, "uflow.val_z2", "%s", z2);
        rc |= meta_set(w, "uflow.best_epoch", "%d", c->best_epoch);
        rc |= meta_set(w, "uflow.best_val_nll", "%.17g", c->best_val_nll);
        rc |= meta_set(w, "uflow.best_in_band", "%d", c->best_in_band);
        rc |= meta_set(w, "uflow.min_val_nll", "%.17g", c->min_val_nll);
        rc |= meta_set(w, "uflow.nll_stall", "%d", c->nll_stall);
        rc |= meta_set(w, "uflow.above_band", "%d", c->above_band);
        rc |= meta_set(w, "uflow.stopped_early", "%d", c->stopped_early);
        rc |= meta_set(w, "uflow.stop_reason", "%s", c->stop_reason);
    }
    if (c->tiling.enabled) {
        rc |= meta_set(w, "uflow.tile", "on");
        rc |= meta_set(w, "uflow.tile_overlap", "%d", c->tiling.overlap);
        rc |= meta_set(w, "uflow.tile_max_short", "%d", c->tiling.max_short);
    }
    if (c->map_sigma > 0) rc |= meta_set(w, "uflow.map_sigma", "%.17g", c->map_sigma);
    if (c->calib.n_images > 0) {
        char z2[160];
        size_t used = 0;
        z2[0] = '\0';
        for (int l = 0; l < c->flow.n_scales; l++)
            used += (size_t)snprintf(z2 + used, sizeof z2 - used, "%s%.6f", l ? "," : "", c->calib.z2[l]);
        rc |= meta_set(w, "uflow.calib_images", "%d", c->calib.n_images);
        rc |= meta_set(w, "uflow.calib_z2", "%s", z2);
        rc |= meta_set(w, "uflow.calib_log10_offset", "%.17g", c->calib.log10_offset);
        rc |= meta_set(w, "uflow.calib_rate", "%.17g", c->calib.rate);
        rc |= meta_set(w, "uflow.calib_flagged_spec", "%.17g", c->calib.flagged_spec);
        rc |= meta_set(w, "uflow.calib_flagged", "%.17g", c->calib.flagged);
        rc |= meta_set(w, "uflow.calib_source", "%s", c->calib.source);
    }
    if (opt) rc |= meta_set(w, "uflow.optimizer_step", "%ld", opt->step);
    if (with_backbone) rc |= meta_set(w, "uflow.backbone_embedded", "1");
    return rc ? UF_ERR : UF_OK;
}

/* 1 for the tensors of a whole-network ResNet file that a features_only
 * extractor (conv1 .. layer3: the official state_dict) does not have. */
static int beyond_layer3(const char *name) {
    return !strncmp(name, "layer4.", 7) || !strncmp(name, "fc.", 3) || !strncmp(name, "global_pool.", 12);
}

/* Adds every tensor of `src` to w as "<prefix><name>", float dtypes kept
 * (F64 as F32), integer ones as I64; a ResNet's layer4 / fc are left out. */
static int add_all_tensors(uf_st_writer *w, const uf_safetensors *src, const char *prefix, int resnet) {
    char name[512];
    for (int i = 0; i < uf_st_count(src); i++) {
        const uf_st_tensor *t = uf_st_at(src, i);
        if (resnet && beyond_layer3(t->name)) continue;
        if (snprintf(name, sizeof name, "%s%s", prefix, t->name) >= (int)sizeof name)
            return uf_error("%s: tensor name too long: '%.60s...'", uf_st_path(src), t->name);
        int rc;
        if (t->dtype == UF_DT_F32 || t->dtype == UF_DT_F16 || t->dtype == UF_DT_BF16 || t->dtype == UF_DT_F64) {
            uf_tensor *v = uf_st_read_f32(src, t->name, -1, NULL);
            if (!v) return UF_ERR;
            rc = uf_st_writer_add_f32(w, name, t->dtype == UF_DT_F64 ? UF_DT_F32 : t->dtype, t->ndim, t->shape,
                                      v->data);
            uf_tensor_free(v);
        } else {
            int64_t *v = malloc(sizeof(int64_t) * (size_t)(t->numel ? t->numel : 1));
            if (!v) return uf_error("out of memory");
            rc = uf_st_read_i64(src, t->name, v, t->numel);
            if (rc == UF_OK) rc = uf_st_writer_add_i64(w, name, t->ndim, t->shape, v);
            free(v);
        }
        if (rc != UF_OK) return UF_ERR;
    }
    return UF_OK;
}

/* The backbone's tensors, from its weights files or from the model file that embeds them. */
static int add_backbone(uf_st_writer *w, const uf_model *m) {
    uf_backbone_kind kind;
    if (uf_backbone_kind_of(m->cfg.backbone, &kind) != UF_OK) return UF_ERR;
    if (m->backbone_embedded) {
        uf_safetensors *st = uf_st_open(m->backbone_source);
        if (!st) return UF_ERR;
        int rc = UF_OK;
        for (int i = 0; rc == UF_OK && uf_backbone_embed_prefix(kind, i); i++) {
            const char *prefix = uf_backbone_embed_prefix(kind, i);
            uf_safetensors *v = uf_st_view(st, prefix);
            rc = v ? add_all_tensors(w, v, prefix, kind == UF_BACKBONE_RESNET) : UF_ERR;
            uf_st_close(v);
        }
        uf_st_close(st);
        return rc;
    }
    char files[UF_BACKBONE_MAX_FILES][1024];
    int n = uf_backbone_weight_files(kind, m->backbone_source, files);
    if (n < 0) return UF_ERR;
    for (int i = 0; i < n; i++) {
        uf_safetensors *st = uf_st_open(files[i]);
        if (!st) return UF_ERR;
        int rc = add_all_tensors(w, st, uf_backbone_embed_prefix(kind, i), kind == UF_BACKBONE_RESNET);
        uf_st_close(st);
        if (rc != UF_OK) return UF_ERR;
    }
    return UF_OK;
}

int uf_model_save_as(const uf_model *m, const char *path, const uf_adam *opt, int with_backbone) {
    uf_st_writer *w = uf_st_writer_new();
    if (!w) return UF_ERR;
    float *buf = NULL;
    size_t buf_cap = 0;
    int rc = write_metadata(w, m, opt, with_backbone);
    int n = uf_flow_param_count(m->flow);
    for (int i = 0; i < n && rc == UF_OK; i++) {
        uf_flow_param p;
        uf_flow_param_get(m->flow, i, &p);
        if (p.numel > buf_cap) {
            uf_free(buf);
            buf_cap = p.numel;
            buf = uf_alloc(buf_cap * sizeof(float));
            if (!buf) {
                rc = UF_ERR;
                break;
            }
        }
        uf_flow_param_read(m->flow, i, buf);
        rc = uf_st_writer_add_f32(w, p.name, UF_DT_F32, p.ndim, p.shape, buf);
    }
    if (rc == UF_OK && opt) {
        int64_t shape[1] = {(int64_t)opt->n};
        rc = uf_st_writer_add_f32(w, "optimizer.exp_avg", UF_DT_F32, 1, shape, opt->m);
        if (rc == UF_OK) rc = uf_st_writer_add_f32(w, "optimizer.exp_avg_sq", UF_DT_F32, 1, shape, opt->v);
    }
    if (rc == UF_OK && with_backbone) rc = add_backbone(w, m);
    if (rc == UF_OK) rc = uf_st_writer_save(w, path);
    uf_free(buf);
    uf_st_writer_free(w);
    return rc;
}

int uf_model_save(const uf_model *m, const char *path, const uf_adam *opt) {
    return uf_model_save_as(m, path, opt, m->backbone_embedded);
}

/* ---- loading ---- */

/* 1 when s holds a control character (it would break one-line messages). */
static int has_control_char(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

/* A metadata value the model needs; values with control characters are
 * refused here, so messages that quote them stay on one line. */
static const char *meta_req(const uf_safetensors *st, const char *key) {
    const char *v = uf_st_metadata_get(st, key);
    if (!v) uf_error("%s: not a uflow model (metadata '%s' missing)", uf_st_path(st), key);
    else if (has_control_char(v)) {
        uf_error("%s: metadata '%s' holds control characters", uf_st_path(st), key);
        return NULL;
    }
    return v;
}

static int meta_int(const uf_safetensors *st, const char *key, int lo, int hi, int *out) {
    const char *v = meta_req(st, key);
    if (!v) return UF_ERR;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return uf_error("%s: metadata '%s' = '%s' is not an integer in [%d, %d]", uf_st_path(st), key, v, lo, hi);
    *out = (int)x;
    return UF_OK;
}

static int meta_double(const uf_safetensors *st, const char *key, double *out) {
    const char *v = meta_req(st, key);
    if (!v) return UF_ERR;
    char *end;
    *out = strtod(v, &end);
    if (end == v || *end) return uf_error("%s: metadata '%s' = '%s' is not a number", uf_st_path(st), key, v);
    return UF_OK;
}

static int meta_int_list(const uf_safetensors *st, const char *key, int n, int *out) {
    const char *v = meta_req(st, key);
    if (!v) return UF_ERR;
    const char *s = v;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (errno || end == s || x < 1 || x > 1 << 20 || (i + 1 < n ? *end != ',' : *end != '\0'))
            return uf_error("%s: metadata '%s' = '%s' is not a list of %d positive integers", uf_st_path(st), key,
                            v, n);
        out[i] = (int)x;
        s = end + 1;
    }
    return UF_OK;
}

/* Tiling and the NFA calibration came with format 1's fourth release: absent means off and
 * uncalibrated (the spec's test), so older models predict as before. */
static int read_tiling_and_calibration(const uf_safetensors *st, uf_model_config *c) {
    const char *s = uf_st_metadata_get(st, "uflow.tile");
    if (s) {
        if (strcmp(s, "on"))
            return uf_error("%s: metadata 'uflow.tile' = '%.40s' (expected on)", uf_st_path(st),
                            has_control_char(s) ? "?" : s);
        const int shorter = c->input.width < c->input.height ? c->input.width : c->input.height;
        c->tiling.enabled = 1;
        if (meta_int(st, "uflow.tile_overlap", 0, shorter - 1, &c->tiling.overlap) != UF_OK ||
            meta_int(st, "uflow.tile_max_short", 0, UF_IMAGE_MAX_SIDE, &c->tiling.max_short) != UF_OK)
            return UF_ERR;
    }
    if (uf_st_metadata_get(st, "uflow.map_sigma")) { /* absent: 0, the spec's map */
        if (meta_double(st, "uflow.map_sigma", &c->map_sigma) != UF_OK) return UF_ERR;
        if (!(c->map_sigma >= 0 && c->map_sigma <= UF_MAP_SIGMA_MAX))
            return uf_error("%s: metadata 'uflow.map_sigma' = %g is out of range (0..%g)", uf_st_path(st),
                            c->map_sigma, (double)UF_MAP_SIGMA_MAX);
    }
    if (!uf_st_metadata_get(st, "uflow.calib_images")) return UF_OK;
    uf_calibration *k = &c->calib;
    if (meta_int(st, "uflow.calib_images", 1, 1 << 30, &k->n_images) != UF_OK ||
        meta_double(st, "uflow.calib_log10_offset", &k->log10_offset) != UF_OK ||
        meta_double(st, "uflow.calib_rate", &k->rate) != UF_OK ||
        meta_double(st, "uflow.calib_flagged_spec", &k->flagged_spec) != UF_OK ||
        meta_double(st, "uflow.calib_flagged", &k->flagged) != UF_OK || !(s = meta_req(st, "uflow.calib_source")))
        return UF_ERR;
    snprintf(k->source, sizeof k->source, "%s", s);
    if (!(k->log10_offset >= 0 && isfinite(k->log10_offset)) || !(k->rate > 0 && k->rate < 1))
        return uf_error("%s: metadata 'uflow.calib_log10_offset' / 'uflow.calib_rate' out of range", uf_st_path(st));
    if (!(s = meta_req(st, "uflow.calib_z2"))) return UF_ERR;
    char *end = (char *)s;
    for (int l = 0; l < c->flow.n_scales; l++) {
        k->z2[l] = strtod(end, &end);
        if (!isfinite(k->z2[l]) || !(k->z2[l] > 0) || (l + 1 < c->flow.n_scales ? *end != ',' : *end != '\0'))
            return uf_error("%s: metadata 'uflow.calib_z2' = '%.80s' is not %d positive numbers", uf_st_path(st),
                            has_control_char(s) ? "?" : s, c->flow.n_scales);
        if (*end == ',') end++;
    }
    return UF_OK;
}

static int read_config(const uf_safetensors *st, uf_model_config *c) {
    memset(c, 0, sizeof *c);
    const char *fmt = meta_req(st, "uflow.format");
    if (!fmt) return UF_ERR;
    if (strcmp(fmt, MODEL_FORMAT) != 0)
        return uf_error("%s: model format '%s' is not supported (this uflow reads '%s')", uf_st_path(st), fmt,
                        MODEL_FORMAT);
    const char *s;
    if (!(s = meta_req(st, "uflow.backbone"))) return UF_ERR;
    snprintf(c->backbone, sizeof c->backbone, "%s", s);
    if (!(s = meta_req(st, "uflow.backbone_file"))) return UF_ERR;
    snprintf(c->backbone_file, sizeof c->backbone_file, "%s", s);
    if (!(s = meta_req(st, "uflow.backbone_sha256"))) return UF_ERR;
    snprintf(c->backbone_sha256, sizeof c->backbone_sha256, "%s", s);
    if ((s = uf_st_metadata_get(st, "uflow.train_data")) && !has_control_char(s))
        snprintf(c->train_data, sizeof c->train_data, "%s", s);
    c->flow = uf_flow_default_config();
    if (!(s = meta_req(st, "uflow.input_size"))) return UF_ERR;
    if (uf_parse_size(s, &c->input.width, &c->input.height) != UF_OK || c->input.width < 32 ||
        c->input.width > 8192 || c->input.height < 32 || c->input.height > 8192)
        return uf_error("%s: metadata 'uflow.input_size' = '%.40s' is not N or WxH with sides in [32, 8192]",
                        uf_st_path(st), s);
    /* The fit came after format 1's first release: absent means stretch. */
    c->input.fit = UF_FIT_STRETCH;
    if ((s = uf_st_metadata_get(st, "uflow.input_fit")) && strcmp(s, "stretch")) {
        if (strcmp(s, "keep-aspect"))
            return uf_error("%s: metadata 'uflow.input_fit' = '%.40s' (expected stretch or keep-aspect)",
                            uf_st_path(st), has_control_char(s) ? "?" : s);
        c->input.fit = UF_FIT_KEEP_ASPECT;
    }
    if (meta_int(st, "uflow.scales", 1, UF_FLOW_MAX_SCALES, &c->flow.n_scales) != UF_OK) return UF_ERR;
    if (meta_int_list(st, "uflow.channels", c->flow.n_scales, c->flow.channels) != UF_OK) return UF_ERR;
    if (meta_int_list(st, "uflow.heights", c->flow.n_scales, c->flow.height) != UF_OK) return UF_ERR;
    if (meta_int_list(st, "uflow.widths", c->flow.n_scales, c->flow.width) != UF_OK) return UF_ERR;
    if (meta_int(st, "uflow.flow_steps", 1, 64, &c->flow.n_steps) != UF_OK) return UF_ERR;
    if (!(s = meta_req(st, "uflow.ln_mode"))) return UF_ERR;
    if (uf_ln_mode_parse(s, &c->flow.ln_mode) != UF_OK) return uf_error_prefix("%s", uf_st_path(st));
    if (meta_int(st, "uflow.epochs", 0, 1 << 30, &c->train.epochs) != UF_OK) return UF_ERR;
    if (meta_int(st, "uflow.batch", 1, 1 << 20, &c->train.batch) != UF_OK) return UF_ERR;
    if (meta_double(st, "uflow.lr", &c->train.lr) != UF_OK) return UF_ERR;
    if (meta_double(st, "uflow.weight_decay", &c->train.weight_decay) != UF_OK) return UF_ERR;
    if (!(s = meta_req(st, "uflow.seed"))) return UF_ERR;
    c->train.seed = strtoull(s, NULL, 10);
    if (!(s = meta_req(st, "uflow.loss"))) return UF_ERR;
    c->train.anomalib_loss = !strcmp(s, "anomalib");
    if (meta_int(st, "uflow.epochs_done", 0, 1 << 30, &c->epochs_done) != UF_OK) return UF_ERR;
    /* The training-data fingerprint came after format 1's first release: optional. */
    if (uf_st_metadata_get(st, "uflow.train_inputs_sha256")) {
        if (meta_int(st, "uflow.train_max_images", 0, 1 << 30, &c->train_max_images) != UF_OK) return UF_ERR;
        if (meta_int(st, "uflow.train_images", 0, 1 << 30, &c->train_images) != UF_OK) return UF_ERR;
        s = uf_st_metadata_get(st, "uflow.train_inputs_sha256");
        if (*s && (strlen(s) != 64 || strspn(s, "0123456789abcdef") != 64))
            return uf_error("%s: metadata 'uflow.train_inputs_sha256' = '%.80s' is not a sha256", uf_st_path(st), s);
        snprintf(c->train_inputs_sha256, sizeof c->train_inputs_sha256, "%s", s);
    }
    /* Validation came with format 1's third release: optional, all or nothing. */
    if (uf_st_metadata_get(st, "uflow.val_images")) {
        if (meta_int(st, "uflow.val_images", 1, 1 << 30, &c->val_images) != UF_OK) return UF_ERR;
        if (meta_double(st, "uflow.val_split", &c->val_split) != UF_OK) return UF_ERR;
        if (meta_double(st, "uflow.val_nll", &c->val_nll) != UF_OK) return UF_ERR;
        if (!(s = meta_req(st, "uflow.val_dir"))) return UF_ERR;
        snprintf(c->val_dir, sizeof c->val_dir, "%s", s);
        if (!(s = meta_req(st, "uflow.val_inputs_sha256"))) return UF_ERR;
        if (*s && (strlen(s) != 64 || strspn(s, "0123456789abcdef") != 64))
            return uf_error("%s: metadata 'uflow.val_inputs_sha256' = '%.80s' is not a sha256", uf_st_path(st), s);
        snprintf(c->val_inputs_sha256, sizeof c->val_inputs_sha256, "%s", s);
        if (!(s = meta_req(st, "uflow.val_z2"))) return UF_ERR;
        char *end = (char *)s;
        for (int l = 0; l < c->flow.n_scales; l++) {
            c->val_z2[l] = strtod(end, &end);
            if (!isfinite(c->val_z2[l]) || c->val_z2[l] < 0 || (l + 1 < c->flow.n_scales ? *end != ',' : *end != '\0'))
                return uf_error("%s: metadata 'uflow.val_z2' = '%.80s' is not %d non-negative numbers", uf_st_path(st),
                                has_control_char(s) ? "?" : s, c->flow.n_scales);
            if (*end == ',') end++;
        }
        if (meta_int(st, "uflow.best_epoch", 0, 1 << 30, &c->best_epoch) != UF_OK ||
            meta_int(st, "uflow.best_in_band", 0, 1, &c->best_in_band) != UF_OK ||
            meta_int(st, "uflow.nll_stall", 0, 1 << 30, &c->nll_stall) != UF_OK ||
            meta_int(st, "uflow.above_band", 0, 1 << 30, &c->above_band) != UF_OK ||
            meta_int(st, "uflow.stopped_early", 0, 1, &c->stopped_early) != UF_OK ||
            meta_double(st, "uflow.best_val_nll", &c->best_val_nll) != UF_OK ||
            meta_double(st, "uflow.min_val_nll", &c->min_val_nll) != UF_OK || !(s = meta_req(st, "uflow.stop_reason")))
            return UF_ERR;
        snprintf(c->stop_reason, sizeof c->stop_reason, "%s", s);
        if (!(c->val_split >= 0 && c->val_split < 1) || !isfinite(c->val_nll))
            return uf_error("%s: metadata 'uflow.val_split' / 'uflow.val_nll' out of range", uf_st_path(st));
    }
    return read_tiling_and_calibration(st, c);
}

/* Finds one weights file: as recorded if it exists, else the recorded file
 * name beside the model file, else (when the recorded file is the shipped ResNet-18,
 * e.g. a relative "models/..." path read from another folder) the shipped copy. The
 * caller checks the sha256, so a wrong file is refused, not used. */
static int resolve_file(const char *model_path, const char *recorded, char *out, size_t cap) {
    FILE *f = fopen(recorded, "rb");
    if (f) {
        fclose(f);
        if (snprintf(out, cap, "%s", recorded) >= (int)cap) return uf_error("path too long: '%.60s...'", recorded);
        return UF_OK;
    }
    const char *slash = strrchr(model_path, '/'), *base = strrchr(recorded, '/');
    base = base ? base + 1 : recorded;
    if (snprintf(out, cap, "%.*s%s", slash ? (int)(slash - model_path + 1) : 0, model_path, base) >= (int)cap)
        return uf_error("path too long: '%.60s...'", model_path);
    f = fopen(out, "rb");
    if (f) {
        fclose(f);
        return UF_OK;
    }
    if (!strcmp(base, UF_SHIPPED_WEIGHTS) && (f = fopen(uf_shipped_weights(), "rb"))) {
        fclose(f);
        if (snprintf(out, cap, "%s", uf_shipped_weights()) >= (int)cap) return uf_error("path too long");
        return UF_OK;
    }
    return uf_error("%s: backbone weights '%s' not found (pass them with --weights)", model_path, recorded);
}

/* The backbone weights: the explicit argument, else each recorded file (see resolve_file). */
static int resolve_backbone(const char *model_path, uf_backbone_kind kind, const uf_model_config *c,
                            const char *explicit_weights, char *out, size_t cap) {
    if (explicit_weights) {
        snprintf(out, cap, "%s", explicit_weights);
        return UF_OK;
    }
    char files[UF_BACKBONE_MAX_FILES][1024], found[1100];
    int n = uf_backbone_weight_files(kind, c->backbone_file, files);
    if (n < 0) return uf_error_prefix("%s: metadata 'uflow.backbone_file'", model_path);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (resolve_file(model_path, files[i], found, sizeof found) != UF_OK) return UF_ERR;
        size_t used = strlen(out);
        if (snprintf(out + used, cap - used, "%s%s", i ? "," : "", found) >= (int)(cap - used))
            return uf_error("path too long: '%.60s...'", found);
    }
    return UF_OK;
}

uf_model *uf_model_load(const char *path, const char *backbone_weights, uf_adam *opt, int *has_opt) {
    if (has_opt) *has_opt = 0;
    uf_safetensors *st = uf_st_open(path);
    if (!st) return NULL;
    uf_model *m = calloc(1, sizeof *m);
    float *buf = NULL;
    if (!m) {
        uf_error("out of memory");
        goto fail;
    }
    if (read_config(st, &m->cfg) != UF_OK) goto fail;
    uf_backbone_kind kind;
    char weights[2200], sha[132];
    if (uf_backbone_kind_of(m->cfg.backbone, &kind) != UF_OK) {
        uf_error_prefix("%s: metadata 'uflow.backbone'", path);
        goto fail;
    }
    const char *embedded = uf_st_metadata_get(st, "uflow.backbone_embedded");
    if (embedded && strcmp(embedded, "1")) {
        uf_error("%s: metadata 'uflow.backbone_embedded' = '%.20s' (expected 1)", path, embedded);
        goto fail;
    }
    if (embedded) {
        if (backbone_weights) {
            uf_error("%s: the model carries its own backbone weights; --weights does not apply", path);
            goto fail;
        }
        m->backbone_embedded = 1;
        snprintf(m->backbone_source, sizeof m->backbone_source, "%s", path);
        m->backbone = uf_backbone_load_embedded(kind, st);
    } else {
        if (resolve_backbone(path, kind, &m->cfg, backbone_weights, weights, sizeof weights) != UF_OK) goto fail;
        if (hash_weights(kind, weights, sha, sizeof sha) != UF_OK) goto fail;
        if (strcmp(sha, m->cfg.backbone_sha256) != 0) {
            uf_error("%s: backbone weights '%s' differ from the ones the model was trained with (sha256 %.12s..., "
                     "expected %.12s...)", path, weights, sha, m->cfg.backbone_sha256);
            goto fail;
        }
        snprintf(m->backbone_source, sizeof m->backbone_source, "%s", weights);
        m->backbone = uf_backbone_load(kind, weights);
    }
    if (!m->backbone) goto fail;
    uf_flow_config expect;
    if (uf_backbone_check_size(m->backbone, m->cfg.input.height, m->cfg.input.width) != UF_OK) {
        uf_error_prefix("%s", path);
        goto fail;
    }
    if (flow_config_for(m->backbone, &m->cfg.input, m->cfg.flow.n_steps, m->cfg.flow.ln_mode, &expect) != UF_OK)
        goto fail;
    for (int l = 0; l < expect.n_scales; l++)
        if (m->cfg.flow.n_scales != expect.n_scales || expect.channels[l] != m->cfg.flow.channels[l] ||
            expect.height[l] != m->cfg.flow.height[l] || expect.width[l] != m->cfg.flow.width[l]) {
            uf_error("%s: the flow's scales do not match the features of backbone '%s' at size %dx%d", path,
                     m->backbone_source, m->cfg.input.width, m->cfg.input.height);
            goto fail;
        }
    /* Each parameter is a tensor of the file, of 2 bytes per value at least
     * (F16): refuse a configuration the file cannot hold before allocating it. */
    size_t n_floats = uf_flow_param_floats(&m->cfg.flow);
    if (!n_floats) {
        uf_error_prefix("%s", path);
        goto fail;
    }
    if (n_floats > uf_st_data_size(st) / 2) {
        uf_error("%s: the configuration (input size %dx%d, %d flow steps) needs %zu parameters but the file holds "
                 "only %zu bytes of tensor data", path, m->cfg.input.width, m->cfg.input.height, m->cfg.flow.n_steps, n_floats,
                 uf_st_data_size(st));
        goto fail;
    }
    m->flow = uf_flow_new(&m->cfg.flow, 0);
    if (!m->flow) goto fail;
    int n = uf_flow_param_count(m->flow);
    for (int i = 0; i < n; i++) {
        uf_flow_param p;
        uf_flow_param_get(m->flow, i, &p);
        uf_free(buf);
        buf = uf_alloc(p.numel * sizeof(float));
        if (!buf) goto fail;
        if (uf_st_read_f32_into(st, p.name, p.ndim, p.shape, buf, (int64_t)p.numel) != UF_OK) goto fail;
        if (uf_flow_param_write(m->flow, i, buf) != UF_OK) {
            uf_error_prefix("%s", path);
            goto fail;
        }
    }
    if (opt && uf_st_find(st, "optimizer.exp_avg")) {
        int64_t shape[1] = {(int64_t)m->flow->n_trainable};
        int step;
        if (meta_int(st, "uflow.optimizer_step", 0, 1 << 30, &step) != UF_OK) goto fail;
        if (uf_adam_init(opt, m->flow->n_trainable, m->cfg.train.lr) != UF_OK) goto fail;
        opt->weight_decay = m->cfg.train.weight_decay;
        opt->step = step;
        if (uf_st_read_f32_into(st, "optimizer.exp_avg", 1, shape, opt->m, shape[0]) != UF_OK ||
            uf_st_read_f32_into(st, "optimizer.exp_avg_sq", 1, shape, opt->v, shape[0]) != UF_OK) {
            uf_adam_free(opt);
            goto fail;
        }
        if (has_opt) *has_opt = 1;
    }
    uf_free(buf);
    uf_st_close(st);
    return m;
fail:
    uf_free(buf);
    uf_st_close(st);
    uf_model_free(m);
    return NULL;
}

/* ---- inference ---- */

int uf_model_latents(uf_model *m, const float *x, int n, float *const *z) {
    const int L = m->cfg.flow.n_scales, H = m->cfg.input.height, W = m->cfg.input.width;
    float *feats[UF_FLOW_MAX_SCALES] = {0}, *zg[UF_FLOW_MAX_SCALES];
    size_t feat_n[UF_FLOW_MAX_SCALES], z_n[UF_FLOW_MAX_SCALES];
    double logdet[LATENT_GROUP];
    int rc = UF_OK;
    for (int l = 0; l < L; l++) {
        feat_n[l] = (size_t)m->cfg.flow.channels[l] * m->cfg.flow.height[l] * m->cfg.flow.width[l];
        z_n[l] = (size_t)m->flow->z_ch[l] * m->cfg.flow.height[l] * m->cfg.flow.width[l];
        feats[l] = uf_alloc(feat_n[l] * LATENT_GROUP * sizeof(float));
        if (!feats[l]) rc = UF_ERR;
    }
    for (int i0 = 0; i0 < n && rc == UF_OK; i0 += LATENT_GROUP) {
        int g = n - i0 < LATENT_GROUP ? n - i0 : LATENT_GROUP;
        rc = uf_backbone_forward(m->backbone, x + (size_t)i0 * 3 * H * W, g, H, W, feats);
        for (int l = 0; l < L; l++) zg[l] = z[l] + (size_t)i0 * z_n[l];
        if (rc == UF_OK) rc = uf_flow_forward(m->flow, g, (const float *const *)feats, zg, logdet, 0);
    }
    for (int l = 0; l < L; l++) uf_free(feats[l]);
    return rc;
}

uf_nfa_null uf_model_nfa_null(const uf_model_config *c, int n_tiles) {
    uf_nfa_null null = uf_nfa_null_standard();
    if (c->calib.n_images > 0) {
        for (int l = 0; l < c->flow.n_scales; l++) null.z2_scale[l] = c->calib.z2[l];
        null.log10_extra_tests = c->calib.log10_offset;
    }
    if (n_tiles > 1) null.log10_extra_tests += log10((double)n_tiles);
    return null;
}

int uf_model_val_calibrated(const uf_model_config *c) {
    if (c->val_images <= 0) return -1;
    for (int l = 0; l < c->flow.n_scales; l++)
        if (!(c->val_z2[l] >= UF_VAL_Z2_LOW && c->val_z2[l] <= UF_VAL_Z2_HIGH)) return 0;
    return 1;
}

const char *uf_model_calibration_warning(const uf_model_config *c, char *buf, size_t cap) {
    buf[0] = '\0';
    if (uf_model_val_calibrated(c) != 0) return buf;
    size_t used = (size_t)snprintf(buf, cap, "the model's held-out normal images had mean z^2 per scale");
    for (int l = 0; l < c->flow.n_scales && used < cap; l++)
        used += (size_t)snprintf(buf + used, cap - used, " %.3f", c->val_z2[l]);
    if (used < cap)
        snprintf(buf + used, cap - used,
                 " at its epoch %d, outside [%.2f, %.2f]: the automatic (NFA) threshold is not trustworthy for it",
                 c->epochs_done, UF_VAL_Z2_LOW, UF_VAL_Z2_HIGH);
    return buf;
}
