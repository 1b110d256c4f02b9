/* image.h - 8-bit images: load (PNG/JPEG/BMP via stb_image), Pillow-exact
 * resize, ImageNet normalisation, PNG writing (8-bit gray/RGB, 16-bit gray).
 *
 * Pixels are interleaved, row-major: pixels[(y * width + x) * channels + c].
 *
 * The reference pipeline of spec 2.1 (PIL open + convert('RGB'),
 * Image.resize(BILINEAR), ToTensor, Normalize) is:
 *     uf_image *img = uf_image_load(path, 3);
 *     uf_image *r = uf_image_resize_pil_bilinear(img, 448, 448);
 *     uf_image_to_imagenet(r, x);          // float x[3 * 448 * 448]
 * or in one call uf_image_load_for_backbone(path, 448, x).
 */
#ifndef UF_IO_IMAGE_H
#define UF_IO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Limits checked before any pixel buffer is allocated (load, new, resize). */
#define UF_IMAGE_MAX_SIDE 65535
#define UF_IMAGE_MAX_PIXELS (1L << 28)

typedef struct uf_image {
    int width, height, channels; /* channels: 1 (gray) or 3 (RGB) */
    uint8_t *pixels;             /* (height, width, channels) */
} uf_image;

/* Loads an image file. want_channels: 0 keeps the channels the decoder reports
 * (gray or RGB; alpha dropped; palette images count as RGB), 1 converts to
 * gray, 3 converts to RGB (gray promoted by copying).
 * Conversions follow Pillow's convert('L') / convert('RGB'): alpha is dropped
 * without compositing, and L = (19595 R + 38470 G + 7471 B + 32768) >> 16
 * (Pillow 9.4's rgb2l; equal for all 2^24 colours). Decoding is stb_image's:
 * PNG and BMP are exact; JPEG may differ from Pillow's libjpeg by a few levels
 * (different IDCT/upsampling); 16-bit PNG samples are reduced to their high
 * byte (Pillow would clip instead). Only PNG, JPEG and BMP files are read
 * (told by their signatures; stb_image's other decoders are never reached).
 * Missing, empty, truncated, corrupt or unsupported files, images over
 * UF_IMAGE_MAX_SIDE / UF_IMAGE_MAX_PIXELS, and files too small for the size
 * they announce (above 1M pixels: more pixels per byte than the format can
 * hold, e.g. 16 for BMP, 2048 for JPEG) give NULL and an error naming the
 * path and the reason. Free with uf_image_free. */
uf_image *uf_image_load(const char *path, int want_channels);
/* The same from an encoded file in memory (data[0..len), not kept): `name` stands for the
 * path in messages (e.g. "request body"). */
uf_image *uf_image_decode(const char *name, const unsigned char *data, size_t len, int want_channels);

/* Zero-filled image; channels 1 or 3, sides in 1..UF_IMAGE_MAX_SIDE, at most
 * UF_IMAGE_MAX_PIXELS pixels; NULL + error otherwise. */
uf_image *uf_image_new(int width, int height, int channels);
void uf_image_free(uf_image *img); /* NULL is fine */

/* Pillow's Image.resize(size, Image.BILINEAR) (with its antialiasing filter
 * support scaled by the downscale factor), bit-exact for L and RGB: separable
 * passes (horizontal first, a pass skipped when its size is unchanged) with
 * 22-bit fixed-point coefficients, rounding and clipping after each pass.
 * Returns a new image (a copy when the size is unchanged); NULL + error for a
 * bad size. */
uf_image *uf_image_resize_pil_bilinear(const uf_image *src, int out_width, int out_height);

/* How an image becomes a model input of width x height pixels.
 *   UF_FIT_STRETCH: Pillow-bilinear resize to width x height (the aspect ratio
 *     is not kept; the reference pipeline for square MVTec images).
 *   UF_FIT_KEEP_ASPECT: torchvision's Resize(int) + CenterCrop, generalised to a
 *     non-square target: Pillow-bilinear resize so that the image just covers
 *     width x height (when src_w * height >= width * src_h the new height is
 *     `height` and the new width int(height * src_w / src_h), else the other way
 *     round), then the centre crop with torchvision's offsets
 *     (int(round((new - target) / 2.0)), Python's round half to even). For a
 *     square target this is exactly Resize(S) + CenterCrop(S). */
typedef enum { UF_FIT_STRETCH = 0, UF_FIT_KEEP_ASPECT = 1 } uf_fit_mode;

typedef struct uf_input_geometry {
    int width, height;
    uf_fit_mode fit;
} uf_input_geometry;

/* Parses "N" (N x N) or "WxH" (also "WXH"): decimal sides in 1..UF_IMAGE_MAX_SIDE, nothing
 * else in the text. UF_OK, or UF_ERR + a message quoting the text. */
int uf_parse_size(const char *text, int *width, int *height);

/* "stretch" / "keep-aspect". */
const char *uf_fit_mode_name(uf_fit_mode fit);

/* The part of a src_w x src_h image that the model input of g shows, in the
 * image's own pixels (rounded to whole pixels): the whole image for stretch, the
 * centre crop's window for keep-aspect. win = {x0, y0, width, height}. */
void uf_fit_window(const uf_input_geometry *g, int src_w, int src_h, int win[4]);

/* src (gray or RGB) made into g's width x height input image (see
 * uf_input_geometry). NULL + error for a bad size. */
uf_image *uf_image_fit(const uf_image *src, const uf_input_geometry *g);

/* torchvision ToTensor + Normalize(ImageNet mean/std) of an image into
 * out (3, height, width), float32 like torch: (v / 255.f - mean[c]) / std[c].
 * A gray image is treated as RGB with three equal channels. */
void uf_image_to_imagenet(const uf_image *img, float *out);

/* The spec 2.1 pipeline in one call: load as RGB, uf_image_fit to g, ImageNet
 * normalisation into out (3, g->height, g->width). Note: the official code's
 * Resize(int) keeps the aspect ratio (shorter side = size), without a crop; for
 * square images (MVTec) it agrees with both fits. UF_OK, or UF_ERR + error
 * naming path. */
int uf_image_load_fitted(const char *path, const uf_input_geometry *g, float *out);
/* The same for a size x size stretched input. */
int uf_image_load_for_backbone(const char *path, int size, float *out);

/* Atomic PNG writers (io/atomic_file: temp file beside path, fsync, rename): on error
 * the temp file is removed and an existing file at path is left untouched.
 * A new file gets mode 0644; an existing file keeps its mode.
 * uf_image_write_png: 8-bit gray (1 channel) or RGB (3 channels).
 * uf_png_write_gray16: 16-bit gray, pixels (height, width). */
int uf_image_write_png(const char *path, const uf_image *img);
int uf_png_write_gray16(const char *path, const uint16_t *pixels, int width, int height);

/* How a PNG is compressed; a decoder reads the same pixels from each. Measured on 900x900
 * predict outputs, one core (docs/results.md, issue 25): libpng's defaults (zlib level 6,
 * adaptive filters) take 190-260 ms for an RGB overlay and 60-90 ms for a 16-bit map;
 * ISA-L's igzip level 1 (io/png_fast.h) a few ms. Photographs (and overlays on them) are
 * noise to deflate's matching: their Paeth residuals are coded best by Huffman codes and
 * runs, so the PHOTO mode looks back 2 bytes only (faster, and smaller, than the full window:
 * overlays on BSD, MTD and bench predict's images, docs/results.md). Smooth fields (maps) gain
 * from the whole window; masks (0/255, long runs) are left unfiltered. */
typedef enum {
    UF_PNG_COMPACT = 0, /* libpng's defaults: zlib level 6, adaptive filters */
    UF_PNG_FAST,        /* ISA-L level 1, filter Up, 32 KiB window: maps */
    UF_PNG_FAST_MASK,   /* ISA-L level 1, no filter: images of few distinct runs */
    UF_PNG_FAST_PHOTO,  /* ISA-L level 1, filter Paeth, 2-byte window: photographs, overlays */
} uf_png_mode;

/* Output writers: as above, with a compression mode; durable 0 skips the fsync
 * (uf_atomic_commit_as: the caller syncs the file system before it publishes them). */
int uf_image_write_png_as(const char *path, const uf_image *img, uf_png_mode mode, int durable);
int uf_png_write_gray16_as(const char *path, const uint16_t *pixels, int width, int height, uf_png_mode mode,
                           int durable);

/* A JPEG file (libjpeg-turbo, 4:2:0, the given quality 1..100) of an 8-bit gray or RGB image,
 * written like the PNG writers (atomic; durable 0: no fsync). */
int uf_image_write_jpeg(const char *path, const uf_image *img, int quality, int durable);

/* The PNG file of an 8-bit gray or RGB image, in memory: *data (malloc; the caller
 * frees it) of *len bytes. UF_ERR + message (nothing allocated) otherwise. */
int uf_image_encode_png(const uf_image *img, unsigned char **data, size_t *len);
/* The same for a 16-bit gray image (row-major, native endianness). */
int uf_png_encode_gray16(const uint16_t *pixels, int width, int height, unsigned char **data, size_t *len);

#endif
