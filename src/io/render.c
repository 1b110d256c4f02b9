#include "io/render.h"

#include <math.h>

#include "core/error.h"

static float clamp01(float v) { return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }

void uf_colormap_jet(float v, uint8_t rgb[3]) {
    v = clamp01(v);
    /* Piecewise-linear jet: each channel is a clamped tent centred at .75/.5/.25. */
    float r = clamp01(1.5f - fabsf(4.0f * v - 3.0f));
    float g = clamp01(1.5f - fabsf(4.0f * v - 2.0f));
    float b = clamp01(1.5f - fabsf(4.0f * v - 1.0f));
    rgb[0] = (uint8_t)lrintf(255.0f * r);
    rgb[1] = (uint8_t)lrintf(255.0f * g);
    rgb[2] = (uint8_t)lrintf(255.0f * b);
}

uf_image *uf_render_overlay(const uf_image *base, const float *map, int width, int height, float lo, float hi,
                            float alpha) {
    if (base->width != width || base->height != height) {
        uf_error("overlay: image is %dx%d but the map is %dx%d", base->width, base->height, width, height);
        return NULL;
    }
    uf_image *out = uf_image_new(width, height, 3);
    if (!out) return NULL;
    float span = hi > lo ? hi - lo : 1.0f;
    for (int i = 0; i < width * height; i++) {
        uint8_t heat[3];
        uf_colormap_jet((map[i] - lo) / span, heat);
        for (int c = 0; c < 3; c++) {
            int bc = base->channels == 3 ? c : 0;
            float v = (1.0f - alpha) * base->pixels[i * base->channels + bc] + alpha * heat[c];
            out->pixels[i * 3 + c] = (uint8_t)lrintf(v);
        }
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
