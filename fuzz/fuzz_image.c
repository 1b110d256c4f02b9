/* fuzz_image.c - libFuzzer target: the image loader and the mask loader.
 *
 * Input: a whole image file (any format stb_image knows). Loads it with
 * want_channels 0, 1 and 3; each accepted image is resized (Pillow bilinear)
 * down to 7x5, to 1x1 and up to twice its size when small, and normalised
 * like a backbone input. Then loads it as a ground-truth mask, with the size
 * of the image (accepted, values must be 0/255) and with a wrong size
 * (refused). Images over 1M pixels are loaded once (RGB, the first load) and resized to 1x1
 * only: the fuzz build's comparison tracing makes pixel loops ~100x slower
 * than the normal build, and the work per pixel is the same for any size.
 */
#include "fuzz_util.h"

#include "io/dataset.h"
#include "io/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void resize_and_normalise(const uf_image *img, int w, int h) {
    uf_error_clear();
    uf_image *r = uf_image_resize_pil_bilinear(img, w, h);
    if (!r) {
        fuzz_check_error();
        return;
    }
    FUZZ_CHECK(r->width == w && r->height == h && r->channels == img->channels);
    float *x = malloc((size_t)3 * w * h * sizeof *x);
    FUZZ_CHECK(x);
    uf_image_to_imagenet(r, x);
    free(x);
    uf_image_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("in.img", data, size);
    static const int want[3] = {3, 0, 1};
    int w0 = 0, h0 = 0, big = 0;
    for (int i = 0; i < (big ? 1 : 3); i++) {
        uf_error_clear();
        uf_image *img = uf_image_load(path, want[i]);
        if (!img) {
            fuzz_check_error();
            FUZZ_CHECK(i == 0 || w0 == 0); /* decoding does not depend on want_channels */
            continue;
        }
        FUZZ_CHECK(img->width >= 1 && img->height >= 1 && img->pixels);
        FUZZ_CHECK(img->width <= UF_IMAGE_MAX_SIDE && img->height <= UF_IMAGE_MAX_SIDE);
        FUZZ_CHECK(want[i] ? img->channels == want[i] : (img->channels == 1 || img->channels == 3));
        FUZZ_CHECK(i == 0 || (img->width == w0 && img->height == h0));
        w0 = img->width, h0 = img->height;
        big = (long)w0 * h0 > (1L << 20);
        if (!big) resize_and_normalise(img, 7, 5);
        resize_and_normalise(img, 1, 1);
        if (img->width <= 64 && img->height <= 64) resize_and_normalise(img, 2 * img->width, 2 * img->height);
        uf_image_free(img);
    }
    if (big) return 0;
    uf_error_clear();
    uf_image *m = uf_mask_load(path, "image.png", w0 ? w0 : 1, h0 ? h0 : 1);
    if (m) {
        FUZZ_CHECK(w0 && m->width == w0 && m->height == h0 && m->channels == 1);
        for (size_t k = 0; k < (size_t)w0 * h0; k++) FUZZ_CHECK(m->pixels[k] == 0 || m->pixels[k] == 255);
        uf_image_free(m);
    } else {
        fuzz_check_error();
    }
    if (w0) {
        uf_error_clear();
        m = uf_mask_load(path, "image.png", w0 + 1, h0);
        FUZZ_CHECK(m == NULL);
        fuzz_check_error();
    }
    return 0;
}
