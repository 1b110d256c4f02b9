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
#include "io/tiling.h"
#include "core/interp.h"

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
    if (b->tiled_amap)
        for (int i = 0; i < b->cap; i++) free(b->tiled_amap[i]), free(b->tiled_nfa[i]);
    free(b->tiled_amap), free(b->tiled_nfa), free(b->max_nfa);
    uf_free(b->tile_map), uf_free(b->tile_nfa);
    free(b->resized), free(b->orig_w), free(b->orig_h), free(b->error), free(b->z2);
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
         (b->orig_h = calloc(cap, sizeof(int))) && (b->error = calloc(cap, sizeof *b->error)) &&
         (b->z2 = calloc(cap, sizeof *b->z2)) && (b->max_nfa = calloc(cap, sizeof(float)));
    if (ok && m->cfg.tiling.enabled) {
        const size_t tile = (size_t)m->cfg.input.width * m->cfg.input.height;
        b->tiled = 1;
        ok = (b->original = calloc(cap, sizeof *b->original)) && (b->tiled_amap = calloc(cap, sizeof(float *))) &&
             (b->tiled_nfa = calloc(cap, sizeof(float *))) &&
             (b->tile_map = uf_alloc(cap * tile * sizeof(float))) && (b->tile_nfa = uf_alloc(cap * tile * sizeof(float)));
    }
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

/* Mean z^2 per scale of latents z[l] + i * size, over n consecutive items, into out. */
static void mean_z2(const uf_model *m, float *const *z, int i, int n, double *out) {
    for (int l = 0; l < m->cfg.flow.n_scales; l++) {
        int c, h, w;
        uf_model_latent_shape(m, l, &c, &h, &w);
        const size_t per = (size_t)c * h * w;
        const float *zl = z[l] + (size_t)i * per;
        double acc = 0.0;
        for (size_t k = 0; k < per * (size_t)n; k++) acc += (double)zl[k] * zl[k];
        out[l] = acc / ((double)per * n);
    }
}

int uf_batch_smooth_map(const uf_model *m, float *map, int h, int w, int span_w, int span_h) {
    const double s = m->cfg.map_sigma;
    if (!(s > 0)) return UF_OK;
    return uf_map_smooth(map, h, w, (float)(s * w / span_w), (float)(s * h / span_h));
}

/* The map of a model with map_sigma > 0 (model.h): the spec's map at the model input's size,
 * smoothed there (sigma in input pixels), then resized bilinearly to oh x ow; the score is the
 * smoothed map's maximum at the input's size, so it does not depend on the output size. */
static int smoothed_map(const uf_model *m, const uf_latent_view *v, int oh, int ow, float *amap, float *score) {
    const int W = m->cfg.input.width, H = m->cfg.input.height;
    float *in = (oh == H && ow == W) ? amap : malloc(sizeof(float) * (size_t)W * H);
    if (!in) return uf_error("anomaly map: out of memory");
    int rc = uf_anomaly_map(v, m->cfg.flow.n_scales, H, W, in, NULL);
    if (rc == UF_OK) rc = uf_batch_smooth_map(m, in, H, W, W, H);
    if (rc == UF_OK) {
        float mx = -INFINITY;
        for (size_t p = 0; p < (size_t)W * H; p++) mx = in[p] > mx ? in[p] : mx;
        if (score) *score = mx;
        if (in != amap) uf_interp_bilinear(in, 1, H, W, amap, oh, ow);
    }
    if (in != amap) free(in);
    return rc;
}

/* Map and -log10 NFA of the latents of item i of z (one image, or one tile of an image of
 * n_tiles tiles) at oh x ow. UF_OK, or UF_ERR with the reason in err. */
static int detect_one(const uf_batch *b, uf_model *m, float *const *z, int i, int n_tiles, int oh, int ow, float *amap,
                      float *nfa, float *score, const char *name, char *err) {
    const int L = b->n_scales;
    uf_latent_view v[UF_FLOW_MAX_SCALES];
    int finite = 1;
    for (int l = 0; l < L; l++) {
        uf_model_latent_shape(m, l, &v[l].c, &v[l].h, &v[l].w);
        v[l].z = z[l] + (size_t)i * v[l].c * v[l].h * v[l].w;
        finite = finite && uf_all_finite(v[l].z, (size_t)v[l].c * v[l].h * v[l].w);
    }
    if (!finite) {
        snprintf(err, UF_BATCH_ERROR_LEN, "image '%s': the model gives non-finite latents (NaN or Inf)", name);
        return UF_ERR;
    }
    const uf_nfa_null null = uf_model_nfa_null(&m->cfg, n_tiles);
    const int smooth = m->cfg.map_sigma > 0 && n_tiles == 1 && !b->tiled;
    int rc = smooth ? smoothed_map(m, v, oh, ow, amap, score) : uf_anomaly_map(v, L, oh, ow, amap, score);
    if (rc == UF_OK)
        rc = b->nfa_block ? uf_nfa_block_score(v, L, NFA_BLOCK_WIN, NFA_BLOCK_PTHR, oh, ow, nfa)
                          : uf_nfa_tree_score_null(v, L, &null, oh, ow, nfa);
    if (rc != UF_OK) snprintf(err, UF_BATCH_ERROR_LEN, "image '%s': %s", name, uf_last_error());
    return rc;
}

/* Image i of a tiled batch: its tiles through the model in chunks of b->cap, their fields
 * stitched, then resized to the image's own size. UF_ERR only for what stops the batch
 * (out of memory in the model); an image's own failure goes to b->error[i]. */
static int run_tiled_image(uf_batch *b, uf_model *m, int i, double *t_lat, double *t_det) {
    free(b->tiled_amap[i]), free(b->tiled_nfa[i]);
    b->tiled_amap[i] = b->tiled_nfa[i] = NULL;
    const uf_image *img = b->original[i];
    const int L = b->n_scales, TW = m->cfg.input.width, TH = m->cfg.input.height;
    const size_t tile = (size_t)TW * TH, per_x = 3 * tile;
    uf_tile_grid g;
    if (uf_tile_grid_plan(&m->cfg.tiling, &m->cfg.input, img->width, img->height, &g) != UF_OK) {
        snprintf(b->error[i], UF_BATCH_ERROR_LEN, "image '%s': %s", b->paths[i], uf_last_error());
        return UF_OK;
    }
    const int nt = uf_tile_count(&g);
    const size_t nw = (size_t)g.work_w * g.work_h, no = (size_t)img->width * img->height;
    uf_image *work = uf_tile_work_image(img, &g);
    float *sum = malloc(nw * sizeof(float)), *weight = malloc(nw * sizeof(float)), *best = malloc(nw * sizeof(float));
    float *amap = malloc(no * sizeof(float)), *nfa = malloc(no * sizeof(float));
    int rc = UF_OK;
    if (!work || !sum || !weight || !best || !amap || !nfa) {
        snprintf(b->error[i], UF_BATCH_ERROR_LEN, "image '%s': out of memory for its %d tiles", b->paths[i], nt);
        goto out;
    }
    uf_tile_stitch_begin(&g, sum, weight, best);
    double z2[UF_FLOW_MAX_SCALES] = {0};
    for (int t0 = 0; t0 < nt && rc == UF_OK && !b->error[i][0]; t0 += b->cap) {
        const int k = nt - t0 < b->cap ? nt - t0 : b->cap;
        double ta = uf_now();
        for (int t = 0; t < k; t++) uf_tile_to_imagenet(work, &g, t0 + t, b->x + (size_t)t * per_x);
        if ((rc = uf_model_latents(m, b->x, k, b->z)) != UF_OK) break;
        double tb = uf_now();
        double zc[UF_FLOW_MAX_SCALES];
        mean_z2(m, b->z, 0, k, zc);
        for (int l = 0; l < L; l++) z2[l] += zc[l] * k;
        int failed = 0;
        char err[UF_BATCH_ERROR_LEN] = "";
#pragma omp parallel for schedule(dynamic) reduction(+ : failed)
        for (int t = 0; t < k; t++) {
            float s;
            char e[UF_BATCH_ERROR_LEN];
            if (detect_one(b, m, b->z, t, nt, TH, TW, b->tile_map + t * tile, b->tile_nfa + t * tile, &s, b->paths[i],
                           e) != UF_OK) {
                failed++;
#pragma omp critical
                snprintf(err, sizeof err, "%s", e);
            }
        }
        if (failed) {
            snprintf(b->error[i], UF_BATCH_ERROR_LEN, "%s", err);
            break;
        }
        for (int t = 0; t < k; t++)
            uf_tile_stitch_add(&g, t0 + t, b->tile_map + t * tile, b->tile_nfa + t * tile, sum, weight, best);
        if (t_lat) *t_lat += tb - ta;
        if (t_det) *t_det += uf_now() - tb;
    }
    if (rc != UF_OK || b->error[i][0]) goto out;
    uf_tile_stitch_end(&g, sum, weight);
    /* a tiled model's smoothing runs on the stitched map: tiles are at the input's scale, so the
     * working resolution's pixels are input pixels */
    if (uf_batch_smooth_map(m, sum, g.work_h, g.work_w, g.work_w, g.work_h) != UF_OK) {
        snprintf(b->error[i], UF_BATCH_ERROR_LEN, "image '%s': %s", b->paths[i], uf_last_error());
        goto out;
    }
    float mx = -INFINITY;
    for (size_t p = 0; p < nw; p++) mx = sum[p] > mx ? sum[p] : mx;
    b->score[i] = mx;
    mx = -INFINITY;
    for (size_t p = 0; p < nw; p++) mx = best[p] > mx ? best[p] : mx;
    b->max_nfa[i] = mx;
    for (int l = 0; l < L; l++) b->z2[i][l] = z2[l] / nt;
    if (nw == no) {
        memcpy(amap, sum, no * sizeof(float));
        memcpy(nfa, best, no * sizeof(float));
    } else {
        uf_interp_bilinear(sum, 1, g.work_h, g.work_w, amap, img->height, img->width);
        uf_interp_bilinear(best, 1, g.work_h, g.work_w, nfa, img->height, img->width);
    }
    b->tiled_amap[i] = amap, b->tiled_nfa[i] = nfa;
    amap = nfa = NULL;
out:
    uf_image_free(work);
    free(sum), free(weight), free(best), free(amap), free(nfa);
    uf_tile_grid_free(&g);
    return rc;
}

int uf_batch_run(uf_batch *b, uf_model *m, double *t_latents, double *t_detect) {
    if (b->tiled) {
        for (int i = 0; i < b->n; i++)
            if (!b->error[i][0] && run_tiled_image(b, m, i, t_latents, t_detect) != UF_OK) return UF_ERR;
        return UF_OK;
    }
    double t0 = uf_now();
    if (uf_model_latents(m, b->x, b->n, b->z) != UF_OK) return UF_ERR;
    double t1 = uf_now();
    const int ow = b->out_w, oh = b->out_h;
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < b->n; i++) {
        if (b->error[i][0]) continue;
        float *amap = b->amap + (size_t)i * ow * oh, *nfa = b->nfa + (size_t)i * ow * oh;
        if (detect_one(b, m, b->z, i, 1, oh, ow, amap, nfa, &b->score[i], b->paths[i], b->error[i]) != UF_OK)
            continue;
        mean_z2(m, b->z, i, 1, b->z2[i]);
        float mx = -INFINITY;
        for (size_t p = 0; p < (size_t)ow * oh; p++) mx = nfa[p] > mx ? nfa[p] : mx;
        b->max_nfa[i] = mx;
    }
    if (t_latents) *t_latents += t1 - t0;
    if (t_detect) *t_detect += uf_now() - t1;
    return UF_OK;
}
