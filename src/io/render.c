#include "io/render.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"

/* Two selects rather than one nested: the form gcc vectorises (same values, NaN kept). */
static inline float clamp01(float v) {
    v = v < 0.0f ? 0.0f : v;
    return v > 1.0f ? 1.0f : v;
}

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

/* The overlay is made a chunk of pixels at a time in two loops that gcc vectorises: jet() of
 * the chunk's pixels, interleaved as RGB, then round_byte(keep * b + alpha * h) of every byte;
 * lane by lane the float arithmetic of the per-pixel form, so the bytes are the same
 * (tests/test_render.c checks them against that form). */
enum { OVERLAY_CHUNK = 1024 };

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
    uint8_t heat[3 * OVERLAY_CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += OVERLAY_CHUNK) {
        const size_t m = n - i0 < OVERLAY_CHUNK ? n - i0 : OVERLAY_CHUNK;
        const float *v_in = map + i0;
        for (size_t k = 0; k < m; k++) jet((v_in[k] - lo) / span, heat + 3 * k);
        const uint8_t *restrict b = base->pixels + i0 * bch;
        uint8_t *restrict o = out->pixels + i0 * 3;
        if (bch == 3)
            for (size_t j = 0; j < 3 * m; j++) o[j] = round_byte(keep * (float)b[j] + alpha * (float)heat[j]);
        else
            for (size_t k = 0; k < m; k++)
                for (int c = 0; c < 3; c++)
                    o[3 * k + c] = round_byte(keep * (float)b[k] + alpha * (float)heat[3 * k + c]);
    }
    return out;
}

uint16_t *uf_render_gray16(const float *map, size_t n) {
    uint16_t *px = malloc(sizeof(uint16_t) * (n ? n : 1));
    if (!px) {
        uf_error("out of memory for a 16-bit map of %zu pixels", n);
        return NULL;
    }
    /* lrintf(a * 65535), written so that gcc vectorises it: adding and removing 2^23 rounds to
     * an integer as lrintf does (to nearest, ties to even), exactly, below 2^23 */
    for (size_t p = 0; p < n; p++) {
        const float a = clamp01(map[p]);
        px[p] = (uint16_t)(int32_t)((a * 65535.0f + 0x1p23f) - 0x1p23f);
    }
    return px;
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
