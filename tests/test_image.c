/* Images: loading vs Pillow's decoding, Pillow-exact bilinear resize,
 * ImageNet normalisation vs torchvision, PNG writing, malformed inputs.
 * References: tools/make_image_refs.py (Pillow 9.4, torchvision 0.14) into
 * tests/data/image/. */
#include <dirent.h>
#include <png.h>
#include <stb_image.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <sys/stat.h>

#include "core/error.h"
#include "harness.h"
#include "io/image.h"
#include "io/png_fast.h"

#define DATA "tests/data/image/"

/* Reads a whole file; NULL when missing or when its size is not `expect`
 * (expect 0: any size). */
static unsigned char *slurp(const char *path, size_t expect, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n || (expect && (size_t)n != expect)) {
        free(buf);
        return NULL;
    }
    if (len) *len = (size_t)n;
    return buf;
}

/* The procedural images of make_image_refs.py (pattern(), hash3()). */
static uint32_t pattern_hash(uint32_t x, uint32_t y, uint32_t c) {
    uint32_t h = x * 0x9E3779B1u + y * 0x85EBCA77u + c * 0xC2B2AE3Du + 0x27D4EB2Fu;
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 12;
    h *= 0x297A2D39u;
    h ^= h >> 15;
    return h;
}

static uf_image *pattern(int w, int h, int channels, int nb) {
    uf_image *img = uf_image_new(w, h, channels);
    if (!img) return NULL;
    int nbb = nb < 5 ? nb : 5;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) {
                uint32_t hs = pattern_hash((uint32_t)x, (uint32_t)y, (uint32_t)c);
                int noise = nb > 0 ? (int)(hs >> (32 - nb)) : 0;
                int noise_b = nbb > 0 ? (int)(hs >> (32 - nbb)) : 0;
                int v;
                if (2 * y < h)
                    v = ((x * 7 + y * 5 + c * 85) & 255) ^ noise;
                else
                    v = (((x >> 3) + (y >> 3)) & 1) ? 255 - noise_b : noise_b;
                img->pixels[((size_t)y * w + x) * channels + c] = (uint8_t)v;
            }
    return img;
}

/* Largest absolute difference and count of differing bytes. */
static int max_diff(const uint8_t *a, const uint8_t *b, size_t n, size_t *ndiff) {
    int m = 0;
    *ndiff = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d) (*ndiff)++;
        if (d > m) m = d;
    }
    return m;
}

/* Decoding: every committed file, as gray, RGB and its native mode, against
 * Pillow's convert('L') / convert('RGB') of the same file. PNG and BMP must be
 * exact. JPEG: stb_image's IDCT, chroma upsampling and colour conversion differ
 * from libjpeg-turbo's (Pillow); the bound below is what was observed plus one. */
#define JPEG_TOL 4
static void test_load_matches_pillow(void) {
    FILE *m = fopen(DATA "manifest.txt", "r");
    CHECK(m != NULL, "missing " DATA "manifest.txt");
    if (!m) return;
    char name[64];
    int w, h, native, nfiles = 0;
    while (fscanf(m, "%63s %d %d %d", name, &w, &h, &native) == 4) {
        nfiles++;
        char path[128], ref[160];
        snprintf(path, sizeof path, DATA "%s", name);
        /* stb_image expands palette images to RGB; Pillow calls an 8-bit BMP
         * with a gray ramp palette "L". want 0 follows the decoder. */
        if (strcmp(name, "gray.bmp") == 0) native = 3;
        int is_jpeg = strstr(name, ".jpg") != NULL;
        for (int want = 0; want <= 3; want++) {
            if (want == 2) continue;
            int ch = want ? want : native;
            snprintf(ref, sizeof ref, "%s.%s", path, ch == 1 ? "l" : "rgb");
            size_t n = (size_t)w * h * ch;
            unsigned char *exp = slurp(ref, n, NULL);
            CHECK(exp != NULL, "missing or bad reference %s", ref);
            uf_image *img = uf_image_load(path, want);
            CHECK(img != NULL, "%s", uf_last_error());
            if (img && exp) {
                CHECK(img->width == w && img->height == h && img->channels == ch,
                      "%s want %d: got %dx%dx%d, expected %dx%dx%d", name, want, img->width,
                      img->height, img->channels, w, h, ch);
                if (img->width == w && img->height == h && img->channels == ch) {
                    size_t nd;
                    int md = max_diff(img->pixels, exp, n, &nd);
                    int tol = is_jpeg ? JPEG_TOL : 0;
                    CHECK(md <= tol, "%s want %d: max diff %d (%zu of %zu differ)", name, want, md,
                          nd, n);
                    if (is_jpeg)
                        printf("  %-11s want %d: max diff %d, %5zu of %5zu values differ\n", name,
                               want, md, nd, n);
                }
            }
            uf_image_free(img);
            free(exp);
        }
    }
    fclose(m);
    CHECK(nfiles == 10, "manifest lists %d files", nfiles);
}

/* Each bad input: NULL, and a message naming the path. */
static void expect_load_fails(const char *path, const char *why_substr) {
    uf_error_clear();
    uf_image *img = uf_image_load(path, 3);
    CHECK(img == NULL, "loading %s must fail", path);
    uf_image_free(img);
    const char *msg = uf_last_error();
    CHECK(strstr(msg, path) != NULL, "message does not name %s: %s", path, msg);
    if (why_substr) CHECK(strstr(msg, why_substr) != NULL, "expected '%s' in: %s", why_substr, msg);
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void test_load_errors(void) {
    expect_load_fails(uf_test_path("does-not-exist.png"), "No such file");
    expect_load_fails(uf_test_tmpdir(), "directory");

    const char *empty = uf_test_path("empty.png");
    uf_test_write_file(empty, "", 0);
    expect_load_fails(empty, "empty");

    size_t n = 0;
    unsigned char *png = slurp(DATA "rgb.png", 0, &n);
    CHECK(png != NULL && n > 200, "rgb.png");
    if (png) {
        const char *trunc = uf_test_path("truncated.png");
        uf_test_write_file(trunc, png, n / 2);
        expect_load_fails(trunc, NULL);
        uf_test_write_file(trunc, png, 40); /* header only, no image data */
        expect_load_fails(trunc, NULL);
        /* PNG headers announcing 70000 x 10 and 17000 x 17000 (> 2^28) pixels */
        const char *huge = uf_test_path("huge.png");
        unsigned char hdr[64];
        memcpy(hdr, png, 33); /* signature + IHDR chunk */
        put_be32(hdr + 16, 70000), put_be32(hdr + 20, 10);
        uf_test_write_file(huge, hdr, 33);
        expect_load_fails(huge, "too large");
        put_be32(hdr + 16, 17000), put_be32(hdr + 20, 17000);
        uf_test_write_file(huge, hdr, 33);
        expect_load_fails(huge, "too large");
        /* 16384 x 16384 RGBA with 16-bit samples: 2^31 bytes overflowed stb_image's int sizes
         * (a 2^64 - 2^31 byte malloc; found by analysis while fuzzing) */
        put_be32(hdr + 16, 16384), put_be32(hdr + 20, 16384);
        hdr[24] = 16, hdr[25] = 6;
        uf_test_write_file(huge, hdr, 33);
        expect_load_fails(huge, "too large to decode");
        /* found by fuzz/fuzz_image.c: the decoder's message quoted an unknown chunk type's bytes,
         * so a type with a newline broke the one-line message (CRCs valid, so the decoder gets
         * as far as the chunk) */
        memcpy(hdr + 33, "\0\0\0\0\x01\n\r\x02\0\0\0\0", 12);
        hdr[24] = 8, hdr[25] = 2;
        put_be32(hdr + 16, 4), put_be32(hdr + 20, 4);
        put_be32(hdr + 29, uf_test_crc32(hdr + 12, 17));
        put_be32(hdr + 41, uf_test_crc32(hdr + 37, 4));
        uf_test_write_file(huge, hdr, 45);
        expect_load_fails(huge, "chunk");
        CHECK(!strchr(uf_last_error(), '\n') && !strchr(uf_last_error(), '\r'), "one line: %s", uf_last_error());
        printf("  unknown critical chunk: %s\n", uf_last_error());
        /* corrupt compressed data in the middle */
        for (size_t i = n / 3; i < n / 3 + 64; i++) png[i] ^= 0x5a;
        const char *corrupt = uf_test_path("corrupt.png");
        uf_test_write_file(corrupt, png, n);
        expect_load_fails(corrupt, NULL);
        free(png);
    }
    unsigned char rnd[4096];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (unsigned char)((s = s * 1664525u + 1013904223u) >> 24);
    const char *rp = uf_test_path("random.png");
    uf_test_write_file(rp, rnd, sizeof rnd);
    expect_load_fails(rp, NULL);
    const char *txt = uf_test_path("text.jpg");
    uf_test_write_file(txt, "hello, not an image\n", 20);
    expect_load_fails(txt, NULL);

    /* found by fuzz/fuzz_image.c: a DHT table of more than 256 codes made stb_image 2.27 write
     * past its Huffman tables; such a JPEG is refused before stb parses it */
    expect_load_fails("tests/data/fuzz/jpeg_dht_257_codes.jpg", "Huffman table");
    unsigned char dht[2 + 4 + 1 + 16 + 272];
    memset(dht, 0, sizeof dht);
    dht[0] = 0xFF, dht[1] = 0xD8, dht[2] = 0xFF, dht[3] = 0xC4;
    dht[4] = (unsigned char)((sizeof dht - 4) >> 8), dht[5] = (unsigned char)((sizeof dht - 4) & 0xff);
    dht[6] = 0x10; /* AC table 0 */
    for (int i = 0; i < 16; i++) dht[7 + i] = 17; /* 272 codes */
    const char *bad_jpeg = uf_test_path("dht.jpg");
    uf_test_write_file(bad_jpeg, dht, sizeof dht);
    expect_load_fails(bad_jpeg, "Huffman table");
    /* found by fuzz/fuzz_image.c: a scan using a Huffman table no DHT defined made stb_image 2.27
     * index its (uninitialised) table out of bounds */
    expect_load_fails("tests/data/fuzz/jpeg_undefined_huffman_table.jpg", "undefined Huffman table");

    /* found by fuzz/fuzz_image.c: a 31-byte TGA announcing 15616 x 767 pixels was decoded (stb pads
     * with zeros) and resized, 10 s under the fuzzer */
    expect_load_fails("tests/data/fuzz/tga_31_bytes_15616x767.tga", "not a PNG, JPEG, BMP or TIFF");
    /* ...and the same with a BMP header: 4000 x 4000 pixels from a 54-byte file */
    unsigned char bmp[54] = {'B', 'M', 54, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0,
                             0xa0, 0x0f, 0, 0, 0xa0, 0x0f, 0, 0, 1, 0, 24, 0};
    const char *short_bmp = uf_test_path("short.bmp");
    uf_test_write_file(short_bmp, bmp, sizeof bmp);
    expect_load_fails(short_bmp, "truncated or corrupt");
    /* found by fuzz/fuzz_image.c: stb_image 2.27's PNM header parser overflows an int (UB); PNM,
     * like TGA, GIF, PSD, PIC and HDR, is no longer handed to stb at all */
    const char *pgm = uf_test_path("big.pgm");
    uf_test_write_file(pgm, "P5\n2155555555 1\n255\n", 21);
    expect_load_fails(pgm, "not a PNG, JPEG, BMP or TIFF");
    /* found by fuzz/fuzz_image.c (out of memory): a 90-byte PNG whose IDAT length reads 1.2 GB made
     * stb_image grow its buffer to 2 GB before it noticed the file is short */
    expect_load_fails("tests/data/fuzz/png_idat_length_1.2GB.png", "truncated PNG");
    expect_load_fails("tests/data/fuzz/png_chunk_type_newline.png", NULL);
    CHECK(!strchr(uf_last_error(), '\n') && !strchr(uf_last_error(), '\r'), "one line: %s", uf_last_error());

    uf_image *img = uf_image_load(DATA "gray.png", 2);
    CHECK(img == NULL && strstr(uf_last_error(), "want_channels"), "want_channels 2 refused");
    uf_image_free(img);
}

/* Pillow Image.resize(BILINEAR) references: the same procedural inputs are
 * built here; outputs must match exactly. */
static void test_resize_matches_pillow(void) {
    FILE *m = fopen(DATA "resize.txt", "r");
    CHECK(m != NULL, "missing " DATA "resize.txt");
    if (!m) return;
    char name[64];
    int ch, iw, ih, ow, oh, nb, ncases = 0;
    while (fscanf(m, "%63s %d %d %d %d %d %d", name, &ch, &iw, &ih, &ow, &oh, &nb) == 7) {
        ncases++;
        char path[256];
        snprintf(path, sizeof path, DATA "resize_%s.png", name);
        uf_image *exp = uf_image_load(path, 0);
        CHECK(exp != NULL, "%s", uf_last_error());
        uf_image *src = pattern(iw, ih, ch, nb);
        uf_image *out = src ? uf_image_resize_pil_bilinear(src, ow, oh) : NULL;
        CHECK(out != NULL, "%s: %s", name, uf_last_error());
        if (exp && out) {
            CHECK(exp->width == ow && exp->height == oh && exp->channels == ch, "%s ref shape", name);
            CHECK(out->width == ow && out->height == oh && out->channels == ch, "%s shape", name);
            if (exp->width == ow && exp->height == oh && exp->channels == ch) {
                size_t nd, n = (size_t)ow * oh * ch;
                int md = max_diff(out->pixels, exp->pixels, n, &nd);
                CHECK(nd == 0, "%s %dx%d -> %dx%d: max diff %d, %zu of %zu values differ", name,
                      iw, ih, ow, oh, md, nd, n);
            }
        }
        uf_image_free(exp);
        uf_image_free(src);
        uf_image_free(out);
    }
    fclose(m);
    CHECK(ncases == 12, "resize.txt lists %d cases", ncases);
}

/* --keep-aspect against torchvision (tools/make_image_refs.py: Resize(S) + CenterCrop(S)
 * for square targets, the cover resize + CenterCrop((h, w)) for the others), bit-exact. */
static void test_fit_matches_torchvision(void) {
    FILE *m = fopen(DATA "fit.txt", "r");
    CHECK(m != NULL, "missing " DATA "fit.txt");
    if (!m) return;
    char name[64];
    int ch, iw, ih, ow, oh, nb, ncases = 0;
    while (fscanf(m, "%63s %d %d %d %d %d %d", name, &ch, &iw, &ih, &ow, &oh, &nb) == 7) {
        ncases++;
        char path[256];
        snprintf(path, sizeof path, DATA "fit_%s.png", name);
        uf_image *exp = uf_image_load(path, 0), *src = pattern(iw, ih, ch, nb);
        const uf_input_geometry g = {ow, oh, UF_FIT_KEEP_ASPECT};
        uf_image *out = src ? uf_image_fit(src, &g) : NULL;
        CHECK(exp && out, "%s: %s", name, uf_last_error());
        if (exp && out) {
            CHECK(out->width == ow && out->height == oh && out->channels == ch && exp->channels == ch, "%s shape",
                  name);
            if (out->width == exp->width && out->height == exp->height && out->channels == exp->channels) {
                size_t nd, n = (size_t)ow * oh * ch;
                int md = max_diff(out->pixels, exp->pixels, n, &nd);
                CHECK(nd == 0, "%s %dx%d -> %dx%d: max diff %d, %zu of %zu values differ", name, iw, ih, ow, oh, md,
                      nd, n);
            }
        }
        uf_image_free(exp), uf_image_free(src), uf_image_free(out);
    }
    fclose(m);
    CHECK(ncases == 9, "fit.txt lists %d cases", ncases);
    /* stretch is the plain resize */
    uf_image *src = pattern(100, 60, 3, 8);
    const uf_input_geometry st = {96, 32, UF_FIT_STRETCH};
    uf_image *a = uf_image_fit(src, &st), *b = uf_image_resize_pil_bilinear(src, 96, 32);
    CHECK(a && b && a->width == 96 && a->height == 32 && !memcmp(a->pixels, b->pixels, 96 * 32 * 3), "stretch");
    uf_image_free(src), uf_image_free(a), uf_image_free(b);
}

/* The window of the original image a model input shows (hand-computed cases). */
static void test_fit_window(void) {
    int win[4];
    const uf_input_geometry sq = {64, 64, UF_FIT_KEEP_ASPECT}, strip = {96, 32, UF_FIT_KEEP_ASPECT},
                            stretch = {96, 32, UF_FIT_STRETCH};
    /* 100x60 -> 106x64, crop left 21: x from 21*100/106 = 19.8 to 85*100/106 = 80.2 */
    uf_fit_window(&sq, 100, 60, win);
    CHECK(win[0] == 20 && win[1] == 0 && win[2] == 60 && win[3] == 60, "100x60: %d %d %d %d", win[0], win[1], win[2],
          win[3]);
    /* 120x100 -> 96x80, crop top 24: y from 30 to 70 */
    uf_fit_window(&strip, 120, 100, win);
    CHECK(win[0] == 0 && win[1] == 30 && win[2] == 120 && win[3] == 40, "120x100: %d %d %d %d", win[0], win[1],
          win[2], win[3]);
    /* 200x50 -> 128x32, crop left 16: x from 25 to 175 */
    uf_fit_window(&strip, 200, 50, win);
    CHECK(win[0] == 25 && win[1] == 0 && win[2] == 150 && win[3] == 50, "200x50: %d %d %d %d", win[0], win[1],
          win[2], win[3]);
    uf_fit_window(&stretch, 120, 100, win);
    CHECK(win[0] == 0 && win[1] == 0 && win[2] == 120 && win[3] == 100, "stretch: the whole image");
    /* sizes */
    int w = 0, h = 0;
    CHECK(uf_parse_size("512x128", &w, &h) == UF_OK && w == 512 && h == 128, "512x128");
    CHECK(uf_parse_size("256", &w, &h) == UF_OK && w == 256 && h == 256, "256");
    CHECK(uf_parse_size("64X32", &w, &h) == UF_OK && w == 64 && h == 32, "64X32");
    const char *bad[] = {"", "x", "64x", "x64", "0x5", "64x0", "-5", "64x32x2", "64 ", "99999999", "64x3e1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(uf_parse_size(bad[i], &w, &h) == UF_ERR && strstr(uf_last_error(), "not N or WxH"), "'%s' refused",
              bad[i]);
}

static void test_resize_edge_cases(void) {
    uf_image *src = pattern(33, 17, 3, 8);
    if (!src) return;
    uf_image *same = uf_image_resize_pil_bilinear(src, 33, 17);
    CHECK(same && memcmp(same->pixels, src->pixels, 33 * 17 * 3) == 0, "same size is a copy");
    uf_image_free(same);
    CHECK(uf_image_resize_pil_bilinear(src, 0, 5) == NULL, "zero width refused");
    CHECK(uf_image_resize_pil_bilinear(src, 5, -1) == NULL, "negative height refused");
    CHECK(uf_image_resize_pil_bilinear(src, 70000, 2) == NULL, "huge width refused");
    CHECK(uf_image_resize_pil_bilinear(NULL, 5, 5) == NULL, "NULL source refused");
    /* a constant image stays constant at any scale (weights sum to 1 after rounding) */
    memset(src->pixels, 255, 33 * 17 * 3);
    uf_image *up = uf_image_resize_pil_bilinear(src, 100, 7);
    int ok = up != NULL;
    for (int i = 0; ok && i < 100 * 7 * 3; i++) ok = up->pixels[i] == 255;
    CHECK(ok, "constant 255 preserved");
    uf_image_free(up);
    uf_image_free(src);
    CHECK(uf_image_new(0, 4, 1) == NULL && uf_image_new(4, 4, 2) == NULL, "bad new");
}

static float *read_f32(const char *path, size_t n) {
    return (float *)slurp(path, n * sizeof(float), NULL); /* little-endian host */
}

/* torchvision ToTensor + Normalize, float32; row 0 holds every value 0..255 in
 * every channel. */
static void test_imagenet_matches_torchvision(void) {
    const int w = 256, h = 8;
    float *exp = read_f32(DATA "imagenet.f32", 3 * (size_t)w * h);
    CHECK(exp != NULL, "missing imagenet.f32");
    uf_image *img = pattern(w, h, 3, 8);
    if (!exp || !img) {
        free(exp);
        uf_image_free(img);
        return;
    }
    for (int x = 0; x < w; x++) {
        img->pixels[3 * x] = (uint8_t)x;
        img->pixels[3 * x + 1] = (uint8_t)(255 - x);
        img->pixels[3 * x + 2] = (uint8_t)((x * 7) & 255);
    }
    float *out = malloc(sizeof(float) * 3 * w * h);
    uf_image_to_imagenet(img, out);
    double md = 0;
    size_t nexact = 0, n = 3 * (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)out[i] - exp[i]));
        nexact += out[i] == exp[i];
    }
    CHECK(md <= 1e-6, "max abs diff %g", md);
    /* torch divides in float32 (no reciprocal multiply): the same IEEE operations
     * give identical bits, which catches e.g. x * (1/255.f) (7e-7 off). */
    CHECK(nexact == n, "only %zu of %zu values bit-identical", nexact, n);
    printf("  imagenet: max abs diff %g, %zu of %zu bit-identical\n", md, nexact, n);
    /* gray image = RGB with three equal channels */
    uf_image *g = uf_image_new(4, 1, 1), *c = uf_image_new(4, 1, 3);
    for (int i = 0; i < 4; i++) g->pixels[i] = c->pixels[3 * i] = c->pixels[3 * i + 1] = c->pixels[3 * i + 2] = (uint8_t)(60 * i);
    float a[12], b[12];
    uf_image_to_imagenet(g, a);
    uf_image_to_imagenet(c, b);
    CHECK(memcmp(a, b, sizeof a) == 0, "gray promoted like RGB");
    uf_image_free(g);
    uf_image_free(c);
    free(out);
    free(exp);
    uf_image_free(img);
}

/* The whole spec 2.1 pipeline on rgb.png (96x64 -> 48x48). */
static void test_load_for_backbone(void) {
    const int s = 48;
    float *exp = read_f32(DATA "backbone48.f32", 3 * (size_t)s * s);
    CHECK(exp != NULL, "missing backbone48.f32");
    float *out = malloc(sizeof(float) * 3 * s * s);
    CHECK(uf_image_load_for_backbone(DATA "rgb.png", s, out) == UF_OK, "%s", uf_last_error());
    if (exp) {
        double md = 0;
        for (int i = 0; i < 3 * s * s; i++) md = fmax(md, fabs((double)out[i] - exp[i]));
        CHECK(md <= 1e-6, "max abs diff %g", md);
    }
    const char *missing = uf_test_path("nope.png");
    CHECK(uf_image_load_for_backbone(missing, s, out) == UF_ERR && strstr(uf_last_error(), missing),
          "%s", uf_last_error());
    free(out);
    free(exp);
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_png_write_roundtrip(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s", uf_test_path("pngout"));
    CHECK(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    char path[600];
    for (int ch = 1; ch <= 3; ch += 2) {
        uf_image *img = pattern(45, 31, ch, 8);
        snprintf(path, sizeof path, "%s/out%d.png", dir, ch);
        CHECK(uf_image_write_png(path, img) == UF_OK, "%s", uf_last_error());
        uf_image *back = uf_image_load(path, 0);
        CHECK(back && back->width == 45 && back->height == 31 && back->channels == ch &&
                  memcmp(back->pixels, img->pixels, 45 * 31 * (size_t)ch) == 0,
              "8-bit round trip, %d channel(s)", ch);
        struct stat st;
        CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644, "mode %o", st.st_mode & 0777);
        uf_image_free(back);
        /* overwrite an existing file */
        memset(img->pixels, 7, 45 * 31 * (size_t)ch);
        CHECK(uf_image_write_png(path, img) == UF_OK, "%s", uf_last_error());
        back = uf_image_load(path, 0);
        CHECK(back && back->pixels[0] == 7 && back->pixels[45 * 31 * ch - 1] == 7, "overwrite");
        uf_image_free(back);
        uf_image_free(img);
    }
    /* 16-bit gray, read back with stb's 16-bit loader; 0x0102 catches byte order */
    const int w = 300, h = 7;
    uint16_t *g16 = malloc(sizeof(uint16_t) * w * h);
    for (int i = 0; i < w * h; i++) g16[i] = (uint16_t)(pattern_hash((uint32_t)i, 3, 1) >> 16);
    g16[0] = 0x0102, g16[1] = 0, g16[2] = 65535;
    snprintf(path, sizeof path, "%s/g16.png", dir);
    CHECK(uf_png_write_gray16(path, g16, w, h) == UF_OK, "%s", uf_last_error());
    int rw = 0, rh = 0, rc = 0;
    CHECK(stbi_is_16_bit(path), "16-bit file");
    uint16_t *r16 = stbi_load_16(path, &rw, &rh, &rc, 0);
    CHECK(r16 && rw == w && rh == h && rc == 1, "16-bit read back %dx%dx%d", rw, rh, rc);
    if (r16 && rw == w && rh == h && rc == 1)
        CHECK(memcmp(r16, g16, sizeof(uint16_t) * w * h) == 0, "16-bit values");
    stbi_image_free(r16);

    /* errors: bad arguments, missing folder, destination is a directory. No
     * temp file may be left behind, and the directory must survive. */
    int before = count_dir_entries(dir);
    CHECK(uf_png_write_gray16(path, g16, 0, h) == UF_ERR, "width 0 refused");
    CHECK(uf_png_write_gray16(path, NULL, w, h) == UF_ERR, "NULL pixels refused");
    size_t n1;
    unsigned char *keep = slurp(path, 0, &n1);
    r16 = stbi_load_16(path, &rw, &rh, &rc, 0);
    CHECK(r16 && memcmp(r16, g16, sizeof(uint16_t) * w * h) == 0, "existing file untouched");
    stbi_image_free(r16);
    free(keep);
    snprintf(path, sizeof path, "%s/no/such/dir/x.png", dir);
    CHECK(uf_png_write_gray16(path, g16, w, h) == UF_ERR && strstr(uf_last_error(), path),
          "missing folder: %s", uf_last_error());
    char sub[600];
    snprintf(sub, sizeof sub, "%s/adir", dir);
    CHECK(mkdir(sub, 0755) == 0, "mkdir");
    before = count_dir_entries(dir);
    uf_image *img = pattern(5, 5, 1, 8);
    CHECK(uf_image_write_png(sub, img) == UF_ERR && strstr(uf_last_error(), sub),
          "destination is a directory: %s", uf_last_error());
    struct stat st;
    CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode), "directory survives");
    CHECK(count_dir_entries(dir) == before, "temp file left behind (%d entries, expected %d)",
          count_dir_entries(dir), before);
    uf_image bad = {5, 5, 2, img->pixels};
    CHECK(uf_image_write_png(uf_test_path("bad.png"), &bad) == UF_ERR, "2 channels refused");
    uf_image_free(img);
    free(g16);
}

/* TIFF through libtiff: files written here with libtiff (gray, RGB, RGBA with alpha, LZW,
 * 16-bit gray) decode to the pixels written; a truncated one fails with one line. */
static void write_tiff(const char *path, int w, int h, int spp, int bits, int lzw, const void *px) {
    TIFF *t = TIFFOpen(path, "w");
    CHECK(t != NULL, "TIFFOpen %s", path);
    if (!t) return;
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, spp);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, bits);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, spp >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, lzw ? COMPRESSION_LZW : COMPRESSION_NONE);
    if (spp == 4) {
        uint16_t extra = EXTRASAMPLE_UNASSALPHA;
        TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, &extra);
    }
    const size_t row = (size_t)w * spp * bits / 8;
    for (int y = 0; y < h; y++) TIFFWriteScanline(t, (void *)((const unsigned char *)px + y * row), (uint32_t)y, 0);
    TIFFClose(t);
}

static void test_tiff(void) {
    enum { W = 13, H = 7 };
    unsigned char rgba[W * H * 4];
    uint16_t g16[W * H];
    for (int i = 0; i < W * H * 4; i++) rgba[i] = (unsigned char)(i * 37 % 251);
    for (int i = 0; i < W * H; i++) g16[i] = (uint16_t)(i * 700);
    static const struct { const char *name; int spp, bits, lzw, want_c; } cases[] = {
        {"gray.tif", 1, 8, 0, 1}, {"rgb.tiff", 3, 8, 1, 3}, {"rgba.tif", 4, 8, 0, 3}, {"gray16.tif", 1, 16, 0, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char path[700];
        snprintf(path, sizeof path, "%s", uf_test_path(cases[k].name));
        write_tiff(path, W, H, cases[k].spp, cases[k].bits, cases[k].lzw, cases[k].bits == 16 ? (void *)g16 : (void *)rgba);
        uf_image *im = uf_image_load(path, 0);
        CHECK(im != NULL, "%s: %s", cases[k].name, uf_last_error());
        if (!im) continue;
        CHECK(im->width == W && im->height == H && im->channels == cases[k].want_c, "%s: %dx%dx%d", cases[k].name,
              im->width, im->height, im->channels);
        int bad = 0;
        for (int i = 0; i < W * H && im->width == W && im->height == H; i++)
            for (int c = 0; c < im->channels; c++) {
                int want = cases[k].bits == 16 ? g16[i] >> 8 : rgba[i * cases[k].spp + c];
                bad += im->pixels[i * im->channels + c] != want;
            }
        CHECK(bad == 0, "%s: %d samples differ from what was written", cases[k].name, bad);
        uf_image_free(im);
    }
    /* truncated: the header survives, the data does not */
    char path[700];
    snprintf(path, sizeof path, "%s", uf_test_path("rgb.tiff"));
    FILE *f = fopen(path, "rb");
    unsigned char buf[4096];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s", uf_test_path("cut.tif"));
    uf_test_write_file(path, buf, n > 40 ? 40 : n);
    expect_load_fails(path, NULL);
    CHECK(!strchr(uf_last_error(), '\n'), "one line: %s", uf_last_error());
    printf("  truncated TIFF: %s\n", uf_last_error());
}

/* A PNG in memory written by libpng: w x h, color type ct (PNG_COLOR_TYPE_*), 8-bit, the given
 * filters (PNG_ALL_FILTERS: libpng picks per row), interlaced or not, its IDAT split in chunks of
 * at most idat_max bytes; trns: a tRNS chunk. Pixels from pattern(). */
typedef struct {
    unsigned char *data;
    size_t len, cap;
} membuf;
static void mem_write(png_structp png, png_bytep d, size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->data = realloc(m->data, m->cap);
    }
    memcpy(m->data + m->len, d, n);
    m->len += n;
}
static void mem_flush(png_structp png) { (void)png; }
static membuf png_bytes(int w, int h, int ct, int filters, int interlace, size_t idat_max, int trns) {
    membuf m = {0};
    const int nc = ct == PNG_COLOR_TYPE_GRAY ? 1 : ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : ct == PNG_COLOR_TYPE_RGB ? 3 : 4;
    /* smooth gradients and noise, so that every filter wins somewhere */
    unsigned char *px = malloc((size_t)w * h * nc);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < nc; c++)
                px[((size_t)y * w + x) * nc + c] = (unsigned char)(y < h / 2 ? (uint32_t)(x * 3 + y * 5 + c * 40) : pattern_hash((uint32_t)x, (uint32_t)y, (uint32_t)c) & 0xff);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(px);
        free(m.data);
        membuf none = {0};
        return none;
    }
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, ct, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (trns) {
        png_color_16 t = {0};
        png_set_tRNS(png, info, NULL, 0, &t);
    }
    png_set_filter(png, 0, filters);
    png_set_compression_buffer_size(png, idat_max);
    png_write_info(png, info);
    const int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++) png_write_row(png, px + (size_t)y * w * nc);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(px);
    return m;
}

/* io/png_fast.h's reader against stb_image on the kinds it takes (8-bit gray, gray + alpha,
 * RGB, RGBA; every filter, libpng's adaptive choice per row; one and many IDAT chunks; widths
 * 1 to 257), and NULL (libpng's turn) for the others: interlaced, tRNS, palette, 16-bit, a bad
 * CRC, a truncated or garbled stream. uf_image_decode gives the same pixels either way. */
static void test_png_fast_read(void) {
    const int cts[4] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    const int filters[6] = {PNG_FILTER_NONE, PNG_FILTER_SUB, PNG_FILTER_UP, PNG_FILTER_AVG, PNG_FILTER_PAETH, PNG_ALL_FILTERS};
    const int sizes[4][2] = {{1, 1}, {1, 9}, {37, 21}, {257, 64}};
    int n_fast = 0, n_cases = 0;
    for (int k = 0; k < 4; k++)
        for (int f = 0; f < 6; f++)
            for (int sz = 0; sz < 4; sz++)
                for (int split = 0; split < 2; split++) {
                    const int w = sizes[sz][0], h = sizes[sz][1];
                    membuf m = png_bytes(w, h, cts[k], filters[f], 0, split ? 97 : 1 << 20, 0);
                    int fw, fh, fn, ch = 0;
                    unsigned char *ref = stbi_load_from_memory(m.data, (int)m.len, &fw, &fh, &fn, 0);
                    unsigned char *got = uf_png_fast_read(m.data, m.len, w, h, &ch);
                    n_cases++;
                    n_fast += got != NULL;
                    CHECK(ref && got && ch == fn && fw == w && fh == h && !memcmp(ref, got, (size_t)w * h * ch),
                          "ct %d filter %d %dx%d split %d: fast reader %s, channels %d / %d", cts[k], filters[f], w, h,
                          split, got ? "differs from stb_image" : "refused it", ch, fn);
                    stbi_image_free(ref);
                    free(got);
                    free(m.data);
                }
    printf("  %d of %d PNGs read by the fast path, all equal to stb_image\n", n_fast, n_cases);
    /* the kinds left to libpng, and damaged files: NULL; uf_image_decode still reads the good ones */
    struct {
        const char *what;
        membuf m;
    } other[3] = {{"interlaced", png_bytes(40, 30, PNG_COLOR_TYPE_RGB, PNG_ALL_FILTERS, 1, 1 << 20, 0)},
                  {"tRNS", png_bytes(40, 30, PNG_COLOR_TYPE_RGB, PNG_ALL_FILTERS, 0, 1 << 20, 1)},
                  {"one IDAT", png_bytes(40, 30, PNG_COLOR_TYPE_RGB, PNG_ALL_FILTERS, 0, 1 << 20, 0)}};
    for (int i = 0; i < 2; i++) {
        int ch;
        unsigned char *got = uf_png_fast_read(other[i].m.data, other[i].m.len, 40, 30, &ch);
        uf_image *img = uf_image_decode(other[i].what, other[i].m.data, other[i].m.len, 0);
        CHECK(!got && img && img->width == 40, "%s: left to libpng, which reads it", other[i].what);
        free(got), uf_image_free(img), free(other[i].m.data);
    }
    membuf g = other[2].m;
    int ch;
    unsigned char *good = uf_png_fast_read(g.data, g.len, 40, 30, &ch);
    CHECK(good != NULL, "the undamaged file is read by the fast path");
    /* damage: one byte at a time over the whole file (signature, IHDR, IDAT data, CRCs, IEND):
     * the fast path gives NULL or exactly the good pixels; uf_image_decode never crashes */
    int wrong = 0, refused = 0;
    for (size_t i = 0; good && i < g.len; i++) {
        g.data[i] ^= 0x40;
        unsigned char *got = uf_png_fast_read(g.data, g.len, 40, 30, &ch);
        if (got && memcmp(got, good, 40 * 30 * 3)) wrong++;
        refused += got == NULL;
        free(got);
        uf_image_free(uf_image_decode("damaged", g.data, g.len, 0));
        uf_error_clear();
        g.data[i] ^= 0x40;
    }
    for (size_t cut = 0; good && cut < g.len; cut += 7) {
        unsigned char *got = uf_png_fast_read(g.data, cut, 40, 30, &ch);
        if (got && memcmp(got, good, 40 * 30 * 3)) wrong++;
        free(got);
    }
    CHECK(wrong == 0, "damaged or truncated: never wrong pixels from the fast path (%d wrong, %d of %zu refused)",
          wrong, refused, g.len);
    free(good), free(g.data);
}

/* A PNG file's samples as libpng's classic reader gives them (no transforms): rows of bytes,
 * 16-bit samples big-endian. malloc'ed, or NULL. */
static unsigned char *libpng_samples(const char *path, int *w, int *h, int *channels, int *depth, int *filter_byte) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    unsigned char *volatile out = NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        free(out);
        return NULL;
    }
    png_init_io(png, f);
    png_read_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    *w = (int)png_get_image_width(png, info), *h = (int)png_get_image_height(png, info);
    *channels = png_get_channels(png, info), *depth = png_get_bit_depth(png, info);
    const size_t row = png_get_rowbytes(png, info);
    png_bytepp rows = png_get_rows(png, info);
    out = malloc(row * (size_t)*h);
    for (int y = 0; y < *h; y++) memcpy(out + row * (size_t)y, rows[y], row);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    /* the first row's filter type byte: the first IDAT's data after the 2-byte zlib header is
     * compressed, so it is read back from the file by inflating it with zlib via stb */
    *filter_byte = -1;
    size_t len;
    unsigned char *file = slurp(path, 0, &len);
    for (size_t pos = 8; file && pos + 12 <= len;) {
        const uint32_t n = (uint32_t)file[pos] << 24 | (uint32_t)file[pos + 1] << 16 | (uint32_t)file[pos + 2] << 8 | file[pos + 3];
        if (!memcmp(file + pos + 4, "IDAT", 4)) {
            int got = 0;
            char *raw = stbi_zlib_decode_malloc((const char *)file + pos + 8, (int)n, &got);
            if (raw && got > 0) *filter_byte = (unsigned char)raw[0];
            free(raw);
            break;
        }
        pos += 12 + n;
    }
    free(file);
    return out;
}

/* The fast writers (io/png_fast.h through uf_image_write_png_as / uf_png_write_gray16_as, every
 * mode) against libpng's reader: the same samples back, the filter the mode names, for noise
 * and smooth images of odd sizes; and uf_image_load reads them as written. */
static void test_png_fast_write(void) {
    static const struct {
        uf_png_mode mode;
        int filter;
    } modes[] = {{UF_PNG_FAST, 2}, {UF_PNG_FAST_MASK, 0}, {UF_PNG_FAST_PHOTO, 4}};
    static const int sizes[][2] = {{1, 1}, {2, 3}, {37, 21}, {300, 41}};
    uint32_t seed = 12345;
    int cases = 0;
    for (size_t mi = 0; mi < sizeof modes / sizeof *modes; mi++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (int kind = 0; kind < 3; kind++) /* gray 8, RGB 8, gray 16 */
                for (int smooth = 0; smooth < 2; smooth++) {
                    const int w = sizes[si][0], h = sizes[si][1], ch = kind == 1 ? 3 : 1, bits = kind == 2 ? 16 : 8;
                    const size_t n = (size_t)w * h * ch;
                    uint16_t *px16 = malloc(sizeof(uint16_t) * n);
                    uf_image *img = uf_image_new(w, h, ch);
                    for (size_t i = 0; i < n; i++) {
                        seed = seed * 1664525u + 1013904223u;
                        const size_t p = i / ch, x = p % w, y = p / w;
                        px16[i] = smooth ? (uint16_t)(x * 977 + y * 1931 + (i % ch) * 40000) : (uint16_t)(seed >> 16);
                        img->pixels[i] = (uint8_t)(smooth ? x * 3 + y * 5 + (i % ch) * 70 : seed >> 24);
                    }
                    char path[64];
                    snprintf(path, sizeof path, "fast_%zu_%zu_%d_%d.png", mi, si, kind, smooth);
                    const char *file = uf_test_path(path);
                    const int rc = bits == 16 ? uf_png_write_gray16_as(file, px16, w, h, modes[mi].mode, 0)
                                              : uf_image_write_png_as(file, img, modes[mi].mode, 0);
                    CHECK(rc == UF_OK, "%s", uf_last_error());
                    int rw = 0, rh = 0, rch = 0, rdepth = 0, filter = -1;
                    unsigned char *got = libpng_samples(file, &rw, &rh, &rch, &rdepth, &filter);
                    CHECK(got && rw == w && rh == h && rch == ch && rdepth == bits, "%s: libpng read %dx%dx%d@%d", path,
                          rw, rh, rch, rdepth);
                    size_t diff = 0;
                    for (size_t i = 0; got && rw == w && rh == h && rch == ch && i < n; i++)
                        diff += bits == 16 ? (got[2 * i] << 8 | got[2 * i + 1]) != px16[i] : got[i] != img->pixels[i];
                    CHECK(diff == 0, "%s: %zu samples differ", path, diff);
                    CHECK(filter == modes[mi].filter, "%s: first row filtered with %d, mode wants %d", path, filter,
                          modes[mi].filter);
                    if (bits == 8) {
                        uf_image *back = uf_image_load(file, ch);
                        CHECK(back && !memcmp(back->pixels, img->pixels, n), "%s: uf_image_load", path);
                        uf_image_free(back);
                    }
                    cases++;
                    free(got), free(px16);
                    uf_image_free(img);
                }
    printf("  %d fast PNGs read back by libpng exactly\n", cases);
}

int main(void) {
    UF_TEST(test_tiff);
    UF_TEST(test_load_matches_pillow);
    UF_TEST(test_load_errors);
    UF_TEST(test_resize_matches_pillow);
    UF_TEST(test_fit_matches_torchvision);
    UF_TEST(test_fit_window);
    UF_TEST(test_resize_edge_cases);
    UF_TEST(test_imagenet_matches_torchvision);
    UF_TEST(test_load_for_backbone);
    UF_TEST(test_png_write_roundtrip);
    UF_TEST(test_png_fast_read);
    UF_TEST(test_png_fast_write);
    return uf_test_summary();
}
