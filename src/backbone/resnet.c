#include "backbone/resnet.h"

#include <oneapi/dnnl/dnnl.h>

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/conv.h"
#include "core/conv_blocked.h"
#include "core/conv_winograd.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/timer.h"

#define BN_EPS 1e-5
#define MAX_BLOCKS 64
/* Activation scratch budget: images are processed in groups that fit. */
#define ACT_BUDGET_BYTES ((size_t)768 << 20)

typedef struct {
    int c_in, c_out, k, stride, pad;
    float *w; /* (c_out, c_in, k, k), BatchNorm folded */
    float *b; /* (c_out) */
} rn_conv;

typedef struct {
    rn_conv conv[3]; /* conv1, conv2[, conv3] */
    rn_conv down;    /* downsample (w == NULL when the shortcut is the identity) */
} rn_block;

typedef struct dn_plan dn_plan; /* oneDNN primitives for one input shape (below) */

struct uf_resnet {
    int bottleneck;  /* 0: BasicBlock (2 convs), 1: Bottleneck (3 convs) */
    int had_bn;
    char arch[48];
    rn_conv stem;
    int n_blocks[UF_RESNET_LEVELS];
    rn_block *blocks[UF_RESNET_LEVELS];
    uf_arena arena; /* activation scratch, grown on demand */
    uf_resnet_timing timing;
    uf_resnet_engine engine;
    int bf16;         /* the oneDNN plans in BF16 (uf_resnet_set_bf16) */
    dn_plan *plan[2]; /* oneDNN plans for the last two (n, h, w): a full group and a remainder */
};

/* ---------------------------------------------------------------- loading */

typedef struct {
    const uf_safetensors *st;
    const char *what;
    int had_bn;
} loader;

/* A required float tensor `name` with the given shape, copied. NULL + error naming it. */
static float *read_param(const loader *ld, const char *name, int ndim, const int64_t *shape) {
    uf_tensor *t = uf_st_read_f32(ld->st, name, ndim, shape); /* its errors name the file and tensor */
    if (!t) return NULL;
    float *data = t->data;
    t->data = NULL;
    uf_tensor_free(t);
    return data;
}

/* Loads conv `cname` (weight (c_out, c_in, k, k); c_out read from the file unless
 * c_out > 0) with its BatchNorm `bname` (or its own bias in folded files). */
static int load_conv(const loader *ld, rn_conv *cv, const char *cname, const char *bname, int c_in, int c_out,
                     int k, int stride) {
    char name[160];
    snprintf(name, sizeof name, "%s.weight", cname);
    const uf_st_tensor *wt = uf_st_find(ld->st, name);
    if (!wt) return uf_error("%s: missing tensor '%s'", ld->what, name);
    if (c_out <= 0) {
        if (wt->ndim != 4 || wt->shape[0] < 1 || wt->shape[0] > 65536)
            return uf_error("%s: tensor '%s' has a bad shape (expected [C_out, %d, %d, %d])", ld->what, name, c_in,
                            k, k);
        c_out = (int)wt->shape[0];
    }
    cv->c_in = c_in, cv->c_out = c_out, cv->k = k, cv->stride = stride, cv->pad = k / 2;
    const int64_t wshape[4] = {c_out, c_in, k, k}, bshape[1] = {c_out};
    cv->w = read_param(ld, name, 4, wshape);
    if (!cv->w) return UF_ERR;
    const size_t per_out = (size_t)c_in * k * k;
    if (ld->had_bn) {
        float *bn[4] = {0};
        static const char *const field[4] = {"weight", "bias", "running_mean", "running_var"};
        int rc = UF_OK;
        for (int i = 0; i < 4 && rc == UF_OK; i++) {
            snprintf(name, sizeof name, "%s.%s", bname, field[i]);
            bn[i] = read_param(ld, name, 1, bshape);
            if (!bn[i]) rc = UF_ERR;
        }
        /* An (unusual) conv bias is folded too. */
        snprintf(name, sizeof name, "%s.bias", cname);
        float *cb = NULL;
        if (rc == UF_OK && uf_st_find(ld->st, name) && !(cb = read_param(ld, name, 1, bshape))) rc = UF_ERR;
        if (rc == UF_OK && !(cv->b = uf_alloc(sizeof(float) * (size_t)c_out))) rc = UF_ERR;
        for (int o = 0; rc == UF_OK && o < c_out; o++) {
            if (!(bn[3][o] >= 0.0f)) {
                snprintf(name, sizeof name, "%s.running_var", bname);
                rc = uf_error("%s: tensor '%s' has a negative variance at index %d", ld->what, name, o);
                break;
            }
            double s = bn[0][o] / sqrt((double)bn[3][o] + BN_EPS);
            for (size_t i = 0; i < per_out; i++) cv->w[o * per_out + i] = (float)(cv->w[o * per_out + i] * s);
            cv->b[o] = (float)(((cb ? cb[o] : 0.0) - bn[2][o]) * s + bn[1][o]);
        }
        for (int i = 0; i < 4; i++) uf_free(bn[i]);
        uf_free(cb);
        return rc;
    }
    snprintf(name, sizeof name, "%s.bias", cname);
    if (!uf_st_find(ld->st, name))
        return uf_error("%s: missing tensor '%s' (a BatchNorm-folded file needs a bias for every conv)", ld->what,
                        name);
    cv->b = read_param(ld, name, 1, bshape);
    return cv->b ? UF_OK : UF_ERR;
}

static void free_conv(rn_conv *cv) {
    uf_free(cv->w), uf_free(cv->b);
    cv->w = cv->b = NULL;
}

/* counts[l] = 1 + the largest j with a tensor "layer{l+1}.{j}.*" in the file (0 if none). */
static void count_blocks(const uf_safetensors *st, int counts[UF_RESNET_LEVELS]) {
    for (int l = 0; l < UF_RESNET_LEVELS; l++) counts[l] = 0;
    for (int i = 0; i < uf_st_count(st); i++) {
        const char *name = uf_st_at(st, i)->name;
        int l = 0, j = 0, len = 0;
        if (sscanf(name, "layer%d.%d.%n", &l, &j, &len) == 2 && len > 0 && l >= 1 && l <= UF_RESNET_LEVELS &&
            j >= 0 && j < MAX_BLOCKS && j + 1 > counts[l - 1])
            counts[l - 1] = j + 1;
    }
}

static int has_tensor(const uf_safetensors *st, const char *fmt, int a, int b) {
    char name[160];
    snprintf(name, sizeof name, fmt, a, b);
    return uf_st_find(st, name) != NULL;
}

static void name_arch(uf_resnet *m) {
    const int *nb = m->n_blocks;
    int l123 = 0; /* which standard network layer1..3 match */
    if (!m->bottleneck && nb[0] == 2 && nb[1] == 2 && nb[2] == 2) l123 = 18;
    if (!m->bottleneck && nb[0] == 3 && nb[1] == 4 && nb[2] == 6) l123 = 34;
    if (m->bottleneck && nb[0] == 3 && nb[1] == 4 && nb[2] == 6) l123 = 50;
    if (m->bottleneck && nb[0] == 3 && nb[1] == 4 && nb[2] == 23) l123 = 101;
    if (m->bottleneck && nb[0] == 3 && nb[1] == 8 && nb[2] == 36) l123 = 152;
    if (l123 && m->bottleneck) {
        /* Bottleneck width vs output: 1/4 for ResNet, 1/2 for Wide-ResNet-x-2. */
        const rn_conv *c = &m->blocks[0][0].conv[0];
        int wide = 2 * c->c_out == m->blocks[0][0].conv[2].c_out;
        snprintf(m->arch, sizeof m->arch, "%sresnet%d%s", wide ? "wide_" : "", l123, wide ? "_2" : "");
    } else if (l123) {
        snprintf(m->arch, sizeof m->arch, "resnet%d", l123);
    } else {
        snprintf(m->arch, sizeof m->arch, "resnet-%s[%d,%d,%d]", m->bottleneck ? "bottleneck" : "basic", nb[0],
                 nb[1], nb[2]);
    }
}

uf_resnet *uf_resnet_from_safetensors(const uf_safetensors *st, const char *what) {
    uf_resnet *m = uf_calloc(1, sizeof *m);
    if (!m) return NULL;
    loader ld = {st, what ? what : "weights", 0};
    /* Shipped (BatchNorm tensors) or folded (conv biases)? */
    ld.had_bn = uf_st_find(st, "bn1.weight") != NULL || uf_st_find(st, "conv1.bias") == NULL;
    m->had_bn = ld.had_bn;
    if (!uf_st_find(st, "layer1.0.conv1.weight")) {
        uf_error("%s: missing tensor 'layer1.0.conv1.weight' (not a ResNet with timm/torchvision names?)", ld.what);
        goto fail;
    }
    m->bottleneck = uf_st_find(st, "layer1.0.conv3.weight") != NULL;
    if (load_conv(&ld, &m->stem, "conv1", "bn1", 3, 0, 7, 2) != UF_OK) goto fail;
    int c_in = m->stem.c_out, counts[UF_RESNET_LEVELS];
    /* Blocks are numbered by the tensors present; a block with a misnamed or
     * missing tensor then fails with that tensor's name. */
    count_blocks(st, counts);
    for (int l = 0; l < UF_RESNET_LEVELS; l++) {
        int nb = counts[l];
        if (nb == 0) {
            uf_error("%s: missing tensor 'layer%d.0.conv1.weight'", ld.what, l + 1);
            goto fail;
        }
        m->blocks[l] = uf_calloc((size_t)nb, sizeof(rn_block));
        if (!m->blocks[l]) goto fail;
        m->n_blocks[l] = nb;
        const int layer_stride = l == 0 ? 1 : 2;
        for (int j = 0; j < nb; j++) {
            rn_block *bk = &m->blocks[l][j];
            const int s = j == 0 ? layer_stride : 1;
            char cn[96], bn[96];
            int width = 0;
            for (int i = 0; i < (m->bottleneck ? 3 : 2); i++) {
                snprintf(cn, sizeof cn, "layer%d.%d.conv%d", l + 1, j, i + 1);
                snprintf(bn, sizeof bn, "layer%d.%d.bn%d", l + 1, j, i + 1);
                int k = m->bottleneck && i != 1 ? 1 : 3;
                /* The stride sits in the 3x3 conv: conv1 (Basic), conv2 (Bottleneck, torchvision v1.5 / timm). */
                int cs = (m->bottleneck ? i == 1 : i == 0) ? s : 1;
                int cin = i == 0 ? c_in : width;
                /* conv2 keeps conv1's width, blocks after the first keep their input's channels;
                 * other output widths are read from the file. */
                int cout = i == 1 ? width : 0;
                if (j > 0 && i == (m->bottleneck ? 2 : 1)) cout = c_in;
                if (load_conv(&ld, &bk->conv[i], cn, bn, cin, cout, k, cs) != UF_OK) goto fail;
                width = bk->conv[i].c_out;
            }
            const int c_out = width;
            if (has_tensor(st, "layer%d.%d.downsample.0.weight", l + 1, j)) {
                snprintf(cn, sizeof cn, "layer%d.%d.downsample.0", l + 1, j);
                snprintf(bn, sizeof bn, "layer%d.%d.downsample.1", l + 1, j);
                if (load_conv(&ld, &bk->down, cn, bn, c_in, c_out, 1, s) != UF_OK) goto fail;
            } else if (s != 1 || c_in != c_out) {
                uf_error("%s: missing tensor 'layer%d.%d.downsample.0.weight' (block changes %s)", ld.what, l + 1,
                         j, s != 1 ? "the stride" : "the channel count");
                goto fail;
            }
            c_in = c_out;
        }
    }
    name_arch(m);
    return m;
fail:
    uf_resnet_free(m);
    return NULL;
}

uf_resnet *uf_resnet_load(const char *path) {
    uf_safetensors *st = uf_st_open(path);
    if (!st) return NULL;
    uf_resnet *m = uf_resnet_from_safetensors(st, path);
    uf_st_close(st);
    return m;
}

static void dn_plan_free(dn_plan *p);

void uf_resnet_free(uf_resnet *m) {
    if (!m) return;
    dn_plan_free(m->plan[0]), dn_plan_free(m->plan[1]);
    free_conv(&m->stem);
    for (int l = 0; l < UF_RESNET_LEVELS; l++) {
        for (int j = 0; m->blocks[l] && j < m->n_blocks[l]; j++) {
            for (int i = 0; i < 3; i++) free_conv(&m->blocks[l][j].conv[i]);
            free_conv(&m->blocks[l][j].down);
        }
        uf_free(m->blocks[l]);
    }
    uf_arena_free(&m->arena);
    uf_free(m);
}

/* xorshift32 -> uniform [-1, 1) */
static float rand_unit(uint32_t *s) {
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return (float)(*s >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

static int random_conv(rn_conv *cv, int c_in, int c_out, int k, int stride, uint32_t *seed) {
    cv->c_in = c_in, cv->c_out = c_out, cv->k = k, cv->stride = stride, cv->pad = k / 2;
    size_t nw = (size_t)c_out * c_in * k * k;
    cv->w = uf_alloc(sizeof(float) * nw);
    cv->b = uf_alloc(sizeof(float) * (size_t)c_out);
    if (!cv->w || !cv->b) return UF_ERR;
    /* uniform with the variance 2 / fan_in */
    float scale = sqrtf(6.0f / (float)(c_in * k * k));
    for (size_t i = 0; i < nw; i++) cv->w[i] = scale * rand_unit(seed);
    for (int o = 0; o < c_out; o++) cv->b[o] = 0.1f * rand_unit(seed);
    return UF_OK;
}

uf_resnet *uf_resnet_random(const char *arch, unsigned seed) {
    static const int basic_blocks[3] = {2, 2, 2}, bottleneck_blocks[3] = {3, 4, 6};
    int bottleneck;
    if (!strcmp(arch, "resnet18"))
        bottleneck = 0;
    else if (!strcmp(arch, "wide_resnet50_2"))
        bottleneck = 1;
    else {
        uf_error("no random model for architecture '%s' (resnet18 | wide_resnet50_2)", arch);
        return NULL;
    }
    uf_resnet *m = uf_calloc(1, sizeof *m);
    if (!m) return NULL;
    uint32_t s = seed ? seed : 1u;
    m->bottleneck = bottleneck;
    if (random_conv(&m->stem, 3, 64, 7, 2, &s) != UF_OK) goto fail;
    int c_in = 64;
    for (int l = 0; l < UF_RESNET_LEVELS; l++) {
        const int nb = bottleneck ? bottleneck_blocks[l] : basic_blocks[l], planes = 64 << l;
        const int width = bottleneck ? 2 * planes : planes, c_out = bottleneck ? 4 * planes : planes;
        if (!(m->blocks[l] = uf_calloc((size_t)nb, sizeof(rn_block)))) goto fail;
        m->n_blocks[l] = nb;
        for (int j = 0; j < nb; j++) {
            rn_block *bk = &m->blocks[l][j];
            const int st = j == 0 && l > 0 ? 2 : 1;
            int rc = bottleneck ? random_conv(&bk->conv[0], c_in, width, 1, 1, &s) |
                                      random_conv(&bk->conv[1], width, width, 3, st, &s) |
                                      random_conv(&bk->conv[2], width, c_out, 1, 1, &s)
                                : random_conv(&bk->conv[0], c_in, width, 3, st, &s) |
                                      random_conv(&bk->conv[1], width, c_out, 3, 1, &s);
            if (rc == UF_OK && (st != 1 || c_in != c_out)) rc = random_conv(&bk->down, c_in, c_out, 1, st, &s);
            if (rc != UF_OK) goto fail;
            c_in = c_out;
        }
    }
    name_arch(m);
    return m;
fail:
    uf_resnet_free(m);
    return NULL;
}

const char *uf_resnet_arch(const uf_resnet *m) { return m->arch; }
int uf_resnet_had_batchnorm(const uf_resnet *m) { return m->had_bn; }
uf_resnet_timing uf_resnet_last_timing(const uf_resnet *m) { return m->timing; }

/* ---------------------------------------------------------------- shapes */

static int conv_out(const rn_conv *cv, int in) { return uf_conv_out_size(in, cv->k, cv->stride, cv->pad); }
static int pool_out(int in) { return (in + 2 - 3) / 2 + 1; }

static int level_channels(const uf_resnet *m, int l) {
    const rn_block *bk = &m->blocks[l][0];
    return bk->conv[m->bottleneck ? 2 : 1].c_out;
}

void uf_resnet_feature_shape(const uf_resnet *m, int level, int h, int w, int *c, int *fh, int *fw) {
    UF_ASSERT(level >= 0 && level < UF_RESNET_LEVELS);
    h = pool_out(conv_out(&m->stem, h)), w = pool_out(conv_out(&m->stem, w));
    for (int l = 1; l <= level; l++) h = (h - 1) / 2 + 1, w = (w - 1) / 2 + 1;
    *c = level_channels(m, level), *fh = h, *fw = w;
}

static double conv_flops(const rn_conv *cv, int *h, int *w) {
    *h = conv_out(cv, *h), *w = conv_out(cv, *w);
    return 2.0 * cv->c_out * cv->c_in * cv->k * cv->k * (double)*h * *w;
}

double uf_resnet_conv_flops(const uf_resnet *m, int h, int w) {
    double f = conv_flops(&m->stem, &h, &w);
    h = pool_out(h), w = pool_out(w);
    for (int l = 0; l < UF_RESNET_LEVELS; l++)
        for (int j = 0; j < m->n_blocks[l]; j++) {
            const rn_block *bk = &m->blocks[l][j];
            int bh = h, bw = w;
            if (bk->down.w) {
                int dh = h, dw = w;
                f += conv_flops(&bk->down, &dh, &dw);
            }
            for (int i = 0; i < (m->bottleneck ? 3 : 2); i++) f += conv_flops(&bk->conv[i], &bh, &bw);
            h = bh, w = bw;
        }
    return f;
}

/* ---------------------------------------------------------------- forward */

/* Scratch needs (floats) for a group of g images of h x w. */
typedef struct {
    size_t t1, pool, t2, work;
} act_sizes;

static uf_conv_geom geom_of(const rn_conv *cv, int n, int h, int w) {
    return (uf_conv_geom){.n = n, .c_in = cv->c_in, .h = h, .w = w, .c_out = cv->c_out, .k = cv->k,
                          .stride = cv->stride, .pad = cv->pad};
}

static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

static act_sizes plan_sizes(const uf_resnet *m, int g, int h, int w) {
    act_sizes s = {0, 0, 0, 0};
    uf_conv_geom cg = geom_of(&m->stem, g, h, w);
    s.work = uf_conv2d_forward_workspace(&cg);
    h = conv_out(&m->stem, h), w = conv_out(&m->stem, w);
    s.t1 = (size_t)g * m->stem.c_out * h * w;
    h = pool_out(h), w = pool_out(w);
    s.pool = (size_t)g * m->stem.c_out * h * w;
    for (int l = 0; l < UF_RESNET_LEVELS; l++)
        for (int j = 0; j < m->n_blocks[l]; j++) {
            const rn_block *bk = &m->blocks[l][j];
            if (bk->down.w) {
                cg = geom_of(&bk->down, g, h, w);
                s.work = max_z(s.work, uf_conv2d_forward_workspace(&cg));
            }
            for (int i = 0; i < (m->bottleneck ? 3 : 2); i++) {
                cg = geom_of(&bk->conv[i], g, h, w);
                s.work = max_z(s.work, uf_conv2d_forward_workspace(&cg));
                h = conv_out(&bk->conv[i], h), w = conv_out(&bk->conv[i], w);
                size_t sz = (size_t)g * bk->conv[i].c_out * h * w;
                if (i == 0) s.t1 = max_z(s.t1, sz);
                if (i == 1 && m->bottleneck) s.t2 = max_z(s.t2, sz);
            }
        }
    return s;
}

static size_t plan_bytes(const act_sizes *s) {
    /* + alignment slack per buffer */
    return sizeof(float) * (s->t1 + s->pool + s->t2 + s->work) + 4 * UF_ALIGN;
}

/* conv with timing; y = act(conv(x) + b [+ y]). */
static void run_conv(uf_resnet *m, const rn_conv *cv, int n, int h, int w, const float *x, float *y, int flags,
                     float *work) {
    uf_conv_geom g = geom_of(cv, n, h, w);
    double t0 = uf_now();
    uf_conv2d_forward_ex(&g, x, cv->w, cv->b, y, flags, work);
    m->timing.conv_s += uf_now() - t0;
}

/* One group of g images: x (g, 3, h, w) -> out[l] (g, C_l, H_l, W_l). */
static int forward_group(uf_resnet *m, const float *x, int g, int h, int w, float *out[UF_RESNET_LEVELS],
                          const act_sizes *sz) {
    float *t1 = uf_arena_floats(&m->arena, sz->t1), *pool = uf_arena_floats(&m->arena, sz->pool);
    float *t2 = sz->t2 ? uf_arena_floats(&m->arena, sz->t2) : NULL, *work = uf_arena_floats(&m->arena, sz->work);
    UF_ASSERT(t1 && pool && work && (t2 || !sz->t2)); /* the arena was sized for this plan */

    run_conv(m, &m->stem, g, h, w, x, t1, UF_CONV_RELU, work);
    h = conv_out(&m->stem, h), w = conv_out(&m->stem, w);
    double t0 = uf_now();
    if (uf_maxpool2d_3s2p1(t1, g * m->stem.c_out, h, w, pool) != UF_OK) return UF_ERR;
    m->timing.other_s += uf_now() - t0;
    h = pool_out(h), w = pool_out(w);

    const float *cur = pool; /* (g, c, h, w) */
    for (int l = 0; l < UF_RESNET_LEVELS; l++) {
        float *y = out[l];
        for (int j = 0; j < m->n_blocks[l]; j++) {
            const rn_block *bk = &m->blocks[l][j];
            const rn_conv *last = &bk->conv[m->bottleneck ? 2 : 1];
            const int oh = conv_out(&bk->conv[m->bottleneck ? 1 : 0], h);
            const int ow = conv_out(&bk->conv[m->bottleneck ? 1 : 0], w);
            /* The shortcut goes into y; the block's last conv then adds onto it (beta = 1). */
            if (bk->down.w) {
                run_conv(m, &bk->down, g, h, w, cur, y, 0, work);
            } else if (cur != y) {
                t0 = uf_now();
                memcpy(y, cur, sizeof(float) * (size_t)g * last->c_out * oh * ow);
                m->timing.other_s += uf_now() - t0;
            }
            run_conv(m, &bk->conv[0], g, h, w, cur, t1, UF_CONV_RELU, work);
            int bh = conv_out(&bk->conv[0], h), bw = conv_out(&bk->conv[0], w);
            const float *last_in = t1;
            if (m->bottleneck) {
                run_conv(m, &bk->conv[1], g, bh, bw, t1, t2, UF_CONV_RELU, work);
                bh = conv_out(&bk->conv[1], bh), bw = conv_out(&bk->conv[1], bw);
                last_in = t2;
            }
            run_conv(m, last, g, bh, bw, last_in, y, UF_CONV_ACCUMULATE | UF_CONV_RELU, work);
            cur = y, h = oh, w = ow;
        }
    }
    return UF_OK;
}

/* ---------------------------------------------------------------- oneDNN engine
 * The same network as forward_group, as oneDNN primitives: every activation
 * stays in the layout oneDNN picks for it (blocked, e.g. nChw16c) from the
 * stem to layer3, BatchNorm-folded biases and ReLUs are fused into the
 * convolutions, and each block's shortcut is added by a sum post-op into the
 * shortcut's own memory. Only the input (nchw, the caller's array) and the
 * three outputs (reordered to nchw into the caller's arrays) change layout.
 * Measured at resnet18@256 on 2 cores (AVX-512): the convolutions twice as
 * fast as im2col + OpenBLAS. A plan is built for one (n, h, w) and kept. */

#define DN_MAX_OPS 256

typedef struct {
    dnnl_primitive_t prim;
    int kind; /* 0: conv, 1: pool, 2: reorder (the input to BF16, an output to nchw FP32),
               * 3: conv on our AVX2 Winograd (no primitive: conv_winograd.h on src / dst) */
    dnnl_memory_t src, dst, wei, bia;
    /* kind 3: the geometry, transformed weights (owned), the bias (the model's), UF_CONV_* */
    uf_conv_geom g;
    float *u;
    const float *b;
    int flags;
} dn_op;

struct dn_plan {
    int n, h, w;
    int winograd; /* 3x3 stride-1 convolutions as Winograd where oneDNN has it */
    dnnl_data_type_t act; /* activations and weights: f32, or bf16 (accumulation in f32, biases f32) */
    dnnl_engine_t eng;
    dnnl_stream_t st;
    dnnl_memory_t x_user, out_user[UF_RESNET_LEVELS];
    dnnl_memory_t owned[DN_MAX_OPS * 2];
    int n_owned;
    dn_op ops[DN_MAX_OPS];
    int n_ops;
    /* One scratchpad for the plan's primitives, which run one after the other. oneDNN's
     * default (library) scratchpad is thread-local to the thread that created the
     * primitive, so a plan built in one thread crashed when run in another (seen with
     * the AVX-512 Winograd kernels); with its own scratchpad a plan runs in any thread,
     * and two models' plans run at once. */
    size_t scratch_size;
    dnnl_memory_t scratch;
    float *wino_scratch; /* kind 3 ops' scratch, grown as needed at run time */
    size_t wino_scratch_floats;
};

static int dn_fail(const char *what, dnnl_status_t s) {
    return uf_error("oneDNN: %s failed (status %d)", what, (int)s);
}
#define DN(call)                                              \
    do {                                                      \
        dnnl_status_t s_ = (call);                            \
        if (s_ != dnnl_success) return dn_fail(#call, s_);    \
    } while (0)

/* The plan's scratchpad must hold that of primitive descriptor pd. */
static void dn_note_scratch(dn_plan *p, const_dnnl_primitive_desc_t pd) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t sz = md ? dnnl_memory_desc_get_size(md) : 0;
    if (sz > p->scratch_size) p->scratch_size = sz;
}

static void dn_plan_free(dn_plan *p) {
    if (!p) return;
    if (p->scratch) dnnl_memory_destroy(p->scratch);
    uf_free(p->wino_scratch);
    for (int i = 0; i < p->n_ops; i++) {
        uf_free(p->ops[i].u);
        if (p->ops[i].prim) dnnl_primitive_destroy(p->ops[i].prim);
        if (p->ops[i].wei) dnnl_memory_destroy(p->ops[i].wei);
        if (p->ops[i].bia) dnnl_memory_destroy(p->ops[i].bia);
    }
    for (int i = 0; i < p->n_owned; i++) dnnl_memory_destroy(p->owned[i]);
    if (p->x_user) dnnl_memory_destroy(p->x_user);
    for (int l = 0; l < UF_RESNET_LEVELS; l++)
        if (p->out_user[l]) dnnl_memory_destroy(p->out_user[l]);
    if (p->st) dnnl_stream_destroy(p->st);
    if (p->eng) dnnl_engine_destroy(p->eng);
    free(p);
}

static int dn_new_memory(dn_plan *p, const dnnl_memory_desc_t *md, dnnl_memory_t *out) {
    if (p->n_owned >= DN_MAX_OPS * 2) return uf_error("oneDNN: too many buffers");
    DN(dnnl_memory_create(out, md, p->eng, DNNL_MEMORY_ALLOCATE));
    p->owned[p->n_owned++] = *out;
    return UF_OK;
}

/* 1 when md is FP32 nChw8c (conv_winograd.h's layout) with its own dims. */
static int is_nchw8c_f32(const dnnl_memory_desc_t *md) {
    dnnl_memory_desc_t b8;
    return md->ndims == 4 && md->data_type == dnnl_f32 &&
           dnnl_memory_desc_init_by_tag(&b8, 4, md->dims, dnnl_f32, dnnl_nChw8c) == dnnl_success &&
           dnnl_memory_desc_equal(md, &b8);
}

/* dn_conv on our AVX2 Winograd (kind 3), where oneDNN has no Winograd kernel (AVX2 CPUs):
 * FP32, 3x3 stride 1 pad 1, src (and sum_into) already in nChw8c. 1 and *dst set when it
 * took the convolution, 0 when it does not apply (the caller builds a primitive), -1 on error. */
static int dn_conv_own(dn_plan *p, const rn_conv *cv, dnnl_memory_t src, dnnl_memory_t sum_into, int relu,
                       dnnl_memory_t *dst) {
    const dnnl_memory_desc_t *smd, *sumd = NULL;
    if (dnnl_memory_get_memory_desc(src, &smd) != dnnl_success) return 0;
    if (sum_into && dnnl_memory_get_memory_desc(sum_into, &sumd) != dnnl_success) return 0;
    const uf_conv_geom g = {(int)smd->dims[0], cv->c_in, (int)smd->dims[2], (int)smd->dims[3],
                            cv->c_out, cv->k, cv->stride, cv->pad};
    if (!p->winograd || p->act != dnnl_f32 || !uf_wino_available() || !uf_wino_fits(&g) || smd->dims[1] != cv->c_in ||
        !is_nchw8c_f32(smd) || (sumd && !is_nchw8c_f32(sumd)))
        return 0;
    dn_op *op = &p->ops[p->n_ops];
    memset(op, 0, sizeof *op);
    op->kind = 3, op->g = g, op->b = cv->b, op->src = src;
    op->flags = (relu ? UF_CONV_RELU : 0) | (sum_into ? UF_CONV_ACCUMULATE : 0);
    if (!(op->u = uf_alloc(sizeof(float) * uf_wino_weights_floats(g.c_in, g.c_out)))) return -1;
    p->n_ops++; /* owns op->u from here (dn_plan_free) */
    uf_wino_transform_weights(g.c_in, g.c_out, cv->w, 0, op->u);
    if (sum_into) {
        op->dst = sum_into;
    } else {
        dnnl_memory_desc_t dmd;
        const dnnl_dims_t dd = {g.n, g.c_out, g.h, g.w};
        if (dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, dnnl_nChw8c) != dnnl_success ||
            dn_new_memory(p, &dmd, &op->dst) != UF_OK)
            return -1;
    }
    *dst = op->dst;
    return 1;
}

/* Runs a kind 3 op (after the stream's earlier work has finished). */
static int dn_run_own(dn_plan *p, const dn_op *op) {
    const int threads = omp_get_max_threads();
    const size_t need = uf_wino_scratch_floats(&op->g, threads, 0);
    if (need > p->wino_scratch_floats) {
        uf_free(p->wino_scratch);
        p->wino_scratch_floats = 0;
        if (!(p->wino_scratch = uf_alloc(sizeof(float) * need))) return UF_ERR;
        p->wino_scratch_floats = need;
    }
    void *x = NULL, *y = NULL;
    DN(dnnl_memory_get_data_handle(op->src, &x));
    DN(dnnl_memory_get_data_handle(op->dst, &y));
    uf_wino_forward(&op->g, x, op->u, op->b, y, op->flags, threads, p->wino_scratch);
    return UF_OK;
}

/* A convolution reading src; writes a new buffer, or adds onto sum_into (same
 * layout) when not NULL; relu after. Its weights are reordered once into the
 * layout the primitive wants. *dst receives the output memory. */
static int dn_conv(dn_plan *p, const rn_conv *cv, dnnl_memory_t src, dnnl_memory_t sum_into, int relu,
                   dnnl_memory_t *dst) {
    if (p->n_ops >= DN_MAX_OPS) return uf_error("oneDNN: too many layers");
    const dnnl_memory_desc_t *smd;
    DN(dnnl_memory_get_memory_desc(src, &smd));
    const int64_t n = smd->dims[0], h = smd->dims[2], w = smd->dims[3];
    const int64_t oh = (h + 2 * cv->pad - cv->k) / cv->stride + 1, ow = (w + 2 * cv->pad - cv->k) / cv->stride + 1;
    dnnl_memory_desc_t wmd, wuser, bmd, dmd;
    const dnnl_dims_t wd = {cv->c_out, cv->c_in, cv->k, cv->k}, bd = {cv->c_out}, dd = {n, cv->c_out, oh, ow};
    DN(dnnl_memory_desc_init_by_tag(&wmd, 4, wd, p->act, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&wuser, 4, wd, dnnl_f32, dnnl_oihw));
    DN(dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x));
    if (sum_into) {
        const dnnl_memory_desc_t *m;
        DN(dnnl_memory_get_memory_desc(sum_into, &m));
        dmd = *m;
    } else {
        DN(dnnl_memory_desc_init_by_tag(&dmd, 4, dd, p->act, dnnl_format_tag_any));
    }
    dnnl_convolution_desc_t cd;
    const dnnl_dims_t strides = {cv->stride, cv->stride}, pad = {cv->pad, cv->pad};
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    DN(dnnl_primitive_attr_create(&attr));
    DN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    DN(dnnl_post_ops_create(&po));
    if (sum_into) DN(dnnl_post_ops_append_sum(po, 1.0f));
    if (relu) DN(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    DN(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st;
    /* Winograd first where asked for and oneDNN has a jit kernel for it (its weight
     * transform is slow, but it runs once, below); direct otherwise */
    if (p->winograd && cv->k == 3 && cv->stride == 1 &&
        dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_winograd, smd, &wmd, &bmd,
                                           &dmd, strides, pad, pad) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &cd, attr, p->eng, NULL) == dnnl_success) {
        const char *impl = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl ||
            strncmp(impl, "jit", 3) != 0 || !strstr(impl, "wino")) {
            dnnl_primitive_desc_destroy(pd);
            pd = NULL;
        }
    }
    const int own = pd ? 0 : dn_conv_own(p, cv, src, sum_into, relu, dst); /* no oneDNN Winograd: ours? */
    if (own) {
        dnnl_post_ops_destroy(po);
        dnnl_primitive_attr_destroy(attr);
        return own > 0 ? UF_OK : UF_ERR;
    }
    st = pd ? dnnl_success
            : dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, smd, &wmd,
                                                 &bmd, &dmd, strides, pad, pad);
    if (!pd && st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &cd, attr, p->eng, NULL);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return dn_fail("convolution descriptor", st);
    dn_note_scratch(p, pd);
    dn_op *op = &p->ops[p->n_ops++];
    memset(op, 0, sizeof *op);
    op->src = src;
    const dnnl_memory_desc_t *qw = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *qd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    st = dnnl_primitive_create(&op->prim, pd);
    if (st == dnnl_success) st = dnnl_memory_create(&op->wei, qw, p->eng, DNNL_MEMORY_ALLOCATE);
    if (st == dnnl_success) st = dnnl_memory_create(&op->bia, &bmd, p->eng, cv->b);
    /* weights: oihw (ours) -> the primitive's layout, once */
    dnnl_memory_t wsrc = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t rp = NULL;
    if (st == dnnl_success) st = dnnl_memory_create(&wsrc, &wuser, p->eng, cv->w);
    /* this reorder too gets its own scratchpad (see dn_plan) */
    dnnl_primitive_attr_t rattr = NULL;
    dnnl_memory_t rscratch = NULL;
    if (st == dnnl_success) st = dnnl_primitive_attr_create(&rattr);
    if (st == dnnl_success) st = dnnl_primitive_attr_set_scratchpad_mode(rattr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success) st = dnnl_reorder_primitive_desc_create(&rpd, &wuser, p->eng, qw, p->eng, rattr);
    if (rattr) dnnl_primitive_attr_destroy(rattr);
    if (st == dnnl_success) st = dnnl_primitive_create(&rp, rpd);
    if (st == dnnl_success)
        st = dnnl_memory_create(&rscratch, dnnl_primitive_desc_query_md(rpd, dnnl_query_scratchpad_md, 0), p->eng,
                                DNNL_MEMORY_ALLOCATE);
    if (st == dnnl_success) {
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_FROM, wsrc}, {DNNL_ARG_TO, op->wei}, {DNNL_ARG_SCRATCHPAD, rscratch}};
        st = dnnl_primitive_execute(rp, p->st, 3, a);
        if (st == dnnl_success) st = dnnl_stream_wait(p->st);
    }
    if (rscratch) dnnl_memory_destroy(rscratch);
    if (rp) dnnl_primitive_destroy(rp);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (wsrc) dnnl_memory_destroy(wsrc);
    if (st == dnnl_success && !sum_into && dn_new_memory(p, qd, &op->dst) != UF_OK) st = dnnl_out_of_memory;
    if (sum_into) op->dst = sum_into;
    dnnl_primitive_desc_destroy(pd);
    if (st != dnnl_success) return dn_fail("convolution", st);
    *dst = op->dst;
    return UF_OK;
}

static int dn_pool(dn_plan *p, dnnl_memory_t src, dnnl_memory_t *dst) {
    const dnnl_memory_desc_t *smd;
    DN(dnnl_memory_get_memory_desc(src, &smd));
    const dnnl_dims_t dd = {smd->dims[0], smd->dims[1], (smd->dims[2] - 1) / 2 + 1, (smd->dims[3] - 1) / 2 + 1};
    dnnl_memory_desc_t dmd;
    DN(dnnl_memory_desc_init_by_tag(&dmd, 4, dd, smd->data_type, dnnl_format_tag_any));
    dnnl_pooling_v2_desc_t pld;
    const dnnl_dims_t k3 = {3, 3}, s2 = {2, 2}, p1 = {1, 1}, dil = {0, 0};
    DN(dnnl_pooling_v2_forward_desc_init(&pld, dnnl_forward_inference, dnnl_pooling_max, smd, &dmd, s2, k3, dil, p1,
                                         p1));
    dnnl_primitive_desc_t pd;
    dnnl_primitive_attr_t attr;
    DN(dnnl_primitive_attr_create(&attr));
    dnnl_status_t ast = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (ast == dnnl_success) ast = dnnl_primitive_desc_create(&pd, &pld, attr, p->eng, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (ast != dnnl_success) return dn_fail("pooling descriptor", ast);
    dn_note_scratch(p, pd);
    dn_op *op = &p->ops[p->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = 1;
    op->src = src;
    dnnl_status_t st = dnnl_primitive_create(&op->prim, pd);
    int rc = st == dnnl_success ? dn_new_memory(p, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &op->dst)
                                : dn_fail("pooling", st);
    dnnl_primitive_desc_destroy(pd);
    *dst = op->dst;
    return rc;
}

/* A reorder op from src into dst (any layouts and types). */
static int dn_add_reorder(dn_plan *p, dnnl_memory_t src, dnnl_memory_t dst) {
    if (p->n_ops >= DN_MAX_OPS) return uf_error("oneDNN: too many layers");
    const dnnl_memory_desc_t *smd, *dmd;
    DN(dnnl_memory_get_memory_desc(src, &smd));
    DN(dnnl_memory_get_memory_desc(dst, &dmd));
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_attr_t attr;
    DN(dnnl_primitive_attr_create(&attr));
    dnnl_status_t ast = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (ast == dnnl_success) ast = dnnl_reorder_primitive_desc_create(&rpd, smd, p->eng, dmd, p->eng, attr);
    dnnl_primitive_attr_destroy(attr);
    if (ast != dnnl_success) return dn_fail("reorder descriptor", ast);
    dn_note_scratch(p, rpd);
    dn_op *op = &p->ops[p->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = 2;
    op->src = src, op->dst = dst;
    dnnl_status_t st = dnnl_primitive_create(&op->prim, rpd);
    dnnl_primitive_desc_destroy(rpd);
    return st == dnnl_success ? UF_OK : dn_fail("reorder", st);
}

/* The input, converted: a reorder of src into a new nchw memory of type dt. */
static int dn_reorder(dn_plan *p, dnnl_memory_t src, dnnl_data_type_t dt, dnnl_memory_t *dst) {
    const dnnl_memory_desc_t *smd;
    DN(dnnl_memory_get_memory_desc(src, &smd));
    dnnl_memory_desc_t dmd;
    DN(dnnl_memory_desc_init_by_tag(&dmd, 4, smd->dims, dt, dnnl_nchw));
    if (dn_new_memory(p, &dmd, dst) != UF_OK) return UF_ERR;
    return dn_add_reorder(p, src, *dst);
}

/* Output `level`: src reordered to FP32 nchw into the caller's array (set per forward). */
static int dn_reorder_out(dn_plan *p, dnnl_memory_t src, int level) {
    const dnnl_memory_desc_t *smd;
    DN(dnnl_memory_get_memory_desc(src, &smd));
    dnnl_memory_desc_t umd;
    DN(dnnl_memory_desc_init_by_tag(&umd, 4, smd->dims, dnnl_f32, dnnl_nchw));
    DN(dnnl_memory_create(&p->out_user[level], &umd, p->eng, DNNL_MEMORY_NONE));
    return dn_add_reorder(p, src, p->out_user[level]);
}

static int dn_build(uf_resnet *m, dn_plan *p) {
    DN(dnnl_engine_create(&p->eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&p->st, p->eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t xmd;
    const dnnl_dims_t xd = {p->n, 3, p->h, p->w};
    DN(dnnl_memory_desc_init_by_tag(&xmd, 4, xd, dnnl_f32, dnnl_nchw));
    DN(dnnl_memory_create(&p->x_user, &xmd, p->eng, DNNL_MEMORY_NONE));
    dnnl_memory_t cur = NULL, t = NULL, x = p->x_user;
    if (p->act == dnnl_bf16 && dn_reorder(p, p->x_user, dnnl_bf16, &x) != UF_OK) return UF_ERR;
    if (dn_conv(p, &m->stem, x, NULL, 1, &t) != UF_OK || dn_pool(p, t, &cur) != UF_OK) return UF_ERR;
    const int nc = m->bottleneck ? 3 : 2;
    for (int l = 0; l < UF_RESNET_LEVELS; l++) {
        for (int j = 0; j < m->n_blocks[l]; j++) {
            const rn_block *bk = &m->blocks[l][j];
            dnnl_memory_t shortcut = cur, y = cur;
            if (bk->down.w && dn_conv(p, &bk->down, cur, NULL, 0, &shortcut) != UF_OK) return UF_ERR;
            for (int i = 0; i < nc; i++) /* the last adds onto the shortcut, in place */
                if (dn_conv(p, &bk->conv[i], y, i == nc - 1 ? shortcut : NULL, 1, &y) != UF_OK) return UF_ERR;
            cur = y;
        }
        if (dn_reorder_out(p, cur, l) != UF_OK) return UF_ERR;
    }
    dnnl_memory_desc_t smd;
    const dnnl_dims_t sd = {(dnnl_dim_t)(p->scratch_size ? p->scratch_size : 1)};
    DN(dnnl_memory_desc_init_by_tag(&smd, 1, sd, dnnl_u8, dnnl_x));
    DN(dnnl_memory_create(&p->scratch, &smd, p->eng, DNNL_MEMORY_ALLOCATE));
    return UF_OK;
}

/* NULL (no error) when oneDNN cannot run this network here: the caller then
 * uses im2col + OpenBLAS. Keeps the two most recent plans. */
static dn_plan *dn_plan_get(uf_resnet *m, int n, int h, int w) {
    for (int i = 0; i < 2; i++)
        if (m->plan[i] && m->plan[i]->n == n && m->plan[i]->h == h && m->plan[i]->w == w) {
            if (i == 1) { /* most recent first */
                dn_plan *t = m->plan[0];
                m->plan[0] = m->plan[1], m->plan[1] = t;
            }
            return m->plan[0];
        }
    dn_plan_free(m->plan[1]);
    m->plan[1] = m->plan[0];
    dn_plan *p = m->plan[0] = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n, p->h = h, p->w = w;
    p->act = m->bf16 ? dnnl_bf16 : dnnl_f32;
    /* oneDNN's Winograd kernels are FP32 only */
    p->winograd = m->engine == UF_RESNET_DNNL && uf_cblk_get_winograd() && !m->bf16;
    if (dn_build(m, p) != UF_OK) {
        dn_plan_free(p);
        m->plan[0] = NULL;
        m->engine = UF_RESNET_IM2COL; /* do not try again */
        uf_error_clear();
        return NULL;
    }
    return p;
}

/* Floats of all activations oneDNN keeps for one h x w image (every layer's output). */
static size_t dn_floats_per_image(const uf_resnet *m, int h, int w) {
    size_t f = 0;
    h = conv_out(&m->stem, h), w = conv_out(&m->stem, w);
    f += (size_t)m->stem.c_out * h * w;
    h = pool_out(h), w = pool_out(w);
    f += (size_t)m->stem.c_out * h * w;
    for (int l = 0; l < UF_RESNET_LEVELS; l++)
        for (int j = 0; j < m->n_blocks[l]; j++) {
            const rn_block *bk = &m->blocks[l][j];
            for (int i = 0; i < (m->bottleneck ? 3 : 2); i++) {
                h = conv_out(&bk->conv[i], h), w = conv_out(&bk->conv[i], w);
                f += (size_t)bk->conv[i].c_out * h * w;
            }
            if (bk->down.w) f += (size_t)bk->down.c_out * h * w;
        }
    return f;
}

static int dn_forward(uf_resnet *m, dn_plan *p, const float *x, float *out[UF_RESNET_LEVELS]) {
    DN(dnnl_memory_set_data_handle(p->x_user, (void *)x));
    for (int l = 0; l < UF_RESNET_LEVELS; l++) DN(dnnl_memory_set_data_handle(p->out_user[l], out[l]));
    double t0 = uf_now();
    for (int i = 0; i < p->n_ops; i++) {
        const dn_op *op = &p->ops[i];
        if (op->kind == 3) {
            DN(dnnl_stream_wait(p->st));
            if (dn_run_own(p, op) != UF_OK) return UF_ERR;
            continue;
        }
        dnnl_exec_arg_t a[5];
        int na = 0;
        a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
        if (op->kind == 2) {
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_FROM, op->src};
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_TO, op->dst};
        } else {
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, op->src};
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, op->dst};
            if (op->kind == 0) {
                a[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, op->wei};
                a[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, op->bia};
            }
        }
        DN(dnnl_primitive_execute(op->prim, p->st, na, a));
    }
    DN(dnnl_stream_wait(p->st));
    m->timing.conv_s += uf_now() - t0;
    return UF_OK;
}

const char *uf_resnet_dnnl_info(void) {
    static char buf[96];
    const dnnl_version_t *v = dnnl_version();
    const char *isa = "?";
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: isa = "sse41"; break;
    case dnnl_cpu_isa_avx: isa = "avx"; break;
    case dnnl_cpu_isa_avx2: isa = "avx2"; break;
    case dnnl_cpu_isa_avx2_vnni: isa = "avx2_vnni"; break;
    case dnnl_cpu_isa_avx512_core: isa = "avx512_core"; break;
    case dnnl_cpu_isa_avx512_core_vnni: isa = "avx512_core_vnni"; break;
    case dnnl_cpu_isa_avx512_core_bf16: isa = "avx512_core_bf16"; break;
    case dnnl_cpu_isa_avx512_core_amx: isa = "avx512_core_amx"; break;
    default: break;
    }
    snprintf(buf, sizeof buf, "oneDNN %d.%d.%d, ISA %s", v->major, v->minor, v->patch, isa);
    return buf;
}

void uf_resnet_set_engine(uf_resnet *m, uf_resnet_engine e) {
    m->engine = e;
    dn_plan_free(m->plan[0]), dn_plan_free(m->plan[1]);
    m->plan[0] = m->plan[1] = NULL;
}

uf_resnet_engine uf_resnet_get_engine(const uf_resnet *m) { return m->engine; }

int uf_resnet_bf16_supported(void) {
    return (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
}

int uf_resnet_set_bf16(uf_resnet *m, int on) {
    if (m->bf16 != !!on) {
        m->bf16 = !!on;
        dn_plan_free(m->plan[0]), dn_plan_free(m->plan[1]);
        m->plan[0] = m->plan[1] = NULL;
    }
    return UF_OK;
}

int uf_resnet_get_bf16(const uf_resnet *m) { return m->bf16; }

int uf_resnet_forward(uf_resnet *m, const float *x, int n, int h, int w, float *out[UF_RESNET_LEVELS]) {
    m->timing = (uf_resnet_timing){0, 0};
    if (n < 1 || h < 1 || w < 1 || h > 16384 || w > 16384)
        return uf_error("resnet forward: bad input size %d x 3 x %d x %d", n, h, w);
    if (m->engine == UF_RESNET_DNNL || m->engine == UF_RESNET_DNNL_DIRECT) {
        /* groups whose activations fit the budget, like the im2col path */
        int g = (int)(ACT_BUDGET_BYTES / (sizeof(float) * dn_floats_per_image(m, h, w) + 1));
        g = g < 1 ? 1 : g > n ? n : g;
        size_t out_img[UF_RESNET_LEVELS];
        for (int l = 0; l < UF_RESNET_LEVELS; l++) {
            int c, fh, fw;
            uf_resnet_feature_shape(m, l, h, w, &c, &fh, &fw);
            out_img[l] = (size_t)c * fh * fw;
        }
        int done = 0;
        for (int n0 = 0; n0 < n && m->engine != UF_RESNET_IM2COL; n0 += g) {
            const int gn = n - n0 < g ? n - n0 : g;
            dn_plan *p = dn_plan_get(m, gn, h, w);
            if (!p) break; /* oneDNN cannot: the rest (all of it, the first time) runs im2col */
            float *o[UF_RESNET_LEVELS];
            for (int l = 0; l < UF_RESNET_LEVELS; l++) o[l] = out[l] + (size_t)n0 * out_img[l];
            if (dn_forward(m, p, x + (size_t)n0 * 3 * h * w, o) != UF_OK) return UF_ERR;
            done = n0 + gn;
        }
        if (done == n) return UF_OK;
        if (done > 0) { /* the remainder's plan could not be built: im2col for the rest */
            float *o[UF_RESNET_LEVELS];
            for (int l = 0; l < UF_RESNET_LEVELS; l++) o[l] = out[l] + (size_t)done * out_img[l];
            return uf_resnet_forward(m, x + (size_t)done * 3 * h * w, n - done, h, w, o);
        }
    }
    act_sizes one = plan_sizes(m, 1, h, w);
    int g = (int)(ACT_BUDGET_BYTES / plan_bytes(&one));
    if (g > n) g = n;
    if (g < 1) g = 1;
    act_sizes sz = plan_sizes(m, g, h, w);
    size_t need = plan_bytes(&sz);
    if (m->arena.cap < need) {
        uf_arena_free(&m->arena);
        if (uf_arena_init(&m->arena, need) != UF_OK) return uf_error_prefix("resnet forward (%d x %d)", h, w);
    }
    size_t out_img[UF_RESNET_LEVELS];
    for (int l = 0; l < UF_RESNET_LEVELS; l++) {
        int c, fh, fw;
        uf_resnet_feature_shape(m, l, h, w, &c, &fh, &fw);
        out_img[l] = (size_t)c * fh * fw;
    }
    for (int n0 = 0; n0 < n; n0 += g) {
        int gn = n - n0 < g ? n - n0 : g;
        act_sizes s = gn == g ? sz : plan_sizes(m, gn, h, w);
        float *o[UF_RESNET_LEVELS];
        for (int l = 0; l < UF_RESNET_LEVELS; l++) o[l] = out[l] + (size_t)n0 * out_img[l];
        uf_arena_reset(&m->arena);
        if (forward_group(m, x + (size_t)n0 * 3 * h * w, gn, h, w, o, &s) != UF_OK) return UF_ERR;
    }
    return UF_OK;
}
