#include "backbone/cait.h"

#include "core/log.h"
#include "core/attn_bf16.h"
#include "core/matmul_bf16.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/log.h"
#include "core/matmul_bf16.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "io/safetensors.h"

#define LN_EPS 1e-6
#define MAX_DEPTH 1024
/* Query rows per attention work item: the item's scores (H x rows x N) stay
 * in cache through the head mixing, the softmax and the product with V. The bf16
 * kernels want fewer rows than OpenBLAS's SGEMM (measured on a Zen 5, MS-CaiT M48:
 * bf16 attention 0.47 / 0.39 / 0.37 s at 64 / 32 / 16 rows, FP32 0.58 / 0.60 / 0.70 s). */
#define ROW_CHUNK 64
#define BF16_ROW_CHUNK 16

typedef struct {
    const float *norm1_w, *norm1_b;
    const float *qkv_w, *qkv_b;       /* (3D, D), (3D) */
    const float *mix_l_w, *mix_l_b;   /* proj_l: (H, H), (H), before the softmax */
    const float *mix_w_w, *mix_w_b;   /* proj_w: after the softmax */
    const float *proj_w, *proj_b;     /* (D, D), (D) */
    const float *gamma1, *gamma2;     /* (D) */
    const float *norm2_w, *norm2_b;
    const float *fc1_w, *fc1_b;       /* (F, D), (F) */
    const float *fc2_w, *fc2_b;       /* (D, F), (D) */
    /* with bf16 on: the dense weights in bfloat16 (inside uf_cait.w16) */
    const uint16_t *qkv_w16, *proj_w16, *fc1_w16, *fc2_w16;
} cait_block;

struct uf_cait {
    int dim, heads, depth, n_run, grid, patch, hidden;
    char arch[48], path[1024];
    const float *patch_w, *patch_b; /* (D, 3, P, P), (D) */
    const float *pos;               /* (N, D) */
    const float *norm_w, *norm_b;   /* final LayerNorm */
    cait_block *blocks;             /* (n_run) */
    uf_safetensors *st;             /* kept mapped: F32 tensors point into it */
    float **owned;                  /* converted (or random) tensors, freed with the model */
    int n_owned, cap_owned;
    uf_arena arena;                 /* forward scratch, grown on demand */
    uf_cait_timing timing;
    int bf16;                       /* dense layers in bfloat16, and the attention's products where the CPU
                                     * has AVX512-BF16 (uf_cait_set_bf16) */
    uint16_t *w16, *x16;            /* their bf16 weights (made once); the converted inputs (N x F) */
    /* bf16 attention (one image): Q (H, N, dh) in bf16, K and V as bf16 pairs (core/attn_bf16.h) */
    uint16_t *q16;
    uint32_t *k_pairs, *v_pairs;
};

/* ---------------------------------------------------------------- loading */

static int keep_owned(uf_cait *m, float *p) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        float **o = realloc(m->owned, sizeof *o * (size_t)cap);
        if (!o) return uf_error("out of memory");
        m->owned = o, m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return UF_OK;
}

/* The values of a used tensor with exactly this shape (in place or converted). */
static const float *tensor(uf_cait *m, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    const int64_t shape[4] = {d0, d1, d2, d3};
    float *owned = NULL;
    const float *v = uf_st_view_f32(m->st, name, ndim, shape, &owned);
    if (owned && keep_owned(m, owned) != UF_OK) {
        uf_free(owned);
        return NULL;
    }
    return v;
}

static const float *block_tensor(uf_cait *m, int i, const char *field, int ndim, int64_t d0, int64_t d1) {
    char name[128];
    snprintf(name, sizeof name, "blocks.%d.%s", i, field);
    return tensor(m, name, ndim, d0, d1, 0, 0);
}

static int load_block(uf_cait *m, int i) {
    const int64_t D = m->dim, H = m->heads, F = m->hidden;
    cait_block *b = &m->blocks[i];
    return (b->norm1_w = block_tensor(m, i, "norm1.weight", 1, D, 0)) &&
                   (b->norm1_b = block_tensor(m, i, "norm1.bias", 1, D, 0)) &&
                   (b->qkv_w = block_tensor(m, i, "attn.qkv.weight", 2, 3 * D, D)) &&
                   (b->qkv_b = block_tensor(m, i, "attn.qkv.bias", 1, 3 * D, 0)) &&
                   (b->mix_l_w = block_tensor(m, i, "attn.proj_l.weight", 2, H, H)) &&
                   (b->mix_l_b = block_tensor(m, i, "attn.proj_l.bias", 1, H, 0)) &&
                   (b->mix_w_w = block_tensor(m, i, "attn.proj_w.weight", 2, H, H)) &&
                   (b->mix_w_b = block_tensor(m, i, "attn.proj_w.bias", 1, H, 0)) &&
                   (b->proj_w = block_tensor(m, i, "attn.proj.weight", 2, D, D)) &&
                   (b->proj_b = block_tensor(m, i, "attn.proj.bias", 1, D, 0)) &&
                   (b->gamma1 = block_tensor(m, i, "gamma_1", 1, D, 0)) &&
                   (b->gamma2 = block_tensor(m, i, "gamma_2", 1, D, 0)) &&
                   (b->norm2_w = block_tensor(m, i, "norm2.weight", 1, D, 0)) &&
                   (b->norm2_b = block_tensor(m, i, "norm2.bias", 1, D, 0)) &&
                   (b->fc1_w = block_tensor(m, i, "mlp.fc1.weight", 2, F, D)) &&
                   (b->fc1_b = block_tensor(m, i, "mlp.fc1.bias", 1, F, 0)) &&
                   (b->fc2_w = block_tensor(m, i, "mlp.fc2.weight", 2, D, F)) &&
                   (b->fc2_b = block_tensor(m, i, "mlp.fc2.bias", 1, D, 0))
               ? UF_OK
               : UF_ERR;
}

/* timm's CaiT variants, to name a file by its shapes. */
static const struct {
    const char *name;
    int dim, heads, depth, grid;
} known_archs[] = {
    {"cait_xxs24_224", 192, 4, 24, 14}, {"cait_xxs24_384", 192, 4, 24, 24}, {"cait_xxs36_224", 192, 4, 36, 14},
    {"cait_xxs36_384", 192, 4, 36, 24}, {"cait_xs24_384", 288, 6, 24, 24},  {"cait_s24_224", 384, 8, 24, 14},
    {"cait_s24_384", 384, 8, 24, 24},   {"cait_s36_384", 384, 8, 36, 24},   {"cait_m36_384", 768, 16, 36, 24},
    {"cait_m48_448", 768, 16, 48, 28},
};

static void name_arch(uf_cait *m) {
    for (size_t i = 0; i < sizeof known_archs / sizeof *known_archs; i++)
        if (known_archs[i].dim == m->dim && known_archs[i].heads == m->heads && known_archs[i].depth == m->depth &&
            known_archs[i].grid == m->grid && m->patch == 16 && m->hidden == 4 * m->dim) {
            snprintf(m->arch, sizeof m->arch, "%s", known_archs[i].name);
            return;
        }
    snprintf(m->arch, sizeof m->arch, "cait-d%d-h%d-b%d-%d", m->dim, m->heads, m->depth, m->grid * m->patch);
}

/* Reads the architecture from the tensors' shapes. */
static int read_shapes(uf_cait *m, int last_block) {
    const uf_safetensors *st = m->st;
    const char *path = uf_st_path(st);
    const uf_st_tensor *pe = uf_st_find(st, "patch_embed.proj.weight");
    if (!pe) {
        if (uf_st_find(st, "conv1.weight") || uf_st_find(st, "layer1.0.conv1.weight"))
            return uf_error("%s: tensor 'patch_embed.proj.weight' not found: this is a ResNet, not a CaiT", path);
        return uf_error("%s: tensor 'patch_embed.proj.weight' not found: not a CaiT with timm's key names", path);
    }
    if (pe->ndim != 4 || pe->shape[1] != 3 || pe->shape[2] != pe->shape[3] || pe->shape[0] < 1 ||
        pe->shape[0] > 65536 || pe->shape[2] < 1 || pe->shape[2] > 1024)
        return uf_error("%s: tensor 'patch_embed.proj.weight' has shape %s, expected [D, 3, P, P]", path,
                        uf_shape_str(pe->ndim, pe->shape, (char[200]){0}, 200));
    m->dim = (int)pe->shape[0];
    m->patch = (int)pe->shape[2];
    const uf_st_tensor *pos = uf_st_find(st, "pos_embed");
    if (!pos) return uf_error("%s: tensor 'pos_embed' not found: not a CaiT with timm's key names", path);
    int64_t n_tok = pos->ndim == 3 ? pos->shape[1] : 0;
    int g = (int)floor(sqrt((double)n_tok) + 0.5);
    if (pos->ndim != 3 || pos->shape[0] != 1 || pos->shape[2] != m->dim || n_tok < 1 || n_tok > 1 << 20 ||
        (int64_t)g * g != n_tok)
        return uf_error("%s: tensor 'pos_embed' has shape %s, expected [1, G*G, %d] (a square grid, no class token)",
                        path, uf_shape_str(pos->ndim, pos->shape, (char[200]){0}, 200), m->dim);
    m->grid = g;
    for (int i = 0; i < uf_st_count(st); i++) {
        int j = -1, len = 0;
        if (sscanf(uf_st_at(st, i)->name, "blocks.%d.%n", &j, &len) == 1 && len > 0 && j >= 0 && j < MAX_DEPTH &&
            j + 1 > m->depth)
            m->depth = j + 1;
    }
    if (m->depth == 0) return uf_error("%s: tensor 'blocks.0.norm1.weight' not found: a CaiT without blocks", path);
    const uf_st_tensor *pl = uf_st_find(st, "blocks.0.attn.proj_l.weight");
    if (!pl)
        return uf_error("%s: tensor 'blocks.0.attn.proj_l.weight' not found: not a CaiT (no talking-heads "
                        "attention; a ViT or DeiT?)", path);
    if (pl->ndim != 2 || pl->shape[0] != pl->shape[1] || pl->shape[0] < 1 || m->dim % pl->shape[0] != 0)
        return uf_error("%s: tensor 'blocks.0.attn.proj_l.weight' has shape %s, expected [H, H] with H dividing %d",
                        path, uf_shape_str(pl->ndim, pl->shape, (char[200]){0}, 200), m->dim);
    m->heads = (int)pl->shape[0];
    const uf_st_tensor *fc1 = uf_st_find(st, "blocks.0.mlp.fc1.weight");
    if (!fc1) return uf_error("%s: tensor 'blocks.0.mlp.fc1.weight' not found", path);
    if (fc1->ndim != 2 || fc1->shape[1] != m->dim || fc1->shape[0] < 1 || fc1->shape[0] > 1 << 20)
        return uf_error("%s: tensor 'blocks.0.mlp.fc1.weight' has shape %s, expected [F, %d]", path,
                        uf_shape_str(fc1->ndim, fc1->shape, (char[200]){0}, 200), m->dim);
    m->hidden = (int)fc1->shape[0];
    m->n_run = last_block + 1 < m->depth ? last_block + 1 : m->depth;
    name_arch(m);
    return UF_OK;
}

uf_cait *uf_cait_from_safetensors(uf_safetensors *st, int last_block) {
    UF_ASSERT(last_block >= 0);
    uf_cait *m = uf_calloc(1, sizeof *m);
    if (!m) {
        uf_st_close(st);
        return NULL;
    }
    m->st = st;
    snprintf(m->path, sizeof m->path, "%s", uf_st_path(st));
    if (read_shapes(m, last_block) != UF_OK) goto fail;
    const int64_t D = m->dim, P = m->patch, N = (int64_t)m->grid * m->grid;
    if (!(m->patch_w = tensor(m, "patch_embed.proj.weight", 4, D, 3, P, P)) ||
        !(m->patch_b = tensor(m, "patch_embed.proj.bias", 1, D, 0, 0, 0)) ||
        !(m->pos = tensor(m, "pos_embed", 3, 1, N, D, 0)) || !(m->norm_w = tensor(m, "norm.weight", 1, D, 0, 0, 0)) ||
        !(m->norm_b = tensor(m, "norm.bias", 1, D, 0, 0, 0)))
        goto fail;
    if (!(m->blocks = uf_calloc((size_t)m->n_run, sizeof *m->blocks))) goto fail;
    for (int i = 0; i < m->n_run; i++)
        if (load_block(m, i) != UF_OK) goto fail;
    return m;
fail:
    uf_cait_free(m);
    return NULL;
}

uf_cait *uf_cait_load(const char *path, int last_block) {
    uf_safetensors *st = uf_st_open(path);
    return st ? uf_cait_from_safetensors(st, last_block) : NULL;
}

/* The bf16 weights and buffers (uf_cait_set_bf16), freed; the model is FP32 again. */
static void free_bf16(uf_cait *m) {
    uf_free(m->w16), uf_free(m->x16);
    uf_free(m->q16), uf_free(m->k_pairs), uf_free(m->v_pairs);
    m->w16 = m->x16 = m->q16 = NULL;
    m->k_pairs = m->v_pairs = NULL;
    m->bf16 = 0;
}

void uf_cait_free(uf_cait *m) {
    if (!m) return;
    free_bf16(m);
    for (int i = 0; i < m->n_owned; i++) uf_free(m->owned[i]);
    free(m->owned);
    uf_free(m->blocks);
    uf_st_close(m->st);
    uf_arena_free(&m->arena);
    uf_free(m);
}

/* ---------------------------------------------------------------- random models */

/* n floats ~ mean + U(-1,1) * scale * sqrt(3) (std = scale), kept by the model. */
static const float *random_tensor(uf_cait *m, size_t n, float mean, float scale, uint64_t *s) {
    float *v = uf_alloc(n * sizeof(float));
    if (!v || keep_owned(m, v) != UF_OK) {
        uf_free(v);
        return NULL;
    }
    const float a = scale * 1.7320508f / 2147483648.0f;
    for (size_t i = 0; i < n; i++) {
        *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
        v[i] = mean + a * (float)((int64_t)(*s >> 32) - 2147483648LL);
    }
    return v;
}

uf_cait *uf_cait_random(const char *arch, int last_block, unsigned seed) {
    size_t k = 0;
    while (k < sizeof known_archs / sizeof *known_archs && strcmp(known_archs[k].name, arch)) k++;
    if (k == sizeof known_archs / sizeof *known_archs) {
        uf_error("unknown CaiT architecture '%s'", arch);
        return NULL;
    }
    uf_cait *m = uf_calloc(1, sizeof *m);
    if (!m) return NULL;
    snprintf(m->path, sizeof m->path, "random");
    m->dim = known_archs[k].dim, m->heads = known_archs[k].heads, m->depth = known_archs[k].depth;
    m->grid = known_archs[k].grid, m->patch = 16, m->hidden = 4 * m->dim;
    m->n_run = last_block + 1 < m->depth ? last_block + 1 : m->depth;
    name_arch(m);
    const size_t D = (size_t)m->dim, H = (size_t)m->heads, F = (size_t)m->hidden, N = (size_t)m->grid * m->grid;
    const float wd = 1.0f / sqrtf((float)D), wf = 1.0f / sqrtf((float)F);
    uint64_t s = 0x9E3779B97F4A7C15ULL ^ seed;
    int ok = (m->patch_w = random_tensor(m, D * 3 * 256, 0, 1.0f / 16 / sqrtf(3), &s)) &&
             (m->patch_b = random_tensor(m, D, 0, 0.1f, &s)) && (m->pos = random_tensor(m, N * D, 0, 0.5f, &s)) &&
             (m->norm_w = random_tensor(m, D, 1, 0.1f, &s)) && (m->norm_b = random_tensor(m, D, 0, 0.1f, &s)) &&
             (m->blocks = uf_calloc((size_t)m->n_run, sizeof *m->blocks));
    for (int i = 0; ok && i < m->n_run; i++) {
        cait_block *b = &m->blocks[i];
        ok = (b->norm1_w = random_tensor(m, D, 1, 0.1f, &s)) && (b->norm1_b = random_tensor(m, D, 0, 0.1f, &s)) &&
             (b->qkv_w = random_tensor(m, 3 * D * D, 0, wd, &s)) && (b->qkv_b = random_tensor(m, 3 * D, 0, 0.1f, &s)) &&
             (b->mix_l_w = random_tensor(m, H * H, 0, 0.5f, &s)) && (b->mix_l_b = random_tensor(m, H, 0, 0.1f, &s)) &&
             (b->mix_w_w = random_tensor(m, H * H, 0, 0.5f, &s)) && (b->mix_w_b = random_tensor(m, H, 0, 0.1f, &s)) &&
             (b->proj_w = random_tensor(m, D * D, 0, wd, &s)) && (b->proj_b = random_tensor(m, D, 0, 0.1f, &s)) &&
             (b->gamma1 = random_tensor(m, D, 0.1f, 0.02f, &s)) && (b->gamma2 = random_tensor(m, D, 0.1f, 0.02f, &s)) &&
             (b->norm2_w = random_tensor(m, D, 1, 0.1f, &s)) && (b->norm2_b = random_tensor(m, D, 0, 0.1f, &s)) &&
             (b->fc1_w = random_tensor(m, F * D, 0, wd, &s)) && (b->fc1_b = random_tensor(m, F, 0, 0.1f, &s)) &&
             (b->fc2_w = random_tensor(m, D * F, 0, wf, &s)) && (b->fc2_b = random_tensor(m, D, 0, 0.1f, &s));
    }
    if (!ok) {
        uf_cait_free(m);
        return NULL;
    }
    return m;
}

/* ---------------------------------------------------------------- queries */

int uf_cait_dim(const uf_cait *m) { return m->dim; }
int uf_cait_heads(const uf_cait *m) { return m->heads; }
int uf_cait_depth(const uf_cait *m) { return m->depth; }
int uf_cait_blocks_run(const uf_cait *m) { return m->n_run; }
int uf_cait_grid(const uf_cait *m) { return m->grid; }
int uf_cait_input_size(const uf_cait *m) { return m->grid * m->patch; }
const char *uf_cait_arch(const uf_cait *m) { return m->arch; }
const char *uf_cait_path(const uf_cait *m) { return m->path; }
uf_cait_timing uf_cait_last_timing(const uf_cait *m) { return m->timing; }

size_t uf_cait_used_params(const uf_cait *m) {
    const size_t D = (size_t)m->dim, H = (size_t)m->heads, F = (size_t)m->hidden, N = (size_t)m->grid * m->grid;
    size_t per_block = 4 * D                  /* norm1, norm2 */
                       + 3 * D * D + 3 * D    /* qkv */
                       + 2 * (H * H + H)      /* proj_l, proj_w */
                       + D * D + D            /* proj */
                       + 2 * D                /* gamma_1, gamma_2 */
                       + F * D + F + D * F + D; /* fc1, fc2 */
    return D * 3 * m->patch * m->patch + D + N * D + (size_t)m->n_run * per_block + 2 * D;
}

static double attention_flops(const uf_cait *m) {
    const double D = m->dim, H = m->heads, N = (double)m->grid * m->grid;
    return m->n_run * (2 * 2 * N * N * D + 2 * 2 * H * H * N * N);
}

double uf_cait_flops(const uf_cait *m) {
    const double D = m->dim, H = m->heads, F = m->hidden, N = (double)m->grid * m->grid;
    const double per_block = 2 * N * D * 3 * D   /* qkv */
                             + 2 * 2 * N * N * D /* Q K^T and P V over all heads */
                             + 2 * 2 * H * H * N * N /* the two head mixings */
                             + 2 * N * D * D     /* proj */
                             + 2 * 2 * N * D * F; /* fc1, fc2 */
    return 2 * N * D * 3 * m->patch * m->patch + m->n_run * per_block;
}

/* ---------------------------------------------------------------- forward */

/* y[n, :] = LayerNorm(x[n, :]) * w + b over D channels (biased variance), n < rows; when y16
 * is not NULL also in bfloat16 there, each row converted while it is in cache (a bf16 dense
 * layer's input without a pass of its own). */
static void layer_norm(const float *x, int rows, int D, const float *w, const float *b, float *y, uint16_t *y16) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < rows; n++) {
        const float *xr = x + (size_t)n * D;
        float *yr = y + (size_t)n * D;
        double s = 0.0, q = 0.0;
        for (int c = 0; c < D; c++) s += xr[c];
        const double mean = s / D;
        for (int c = 0; c < D; c++) q += (xr[c] - mean) * (xr[c] - mean);
        const float mu = (float)mean, inv = (float)(1.0 / sqrt(q / D + LN_EPS));
        for (int c = 0; c < D; c++) yr[c] = (xr[c] - mu) * inv * w[c] + b[c];
        if (y16) uf_to_bf16_serial(yr, y16 + (size_t)n * D, (size_t)D);
    }
}

/* e^x for x <= 0 (a softmax's shifted scores), a few ulp: x = n ln2 + r with
 * |r| <= ln2/2, e^r by its degree-7 Taylor polynomial, 2^n through the
 * exponent bits. Branch-free so that loops over it vectorise; inputs below
 * -87 are clamped (their e^x is below float's normal range: ~0 next to a
 * softmax's largest term, 1). */
static inline float exp_nonpos(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504088896341f + shift) - shift;
    float r = x - n * 0.693145751953125f; /* ln2 split hi + lo (Cody-Waite) */
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        uint32_t u;
        float f;
    } e;
    e.u = (uint32_t)((int32_t)n + 127) << 23;
    return p * e.f;
}

/* The row (length len) replaced by exp(v - max of the row); returns 1 / the row's sum, the
 * normalisation left to the caller (it folds it into the next head mixing instead of a pass
 * over the rows). */
static float softmax_row_unnormalised(float *row, int len) {
    float mx = row[0];
#pragma omp simd reduction(max : mx)
    for (int j = 1; j < len; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < len; j++) {
        row[j] = exp_nonpos(row[j] - mx);
        sum += row[j];
    }
    return 1.0f / sum;
}

/* Query row i's H rows of t (head h's block of r rows of len at h * r * len) softmaxed by
 * softmax_row_unnormalised, inv[h * r + i] = 1 / each row's sum. */
static void softmax_heads_of_row(float *t, int H, int r, int i, int len, float *inv) {
    for (int h = 0; h < H; h++) inv[h * r + i] = softmax_row_unnormalised(t + ((size_t)h * r + i) * len, len);
}

/* Talking heads: for each of the r rows i, dst[h', i, :] = sum_h w[h', h] *
 * scale[h, i] * src[h, i, :] over rows of length len (head h's block starts
 * at h * r * len); scale NULL means 1. The kernel makes MIX_OUTS output heads
 * x 16 columns at a time in 16 vector accumulators (8 heads x 2 vectors of 8, or
 * with AVX-512 16 heads x 1 vector of 16), so each source vector loaded feeds 8
 * or 16 multiply-adds: 1.6x OpenBLAS's M = K = 16 GEMM here. GCC's vector
 * extension (lowered to whatever SIMD the target has) keeps the accumulators
 * in registers, which plain loops over arrays did not. Every output is summed
 * over the heads in the same order either way (the same bits). */
#ifdef __AVX512F__
typedef float mix_vec __attribute__((vector_size(64)));
#define MIX_OUTS 16
#else
typedef float mix_vec __attribute__((vector_size(32)));
#define MIX_OUTS 8
#endif
#define MIX_COLS 16
#define MIX_PARTS ((int)(MIX_COLS * sizeof(float) / sizeof(mix_vec)))

/* softmax_inv non-NULL: each output row i's H rows are then softmaxed at once, while they are
 * in cache (softmax_heads_of_row into softmax_inv): the same values as a softmax pass over
 * dst afterwards, without reading the r x H x len block back from memory. */
static void mix_heads(const float *w, int H, const float *scale, const float *src, float *dst, int r, int len,
                      float *softmax_inv) {
    const size_t hs = (size_t)r * len;
    float wt[64 * 64]; /* wt[h * H + h'] = w[h', h] * scale[h, i] */
    UF_ASSERT(H <= 64);
    for (int i = 0; i < r; i++) {
        for (int ho = 0; ho < H; ho++)
            for (int h = 0; h < H; h++) wt[h * H + ho] = w[ho * H + h] * (scale ? scale[h * r + i] : 1.0f);
        const size_t row = (size_t)i * len;
        int j0 = 0, g = 0;
        for (; j0 + MIX_COLS <= len; j0 += MIX_COLS) {
            for (g = 0; g + MIX_OUTS <= H; g += MIX_OUTS) {
                mix_vec a[MIX_OUTS][MIX_PARTS];
                for (int o = 0; o < MIX_OUTS; o++)
                    for (int q = 0; q < MIX_PARTS; q++) a[o][q] = (mix_vec){0};
                for (int h = 0; h < H; h++) {
                    mix_vec x[MIX_PARTS];
                    for (int q = 0; q < MIX_PARTS; q++)
                        memcpy(&x[q], src + h * hs + row + j0 + q * (MIX_COLS / MIX_PARTS), sizeof x[q]);
                    const float *wh = wt + h * H + g;
                    for (int o = 0; o < MIX_OUTS; o++)
                        for (int q = 0; q < MIX_PARTS; q++) a[o][q] += wh[o] * x[q];
                }
                for (int o = 0; o < MIX_OUTS; o++)
                    for (int q = 0; q < MIX_PARTS; q++)
                        memcpy(dst + (g + o) * hs + row + j0 + q * (MIX_COLS / MIX_PARTS), &a[o][q], sizeof a[o][q]);
            }
            for (int ho = g; ho < H; ho++) /* heads beyond a multiple of MIX_OUTS */
                for (int k = 0; k < MIX_COLS; k++) {
                    float acc = 0.0f;
                    for (int h = 0; h < H; h++) acc += wt[h * H + ho] * src[h * hs + row + j0 + k];
                    dst[ho * hs + row + j0 + k] = acc;
                }
        }
        for (; j0 < len; j0++) /* columns beyond a multiple of 16 */
            for (int ho = 0; ho < H; ho++) {
                float acc = 0.0f;
                for (int h = 0; h < H; h++) acc += wt[h * H + ho] * src[h * hs + row + j0];
                dst[ho * hs + row + j0] = acc;
            }
        if (softmax_inv) softmax_heads_of_row(dst, H, r, i, len, softmax_inv);
    }
}

/* y (rows, out) = x (rows, in) W^T + b, W (out, in). */
static void linear(const float *x, int rows, int in, const float *w, const float *b, int out, float *y) {
    uf_sgemm(false, true, rows, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < rows; n++)
        for (int o = 0; o < out; o++) y[(size_t)n * out + o] += b[o];
}

/* A bf16 product oneDNN could not run: bf16 goes off for the model (a warning), the caller
 * redoes the step in FP32. */
static void bf16_failed(uf_cait *m) {
    uf_log(UF_LOG_WARNING, "CaiT %s: %s; running in FP32", m->arch, uf_last_error());
    m->bf16 = 0;
}

/* linear() in bfloat16 when the model has it on (w16 made), FP32 otherwise. x16: NULL, or x
 * already in bf16 (layer_norm's or gelu_erf's y16), used when bf16 is on. */
static void dense(uf_cait *m, const float *x, const uint16_t *x16, int rows, int in, const float *w,
                  const uint16_t *w16, const float *b, int out, float *y) {
    if (m->bf16 && w16) {
        if ((x16 ? uf_linear_bf16_in(x16, rows, in, w16, b, out, y)
                 : uf_linear_bf16(x, rows, in, w16, b, out, y, m->x16)) == UF_OK)
            return;
        bf16_failed(m);
    }
    linear(x, rows, in, w, b, out, y);
}

int uf_cait_set_bf16(uf_cait *m, int on) {
    if (on && !m->w16) {
        const size_t D = (size_t)m->dim, F = (size_t)m->hidden, per = 3 * D * D + D * D + 2 * F * D;
        m->w16 = uf_alloc(sizeof(uint16_t) * per * (size_t)m->n_run);
        m->x16 = uf_alloc(sizeof(uint16_t) * (size_t)m->grid * m->grid * (F > D ? F : D));
        const size_t N = (size_t)m->grid * m->grid;
        m->q16 = uf_alloc(sizeof(uint16_t) * N * D);
        m->k_pairs = uf_alloc(sizeof(uint16_t) * N * D), m->v_pairs = uf_alloc(sizeof(uint16_t) * (N + 1) * D);
        if (!m->w16 || !m->x16 || !m->q16 || !m->k_pairs || !m->v_pairs) {
            free_bf16(m);
            return uf_error("CaiT %s: out of memory for its bf16 weights and buffers", m->arch);
        }
        for (int i = 0; i < m->n_run; i++) {
            cait_block *b = &m->blocks[i];
            uint16_t *w = m->w16 + per * (size_t)i;
            uf_to_bf16(b->qkv_w, w, 3 * D * D), b->qkv_w16 = w, w += 3 * D * D;
            uf_to_bf16(b->proj_w, w, D * D), b->proj_w16 = w, w += D * D;
            uf_to_bf16(b->fc1_w, w, F * D), b->fc1_w16 = w, w += F * D;
            uf_to_bf16(b->fc2_w, w, F * D), b->fc2_w16 = w;
        }
    }
    m->bf16 = !!on;
    return UF_OK;
}

int uf_cait_get_bf16(const uf_cait *m) { return m->bf16; }

/* vsum (D) = sum over the N rows of V (qkv's last D columns): proj_w's bias folded (below). */
static void value_sums(const float *qkv, int N, int D, float *vsum) {
    for (int c = 0; c < D; c++) vsum[c] = 0.0f;
    for (int j = 0; j < N; j++)
        for (int c = 0; c < D; c++) vsum[c] += qkv[(size_t)j * 3 * D + 2 * D + c];
}

/* oh (r rows of dh, row stride D) += bias * vsum_h: head h's share of proj_w's bias. */
static void add_head_bias(float *oh, int r, int dh, int D, float bias, const float *vsum_h) {
    for (int i = 0; i < r; i++)
        for (int k = 0; k < dh; k++) oh[(size_t)i * D + k] += bias * vsum_h[k];
}

/* Talking-heads self-attention of one image (spec 3.1.2): qkv (N, 3D) ->
 * o (N, D). vsum (D): scratch. scratch: per thread (2 N + 1) x H x ROW_CHUNK floats.
 * Two biases are folded instead of added to the H x N x N scores:
 *   proj_l's bias is constant along each softmax row, so it cancels there;
 *   proj_w's bias b adds b[h] * sum_j V_h[j, :] to head h's output. */
static void attention(const uf_cait *m, const cait_block *b, const float *qkv, float *o, float *vsum,
                      float *scratch) {
    const int N = m->grid * m->grid, D = m->dim, H = m->heads, dh = D / H, ld = 3 * D;
    const int n_chunks = (N + ROW_CHUNK - 1) / ROW_CHUNK;
    const size_t per_thread = (size_t)2 * H * ROW_CHUNK * N + (size_t)H * ROW_CHUNK;
    value_sums(qkv, N, D, vsum);
#pragma omp parallel for schedule(dynamic)
    for (int c = 0; c < n_chunks; c++) {
        const int i0 = c * ROW_CHUNK, r = N - i0 < ROW_CHUNK ? N - i0 : ROW_CHUNK;
        const size_t rn = (size_t)r * N;
        float *s = scratch + (size_t)omp_get_thread_num() * per_thread, *t = s + (size_t)H * ROW_CHUNK * N;
        /* s[h] (r, N) = Q_h K_h^T (q already scaled) */
        for (int h = 0; h < H; h++)
            uf_sgemm(false, true, r, N, dh, 1.0f, qkv + (size_t)i0 * ld + h * dh, ld, qkv + D + h * dh, ld, 0.0f,
                     s + h * rn, N);
        /* t (H, r N) = proj_l(s) over the head axis, softmax over keys, s = proj_w(t) */
        float *inv = t + (size_t)H * ROW_CHUNK * N;
        mix_heads(b->mix_l_w, H, NULL, s, t, r, N, inv);
        mix_heads(b->mix_w_w, H, inv, t, s, r, N, NULL);
        /* o[i0 .. i0+r, h dh .. (h+1) dh] = s[h] V_h + bias */
        for (int h = 0; h < H; h++) {
            float *oh = o + (size_t)i0 * D + h * dh;
            uf_sgemm(false, false, r, dh, N, 1.0f, s + h * rn, N, qkv + 2 * D + h * dh, ld, 0.0f, oh, D);
            add_head_bias(oh, r, dh, D, b->mix_w_b[h], vsum + h * dh);
        }
    }
}

/* attention() with its two products in bfloat16 (core/attn_bf16.h: AVX512-BF16 kernels run
 * per row chunk, so that the chunk's scores stay in cache as in attention()): Q, K and V
 * rounded to bf16 once (Q times q_scale; K and V as pairs along their reduction axes), then per chunk
 * S_h = Q_h K_h^T, the talking heads as bf16 products summed in FP32 (uf_attn_bf16_mix_row, each
 * row's heads then softmaxed in FP32 while in cache; the second mixing rounding P to bf16 as it
 * writes it), O_h = P_h V_h. Only where bf16_attention_runs(m)
 * (uf_attn_bf16_mix takes 8 heads or a multiple of 16: MS-CaiT's 16 and 8). */
static int bf16_attention_runs(const uf_cait *m) {
    return (m->dim / m->heads) % 2 == 0 && (m->heads == 8 || (m->heads % 16 == 0 && m->heads <= 64)) &&
           uf_attn_bf16_available();
}

static void attention_bf16(uf_cait *m, const cait_block *b, const float *qkv, float q_scale, float *o, float *vsum,
                           float *scratch) {
    const int N = m->grid * m->grid, D = m->dim, H = m->heads, dh = D / H, ld = 3 * D;
    const int n2 = (N + 1) / 2, d2 = dh / 2;
    uint16_t *q16 = m->q16;
    uint32_t *kp = m->k_pairs, *vp = m->v_pairs;
    value_sums(qkv, N, D, vsum);
    /* Q as (H, N, dh); K as pairs (H, d2, N) */
#pragma omp parallel for schedule(static)
    for (int j = 0; j < N; j++) {
        const float *row = qkv + (size_t)j * ld;
        for (int h = 0; h < H; h++) {
            uint16_t *q = q16 + ((size_t)h * N + j) * dh;
            for (int k = 0; k < dh; k++) q[k] = uf_bf16_of(row[h * dh + k] * q_scale);
            const float *kr = row + D + h * dh;
            for (int t = 0; t < d2; t++)
                kp[((size_t)h * d2 + t) * N + j] = uf_bf16_pair(uf_bf16_of(kr[2 * t]), uf_bf16_of(kr[2 * t + 1]));
        }
    }
    /* V as pairs of rows (H, n2, dh), an odd N's last pair completed with 0 */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n2; t++) {
        const float *r0 = qkv + (size_t)(2 * t) * ld + 2 * D, *r1 = 2 * t + 1 < N ? r0 + ld : NULL;
        for (int h = 0; h < H; h++)
            for (int c = 0; c < dh; c++)
                vp[((size_t)h * n2 + t) * dh + c] =
                    uf_bf16_pair(uf_bf16_of(r0[h * dh + c]), r1 ? uf_bf16_of(r1[h * dh + c]) : 0);
    }
    const int n_chunks = (N + BF16_ROW_CHUNK - 1) / BF16_ROW_CHUNK;
    const size_t per_thread = (size_t)2 * H * ROW_CHUNK * N + (size_t)H * ROW_CHUNK; /* the scratch's layout */
#pragma omp parallel for schedule(dynamic)
    for (int c = 0; c < n_chunks; c++) {
        const int i0 = c * BF16_ROW_CHUNK, r = N - i0 < BF16_ROW_CHUNK ? N - i0 : BF16_ROW_CHUNK;
        const size_t rn = (size_t)r * N;
        float *s = scratch + (size_t)omp_get_thread_num() * per_thread, *t = s + (size_t)H * ROW_CHUNK * N;
        for (int h = 0; h < H; h++)
            uf_attn_bf16_scores(r, N, d2, q16 + ((size_t)h * N + i0) * dh, dh, kp + (size_t)h * d2 * N, N,
                                s + h * rn, N);
        float *inv = t + (size_t)H * ROW_CHUNK * N;
        for (int i = 0; i < r; i++) { /* the first mixing, each row's heads softmaxed while in cache */
            uf_attn_bf16_mix_row(H, b->mix_l_w, s, r, i, N, t);
            softmax_heads_of_row(t, H, r, i, N, inv);
        }
        /* s is free again: P (H, r, 2 n2) in bf16, mixed and rounded in one pass */
        uint16_t *p16 = (uint16_t *)(void *)s;
        uf_attn_bf16_mix(H, b->mix_w_w, inv, t, r, N, p16, 2 * n2);
        for (int h = 0; h < H; h++) {
            float *oh = o + (size_t)i0 * D + h * dh;
            uf_attn_bf16_values(r, n2, dh, p16 + (size_t)h * r * 2 * n2, 2 * n2, vp + (size_t)h * n2 * dh, dh, oh, D);
            add_head_bias(oh, r, dh, D, b->mix_w_b[h], vsum + h * dh);
        }
    }
}

/* erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7; 4.6e-7 evaluated in
 * float, measured on [-10, 10]), branch-free so that the GELU loop
 * vectorises: libm's erff was 8% of an M48 forward. */
static inline float erf_approx(float x) {
    const float ax = fabsf(x), t = 1.0f / (1.0f + 0.3275911f * ax);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    return copysignf(1.0f - p * t * exp_nonpos(-ax * ax), x);
}

/* Exact (erf) GELU, as torch's nn.GELU(): 0.5 x (1 + erf(x / sqrt 2)). With v16 not NULL the
 * results also in bfloat16 there, block by block while in cache (the next dense layer's input). */
#define GELU_BLOCK 4096
static void gelu_erf(float *v, size_t n, uint16_t *v16) {
    const size_t blocks = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < blocks; k++) {
        float *vb = v + k * GELU_BLOCK;
        const size_t len = n - k * GELU_BLOCK < GELU_BLOCK ? n - k * GELU_BLOCK : GELU_BLOCK;
#pragma omp simd
        for (size_t i = 0; i < len; i++) vb[i] = 0.5f * vb[i] * (1.0f + erf_approx(vb[i] * 0.70710678118654752f));
        if (v16) uf_to_bf16_serial(vb, v16 + k * GELU_BLOCK, len);
    }
}

/* x (N, D) += gamma * y */
static void add_scaled(float *x, const float *y, const float *gamma, int rows, int D) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < rows; n++)
        for (int c = 0; c < D; c++) x[(size_t)n * D + c] += gamma[c] * y[(size_t)n * D + c];
}

typedef struct {
    float *x, *y, *qkv, *o, *vsum, *hid, *patches, *scratch;
} cait_work;

static size_t work_floats(const uf_cait *m, int threads) {
    const size_t N = (size_t)m->grid * m->grid, D = (size_t)m->dim;
    return 4 * N * D + 3 * N * D + D + N * (size_t)m->hidden + N * 3 * m->patch * m->patch +
           (size_t)threads * (2 * N + 1) * m->heads * ROW_CHUNK + 8 * UF_ALIGN;
}

static void embed(const uf_cait *m, const float *x, cait_work *w) {
    const int g = m->grid, P = m->patch, S = g * P, D = m->dim, K = 3 * P * P, N = g * g;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const int gy = n / g, gx = n % g;
        float *p = w->patches + (size_t)n * K;
        for (int c = 0; c < 3; c++)
            for (int ky = 0; ky < P; ky++)
                memcpy(p + (c * P + ky) * P, x + ((size_t)c * S + gy * P + ky) * S + gx * P, sizeof(float) * P);
    }
    linear(w->patches, N, K, m->patch_w, m->patch_b, D, w->x);
    for (size_t i = 0; i < (size_t)N * D; i++) w->x[i] += m->pos[i];
}

static void run_block(uf_cait *m, const cait_block *b, cait_work *w) {
    const int N = m->grid * m->grid, D = m->dim, F = m->hidden;
    uf_cait_timing *tm = &m->timing;
    double t0 = uf_now(), t1;
    const float q_scale = 1.0f / sqrtf((float)(D / m->heads));
#define LAP(field) (t1 = uf_now(), tm->field += t1 - t0, t0 = t1)
    uint16_t *x16 = m->bf16 ? m->x16 : NULL; /* the bf16 dense layers' inputs, made in the step before */
    layer_norm(w->x, N, D, b->norm1_w, b->norm1_b, w->y, x16);
    LAP(other_s);
    dense(m, w->y, x16, N, D, b->qkv_w, b->qkv_w16, b->qkv_b, 3 * D, w->qkv);
    LAP(dense_s);
    const int attention16 = m->bf16 && bf16_attention_runs(m); /* there q is scaled as it is rounded */
    if (!attention16) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++)
            for (int c = 0; c < D; c++) w->qkv[(size_t)n * 3 * D + c] *= q_scale;
    }
    LAP(other_s);
    if (attention16)
        attention_bf16(m, b, w->qkv, q_scale, w->o, w->vsum, w->scratch);
    else
        attention(m, b, w->qkv, w->o, w->vsum, w->scratch);
    LAP(attention_s);
    dense(m, w->o, NULL, N, D, b->proj_w, b->proj_w16, b->proj_b, D, w->y);
    LAP(dense_s);
    add_scaled(w->x, w->y, b->gamma1, N, D);
    x16 = m->bf16 ? m->x16 : NULL; /* a failed bf16 product turns bf16 off */
    layer_norm(w->x, N, D, b->norm2_w, b->norm2_b, w->y, x16);
    LAP(other_s);
    dense(m, w->y, x16, N, D, b->fc1_w, b->fc1_w16, b->fc1_b, F, w->hid);
    LAP(dense_s);
    x16 = m->bf16 ? m->x16 : NULL;
    gelu_erf(w->hid, (size_t)N * F, x16);
    LAP(other_s);
    dense(m, w->hid, x16, N, F, b->fc2_w, b->fc2_w16, b->fc2_b, D, w->y);
    LAP(dense_s);
    add_scaled(w->x, w->y, b->gamma2, N, D);
    LAP(other_s);
#undef LAP
}

int uf_cait_forward(uf_cait *m, const float *x, int n, float *out, float *const *trace) {
    const int threads = omp_get_max_threads();
    const size_t need = work_floats(m, threads) * sizeof(float);
    if (m->arena.cap < need) {
        uf_arena_free(&m->arena);
        if (uf_arena_init(&m->arena, need) != UF_OK) return uf_error_prefix("CaiT %s forward", m->arch);
    }
    const size_t N = (size_t)m->grid * m->grid, D = (size_t)m->dim;
    const size_t S = (size_t)uf_cait_input_size(m);
    uf_arena_reset(&m->arena);
    cait_work w;
    w.x = uf_arena_floats(&m->arena, N * D);
    w.y = uf_arena_floats(&m->arena, N * D);
    w.qkv = uf_arena_floats(&m->arena, 3 * N * D);
    w.o = uf_arena_floats(&m->arena, N * D);
    w.vsum = uf_arena_floats(&m->arena, D);
    w.hid = uf_arena_floats(&m->arena, N * (size_t)m->hidden);
    w.patches = uf_arena_floats(&m->arena, N * 3 * m->patch * m->patch);
    w.scratch = uf_arena_floats(&m->arena, (size_t)threads * (2 * N + 1) * m->heads * ROW_CHUNK);
    UF_ASSERT(w.scratch != NULL);
    memset(&m->timing, 0, sizeof m->timing);
    for (int i = 0; i < n; i++) {
        double t0 = uf_now();
        embed(m, x + (size_t)i * 3 * S * S, &w);
        m->timing.dense_s += uf_now() - t0;
        if (trace) memcpy(trace[0] + i * N * D, w.x, sizeof(float) * N * D);
        for (int k = 0; k < m->n_run; k++) {
            run_block(m, &m->blocks[k], &w);
            if (trace) memcpy(trace[1 + k] + i * N * D, w.x, sizeof(float) * N * D);
        }
        t0 = uf_now();
        layer_norm(w.x, (int)N, (int)D, m->norm_w, m->norm_b, w.y, NULL);
        float *o = out + (size_t)i * D * N;
#pragma omp parallel for schedule(static)
        for (size_t c = 0; c < D; c++)
            for (size_t t = 0; t < N; t++) o[c * N + t] = w.y[t * D + c];
        m->timing.other_s += uf_now() - t0;
    }
    const double att = attention_flops(m);
    m->timing.attention_flops = (double)n * att;
    m->timing.dense_flops = (double)n * (uf_cait_flops(m) - att);
    return UF_OK;
}
