#include "model/batch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "detect/anomaly_map.h"
#include "detect/nfa_block.h"
#include "detect/nfa_tree.h"

/* Block NFA parameters of the official training code (spec 7.2). */
#define NFA_BLOCK_WIN 5
#define NFA_BLOCK_PTHR 0.9

void uf_batch_free(uf_batch *b) {
    uf_free(b->x);
    for (int l = 0; l < UF_FLOW_MAX_SCALES; l++) uf_free(b->z[l]);
    uf_free(b->amap), uf_free(b->nfa), uf_free(b->score);
    if (b->resized)
        for (int i = 0; i < b->cap; i++) uf_image_free(b->resized[i]);
    if (b->original)
        for (int i = 0; i < b->cap; i++) uf_image_free(b->original[i]);
    free(b->original);
    free(b->resized), free(b->orig_w), free(b->orig_h), free(b->error);
    memset(b, 0, sizeof *b);
}

int uf_batch_init(uf_batch *b, const uf_model *m, int cap, int out_w, int out_h) {
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->out_w = out_w, b->out_h = out_h;
    b->n_scales = m->cfg.flow.n_scales;
    b->x = uf_alloc((size_t)cap * 3 * m->cfg.input.width * m->cfg.input.height * sizeof(float));
    int ok = b->x != NULL;
    for (int l = 0; l < b->n_scales && ok; l++) {
        int c, h, w;
        uf_model_latent_shape(m, l, &c, &h, &w);
        ok = (b->z[l] = uf_alloc((size_t)cap * c * h * w * sizeof(float))) != NULL;
    }
    size_t per = (size_t)out_w * out_h;
    ok = ok && (b->amap = uf_alloc(cap * per * sizeof(float))) && (b->nfa = uf_alloc(cap * per * sizeof(float))) &&
         (b->score = uf_alloc(cap * sizeof(float)));
    ok = ok && (b->resized = calloc(cap, sizeof *b->resized)) && (b->orig_w = calloc(cap, sizeof(int))) &&
         (b->orig_h = calloc(cap, sizeof(int))) && (b->error = calloc(cap, sizeof *b->error));
    if (!ok) {
        uf_batch_free(b);
        return uf_error("out of memory for a detection batch of %d images", cap);
    }
    return UF_OK;
}

/* Fits img (owned; NULL when it could not be read: *why says why) into slot i. 0 on
 * success, 1 on failure (errors[i] says why, naming `name`; x zero-filled). */
static int fit_slot(uf_image *img, const char *name, const uf_input_geometry *g, float *xi, size_t per_x,
                    uf_image **resized, uf_image **original, int *orig_w, int *orig_h, char *error) {
    uf_image *r = img ? uf_image_fit(img, g) : NULL;
    if (orig_w) *orig_w = r ? img->width : 0;
    if (orig_h) *orig_h = r ? img->height : 0;
    if (r) {
        error[0] = '\0';
        uf_image_to_imagenet(r, xi);
        if (resized)
            *resized = r;
        else
            uf_image_free(r);
    } else {
        /* uf_image_load's messages name the file; resize's do not. */
        const char *why = uf_last_error();
        if (img)
            snprintf(error, UF_BATCH_ERROR_LEN, "image '%s': %s", name, why);
        else
            snprintf(error, UF_BATCH_ERROR_LEN, "%s", why);
        memset(xi, 0, sizeof(float) * per_x);
    }
    if (original && r)
        *original = img;
    else
        uf_image_free(img);
    return r == NULL;
}

static void clear_slot(uf_image **resized, uf_image **original, int i) {
    if (resized) {
        uf_image_free(resized[i]);
        resized[i] = NULL;
    }
    if (original) {
        uf_image_free(original[i]);
        original[i] = NULL;
    }
}

int uf_load_backbone_inputs_each(const char *const *paths, int n, const uf_input_geometry *g, float *x,
                                 uf_image **resized, uf_image **original, int *orig_w, int *orig_h,
                                 char (*errors)[UF_BATCH_ERROR_LEN]) {
    const size_t per_x = (size_t)3 * g->width * g->height;
    int failed = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : failed)
    for (int i = 0; i < n; i++) {
        clear_slot(resized, original, i);
        failed += fit_slot(uf_image_load(paths[i], 3), paths[i], g, x + (size_t)i * per_x, per_x,
                           resized ? &resized[i] : NULL, original ? &original[i] : NULL, orig_w ? &orig_w[i] : NULL,
                           orig_h ? &orig_h[i] : NULL, errors[i]);
    }
    return failed;
}

/* An RGB copy of img (gray promoted by copying), or NULL + error. */
static uf_image *rgb_copy(const uf_image *img) {
    uf_image *c = uf_image_new(img->width, img->height, 3);
    if (!c) return NULL;
    const size_t np = (size_t)img->width * img->height;
    if (img->channels == 3) {
        memcpy(c->pixels, img->pixels, np * 3);
    } else {
        for (size_t p = 0; p < np; p++) c->pixels[3 * p] = c->pixels[3 * p + 1] = c->pixels[3 * p + 2] = img->pixels[p];
    }
    return c;
}

int uf_batch_load_images(uf_batch *b, const uf_model *m, const uf_image *const *images, const char *const *names,
                         int n) {
    UF_ASSERT(n <= b->cap);
    b->n = n;
    b->paths = names;
    const uf_input_geometry *g = &m->cfg.input;
    const size_t per_x = (size_t)3 * g->width * g->height;
    int failed = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : failed)
    for (int i = 0; i < n; i++) {
        clear_slot(b->resized, b->original, i);
        failed += fit_slot(rgb_copy(images[i]), names[i], g, b->x + (size_t)i * per_x, per_x, &b->resized[i],
                           b->original ? &b->original[i] : NULL, &b->orig_w[i], &b->orig_h[i], b->error[i]);
    }
    return failed;
}

int uf_batch_load(uf_batch *b, const uf_model *m, const char *const *paths, int n) {
    UF_ASSERT(n <= b->cap);
    b->n = n;
    b->paths = paths;
    return uf_load_backbone_inputs_each(paths, n, &m->cfg.input, b->x, b->resized, b->original, b->orig_w,
                                        b->orig_h, b->error);
}

int uf_batch_first_error(const uf_batch *b) {
    for (int i = 0; i < b->n; i++)
        if (b->error[i][0]) return i;
    return -1;
}

int uf_batch_run(uf_batch *b, uf_model *m, double *t_latents, double *t_detect) {
    double t0 = uf_now();
    if (uf_model_latents(m, b->x, b->n, b->z) != UF_OK) return UF_ERR;
    double t1 = uf_now();
    const int L = b->n_scales, ow = b->out_w, oh = b->out_h;
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < b->n; i++) {
        if (b->error[i][0]) continue;
        uf_latent_view v[UF_FLOW_MAX_SCALES];
        int finite = 1;
        for (int l = 0; l < L; l++) {
            uf_model_latent_shape(m, l, &v[l].c, &v[l].h, &v[l].w);
            v[l].z = b->z[l] + (size_t)i * v[l].c * v[l].h * v[l].w;
            finite = finite && uf_all_finite(v[l].z, (size_t)v[l].c * v[l].h * v[l].w);
        }
        if (!finite) {
            snprintf(b->error[i], UF_BATCH_ERROR_LEN, "image '%s': the model gives non-finite latents (NaN or Inf)",
                     b->paths[i]);
            continue;
        }
        float *amap = b->amap + (size_t)i * ow * oh, *nfa = b->nfa + (size_t)i * ow * oh;
        int rc = uf_anomaly_map(v, L, oh, ow, amap, &b->score[i]);
        if (rc == UF_OK)
            rc = b->nfa_block ? uf_nfa_block_score(v, L, NFA_BLOCK_WIN, NFA_BLOCK_PTHR, oh, ow, nfa)
                              : uf_nfa_tree_score(v, L, oh, ow, nfa);
        if (rc != UF_OK) snprintf(b->error[i], UF_BATCH_ERROR_LEN, "image '%s': %s", b->paths[i], uf_last_error());
    }
    if (t_latents) *t_latents += t1 - t0;
    if (t_detect) *t_detect += uf_now() - t1;
    return UF_OK;
}
