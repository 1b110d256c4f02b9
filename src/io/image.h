/* image.h - 8-bit images: load (PNG/JPEG/BMP via stb_image), Pillow-exact
 * resize, ImageNet normalisation, PNG writing (8-bit gray/RGB, 16-bit gray).
 *
 * Pixels are interleaved, row-major: pixels[(y * width + x) * channels + c].
 */
#ifndef UF_IO_IMAGE_H
#define UF_IO_IMAGE_H

#include <stdint.h>

typedef struct uf_image {
    int width, height, channels; /* channels: 1 (gray) or 3 (RGB) */
    uint8_t *pixels;
} uf_image;

/* Loads an image file. want_channels: 0 keeps the file's (gray or RGB; alpha
 * dropped), 1 converts to gray, 3 converts to RGB (gray promoted by copying).
 * Corrupt, truncated or unsupported files give NULL and an error naming the
 * path. */
uf_image *uf_image_load(const char *path, int want_channels);
uf_image *uf_image_new(int width, int height, int channels); /* zero-filled */
void uf_image_free(uf_image *img);

/* Pillow's Image.resize(size, Image.BILINEAR) (with its antialiasing filter
 * support scaled by the downscale factor), bit-exact: separable passes with
 * 22-bit fixed-point coefficients, rounding and clipping after each pass. */
uf_image *uf_image_resize_pil_bilinear(const uf_image *src, int out_width, int out_height);

/* torchvision ToTensor + Normalize(ImageNet mean/std) of an RGB image into
 * out (3, height, width). */
void uf_image_to_imagenet(const uf_image *img, float *out);

/* Atomic PNG writers (temp file + rename). */
int uf_image_write_png(const char *path, const uf_image *img);
int uf_png_write_gray16(const char *path, const uint16_t *pixels, int width, int height);

#endif
