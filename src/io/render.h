/* render.h - pictures for people: anomaly heat-map overlays and mask images. */
#ifndef UF_IO_RENDER_H
#define UF_IO_RENDER_H

#include <stddef.h>
#include <stdint.h>

#include "io/image.h"

/* The "jet" colour map: v in [0,1] (clamped) -> rgb (dark blue .. red). */
void uf_colormap_jet(float v, uint8_t rgb[3]);

/* Blends a colour-mapped map (h, w) over base (same size, gray or RGB):
 * out = (1 - alpha) * base + alpha * jet((map - lo) / (hi - lo)). Returns a new
 * RGB image, or NULL + error when sizes differ or memory runs out. */
uf_image *uf_render_overlay(const uf_image *base, const float *map, int width, int height, float lo, float hi,
                            float alpha);

/* The map's n values clamped to [0, 1] and scaled to 0..65535, rounded to nearest (ties to
 * even, as lrintf): the _map.png pixels. malloc'ed, or NULL + error. */
uint16_t *uf_render_gray16(const float *map, size_t n);

/* A 0/255 gray image from a boolean mask (h, w). */
uf_image *uf_render_mask(const uint8_t *mask, int width, int height);

/* Paints the boundary of a boolean mask (width, height of img) onto the RGB image img:
 * the mask's pixels with a 4-neighbour outside it, or on the image border, get rgb. */
void uf_render_outline(uf_image *img, const uint8_t *mask, const uint8_t rgb[3]);

#endif
