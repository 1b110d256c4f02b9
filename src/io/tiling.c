/* tiling.c - see tiling.h. */
#include "io/tiling.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* Corners of the tiles along one axis of length n (tile t, overlap o); count in *k. */
static int *axis_plan(int n, int t, int o, int *k) {
    int count = 1;
    if (n > t) count = (n - o + (t - o) - 1) / (t - o);
    if (count < 2 && n > t) count = 2;
    int *x = malloc(sizeof(int) * (size_t)count);
    if (!x) return NULL;
    for (int i = 0; i < count; i++) x[i] = count == 1 ? 0 : (int)lround((double)i * (n - t) / (count - 1));
    *k = count;
    return x;
}

int uf_tile_grid_plan(const uf_tiling *t, const uf_input_geometry *g, int image_w, int image_h, uf_tile_grid *grid) {
    memset(grid, 0, sizeof *grid);
    const int tw = g->width, th = g->height;
    if (tw < 1 || th < 1 || image_w < 1 || image_h < 1)
        return uf_error("tiling: bad sizes (image %dx%d, tile %dx%d)", image_w, image_h, tw, th);
    const int tshort = tw < th ? tw : th;
    if (t->overlap < 0 || t->overlap >= tshort)
        return uf_error("tiling: overlap %d must be in [0, %d) for %dx%d tiles", t->overlap, tshort, tw, th);
    double s = 1.0;
    const int shorter = image_w < image_h ? image_w : image_h;
    if (t->max_short > 0 && shorter > t->max_short) s = (double)t->max_short / shorter;
    double w = image_w * s, h = image_h * s;
    double up = fmax((double)tw / w, (double)th / h);
    if (up > 1.0) w *= up, h *= up;
    /* rounding must not leave a side below the tile */
    grid->work_w = (int)lround(w) < tw ? tw : (int)lround(w);
    grid->work_h = (int)lround(h) < th ? th : (int)lround(h);
    if (grid->work_w > UF_IMAGE_MAX_SIDE || grid->work_h > UF_IMAGE_MAX_SIDE)
        return uf_error("tiling: a %dx%d image needs a %dx%d working image", image_w, image_h, grid->work_w,
                        grid->work_h);
    grid->image_w = image_w, grid->image_h = image_h;
    grid->tile_w = tw, grid->tile_h = th;
    grid->x0 = axis_plan(grid->work_w, tw, t->overlap, &grid->nx);
    grid->y0 = axis_plan(grid->work_h, th, t->overlap, &grid->ny);
    if (!grid->x0 || !grid->y0) {
        uf_tile_grid_free(grid);
        return uf_error("tiling: out of memory");
    }
    return UF_OK;
}

void uf_tile_grid_free(uf_tile_grid *grid) {
    free(grid->x0), free(grid->y0);
    grid->x0 = grid->y0 = NULL;
}

uf_image *uf_tile_work_image(const uf_image *img, const uf_tile_grid *grid) {
    if (img->width == grid->work_w && img->height == grid->work_h) {
        uf_image *c = uf_image_new(img->width, img->height, img->channels);
        if (c) memcpy(c->pixels, img->pixels, (size_t)img->width * img->height * img->channels);
        return c;
    }
    return uf_image_resize_pil_bilinear(img, grid->work_w, grid->work_h);
}

uf_image *uf_tile_crop(const uf_image *work, const uf_tile_grid *grid, int t) {
    const int x0 = grid->x0[t % grid->nx], y0 = grid->y0[t / grid->nx], ch = work->channels;
    uf_image *c = uf_image_new(grid->tile_w, grid->tile_h, ch);
    if (!c) return NULL;
    for (int y = 0; y < grid->tile_h; y++)
        memcpy(c->pixels + (size_t)y * grid->tile_w * ch, work->pixels + ((size_t)(y0 + y) * work->width + x0) * ch,
               (size_t)grid->tile_w * ch);
    return c;
}

void uf_tile_to_imagenet(const uf_image *work, const uf_tile_grid *grid, int t, float *x) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, stdev[3] = {0.229f, 0.224f, 0.225f};
    const int x0 = grid->x0[t % grid->nx], y0 = grid->y0[t / grid->nx], ch = work->channels;
    const size_t plane = (size_t)grid->tile_w * grid->tile_h;
    for (int y = 0; y < grid->tile_h; y++) {
        const uint8_t *row = work->pixels + ((size_t)(y0 + y) * work->width + x0) * ch;
        for (int c = 0; c < 3; c++) {
            float *dst = x + c * plane + (size_t)y * grid->tile_w;
            const int cc = ch == 3 ? c : 0;
            for (int i = 0; i < grid->tile_w; i++) dst[i] = (row[(size_t)i * ch + cc] / 255.f - mean[c]) / stdev[c];
        }
    }
}

void uf_tile_stitch_begin(const uf_tile_grid *grid, float *sum, float *weight, float *best) {
    const size_t n = (size_t)grid->work_w * grid->work_h;
    memset(sum, 0, n * sizeof(float));
    memset(weight, 0, n * sizeof(float));
    for (size_t i = 0; i < n; i++) best[i] = -INFINITY;
}

void uf_tile_stitch_add(const uf_tile_grid *grid, int t, const float *tile_map, const float *tile_nfa, float *sum,
                        float *weight, float *best) {
    const int x0 = grid->x0[t % grid->nx], y0 = grid->y0[t / grid->nx];
    for (int y = 0; y < grid->tile_h; y++) {
        const size_t o = (size_t)(y0 + y) * grid->work_w + x0, s = (size_t)y * grid->tile_w;
        for (int x = 0; x < grid->tile_w; x++) {
            sum[o + x] += tile_map[s + x];
            weight[o + x] += 1.f;
            best[o + x] = tile_nfa[s + x] > best[o + x] ? tile_nfa[s + x] : best[o + x];
        }
    }
}

void uf_tile_stitch_end(const uf_tile_grid *grid, float *sum, const float *weight) {
    const size_t n = (size_t)grid->work_w * grid->work_h;
    for (size_t i = 0; i < n; i++) sum[i] = weight[i] > 0 ? sum[i] / weight[i] : 0.f;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

uf_tiling uf_tiling_choose(const int *widths, const int *heights, int n, const uf_input_geometry *g) {
    uf_tiling t = {0, 0, 0};
    if (n < 1) return t;
    int *shorter = malloc(sizeof(int) * (size_t)n);
    if (!shorter) return t;
    for (int i = 0; i < n; i++) shorter[i] = widths[i] < heights[i] ? widths[i] : heights[i];
    qsort(shorter, (size_t)n, sizeof(int), cmp_int);
    const int median = shorter[n / 2];
    free(shorter);
    const int gshort = g->width < g->height ? g->width : g->height;
    if (median >= UF_TILE_WHEN_RATIO * gshort) {
        t.enabled = 1;
        t.overlap = gshort / UF_TILE_OVERLAP_DIV;
        t.max_short = UF_TILE_MAX_SHORT_TILES * gshort;
    }
    return t;
}

const char *uf_tiling_describe(const uf_tiling *t, char *buf, size_t cap) {
    if (!t->enabled)
        snprintf(buf, cap, "off");
    else if (t->max_short > 0)
        snprintf(buf, cap, "on (overlap %d, working shorter side <= %d)", t->overlap, t->max_short);
    else
        snprintf(buf, cap, "on (overlap %d, the image's own resolution)", t->overlap);
    return buf;
}
