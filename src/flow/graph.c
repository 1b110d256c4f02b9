#include "flow/graph.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor.h"

struct uf_flow_acts {
    int batch, training;
    float *mem;
    float **act;   /* [l * (T + 1) + t] (B, V_l, H_l, W_l) input of step t (t = T: stage output) */
    float **r;     /* [l * T + t] (B, C1, H, W) */
    float **st;    /* [l * T + t] (B, 2 C2, H, W) */
    float *xhat[UF_FLOW_MAX_SCALES]; /* (B, C_l, H_l, W_l) */
    float *rstd[UF_FLOW_MAX_SCALES]; /* (B) */
    float *g[3];   /* gradient buffers, (B, V_l, H_l, W_l) of the largest scale */
    float *work;   /* block workspace */
};

uf_flow_config uf_flow_default_config(void) {
    uf_flow_config c;
    memset(&c, 0, sizeof c);
    c.n_steps = 4;
    c.ln_mode = UF_LN_NONE;
    return c;
}

static size_t hw_of(const uf_flow *m, int l) { return (size_t)m->cfg.height[l] * m->cfg.width[l]; }
static size_t ln_numel(const uf_flow *m, int l) { return (size_t)m->cfg.channels[l] * hw_of(m, l); }

static int check_config(const uf_flow_config *c) {
    if (c->n_scales < 1 || c->n_scales > UF_FLOW_MAX_SCALES)
        return uf_error("flow: %d scales (expected 1..%d)", c->n_scales, UF_FLOW_MAX_SCALES);
    if (c->n_steps < 1 || c->n_steps > 64) return uf_error("flow: %d steps per scale (expected 1..64)", c->n_steps);
    if ((unsigned)c->ln_mode > UF_LN_FROZEN) return uf_error("flow: bad LayerNorm mode %d", (int)c->ln_mode);
    for (int l = 0; l < c->n_scales; l++) {
        if (c->channels[l] < 1 || c->height[l] < 1 || c->width[l] < 1 || c->channels[l] > (1 << 16) ||
            c->height[l] > (1 << 14) || c->width[l] > (1 << 14))
            return uf_error("flow: scale %d has bad shape %dx%dx%d", l, c->channels[l], c->height[l],
                            c->width[l]);
        if (l > 0 && (c->height[l - 1] != 2 * c->height[l] || c->width[l - 1] != 2 * c->width[l]))
            return uf_error("flow: scale %d is %dx%d but scale %d is %dx%d (each scale must be half the finer one)",
                            l, c->height[l], c->width[l], l - 1, c->height[l - 1], c->width[l - 1]);
    }
    return UF_OK;
}

/* Stage channels v, upsampled channels n_up and latent channels z_ch per
 * scale, coarsest first; UF_ERR when a stage is too narrow. */
static int stage_channels(const uf_flow_config *cfg, int *v, int *n_up, int *z_ch) {
    const int L = cfg->n_scales;
    for (int l = L - 1; l >= 0; l--) {
        v[l] = cfg->channels[l] + (l < L - 1 ? n_up[l + 1] / 4 : 0);
        n_up[l] = l > 0 ? 4 * (v[l] / 8) : 0;
        z_ch[l] = v[l] - n_up[l];
        if (v[l] < (l > 0 ? 8 : 2))
            return uf_error("flow: scale %d has %d channels in its flow stage (need at least %d)", l, v[l],
                            l > 0 ? 8 : 2);
    }
    return UF_OK;
}

size_t uf_flow_param_floats(const uf_flow_config *cfg) {
    int v[UF_FLOW_MAX_SCALES], n_up[UF_FLOW_MAX_SCALES], z_ch[UF_FLOW_MAX_SCALES];
    if (check_config(cfg) != UF_OK || stage_channels(cfg, v, n_up, z_ch) != UF_OK) return 0;
    size_t n = 0;
    for (int l = 0; l < cfg->n_scales; l++) {
        for (int t = 0; t < cfg->n_steps; t++) n += uf_block_param_floats(v[l], t % 2 == 0 ? 3 : 1);
        if (cfg->ln_mode != UF_LN_NONE) n += 2 * (size_t)cfg->channels[l] * cfg->height[l] * cfg->width[l];
    }
    return n;
}

uf_flow *uf_flow_new(const uf_flow_config *cfg, uint64_t seed) {
    if (check_config(cfg) != UF_OK) return NULL;
    uf_flow *m = uf_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->cfg = *cfg;
    const int L = cfg->n_scales, T = cfg->n_steps;
    if (stage_channels(cfg, m->v, m->n_up, m->z_ch) != UF_OK) {
        uf_free(m);
        return NULL;
    }
    m->n_blocks = L * T;
    m->blocks = uf_calloc((size_t)m->n_blocks, sizeof *m->blocks);
    size_t n_perm = 0, off = 0;
    int bi = 0;
    for (int l = L - 1; l >= 0; l--)
        for (int t = 0; t < T; t++, bi++) {
            uf_flow_block *b = m->blocks ? &m->blocks[bi] : NULL;
            if (!b) break;
            b->scale = l, b->step = t, b->module = (L - 1 - l) * (T + 3) + t;
            b->c = m->v[l], b->h = cfg->height[l], b->w = cfg->width[l], b->k = t % 2 == 0 ? 3 : 1;
            b->param_off = off;
            off += uf_block_param_floats(b->c, b->k);
            n_perm += (size_t)b->c;
        }
    m->n_trainable = off; /* the blocks; the LN affines follow, trained or not */
    for (int l = 0; l < L; l++)
        if (cfg->ln_mode != UF_LN_NONE) {
            m->ln_off[l] = off;
            off += 2 * ln_numel(m, l);
        }
    if (uf_ln_mode_trains(cfg->ln_mode)) m->n_trainable = off;
    m->n_params = off;
    m->params = m->blocks ? uf_calloc(off, sizeof(float)) : NULL;
    m->perms = m->params ? uf_calloc(n_perm, sizeof(int32_t)) : NULL;
    if (!m->perms) {
        uf_error_prefix("flow: allocating %zu parameters", off);
        uf_flow_free(m);
        return NULL;
    }
    uf_rng rng = uf_rng_seed(seed);
    size_t poff = 0;
    for (int i = 0; i < m->n_blocks; i++) {
        uf_flow_block *b = &m->blocks[i];
        b->perm = m->perms + poff;
        poff += (size_t)b->c;
        uf_block_params p;
        uf_flow_block_params(m, i, &p);
        uf_block_init(&p, b->perm, b->c, b->k, &rng);
    }
    for (int l = 0; l < L; l++)
        if (cfg->ln_mode != UF_LN_NONE) {
            float *w = m->params + m->ln_off[l];
            for (size_t i = 0; i < ln_numel(m, l); i++) w[i] = 1.0f; /* bias stays 0 */
        }
    return m;
}

static void acts_free(uf_flow_acts *a) {
    if (!a) return;
    uf_free(a->mem);
    uf_free(a->act);
    uf_free(a->r);
    uf_free(a->st);
    uf_free(a);
}

void uf_flow_free(uf_flow *m) {
    if (!m) return;
    acts_free(m->acts);
    uf_free(m->blocks);
    uf_free(m->params);
    uf_free(m->grads);
    uf_free(m->perms);
    uf_free(m);
}

void uf_flow_block_params(const uf_flow *m, int i, uf_block_params *p) {
    const uf_flow_block *b = &m->blocks[i];
    uf_block_params_map(p, m->params + b->param_off, b->c, b->k);
    p->perm = b->perm;
}

void uf_flow_block_grads(const uf_flow *m, int i, uf_block_params *p) {
    const uf_flow_block *b = &m->blocks[i];
    memset(p, 0, sizeof *p);
    if (m->grads) uf_block_params_map(p, m->grads + b->param_off, b->c, b->k);
}

float *uf_flow_ln_weight(const uf_flow *m, int l) {
    return m->cfg.ln_mode == UF_LN_NONE ? NULL : m->params + m->ln_off[l];
}

float *uf_flow_ln_bias(const uf_flow *m, int l) {
    return m->cfg.ln_mode == UF_LN_NONE ? NULL : m->params + m->ln_off[l] + ln_numel(m, l);
}

int uf_flow_alloc_grads(uf_flow *m) {
    if (m->grads) return UF_OK;
    m->grads = uf_calloc(m->n_params, sizeof(float));
    return m->grads ? UF_OK : uf_error_prefix("flow: allocating gradients");
}

void uf_flow_zero_grads(uf_flow *m) {
    if (m->grads) memset(m->grads, 0, sizeof(float) * m->n_params);
}

/* ---- activations ---- */

static size_t r16(size_t n) { return (n + 15) & ~(size_t)15; }

typedef struct {
    size_t act, r, st, xhat, rstd, g, work, total;
} acts_plan;

static acts_plan plan_acts(const uf_flow *m, int batch, int training) {
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    const size_t B = (size_t)batch;
    acts_plan p;
    memset(&p, 0, sizeof p);
    size_t max_r = 0, max_st = 0, max_v = 0;
    for (int l = 0; l < L; l++) {
        size_t hw = hw_of(m, l), v = (size_t)m->v[l];
        uf_block_geom bg = {batch, m->v[l], m->cfg.height[l], m->cfg.width[l], 3};
        size_t nr = r16(uf_block_r_floats(&bg)), nst = r16(B * 2 * (size_t)uf_block_c2(m->v[l]) * hw);
        p.act += (size_t)(T + 1) * r16(B * v * hw);
        if (training) {
            p.r += (size_t)T * nr, p.st += (size_t)T * nst;
            p.xhat += r16(B * (size_t)m->cfg.channels[l] * hw);
            p.rstd += r16(B);
        }
        if (nr > max_r) max_r = nr;
        if (nst > max_st) max_st = nst;
        if (r16(B * v * hw) > max_v) max_v = r16(B * v * hw);
    }
    if (!training) p.r = max_r, p.st = max_st;
    if (training) p.g = 3 * max_v;
    for (int i = 0; i < m->n_blocks; i++) {
        const uf_flow_block *b = &m->blocks[i];
        uf_block_geom g = {batch, b->c, b->h, b->w, b->k};
        size_t w = r16(uf_block_workspace(&g));
        if (w > p.work) p.work = w;
    }
    p.total = p.act + p.r + p.st + p.xhat + p.rstd + p.g + p.work;
    return p;
}

size_t uf_flow_activation_floats(const uf_flow *m, int batch, int training) {
    acts_plan p = plan_acts(m, batch, training);
    return p.total - p.work - p.g;
}

int uf_flow_reserve(uf_flow *m, int batch, int training) {
    if (batch < 1) return uf_error("flow: batch size %d", batch);
    uf_flow_acts *a = m->acts;
    if (a && a->batch >= batch && (a->training || !training)) return UF_OK;
    if (a && a->batch > batch) batch = a->batch; /* never shrink */
    if (a && a->training) training = 1;
    acts_free(m->acts);
    m->acts = NULL;
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    const size_t B = (size_t)batch;
    acts_plan p = plan_acts(m, batch, training);
    a = uf_calloc(1, sizeof *a);
    if (!a) return UF_ERR;
    a->batch = batch, a->training = training;
    a->mem = uf_alloc(sizeof(float) * p.total);
    a->act = uf_calloc((size_t)L * (T + 1), sizeof(float *));
    a->r = uf_calloc((size_t)L * T, sizeof(float *));
    a->st = uf_calloc((size_t)L * T, sizeof(float *));
    if (!a->mem || !a->act || !a->r || !a->st) {
        acts_free(a);
        return uf_error_prefix("flow: allocating activations for batch %d (%zu MB)", batch,
                               p.total * sizeof(float) >> 20);
    }
    float *q = a->mem;
    for (int l = 0; l < L; l++) {
        size_t hw = hw_of(m, l);
        for (int t = 0; t <= T; t++) a->act[l * (T + 1) + t] = q, q += r16(B * (size_t)m->v[l] * hw);
    }
    float *r0 = q, *st0 = q + (training ? 0 : p.r);
    if (training) {
        for (int l = 0; l < L; l++) {
            uf_block_geom bg = {batch, m->v[l], m->cfg.height[l], m->cfg.width[l], 3};
            for (int t = 0; t < T; t++) a->r[l * T + t] = q, q += r16(uf_block_r_floats(&bg));
        }
        for (int l = 0; l < L; l++) {
            size_t hw = hw_of(m, l);
            for (int t = 0; t < T; t++)
                a->st[l * T + t] = q, q += r16(B * 2 * (size_t)uf_block_c2(m->v[l]) * hw);
        }
        for (int l = 0; l < L; l++) a->xhat[l] = q, q += r16(B * (size_t)m->cfg.channels[l] * hw_of(m, l));
        for (int l = 0; l < L; l++) a->rstd[l] = q, q += r16(B);
        size_t gsz = p.g / 3;
        for (int i = 0; i < 3; i++) a->g[i] = q, q += gsz;
    } else {
        for (int i = 0; i < L * T; i++) a->r[i] = r0, a->st[i] = st0;
        q += p.r + p.st;
    }
    a->work = q;
    m->acts = a;
    return UF_OK;
}

/* ---- IRevNet up/down sampling ---- */

void uf_irevnet_upsample(const float *in, int c, int h, int w, float *out) {
    for (int g = 0; g < c / 4; g++)
        for (int p = 0; p < 2; p++)
            for (int q = 0; q < 2; q++) {
                const float *src = in + (size_t)(4 * g + 2 * p + q) * h * w;
                float *dst = out + (size_t)g * 4 * h * w;
                for (int i = 0; i < h; i++)
                    for (int j = 0; j < w; j++) dst[(size_t)(2 * i + p) * 2 * w + 2 * j + q] = src[(size_t)i * w + j];
            }
}

void uf_irevnet_downsample(const float *in, int c, int h, int w, float *out) {
    for (int g = 0; g < c / 4; g++)
        for (int p = 0; p < 2; p++)
            for (int q = 0; q < 2; q++) {
                float *dst = out + (size_t)(4 * g + 2 * p + q) * h * w;
                const float *src = in + (size_t)g * 4 * h * w;
                for (int i = 0; i < h; i++)
                    for (int j = 0; j < w; j++) dst[(size_t)i * w + j] = src[(size_t)(2 * i + p) * 2 * w + 2 * j + q];
            }
}

/* ---- forward / backward / inverse ---- */

static uf_block_geom geom_of(const uf_flow_block *b, int batch) {
    uf_block_geom g = {batch, b->c, b->h, b->w, b->k};
    return g;
}

/* Block index of (scale l, step t). */
static int block_index(const uf_flow *m, int l, int t) {
    return (m->cfg.n_scales - 1 - l) * m->cfg.n_steps + t;
}

int uf_flow_forward(uf_flow *m, int batch, const float *const *feats, float *const *z, double *logdet,
                    int training) {
    if (uf_flow_reserve(m, batch, training) != UF_OK) return UF_ERR;
    uf_flow_acts *a = m->acts;
    if (training && !a->training) return uf_error("flow: internal: no training buffers");
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    const uf_ln_mode lnm = m->cfg.ln_mode;
    for (int b = 0; b < batch; b++) logdet[b] = 0.0;
    for (int l = L - 1; l >= 0; l--) {
        const size_t hw = hw_of(m, l), cl = (size_t)m->cfg.channels[l], v = (size_t)m->v[l];
        const size_t n = cl * hw;
        float *in = a->act[l * (T + 1)];
        for (int b = 0; b < batch; b++) {
            float *dst = in + (size_t)b * v * hw;
            const float *src = feats[l] + (size_t)b * n;
            if (lnm == UF_LN_NONE)
                memcpy(dst, src, sizeof(float) * n);
            else
                uf_layernorm_forward(1, n, src, uf_flow_ln_weight(m, l), uf_flow_ln_bias(m, l), dst,
                                     training ? a->xhat[l] + (size_t)b * n : NULL,
                                     training ? a->rstd[l] + b : NULL);
            if (l < L - 1) {
                const size_t hw1 = hw_of(m, l + 1);
                const float *up = a->act[(l + 1) * (T + 1) + T] + (size_t)b * m->v[l + 1] * hw1;
                uf_irevnet_upsample(up, m->n_up[l + 1], m->cfg.height[l + 1], m->cfg.width[l + 1], dst + n);
            }
        }
        if (lnm == UF_LN_LOGDET) {
            double ld = uf_layernorm_logabsdet(n, uf_flow_ln_weight(m, l));
            for (int b = 0; b < batch; b++) logdet[b] += ld;
        }
        for (int t = 0; t < T; t++) {
            int bi = block_index(m, l, t);
            uf_block_geom g = geom_of(&m->blocks[bi], batch);
            uf_block_params p;
            uf_flow_block_params(m, bi, &p);
            if (uf_block_forward(&g, &p, a->act[l * (T + 1) + t], a->act[l * (T + 1) + t + 1], a->r[l * T + t],
                                 a->st[l * T + t], logdet, a->work) != UF_OK)
                return UF_ERR;
        }
        const float *out = a->act[l * (T + 1) + T];
        const size_t zn = (size_t)m->z_ch[l] * hw, skip = (size_t)m->n_up[l] * hw;
        for (int b = 0; b < batch; b++) memcpy(z[l] + (size_t)b * zn, out + (size_t)b * v * hw + skip, sizeof(float) * zn);
    }
    return UF_OK;
}

int uf_flow_backward(uf_flow *m, int batch, const float *const *gz, const double *g_ld, float *const *gfeats) {
    uf_flow_acts *a = m->acts;
    if (!a || !a->training || a->batch < batch) return uf_error("flow: backward without a training forward");
    if (!m->grads) return uf_error("flow: backward before uf_flow_alloc_grads");
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    const uf_ln_mode lnm = m->cfg.ln_mode;
    double gld_sum = 0.0;
    for (int b = 0; b < batch; b++) gld_sum += g_ld[b];
    float *gcur = a->g[0], *gtmp = a->g[1], *gnext = a->g[2];
    /* gradient of the finest stage's output = gz[0] */
    memcpy(gcur, gz[0], sizeof(float) * (size_t)batch * m->v[0] * hw_of(m, 0));
    for (int l = 0; l < L; l++) {
        const size_t hw = hw_of(m, l), v = (size_t)m->v[l], cl = (size_t)m->cfg.channels[l];
        const size_t nv = (size_t)batch * v * hw, n = cl * hw;
        for (int t = T - 1; t >= 0; t--) {
            int bi = block_index(m, l, t);
            uf_block_geom g = geom_of(&m->blocks[bi], batch);
            uf_block_params p, gp;
            uf_flow_block_params(m, bi, &p);
            uf_flow_block_grads(m, bi, &gp);
            memset(gtmp, 0, sizeof(float) * nv);
            if (uf_block_backward(&g, &p, a->act[l * (T + 1) + t], a->r[l * T + t], a->st[l * T + t], gcur, g_ld,
                                  gtmp, &gp, a->work) != UF_OK)
                return UF_ERR;
            float *s = gcur;
            gcur = gtmp, gtmp = s;
        }
        /* gcur: gradient of the stage input (B, V_l, HW) = [feature part ; upsampled part] */
        for (int b = 0; b < batch; b++) {
            const float *gb = gcur + (size_t)b * v * hw;
            float *gf = gfeats && gfeats[l] ? gfeats[l] + (size_t)b * n : NULL;
            if (lnm == UF_LN_NONE) {
                if (gf)
                    for (size_t i = 0; i < n; i++) gf[i] += gb[i];
            } else {
                int train_ln = uf_ln_mode_trains(lnm);
                float *dw = train_ln ? m->grads + m->ln_off[l] : NULL, *db = train_ln ? dw + n : NULL;
                uf_layernorm_backward(1, n, a->xhat[l] + (size_t)b * n, a->rstd[l] + b, uf_flow_ln_weight(m, l),
                                      gb, gf, dw, db);
            }
        }
        if (lnm == UF_LN_LOGDET) uf_layernorm_logdet_backward(n, uf_flow_ln_weight(m, l), gld_sum, m->grads + m->ln_off[l]);
        if (l == L - 1) break;
        /* upsampled part -> gradient of scale l+1's output channels [0, n_up); the rest is gz[l+1] */
        const size_t hw1 = hw_of(m, l + 1), v1 = (size_t)m->v[l + 1], nup = (size_t)m->n_up[l + 1];
        const size_t zn = (size_t)m->z_ch[l + 1] * hw1;
        for (int b = 0; b < batch; b++) {
            float *dst = gnext + (size_t)b * v1 * hw1;
            uf_irevnet_downsample(gcur + (size_t)b * v * hw + n, (int)nup, m->cfg.height[l + 1], m->cfg.width[l + 1],
                                  dst);
            memcpy(dst + nup * hw1, gz[l + 1] + (size_t)b * zn, sizeof(float) * zn);
        }
        float *s = gcur;
        gcur = gnext, gnext = s;
    }
    return UF_OK;
}

int uf_flow_inverse(uf_flow *m, int batch, const float *const *z, float *const *fn) {
    if (uf_flow_reserve(m, batch, 0) != UF_OK) return UF_ERR;
    uf_flow_acts *a = m->acts;
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    for (int l = 0; l < L; l++) {
        const size_t hw = hw_of(m, l), v = (size_t)m->v[l], n = (size_t)m->cfg.channels[l] * hw;
        float *out = a->act[l * (T + 1) + T];
        const size_t zn = (size_t)m->z_ch[l] * hw, skip = (size_t)m->n_up[l] * hw;
        for (int b = 0; b < batch; b++) memcpy(out + (size_t)b * v * hw + skip, z[l] + (size_t)b * zn, sizeof(float) * zn);
        /* (for l >= 1 the first n_up channels were filled from the finer scale below) */
        for (int t = T - 1; t >= 0; t--) {
            int bi = block_index(m, l, t);
            uf_block_geom g = geom_of(&m->blocks[bi], batch);
            uf_block_params p;
            uf_flow_block_params(m, bi, &p);
            if (uf_block_inverse(&g, &p, a->act[l * (T + 1) + t + 1], a->act[l * (T + 1) + t], a->work) != UF_OK)
                return UF_ERR;
        }
        const float *in = a->act[l * (T + 1)];
        for (int b = 0; b < batch; b++) {
            memcpy(fn[l] + (size_t)b * n, in + (size_t)b * v * hw, sizeof(float) * n);
            if (l < L - 1) {
                const size_t hw1 = hw_of(m, l + 1);
                float *up = a->act[(l + 1) * (T + 1) + T] + (size_t)b * m->v[l + 1] * hw1;
                uf_irevnet_downsample(in + (size_t)b * v * hw + n, m->n_up[l + 1], m->cfg.height[l + 1],
                                      m->cfg.width[l + 1], up);
            }
        }
    }
    return UF_OK;
}

/* ---- named tensors ---- */

enum { PB_SCALE, PB_OFFSET, PB_PERM, PB_PERM_INV, PB_W1, PB_B1, PB_W2, PB_B2, PB_COUNT };
static const char *const block_names[PB_COUNT] = {"global_scale", "global_offset", "w_perm", "w_perm_inv",
                                                  "subnet.0.weight", "subnet.0.bias", "subnet.2.weight",
                                                  "subnet.2.bias"};

int uf_flow_param_count(const uf_flow *m) {
    return m->n_blocks * PB_COUNT + (m->cfg.n_scales - 1) + (m->cfg.ln_mode != UF_LN_NONE ? 2 * m->cfg.n_scales : 0);
}

static void set_shape(uf_flow_param *o, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    o->ndim = ndim;
    o->shape[0] = a, o->shape[1] = b, o->shape[2] = c, o->shape[3] = d;
    o->numel = 1;
    for (int i = 0; i < ndim; i++) o->numel *= (size_t)o->shape[i];
}

void uf_flow_param_get(const uf_flow *m, int i, uf_flow_param *o) {
    UF_ASSERT(i >= 0 && i < uf_flow_param_count(m));
    memset(o, 0, sizeof *o);
    const int L = m->cfg.n_scales, T = m->cfg.n_steps;
    const int per_stage = T * PB_COUNT + 1; /* blocks, then the upsampling (stages with l >= 1) */
    int n_flow = m->n_blocks * PB_COUNT + (L - 1);
    if (i >= n_flow) { /* LayerNorms */
        int j = i - n_flow, l = j / 2;
        snprintf(o->name, sizeof o->name, "feature_extractor.feature_normalizations.%d.%s", l,
                 j % 2 ? "bias" : "weight");
        set_shape(o, 3, m->cfg.channels[l], m->cfg.height[l], m->cfg.width[l], 1);
        o->kind = uf_ln_mode_trains(m->cfg.ln_mode) ? UF_PARAM_TRAINABLE : UF_PARAM_FROZEN;
        size_t off = m->ln_off[l] + (j % 2 ? ln_numel(m, l) : 0);
        o->data = m->params + off;
        o->grad = m->grads && o->kind == UF_PARAM_TRAINABLE ? m->grads + off : NULL;
        o->index = l;
        return;
    }
    int stage = i / per_stage, r = i % per_stage;
    if (r == T * PB_COUNT) { /* upsampling of scale L-1-stage */
        int l = L - 1 - stage;
        snprintf(o->name, sizeof o->name, "flow.module_list.%d.downsample_kernel", stage * (T + 3) + T + 1);
        set_shape(o, 4, m->n_up[l], 1, 2, 2);
        o->kind = UF_PARAM_UPSAMPLE;
        o->index = l;
        return;
    }
    int bi = stage * T + r / PB_COUNT, what = r % PB_COUNT;
    const uf_flow_block *b = &m->blocks[bi];
    snprintf(o->name, sizeof o->name, "flow.module_list.%d.%s", b->module, block_names[what]);
    uf_block_params p, g;
    uf_flow_block_params(m, bi, &p);
    uf_flow_block_grads(m, bi, &g);
    int c = b->c, c1 = uf_block_c1(c), c2 = uf_block_c2(c), k = b->k;
    o->kind = UF_PARAM_TRAINABLE;
    o->index = bi;
    switch (what) {
    case PB_SCALE: set_shape(o, 4, 1, c, 1, 1), o->data = p.gamma, o->grad = g.gamma; break;
    case PB_OFFSET: set_shape(o, 4, 1, c, 1, 1), o->data = p.offset, o->grad = g.offset; break;
    case PB_PERM: set_shape(o, 4, c, c, 1, 1), o->kind = UF_PARAM_PERM; break;
    case PB_PERM_INV: set_shape(o, 4, c, c, 1, 1), o->kind = UF_PARAM_PERM_INV; break;
    case PB_W1: set_shape(o, 4, c1, c1, k, k), o->data = p.w1, o->grad = g.w1; break;
    case PB_B1: set_shape(o, 1, c1, 1, 1, 1), o->data = p.b1, o->grad = g.b1; break;
    case PB_W2: set_shape(o, 4, 2 * c2, c1, k, k), o->data = p.w2, o->grad = g.w2; break;
    default: set_shape(o, 1, 2 * c2, 1, 1, 1), o->data = p.b2, o->grad = g.b2; break;
    }
}

void uf_flow_param_read(const uf_flow *m, int i, float *out) {
    uf_flow_param o;
    uf_flow_param_get(m, i, &o);
    if (o.data) {
        memcpy(out, o.data, sizeof(float) * o.numel);
        return;
    }
    memset(out, 0, sizeof(float) * o.numel);
    if (o.kind == UF_PARAM_UPSAMPLE) { /* kernel[4g + 2p + q, 0, p, q] = 1 */
        for (int64_t ch = 0; ch < o.shape[0]; ch++) out[ch * 4 + (ch % 4)] = 1.0f;
        return;
    }
    const uf_flow_block *b = &m->blocks[o.index];
    for (int c = 0; c < b->c; c++) {
        if (o.kind == UF_PARAM_PERM)
            out[(size_t)c * b->c + b->perm[c]] = 1.0f;
        else
            out[(size_t)b->perm[c] * b->c + c] = 1.0f;
    }
}

int uf_flow_param_write(uf_flow *m, int i, const float *in) {
    uf_flow_param o;
    uf_flow_param_get(m, i, &o);
    if (o.data) {
        for (size_t j = 0; j < o.numel; j++)
            if (!(in[j] - in[j] == 0.0f)) return uf_error("%s: non-finite value at element %zu", o.name, j);
        memcpy(o.data, in, sizeof(float) * o.numel);
        return UF_OK;
    }
    float *want = uf_alloc(sizeof(float) * o.numel);
    if (!want) return UF_ERR;
    int rc = UF_OK;
    if (o.kind == UF_PARAM_PERM) {
        const uf_flow_block *b = &m->blocks[o.index];
        int32_t *perm = uf_alloc(sizeof(int32_t) * (size_t)b->c);
        char *seen = uf_calloc((size_t)b->c, 1);
        if (!perm || !seen) rc = UF_ERR;
        for (int c = 0; rc == UF_OK && c < b->c; c++) {
            int hot = -1, ones = 0;
            for (int j = 0; j < b->c; j++) {
                float x = in[(size_t)c * b->c + j];
                if (x == 1.0f) hot = j, ones++;
                else if (x != 0.0f) ones = 99;
            }
            if (ones != 1 || seen[hot])
                rc = uf_error("%s: row %d is not one column of a permutation matrix", o.name, c);
            else
                seen[hot] = 1, perm[c] = hot;
        }
        if (rc == UF_OK) memcpy(b->perm, perm, sizeof(int32_t) * (size_t)b->c);
        uf_free(perm);
        uf_free(seen);
    } else {
        uf_flow_param_read(m, i, want);
        if (memcmp(want, in, sizeof(float) * o.numel) != 0)
            rc = uf_error("%s: does not match the %s", o.name,
                          o.kind == UF_PARAM_UPSAMPLE ? "fixed IRevNet kernel" : "transpose of w_perm");
    }
    uf_free(want);
    return rc;
}

int uf_flow_param_find(const uf_flow *m, const char *name) {
    int n = uf_flow_param_count(m);
    for (int i = 0; i < n; i++) {
        uf_flow_param o;
        uf_flow_param_get(m, i, &o);
        if (!strcmp(o.name, name)) return i;
    }
    return -1;
}
