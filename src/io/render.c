#include "io/render.h"

#include <math.h>

#include "core/error.h"

static float clamp01(float v) { return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }

/* lrintf for 0 <= v < 2^23 in the default rounding mode (to nearest, ties to even), without
 * the library call: adding and removing 2^23 leaves v rounded to an integer, the very
 * rounding lrintf does, so the bytes are the same. */
static inline uint8_t round_byte(float v) { return (uint8_t)(int)((v + 0x1p23f) - 0x1p23f); }

static inline void jet(float v, uint8_t rgb[3]) {
    v = clamp01(v);
    /* Piecewise-linear jet: each channel is a clamped tent centred at .75/.5/.25. */
    rgb[0] = round_byte(255.0f * clamp01(1.5f - fabsf(4.0f * v - 3.0f)));
    rgb[1] = round_byte(255.0f * clamp01(1.5f - fabsf(4.0f * v - 2.0f)));
    rgb[2] = round_byte(255.0f * clamp01(1.5f - fabsf(4.0f * v - 1.0f)));
}

void uf_colormap_jet(float v, uint8_t rgb[3]) { jet(v, rgb); }

uf_image *uf_render_overlay(const uf_image *base, const float *map, int width, int height, float lo, float hi,
                            float alpha) {
    if (base->width != width || base->height != height) {
        uf_error("overlay: image is %dx%d but the map is %dx%d", base->width, base->height, width, height);
        return NULL;
    }
    uf_image *out = uf_image_new(width, height, 3);
    if (!out) return NULL;
    const float span = hi > lo ? hi - lo : 1.0f, keep = 1.0f - alpha;
    const int bch = base->channels;
    const size_t n = (size_t)width * height;
    for (size_t i = 0; i < n; i++) {
        uint8_t heat[3];
        jet((map[i] - lo) / span, heat);
        const uint8_t *b = base->pixels + i * bch;
        uint8_t *o = out->pixels + i * 3;
        for (int c = 0; c < 3; c++) o[c] = round_byte(keep * b[bch == 3 ? c : 0] + alpha * heat[c]);
    }
    return out;
}

uf_image *uf_render_mask(const uint8_t *mask, int width, int height) {
    uf_image *out = uf_image_new(width, height, 1);
    if (!out) return NULL;
    for (int i = 0; i < width * height; i++) out->pixels[i] = mask[i] ? 255 : 0;
    return out;
}

void uf_render_outline(uf_image *img, const uint8_t *mask, const uint8_t rgb[3]) {
    const int W = img->width, H = img->height;
    if (img->channels != 3) return;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const size_t p = (size_t)y * W + x;
            if (!mask[p]) continue;
            int edge = x == 0 || y == 0 || x == W - 1 || y == H - 1 || !mask[p - 1] || !mask[p + 1] || !mask[p - W] ||
                       !mask[p + W];
            if (edge)
                for (int c = 0; c < 3; c++) img->pixels[p * 3 + c] = rgb[c];
        }
}
