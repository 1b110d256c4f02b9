/* anomaly_map.c - see anomaly_map.h. */
#include "detect/anomaly_map.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/interp.h"
#include "core/tensor.h"

/* The widest smoothing kernel: radius 64 (sigma 16); wider sigmas are cut. */
#define UF_MAP_SMOOTH_MAX_R 64

void uf_latent_mean_sq(const float *z, int c, int h, int w, float *out) {
    const size_t n = (size_t)h * (size_t)w;
    double *acc = calloc(n, sizeof *acc);
    if (!acc) { /* cell-by-cell fallback: same result, strided reads */
        for (size_t p = 0; p < n; p++) {
            double s = 0;
            for (int k = 0; k < c; k++) s += (double)z[(size_t)k * n + p] * z[(size_t)k * n + p];
            out[p] = (float)(s / c);
        }
        return;
    }
    for (int k = 0; k < c; k++) {
        const float *zk = z + (size_t)k * n;
        for (size_t p = 0; p < n; p++) acc[p] += (double)zk[p] * zk[p];
    }
    for (size_t p = 0; p < n; p++) out[p] = (float)(acc[p] / c);
    free(acc);
}

/* Shared shape validation for every detector entry point. */
int uf_latent_views_check(const uf_latent_view *scales, int n_scales, int out_h, int out_w, const char *what) {
    if (n_scales < 1 || n_scales > UF_MAX_SCALES)
        return uf_error("%s: %d latent scales given (1..%d supported)", what, n_scales, UF_MAX_SCALES);
    if (out_h < 1 || out_w < 1) return uf_error("%s: bad output size %dx%d", what, out_h, out_w);
    for (int l = 0; l < n_scales; l++) {
        const uf_latent_view *s = &scales[l];
        if (!s->z || s->c < 1 || s->h < 1 || s->w < 1)
            return uf_error("%s: scale %d: bad latent shape (%d, %d, %d)", what, l, s->c, s->h, s->w);
        if ((size_t)s->h * (size_t)s->w > (size_t)1 << 30)
            return uf_error("%s: scale %d: latent grid %dx%d too large", what, l, s->h, s->w);
    }
    return UF_OK;
}

int uf_anomaly_map(const uf_latent_view *scales, int n_scales, int out_h, int out_w, float *amap,
                   float *image_score) {
    if (uf_latent_views_check(scales, n_scales, out_h, out_w, "anomaly map") != UF_OK) return UF_ERR;
    size_t max_cells = 0, n_out = (size_t)out_h * (size_t)out_w;
    for (int l = 0; l < n_scales; l++) {
        size_t cells = (size_t)scales[l].h * (size_t)scales[l].w;
        if (cells > max_cells) max_cells = cells;
    }
    float *prob = uf_alloc(sizeof(float) * max_cells); /* (h_l, w_l) */
    float *up = uf_alloc(sizeof(float) * n_out);       /* (out_h, out_w) */
    if (!prob || !up) {
        uf_free(prob), uf_free(up);
        return uf_error_prefix("anomaly map");
    }
    for (size_t i = 0; i < n_out; i++) amap[i] = 0.f;
    for (int l = 0; l < n_scales; l++) {
        const uf_latent_view *s = &scales[l];
        size_t cells = (size_t)s->h * (size_t)s->w;
        uf_latent_mean_sq(s->z, s->c, s->h, s->w, prob);
        for (size_t p = 0; p < cells; p++) {
            if (!isfinite(prob[p])) {
                uf_free(prob), uf_free(up);
                return uf_error("anomaly map: scale %d: non-finite latent at cell %zu", l, p);
            }
            prob[p] = expf(-0.5f * prob[p]);
        }
        uf_interp_bilinear(prob, 1, s->h, s->w, up, out_h, out_w);
        for (size_t i = 0; i < n_out; i++) amap[i] += up[i];
    }
    float mx = -INFINITY;
    for (size_t i = 0; i < n_out; i++) {
        amap[i] = 1.f - amap[i] / (float)n_scales;
        if (amap[i] > mx) mx = amap[i];
    }
    if (image_score) *image_score = mx;
    uf_free(prob), uf_free(up);
    return UF_OK;
}

/* Normalised Gaussian taps k[0..2r] for sigma; r is returned (at most UF_MAP_SMOOTH_MAX_R). */
static int gaussian_taps(float sigma, float *k) {
    int r = (int)(4.0f * sigma + 0.5f);
    if (r > UF_MAP_SMOOTH_MAX_R) r = UF_MAP_SMOOTH_MAX_R;
    double tot = 0.0, t[2 * UF_MAP_SMOOTH_MAX_R + 1];
    for (int j = -r; j <= r; j++) tot += t[j + r] = exp(-0.5 * (double)j * j / ((double)sigma * sigma));
    for (int j = 0; j <= 2 * r; j++) k[j] = (float)(t[j] / tot);
    return r;
}

/* Index q of an n-long axis mirrored at its edges, as often as it takes (a kernel wider than
 * the axis): -1 -> 0, -2 -> 1, n -> n - 1 ... */
static inline int mirror(int q, int n) {
    while (q < 0 || q >= n) q = q < 0 ? -q - 1 : 2 * n - q - 1;
    return q;
}

int uf_map_smooth(float *map, int h, int w, float sigma_x, float sigma_y) {
    if (!(sigma_x > 0) && !(sigma_y > 0)) return UF_OK;
    const int side = w > h ? w : h;
    float *pad = malloc(sizeof(float) * (size_t)(side + 2 * UF_MAP_SMOOTH_MAX_R));
    float *acc = malloc(sizeof(float) * (size_t)w);
    float *col = malloc(sizeof(float) * (size_t)h * w);
    if (!pad || !acc || !col) {
        free(pad), free(acc), free(col);
        return uf_error("map smoothing: out of memory");
    }
    float k[2 * UF_MAP_SMOOTH_MAX_R + 1];
    if (sigma_x > 0) { /* along rows: each row mirrored into pad, then taps outer, pixels inner */
        const int r = gaussian_taps(sigma_x, k);
        for (int y = 0; y < h; y++) {
            float *row = map + (size_t)y * w;
            for (int x = -r; x < w + r; x++) pad[x + r] = row[mirror(x, w)];
            for (int x = 0; x < w; x++) acc[x] = 0.0f;
            for (int j = 0; j <= 2 * r; j++) {
                const float kj = k[j];
                const float *src = pad + j;
                for (int x = 0; x < w; x++) acc[x] += kj * src[x];
            }
            memcpy(row, acc, sizeof(float) * (size_t)w);
        }
    }
    if (sigma_y > 0) { /* along columns: whole rows at a time */
        const int r = gaussian_taps(sigma_y, k);
        memcpy(col, map, sizeof(float) * (size_t)h * w);
        for (int y = 0; y < h; y++) {
            float *out = map + (size_t)y * w;
            for (int x = 0; x < w; x++) out[x] = 0.0f;
            for (int j = -r; j <= r; j++) {
                const float kj = k[j + r];
                const float *src = col + (size_t)mirror(y + j, h) * w;
                for (int x = 0; x < w; x++) out[x] += kj * src[x];
            }
        }
    }
    free(pad), free(acc), free(col);
    return UF_OK;
}
