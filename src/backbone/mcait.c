#include "backbone/mcait.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/interp.h"
#include "core/tensor.h"
#include "io/safetensors.h"

/* The coarse model's grid must be half the fine one's (the flow upsamples by 2). */
static int check_pair(const uf_mcait *m) {
    const uf_cait *f = m->model[0], *c = m->model[1];
    const int gf = uf_cait_grid(f), gc = uf_cait_grid(c);
    if (gf == 2 * gc) return UF_OK;
    if (gc == 2 * gf)
        return uf_error("--weights %s,%s: the files are swapped: '%s' (%s, %dx%d tokens) must come second and '%s' "
                        "(%s, %dx%d tokens) first (give the 448 model first: M48,S24)",
                        uf_cait_path(f), uf_cait_path(c), uf_cait_path(f), uf_cait_arch(f), gf, gf, uf_cait_path(c),
                        uf_cait_arch(c), gc, gc);
    return uf_error("--weights %s,%s: the first model's token grid (%dx%d, tensor 'pos_embed') must be twice the "
                    "second's (%dx%d)", uf_cait_path(f), uf_cait_path(c), gf, gf, gc, gc);
}

static uf_mcait *finish(uf_mcait *m) {
    if (!m->model[0] || !m->model[1] || check_pair(m) != UF_OK) {
        uf_mcait_free(m);
        return NULL;
    }
    const char *a = uf_cait_arch(m->model[0]), *b = uf_cait_arch(m->model[1]);
    if (!strcmp(a, "cait_m48_448") && !strcmp(b, "cait_s24_224"))
        snprintf(m->arch, sizeof m->arch, "mcait");
    else
        snprintf(m->arch, sizeof m->arch, "mcait(%s,%s)", a, b);
    return m;
}

uf_mcait *uf_mcait_load(const char *fine_path, const char *coarse_path) {
    uf_mcait *m = uf_calloc(1, sizeof *m);
    if (!m) return NULL;
    if ((m->model[0] = uf_cait_load(fine_path, UF_MCAIT_LAST_BLOCK_FINE)))
        m->model[1] = uf_cait_load(coarse_path, UF_MCAIT_LAST_BLOCK_COARSE);
    return finish(m);
}

uf_mcait *uf_mcait_from_safetensors(struct uf_safetensors *fine, struct uf_safetensors *coarse) {
    uf_mcait *m = uf_calloc(1, sizeof *m);
    if (!m) {
        uf_st_close(fine), uf_st_close(coarse);
        return NULL;
    }
    if ((m->model[0] = uf_cait_from_safetensors(fine, UF_MCAIT_LAST_BLOCK_FINE)))
        m->model[1] = uf_cait_from_safetensors(coarse, UF_MCAIT_LAST_BLOCK_COARSE);
    else
        uf_st_close(coarse);
    return finish(m);
}

uf_mcait *uf_mcait_random(unsigned seed) {
    uf_mcait *m = uf_calloc(1, sizeof *m);
    if (!m) return NULL;
    if ((m->model[0] = uf_cait_random("cait_m48_448", UF_MCAIT_LAST_BLOCK_FINE, seed)))
        m->model[1] = uf_cait_random("cait_s24_224", UF_MCAIT_LAST_BLOCK_COARSE, seed + 1);
    return finish(m);
}

void uf_mcait_free(uf_mcait *m) {
    if (!m) return;
    for (int l = 0; l < UF_MCAIT_LEVELS; l++) uf_cait_free(m->model[l]);
    uf_free(m->resized);
    uf_free(m);
}

int uf_mcait_input_size(const uf_mcait *m) { return uf_cait_input_size(m->model[0]); }

void uf_mcait_feature_shape(const uf_mcait *m, int level, int *c, int *h, int *w) {
    UF_ASSERT(level >= 0 && level < UF_MCAIT_LEVELS);
    *c = uf_cait_dim(m->model[level]);
    *h = *w = uf_cait_grid(m->model[level]);
}

const char *uf_mcait_arch(const uf_mcait *m) { return m->arch; }

size_t uf_mcait_used_params(const uf_mcait *m, int level) { return uf_cait_used_params(m->model[level]); }

double uf_mcait_flops(const uf_mcait *m) { return uf_cait_flops(m->model[0]) + uf_cait_flops(m->model[1]); }

int uf_mcait_forward(uf_mcait *m, const float *x, int n, float *const out[UF_MCAIT_LEVELS]) {
    const int S = uf_cait_input_size(m->model[0]), S1 = uf_cait_input_size(m->model[1]);
    if (n < 1) return uf_error("mcait forward: no images");
    if (n > m->resized_cap) {
        uf_free(m->resized);
        m->resized_cap = 0;
        if (!(m->resized = uf_alloc(sizeof(float) * (size_t)n * 3 * S1 * S1)))
            return uf_error_prefix("mcait forward (%d images)", n);
        m->resized_cap = n;
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        uf_interp_bicubic_ac(x + (size_t)i * 3 * S * S, 3, S, S, m->resized + (size_t)i * 3 * S1 * S1, S1, S1);
    if (uf_cait_forward(m->model[0], x, n, out[0], NULL) != UF_OK) return UF_ERR;
    return uf_cait_forward(m->model[1], m->resized, n, out[1], NULL);
}

int uf_mcait_set_bf16(uf_mcait *m, int on) {
    for (int l = 0; l < UF_MCAIT_LEVELS; l++)
        if (uf_cait_set_bf16(m->model[l], on) != UF_OK) return UF_ERR;
    return UF_OK;
}

int uf_mcait_get_bf16(const uf_mcait *m) { return uf_cait_get_bf16(m->model[0]); }
