/* image.c - image loading (stb_image), Pillow-exact bilinear resize, ImageNet
 * normalisation and atomic PNG writing (libpng). See image.h for contracts. */
#include "io/image.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <png.h>
#include <turbojpeg.h>
#include <setjmp.h>
#include <smmintrin.h> /* SSE4.1, for the functions that ask for it */
#include <stb_image.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>

#include "core/error.h"
#include "core/tensor.h"
#include "io/atomic_file.h"
#include "io/png_fast.h"

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */

static int check_dims(int width, int height) {
    if (width < 1 || height < 1)
        return uf_error("image size %dx%d is empty or negative", width, height);
    if (width > UF_IMAGE_MAX_SIDE || height > UF_IMAGE_MAX_SIDE ||
        (long)width * (long)height > UF_IMAGE_MAX_PIXELS)
        return uf_error("image size %dx%d too large (limits: side %d, %ld pixels)", width, height,
                        UF_IMAGE_MAX_SIDE, (long)UF_IMAGE_MAX_PIXELS);
    return UF_OK;
}

uf_image *uf_image_new(int width, int height, int channels) {
    if (channels != 1 && channels != 3) {
        uf_error("image channels must be 1 or 3, not %d", channels);
        return NULL;
    }
    if (check_dims(width, height) != UF_OK) return NULL;
    uf_image *img = calloc(1, sizeof *img);
    if (!img) {
        uf_error("out of memory");
        return NULL;
    }
    img->pixels = uf_calloc((size_t)width * (size_t)height, (size_t)channels);
    if (!img->pixels) {
        free(img);
        return NULL;
    }
    img->width = width;
    img->height = height;
    img->channels = channels;
    return img;
}

void uf_image_free(uf_image *img) {
    if (!img) return;
    uf_free(img->pixels);
    free(img);
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */

/* Reads a whole regular file into a malloc'd buffer. */
static int read_file(const char *path, unsigned char **data, size_t *len) {
    struct stat st;
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return uf_error("image '%s': cannot open: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0) {
        int e = errno;
        fclose(f);
        return uf_error("image '%s': cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        fclose(f);
        return uf_error("image '%s': is a directory", path);
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return uf_error("image '%s': not a regular file", path);
    }
    if (st.st_size == 0) {
        fclose(f);
        return uf_error("image '%s': empty file", path);
    }
    if (st.st_size > INT_MAX) { /* stb_image takes an int length */
        fclose(f);
        return uf_error("image '%s': file too large (%lld bytes)", path, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n);
    if (!buf) {
        fclose(f);
        return uf_error("image '%s': out of memory (%zu bytes)", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int rerr = ferror(f);
    fclose(f);
    if (got != n) {
        free(buf);
        return uf_error("image '%s': read error%s", path, rerr ? "" : " (file shrank while reading)");
    }
    *data = buf;
    *len = n;
    return UF_OK;
}

/* d[*p] and *p + 1, reading past the end as 0 as stb_image does. */
static unsigned dht_byte(const unsigned char *d, size_t n, size_t *p) {
    unsigned v = *p < n ? d[*p] : 0;
    (*p)++;
    return v;
}

/* One DHT segment body (after FF C4), read the way stb_image reads it: 1 when
 * a table declares more than 256 codes; marks the tables it defines in
 * defined[class][id]. */
static int jpeg_dht_oversized(const unsigned char *d, size_t n, unsigned char defined[2][4]) {
    size_t p = 0;
    long len = (long)(dht_byte(d, n, &p) << 8);
    len |= (long)dht_byte(d, n, &p);
    len -= 2;
    while (len > 0) {
        unsigned q = dht_byte(d, n, &p);
        if (q >> 4 > 1 || (q & 15) > 3) return 0; /* stb refuses the table itself */
        long codes = 0;
        for (int i = 0; i < 16; i++) codes += dht_byte(d, n, &p);
        if (codes > 256) return 1;
        defined[q >> 4][q & 15] = 1;
        p += (size_t)codes;
        len -= 17 + codes;
    }
    return 0;
}

/* One SOS header (after FF DA): 1 when a component's scan decodes with a
 * Huffman table no DHT defined before it (stb_image 2.27 reads its tables
 * uninitialised then, and indexes them out of bounds). Which tables a scan
 * uses follows stb: baseline both; progressive DC first scans the DC table,
 * AC scans the AC table, DC refinement none. */
static int jpeg_sos_undefined(const unsigned char *d, size_t n, int progressive, unsigned char defined[2][4]) {
    if (n < 3) return 0;
    size_t ns = d[2];
    if (n < 3 + 2 * ns + 3) return 0;
    unsigned ss = d[3 + 2 * ns], ah = d[5 + 2 * ns] >> 4;
    int need_dc = !progressive || (ss == 0 && ah == 0), need_ac = !progressive || ss > 0;
    for (size_t i = 0; i < ns; i++) {
        unsigned td = d[4 + 2 * i] >> 4, ta = d[4 + 2 * i] & 15;
        if (td > 3 || ta > 3) return 0; /* stb refuses the scan */
        if ((need_dc && !defined[0][td]) || (need_ac && !defined[1][ta])) return 1;
    }
    return 0;
}

/* The formats uflow reads, told apart by their signatures as stb_image tests
 * them. stb_image 2.27's other decoders (GIF, PSD, PIC, PNM, HDR, TGA) have
 * known memory and integer-overflow bugs and are never reached. */
typedef enum { FORMAT_OTHER, FORMAT_PNG, FORMAT_JPEG, FORMAT_BMP, FORMAT_TIFF } file_format;

/* Length of a JPEG's start: FF (FF)* D8 (0 when d does not start so). */
static size_t jpeg_soi_length(const unsigned char *d, size_t n) {
    size_t p = 0;
    while (p < n && d[p] == 0xFF) p++;
    return p > 0 && p < n && d[p] == 0xD8 ? p + 1 : 0;
}

static file_format format_of(const unsigned char *d, size_t n) {
    if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8)) return FORMAT_PNG;
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return FORMAT_BMP;
    if (n >= 4 && (!memcmp(d, "II*\0", 4) || !memcmp(d, "MM\0*", 4))) return FORMAT_TIFF;
    return jpeg_soi_length(d, n) ? FORMAT_JPEG : FORMAT_OTHER;
}

/* stb_image 2.27 (Debian 12's libstb) writes past its Huffman tables when a
 * JPEG DHT table declares more than 256 codes and reads out of bounds when a
 * scan uses a table that was never defined (invalid JPEG; stb 2.28 checks
 * both). Returns a reason when a JPEG holds either, to refuse it before stb
 * parses it, else NULL. Marker segments are followed by their lengths up to
 * the first unusual marker or SOS; from there on (entropy-coded data, where
 * stb resynchronises its own way) every FF C4 and FF DA is checked. d is a
 * JPEG (format_of). */
static const char *jpeg_bad_huffman(const unsigned char *d, size_t n) {
    unsigned char defined[2][4] = {{0}};
    int progressive = 0, scanning = 0;
    for (size_t p = jpeg_soi_length(d, n); p + 1 < n;) {
        if (d[p] != 0xFF || d[p + 1] == 0xFF) { /* data, garbage or fill byte */
            p++;
            continue;
        }
        unsigned c = d[p + 1];
        if (c == 0xC4 && jpeg_dht_oversized(d + p + 2, n - p - 2, defined))
            return "a Huffman table with more than 256 codes";
        if (c == 0xC2) progressive = 1;
        if (c == 0xDA && jpeg_sos_undefined(d + p + 2, n - p - 2, progressive, defined))
            return "a scan uses an undefined Huffman table";
        if (scanning || c == 0x01 || (c >= 0xD0 && c <= 0xD8)) { /* TEM, RSTn, SOI: no length */
            p += scanning ? 1 : 2;
            continue;
        }
        int known = c == 0xC4 || c == 0xDB || c == 0xDD || c == 0xFE || (c >= 0xE0 && c <= 0xEF) ||
                    (c >= 0xC0 && c <= 0xC2);
        if (!known) { /* SOS, EOI or a marker stb refuses: check every byte from here */
            scanning = 1;
            p += 2;
            continue;
        }
        if (p + 3 >= n) break;
        p += 2 + (((size_t)d[p + 2] << 8) | d[p + 3]);
    }
    return NULL;
}

/* 1 when a PNG chunk (before IEND) claims more data than the file has left:
 * stb_image 2.27 grows its IDAT buffer to the claimed size (up to 4 GB) before
 * it notices the file is short. d is a PNG (format_of). */
static int png_chunk_too_long(const unsigned char *d, size_t n) {
    for (size_t p = 8; p + 8 <= n;) {
        size_t len = ((size_t)d[p] << 24) | ((size_t)d[p + 1] << 16) | ((size_t)d[p + 2] << 8) | d[p + 3];
        if (len > n - p - 8) return 1;
        if (!memcmp(d + p + 4, "IEND", 4)) break;
        p += 12 + len; /* length, type, data, CRC */
    }
    return 0;
}

/* Most pixels one byte of a valid file can hold, with a margin of 2 or more:
 * a 1-bit PNG at zlib's best ratio (1032:1) holds 8256; a JPEG needs at least
 * one bit per 8x8 block and component (512); stb reads BMP without RLE, at
 * least one bit per pixel (8). */
static size_t max_pixels_per_byte(file_format f) {
    return f == FORMAT_PNG || f == FORMAT_TIFF ? 16384 : f == FORMAT_BMP ? 16 : 2048;
}

/* msg with control and non-ASCII bytes as \xNN (decoders quote bytes of the file) */
static const char *one_line(const char *why, char *buf, size_t cap) {
    size_t j = 0;
    for (; *why && j + 5 < cap; why++) {
        unsigned char c = (unsigned char)*why;
        if (c < 0x20 || c >= 0x7f) j += (size_t)snprintf(buf + j, cap - j, "\\x%02x", c);
        else buf[j++] = (char)c;
    }
    buf[j] = '\0';
    return buf;
}

/* stb_image's failure reason, printable: its "XXXX PNG chunk not known"
 * copies the chunk type's bytes from the file (control characters included). */
static const char *stb_reason(char *buf, size_t cap) {
    const char *why = stbi_failure_reason();
    return one_line(why ? why : "unknown reason", buf, cap);
}

/* Pillow 9.4 Convert.c rgb2l: ITU-R 601-2 luma in 16-bit fixed point. */
static inline uint8_t pil_luma(const uint8_t *rgb) {
    return (uint8_t)(((uint32_t)rgb[0] * 19595u + (uint32_t)rgb[1] * 38470u +
                      (uint32_t)rgb[2] * 7471u + 0x8000u) >> 16);
}

/* The size the IHDR chunk of PNG d claims (sides clamped to INT_MAX); 0 when
 * it has none. stb's info call refuses a huge PNG but then tries the other
 * formats, so its own reason ("too large") is lost: this lets the message say
 * what is wrong. */
static int png_header_size(const unsigned char *d, size_t n, int *w, int *h) {
    if (n < 24 || memcmp(d + 12, "IHDR", 4) != 0) return 0;
    uint32_t pw = (uint32_t)d[16] << 24 | (uint32_t)d[17] << 16 | (uint32_t)d[18] << 8 | d[19];
    uint32_t ph = (uint32_t)d[20] << 24 | (uint32_t)d[21] << 16 | (uint32_t)d[22] << 8 | d[23];
    *w = pw > INT_MAX ? INT_MAX : (int)pw;
    *h = ph > INT_MAX ? INT_MAX : (int)ph;
    return 1;
}

static unsigned char *png_decode_8bit(const unsigned char *data, size_t len, int w, int h, int *channels,
                                      char *why, size_t why_cap);
static unsigned char *tiff_decode_8bit(const unsigned char *data, size_t len, int *w, int *h, int *channels,
                                       char *why, size_t why_cap);

/* Decoded pixels: libpng's and libtiff's (malloc) for PNG and TIFF, stb's otherwise. */
static void pixels_free(file_format f, unsigned char *px) {
    if (f == FORMAT_PNG || f == FORMAT_TIFF)
        free(px);
    else
        stbi_image_free(px);
}

/* The uf_image of decoded 8-bit pixels px (w x h, fn = 1..4 channels), converted to
 * want_channels (0: 1 for gray, 3 otherwise); px is freed. NULL + error naming path. */
static uf_image *pixels_to_image(const char *path, file_format format, unsigned char *px, int w, int h, int fn,
                                 int want_channels) {
    int out_c = want_channels ? want_channels : (fn <= 2 ? 1 : 3);
    if (fn == out_c && (format == FORMAT_PNG || format == FORMAT_TIFF) && check_dims(w, h) == UF_OK) {
        /* already the layout wanted, in a buffer that uf_free frees: taken as it is */
        uf_image *img = calloc(1, sizeof *img);
        if (!img) {
            uf_error("image '%s': out of memory", path);
            pixels_free(format, px);
            return NULL;
        }
        *img = (uf_image){.width = w, .height = h, .channels = out_c, .pixels = px};
        return img;
    }
    uf_image *img = uf_image_new(w, h, out_c);
    if (!img) {
        uf_error_prefix("image '%s'", path);
        pixels_free(format, px);
        return NULL;
    }
    size_t npix = (size_t)w * (size_t)h;
    const uint8_t *s = px;
    uint8_t *d = img->pixels;
    for (size_t i = 0; i < npix; i++, s += fn) {
        if (fn <= 2) { /* gray or gray + alpha */
            if (out_c == 1) {
                d[i] = s[0];
            } else {
                d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[0];
            }
        } else { /* RGB or RGBA */
            if (out_c == 1) {
                d[i] = pil_luma(s);
            } else {
                d[3 * i] = s[0];
                d[3 * i + 1] = s[1];
                d[3 * i + 2] = s[2];
            }
        }
    }
    pixels_free(format, px);
    return img;
}

uf_image *uf_image_decode(const char *path, const unsigned char *data, size_t len, int want_channels) {
    if (!path || (!data && len)) {
        uf_error("image: NULL name or data");
        return NULL;
    }
    if (want_channels != 0 && want_channels != 1 && want_channels != 3) {
        uf_error("image '%s': want_channels must be 0, 1 or 3, not %d", path, want_channels);
        return NULL;
    }
    const file_format format = format_of(data, len);
    if (format == FORMAT_OTHER) {
        uf_error("image '%s': not a PNG, JPEG, BMP or TIFF file", path);
        return NULL;
    }
    if (format == FORMAT_TIFF) {
        char why[200];
        int tw = 0, th = 0, tn = 0;
        unsigned char *tp = tiff_decode_8bit(data, len, &tw, &th, &tn, why, sizeof why);
        if (!tp) {
            uf_error("image '%s': %s", path, why);
            return NULL;
        }
        return pixels_to_image(path, format, tp, tw, th, tn, want_channels);
    }
    if (format == FORMAT_PNG && png_chunk_too_long(data, len)) {
        uf_error("image '%s': truncated PNG (a chunk is longer than the rest of the file)", path);
        return NULL;
    }
    const char *bad_jpeg = format == FORMAT_JPEG ? jpeg_bad_huffman(data, len) : NULL;
    if (bad_jpeg) {
        uf_error("image '%s': corrupt JPEG (%s)", path, bad_jpeg);
        return NULL;
    }

    int w = 0, h = 0, n = 0;
    if (!stbi_info_from_memory(data, (int)len, &w, &h, &n)) {
        char why[128];
        int pw, ph;
        if (format == FORMAT_PNG && png_header_size(data, len, &pw, &ph) && check_dims(pw, ph) != UF_OK)
            uf_error_prefix("image '%s'", path);
        else
            uf_error("image '%s': not a readable image (%s)", path, stb_reason(why, sizeof why));
        return NULL;
    }
    /* Refuse absurd sizes from the header, before stb allocates anything. */
    if (check_dims(w, h) != UF_OK) {
        uf_error_prefix("image '%s'", path);
        return NULL;
    }
    /* stb sizes its buffers in int: 16-bit samples of a large image overflow it */
    size_t sample = stbi_is_16_bit_from_memory(data, (int)len) ? 2 : 1;
    if ((size_t)w * (size_t)h * (size_t)(n < 1 ? 4 : n) * sample > (size_t)INT_MAX) {
        uf_error("image '%s': %dx%d with %d %d-bit channels is too large to decode", path, w, h, n,
                 (int)(8 * sample));
        return NULL;
    }
    /* stb decodes truncated data as zeros: without this a 54-byte BMP gives 16
     * million pixels and a 3 KB JPEG 46 million (seconds of decoding). */
    if ((size_t)w * (size_t)h > ((size_t)1 << 20) + len * max_pixels_per_byte(format)) {
        uf_error("image '%s': %dx%d pixels cannot come from a %zu-byte file (truncated or corrupt)", path, w,
                 h, len);
        return NULL;
    }
    int fw = w, fh = h, fn = 0;
    unsigned char *px;
    char why[200];
    if (format == FORMAT_PNG) {
        /* libpng (zlib's inflate: a fifth faster than stb's on typical PNGs; same pixels) */
        px = uf_png_fast_read(data, len, w, h, &fn); /* the common kinds, fast; NULL: libpng's turn */
        if (!px) px = png_decode_8bit(data, len, w, h, &fn, why, sizeof why);
    } else {
        px = stbi_load_from_memory(data, (int)len, &fw, &fh, &fn, 0);
        if (!px) stb_reason(why, sizeof why);
    }
    if (!px) {
        uf_error("image '%s': cannot decode (%s)", path, why);
        return NULL;
    }
    if (fw != w || fh != h || fn < 1 || fn > 4) {
        uf_error("image '%s': decoder returned %dx%dx%d after announcing %dx%d", path, fw, fh, fn,
                 w, h);
        pixels_free(format, px);
        return NULL;
    }
    return pixels_to_image(path, format, px, w, h, fn, want_channels);
}

uf_image *uf_image_load(const char *path, int want_channels) {
    if (!path) {
        uf_error("image: NULL path");
        return NULL;
    }
    unsigned char *data;
    size_t len;
    if (read_file(path, &data, &len) != UF_OK) return NULL;
    uf_image *img = uf_image_decode(path, data, len, want_channels);
    free(data);
    return img;
}

/* ------------------------------------------------------------------------ */
/* Pillow-exact bilinear resize (Pillow 9.4 libImaging/Resample.c)         */

#define PIL_PRECISION_BITS (32 - 8 - 2)

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

/* One axis: for each output index, the first input index (bounds[2i]), the
 * number of taps (bounds[2i+1]) and ksize fixed-point weights (kk[i*ksize..]).
 * Mirrors Pillow's precompute_coeffs + normalize_coeffs_8bpc with the default
 * box (0, in_size): same double arithmetic in the same order. */
typedef struct {
    int ksize;
    int *bounds;   /* (out_size, 2) */
    int32_t *kk;   /* (out_size, ksize) */
} resample_axis;

static void axis_free(resample_axis *a) {
    free(a->bounds);
    free(a->kk);
    a->bounds = NULL;
    a->kk = NULL;
}

static int axis_init(resample_axis *a, int in_size, int out_size) {
    const double filter_support = 1.0; /* bilinear */
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filterscale;
    double ksize_d = ceil(support) * 2 + 1;
    a->bounds = NULL;
    a->kk = NULL;
    if (ksize_d > (double)INT_MAX / 8) return uf_error("resize: filter too large");
    int ksize = (int)ksize_d;
    size_t nk;
    if (uf_mul_size((size_t)out_size, (size_t)ksize, &nk) != UF_OK) return UF_ERR;
    double *k = malloc((size_t)ksize * sizeof(double));
    a->kk = calloc(nk, sizeof(int32_t));
    a->bounds = malloc((size_t)out_size * 2 * sizeof(int));
    if (!k || !a->kk || !a->bounds) {
        free(k);
        axis_free(a);
        return uf_error("resize: out of memory");
    }
    a->ksize = ksize;
    double ss = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale; /* box start in0 = 0 */
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5); /* truncation, as in Pillow */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        UF_ASSERT(xmax >= 0 && xmax <= ksize);
        for (int x = 0; x < xmax; x++) {
            double w = bilinear_filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        int32_t *kx = a->kk + (size_t)xx * ksize;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? k[x] / ww : k[x];
            kx[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PIL_PRECISION_BITS))
                          : (int32_t)(0.5 + v * (1 << PIL_PRECISION_BITS));
        }
        a->bounds[2 * xx] = xmin;
        a->bounds[2 * xx + 1] = xmax;
    }
    free(k);
    return UF_OK;
}

static inline uint8_t pil_clip8(int32_t in) {
    if (in < 0) return 0;
    in >>= PIL_PRECISION_BITS;
    return in > 255 ? 255 : (uint8_t)in;
}

/* One output pixel of the horizontal pass, channel by channel: the xmax taps k over the pixels
 * from p (ch bytes each) into o. */
static void resample_pixel(uint8_t *o, const uint8_t *p, const int32_t *k, int xmax, int ch) {
    for (int c = 0; c < ch; c++) {
        int32_t ss = 1 << (PIL_PRECISION_BITS - 1);
        for (int x = 0; x < xmax; x++) ss += (int32_t)p[x * ch + c] * k[x];
        o[c] = pil_clip8(ss);
    }
}

/* One output pixel of 3 channels: the 3 sums of taps at once in the 32-bit lanes of a vector
 * (SSE4.1: every x86-64 CPU we run on; checked at run time). Integer sums, so the same values
 * as the scalar loop. Reads 4 bytes per tap: the caller keeps the last tap off the buffer's
 * last pixel. */
__attribute__((target("sse4.1"))) static void resample_row3_sse41(uint8_t *o, int out_w, const uint8_t *row,
                                                                  int in_w, const resample_axis *a) {
    const __m128i half = _mm_set1_epi32(1 << (PIL_PRECISION_BITS - 1)), zero = _mm_setzero_si128(),
                  top = _mm_set1_epi32(255);
    for (int xx = 0; xx < out_w; xx++) {
        const int xmin = a->bounds[2 * xx], xmax = a->bounds[2 * xx + 1];
        const int32_t *k = a->kk + (size_t)xx * a->ksize;
        const uint8_t *p = row + (size_t)xmin * 3;
        if (xmin + xmax >= in_w) { /* the row's last pixel: no 4-byte read past it */
            resample_pixel(o + xx * 3, p, k, xmax, 3);
            continue;
        }
        __m128i acc = half;
        for (int x = 0; x < xmax; x++) {
            int32_t four;
            memcpy(&four, p + 3 * x, 4);
            const __m128i px = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(four));
            acc = _mm_add_epi32(acc, _mm_mullo_epi32(px, _mm_set1_epi32(k[x])));
        }
        /* pil_clip8 on each lane: below 0 -> 0, else >> PRECISION, above 255 -> 255 */
        __m128i v = _mm_srai_epi32(_mm_max_epi32(acc, zero), PIL_PRECISION_BITS);
        v = _mm_min_epi32(v, top);
        const uint32_t bytes = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(_mm_packus_epi32(v, zero), zero));
        o[xx * 3] = (uint8_t)bytes, o[xx * 3 + 1] = (uint8_t)(bytes >> 8), o[xx * 3 + 2] = (uint8_t)(bytes >> 16);
    }
}

/* out rows (rows, out_w, ch) = horizontal pass over in rows first_row.. Rows in parallel:
 * one image alone (predict) gets every core; inside a parallel loop over images this
 * runs serially. */
static void resample_horizontal(uint8_t *out, int out_w, int rows, const uint8_t *in, int in_w,
                                int first_row, int ch, const resample_axis *a) {
    const int rgb_vector = ch == 3 && __builtin_cpu_supports("sse4.1");
#pragma omp parallel for schedule(static) if (rows >= 64)
    for (int yy = 0; yy < rows; yy++) {
        const uint8_t *row = in + (size_t)(yy + first_row) * in_w * ch;
        uint8_t *o = out + (size_t)yy * out_w * ch;
        if (rgb_vector) {
            resample_row3_sse41(o, out_w, row, in_w, a);
            continue;
        }
        for (int xx = 0; xx < out_w; xx++) {
            int xmin = a->bounds[2 * xx], xmax = a->bounds[2 * xx + 1];
            const int32_t *k = a->kk + (size_t)xx * a->ksize;
            resample_pixel(o + xx * ch, row + (size_t)xmin * ch, k, xmax, ch);
        }
    }
}

/* out (out_h, w, ch) = vertical pass; a's bounds index rows of in relative to
 * row_offset (rows of in before row_offset are never read). */
static int resample_vertical(uint8_t *out, int out_h, const uint8_t *in, int w, int ch,
                             int row_offset, const resample_axis *a) {
    size_t stride = (size_t)w * ch;
    /* row by row into an int32 accumulator row (vectorises; integer sums, so the same
     * values as Pillow's pixel-by-pixel loop) */
    const int nt = omp_get_max_threads();
    int32_t *accs = malloc(sizeof(int32_t) * stride * (size_t)nt); /* one row per thread */
    if (!accs) return uf_error("resize: out of memory");
#pragma omp parallel for schedule(static) if (out_h >= 64)
    for (int yy = 0; yy < out_h; yy++) {
        int32_t *acc = accs + stride * (size_t)omp_get_thread_num();
        int ymin = a->bounds[2 * yy] - row_offset, ymax = a->bounds[2 * yy + 1];
        const int32_t *k = a->kk + (size_t)yy * a->ksize;
        const uint8_t *base = in + (size_t)ymin * stride;
        uint8_t *o = out + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) acc[i] = 1 << (PIL_PRECISION_BITS - 1);
        for (int y = 0; y < ymax; y++) {
            const uint8_t *r = base + (size_t)y * stride;
            const int32_t ky = k[y];
            for (size_t i = 0; i < stride; i++) acc[i] += (int32_t)r[i] * ky;
        }
        for (size_t i = 0; i < stride; i++) o[i] = pil_clip8(acc[i]);
    }
    free(accs);
    return UF_OK;
}

uf_image *uf_image_resize_pil_bilinear(const uf_image *src, int out_width, int out_height) {
    if (!src || !src->pixels || (src->channels != 1 && src->channels != 3) ||
        check_dims(src->width, src->height) != UF_OK) {
        uf_error("resize: invalid source image");
        return NULL;
    }
    if (check_dims(out_width, out_height) != UF_OK) {
        uf_error_prefix("resize to %dx%d", out_width, out_height);
        return NULL;
    }
    int ch = src->channels;
    uf_image *out = uf_image_new(out_width, out_height, ch);
    if (!out) return NULL;
    int need_h = out_width != src->width, need_v = out_height != src->height;
    if (!need_h && !need_v) {
        memcpy(out->pixels, src->pixels, (size_t)src->width * src->height * ch);
        return out;
    }
    resample_axis ax = {0}, ay = {0};
    uint8_t *tmp = NULL;
    if (axis_init(&ax, src->width, out_width) != UF_OK ||
        axis_init(&ay, src->height, out_height) != UF_OK)
        goto fail;
    if (need_h && !need_v) {
        resample_horizontal(out->pixels, out_width, out_height, src->pixels, src->width, 0, ch, &ax);
    } else if (!need_h) {
        if (resample_vertical(out->pixels, out_height, src->pixels, out_width, ch, 0, &ay) != UF_OK) goto fail;
    } else {
        /* Like Pillow: the horizontal pass only covers the rows the vertical
         * pass reads (results are the same either way). */
        int first = ay.bounds[0];
        int last = ay.bounds[2 * out_height - 2] + ay.bounds[2 * out_height - 1];
        tmp = uf_alloc((size_t)(last - first) * out_width * ch);
        if (!tmp) goto fail;
        resample_horizontal(tmp, out_width, last - first, src->pixels, src->width, first, ch, &ax);
        if (resample_vertical(out->pixels, out_height, tmp, out_width, ch, first, &ay) != UF_OK) goto fail;
    }
    uf_free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return out;
fail:
    uf_free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    uf_image_free(out);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* ImageNet normalisation                                                    */

void uf_image_to_imagenet(const uf_image *img, float *out) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f};
    static const float stdv[3] = {0.229f, 0.224f, 0.225f};
    UF_ASSERT(img && img->pixels && out && (img->channels == 1 || img->channels == 3));
    size_t npix = (size_t)img->width * img->height;
    int ch = img->channels;
    for (int c = 0; c < 3; c++) {
        /* torch: ToTensor's x.div(255) then Normalize's sub_(mean).div_(std), all float32 */
        float lut[256];
        for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - mean[c]) / stdv[c];
        float *o = out + (size_t)c * npix;
        const uint8_t *p = img->pixels + (ch == 3 ? c : 0);
        for (size_t i = 0; i < npix; i++) o[i] = lut[p[i * ch]];
    }
}

/* ------------------------------------------------------------------------ */
/* Fitting an image to the model's input                                     */

/* Reads a decimal side at *p (advanced), 0 when there is none or it is out of range. */
static int parse_side(const char **p) {
    long v = 0;
    const char *s = *p;
    while (*s >= '0' && *s <= '9' && v <= UF_IMAGE_MAX_SIDE) v = v * 10 + (*s++ - '0');
    if (s == *p || v < 1 || v > UF_IMAGE_MAX_SIDE) return 0;
    *p = s;
    return (int)v;
}

int uf_parse_size(const char *text, int *width, int *height) {
    const char *p = text;
    int w = parse_side(&p), h = w;
    if (w && (*p == 'x' || *p == 'X')) {
        p++;
        h = parse_side(&p);
    }
    if (!w || !h || *p)
        return uf_error("size '%.40s' is not N or WxH (sides 1..%d pixels, e.g. 256 or 512x128)", text,
                        UF_IMAGE_MAX_SIDE);
    *width = w, *height = h;
    return UF_OK;
}

const char *uf_fit_mode_name(uf_fit_mode fit) { return fit == UF_FIT_KEEP_ASPECT ? "keep-aspect" : "stretch"; }

/* Keep-aspect: the size the image is resized to before the crop (see image.h). */
static void cover_size(const uf_input_geometry *g, int src_w, int src_h, int *new_w, int *new_h) {
    if ((int64_t)src_w * g->height >= (int64_t)g->width * src_h) {
        *new_h = g->height;
        *new_w = (int)((double)g->height * src_w / src_h); /* Python's int(size * long / short) */
        if (*new_w < g->width) *new_w = g->width;        /* guards a rounding below the target */
    } else {
        *new_w = g->width;
        *new_h = (int)((double)g->width * src_h / src_w);
        if (*new_h < g->height) *new_h = g->height;
    }
}

/* torchvision CenterCrop's offset: int(round((size - crop) / 2.0)), round half to even. */
static int crop_offset(int size, int crop) { return (int)nearbyint((size - crop) / 2.0); }

void uf_fit_window(const uf_input_geometry *g, int src_w, int src_h, int win[4]) {
    win[0] = win[1] = 0, win[2] = src_w, win[3] = src_h;
    if (g->fit != UF_FIT_KEEP_ASPECT || src_w < 1 || src_h < 1) return;
    int nw, nh;
    cover_size(g, src_w, src_h, &nw, &nh);
    const int left = crop_offset(nw, g->width), top = crop_offset(nh, g->height);
    const long x0 = lround((double)left * src_w / nw), x1 = lround((double)(left + g->width) * src_w / nw);
    const long y0 = lround((double)top * src_h / nh), y1 = lround((double)(top + g->height) * src_h / nh);
    win[0] = (int)x0, win[1] = (int)y0;
    win[2] = (int)(x1 > x0 ? x1 - x0 : 1), win[3] = (int)(y1 > y0 ? y1 - y0 : 1);
}

uf_image *uf_image_fit(const uf_image *src, const uf_input_geometry *g) {
    if (g->fit != UF_FIT_KEEP_ASPECT) return uf_image_resize_pil_bilinear(src, g->width, g->height);
    if (!src || check_dims(src->width, src->height) != UF_OK || check_dims(g->width, g->height) != UF_OK) {
        uf_error("fit: invalid image or size %dx%d", g->width, g->height);
        return NULL;
    }
    int nw, nh;
    cover_size(g, src->width, src->height, &nw, &nh);
    uf_image *r = uf_image_resize_pil_bilinear(src, nw, nh);
    if (!r || (nw == g->width && nh == g->height)) return r;
    uf_image *out = uf_image_new(g->width, g->height, r->channels);
    if (out) {
        const int left = crop_offset(nw, g->width), top = crop_offset(nh, g->height), ch = r->channels;
        for (int y = 0; y < g->height; y++)
            memcpy(out->pixels + (size_t)y * g->width * ch, r->pixels + ((size_t)(top + y) * nw + left) * ch,
                   (size_t)g->width * ch);
    }
    uf_image_free(r);
    return out;
}

int uf_image_load_fitted(const char *path, const uf_input_geometry *g, float *out) {
    uf_image *img = uf_image_load(path, 3);
    if (!img) return UF_ERR;
    uf_image *r = uf_image_fit(img, g);
    uf_image_free(img);
    if (!r) return uf_error_prefix("image '%s'", path);
    uf_image_to_imagenet(r, out);
    uf_image_free(r);
    return UF_OK;
}

int uf_image_load_for_backbone(const char *path, int size, float *out) {
    const uf_input_geometry g = {size, size, UF_FIT_STRETCH};
    return uf_image_load_fitted(path, &g, out);
}

/* ------------------------------------------------------------------------ */
/* Atomic PNG writing                                                        */

typedef struct {
    jmp_buf jb;
    char msg[200];
    FILE *fp;
} png_err_ctx;

static void png_err_fn(png_structp png, png_const_charp msg) {
    png_err_ctx *ctx = png_get_error_ptr(png);
    /* libpng says "Write Error" for any failed fwrite: add the system's reason (disk full, file too large). */
    int e = errno;
    if (ctx->fp && ferror(ctx->fp) && e)
        snprintf(ctx->msg, sizeof ctx->msg, "%s: %s", msg ? msg : "libpng error", strerror(e));
    else
        snprintf(ctx->msg, sizeof ctx->msg, "%s", msg ? msg : "libpng error");
    longjmp(ctx->jb, 1);
}

static void png_warn_fn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* ---- TIFF decoding (libtiff) ---- */

typedef struct {
    const unsigned char *data;
    toff_t len, pos;
    char msg[200]; /* the first error libtiff reported */
} tiff_mem;

static tmsize_t tiff_read(thandle_t h, void *buf, tmsize_t n) {
    tiff_mem *m = h;
    if (n < 0) return -1;
    if (m->pos >= m->len) return 0; /* a seek may go past the end */
    toff_t k = (toff_t)n > m->len - m->pos ? m->len - m->pos : (toff_t)n;
    memcpy(buf, m->data + m->pos, (size_t)k);
    m->pos += k;
    return (tmsize_t)k;
}
static tmsize_t tiff_write(thandle_t h, void *buf, tmsize_t n) {
    (void)h, (void)buf, (void)n;
    return -1;
}
static toff_t tiff_seek(thandle_t h, toff_t off, int whence) {
    tiff_mem *m = h;
    toff_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->len;
    if (off > (toff_t)-1 - base) return (toff_t)-1;
    m->pos = base + off;
    return m->pos;
}
static int tiff_close(thandle_t h) {
    (void)h;
    return 0;
}
static toff_t tiff_size(thandle_t h) { return ((tiff_mem *)h)->len; }
static int tiff_map(thandle_t h, void **base, toff_t *size) {
    (void)h, (void)base, (void)size;
    return 0;
}
static void tiff_unmap(thandle_t h, void *base, toff_t size) { (void)h, (void)base, (void)size; }
static int tiff_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    (void)tif, (void)module;
    tiff_mem *m = user;
    if (!m->msg[0]) vsnprintf(m->msg, sizeof m->msg, fmt, ap);
    return 1;
}
static int tiff_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    (void)tif, (void)user, (void)module, (void)fmt, (void)ap;
    return 1; /* unknown tags and the like: not worth a line */
}

/* The first image of a TIFF file as 8-bit samples (any photometric, bit depth and
 * compression libtiff knows): 1 or 2 channels for gray (+ alpha), 3 or 4 for colour
 * (+ alpha). Sizes are checked before anything is allocated. NULL + why. */
static unsigned char *tiff_decode_8bit(const unsigned char *data, size_t len, int *w, int *h, int *channels,
                                       char *why, size_t why_cap) {
    tiff_mem m = {data, (toff_t)len, 0, ""};
    TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
    if (!opts) {
        snprintf(why, why_cap, "out of memory");
        return NULL;
    }
    TIFFOpenOptionsSetErrorHandlerExtR(opts, tiff_error, &m);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, tiff_warning, &m);
    TIFF *tif = TIFFClientOpenExt("image", "rm", &m, tiff_read, tiff_write, tiff_seek, tiff_close, tiff_size,
                                  tiff_map, tiff_unmap, opts);
    TIFFOpenOptionsFree(opts);
    unsigned char *px = NULL;
    uint32_t *raster = NULL;
    uint32_t tw = 0, th = 0;
    uint16_t spp = 1, photometric = 0, extra = 0, *extra_types = NULL;
    char emsg[1024] = "";
    if (!tif) goto fail;
    if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &tw) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &th)) {
        snprintf(m.msg, sizeof m.msg, "no image size in the TIFF header");
        goto fail;
    }
    if (tw > INT_MAX || th > INT_MAX || check_dims((int)tw, (int)th) != UF_OK) {
        snprintf(m.msg, sizeof m.msg, "%s", uf_last_error());
        goto fail;
    }
    if ((size_t)tw * th > ((size_t)1 << 20) + len * max_pixels_per_byte(FORMAT_TIFF)) {
        snprintf(m.msg, sizeof m.msg, "%ux%u pixels cannot come from a %zu-byte file (truncated or corrupt)", tw, th,
                 len);
        goto fail;
    }
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(tif, TIFFTAG_PHOTOMETRIC, &photometric);
    TIFFGetFieldDefaulted(tif, TIFFTAG_EXTRASAMPLES, &extra, &extra_types);
    const size_t np = (size_t)tw * th;
    uint16_t bits = 8, planar = PLANARCONFIG_CONTIG;
    TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bits);
    TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
    const int plain = !TIFFIsTiled(tif) && planar == PLANARCONFIG_CONTIG && (bits == 8 || bits == 16) &&
                      ((photometric == PHOTOMETRIC_MINISBLACK && spp >= 1 && spp <= 2) ||
                       (photometric == PHOTOMETRIC_RGB && spp >= 3 && spp <= 4));
    if (plain) {
        /* Gray, gray + alpha, RGB, RGBA in strips: the samples as stored (16-bit: the high
         * byte), alpha not premultiplied, as Pillow and stb read them. */
        const tmsize_t row = TIFFScanlineSize(tif);
        unsigned char *line = row > 0 ? malloc((size_t)row) : NULL;
        px = malloc(np * spp);
        if (!line || !px || (size_t)row < (size_t)tw * spp * (bits / 8)) {
            free(line);
            snprintf(m.msg, sizeof m.msg, "out of memory for %ux%u pixels", tw, th);
            goto fail;
        }
        for (uint32_t y = 0; y < th; y++) {
            if (TIFFReadScanline(tif, line, y, 0) < 0) {
                free(line);
                if (!m.msg[0]) snprintf(m.msg, sizeof m.msg, "cannot decode row %u of the TIFF image data", y);
                goto fail;
            }
            unsigned char *o = px + (size_t)y * tw * spp;
            if (bits == 8) {
                memcpy(o, line, (size_t)tw * spp);
            } else {
                for (size_t i = 0; i < (size_t)tw * spp; i++) {
                    uint16_t v;
                    memcpy(&v, line + 2 * i, 2); /* libtiff gives host byte order */
                    o[i] = (unsigned char)(v >> 8);
                }
            }
        }
        free(line);
        TIFFClose(tif);
        *w = (int)tw, *h = (int)th, *channels = spp;
        return px;
    }
    /* anything else libtiff knows (palette, YCbCr, bilevel, tiles, planar): its RGBA
     * interface (which premultiplies an unassociated alpha) */
    if (!TIFFRGBAImageOK(tif, emsg)) {
        snprintf(m.msg, sizeof m.msg, "%s", emsg);
        goto fail;
    }
    raster = malloc(sizeof(uint32_t) * np);
    if (!raster) {
        snprintf(m.msg, sizeof m.msg, "out of memory for %ux%u pixels", tw, th);
        goto fail;
    }
    m.msg[0] = '\0';
    if (!TIFFReadRGBAImageOriented(tif, tw, th, raster, ORIENTATION_TOPLEFT, 1)) {
        if (!m.msg[0]) snprintf(m.msg, sizeof m.msg, "cannot decode the TIFF image data");
        goto fail;
    }
    const int gray = (photometric == PHOTOMETRIC_MINISBLACK || photometric == PHOTOMETRIC_MINISWHITE) && spp - extra <= 1;
    const int nc = gray ? 1 : extra > 0 ? 4 : 3;
    px = malloc(np * (size_t)nc);
    if (!px) {
        snprintf(m.msg, sizeof m.msg, "out of memory for %ux%u pixels", tw, th);
        goto fail;
    }
    for (size_t i = 0; i < np; i++) {
        const uint32_t v = raster[i];
        if (nc == 1) {
            px[i] = (unsigned char)TIFFGetR(v);
        } else {
            unsigned char *o = px + i * (size_t)nc;
            o[0] = (unsigned char)TIFFGetR(v), o[1] = (unsigned char)TIFFGetG(v), o[2] = (unsigned char)TIFFGetB(v);
            if (nc == 4) o[3] = (unsigned char)TIFFGetA(v);
        }
    }
    free(raster);
    TIFFClose(tif);
    *w = (int)tw, *h = (int)th, *channels = nc;
    return px;
fail:
    one_line(m.msg[0] ? m.msg : "not a readable TIFF file", why, why_cap);
    free(raster);
    free(px);
    if (tif) TIFFClose(tif);
    return NULL;
}

/* ---- PNG decoding (libpng) ---- */

typedef struct {
    const unsigned char *data;
    size_t len, pos;
} png_mem_reader;

static void png_read_mem(png_structp png, png_bytep out, size_t n) {
    png_mem_reader *r = png_get_io_ptr(png);
    if (n > r->len - r->pos) png_error(png, "truncated PNG (data ends early)");
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

/* The w x h PNG in data as 8-bit samples, 1-4 channels as stored (palette expanded to RGB,
 * transparency to an alpha channel, 16-bit to its high byte, low bit depths scaled to
 * 0..255: what stb_image returns for the same file). NULL with why filled on failure. */
static unsigned char *png_decode_8bit(const unsigned char *data, size_t len, int w, int h, int *channels,
                                      char *why, size_t why_cap) {
    png_err_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    png_mem_reader rd = {data, len, 0};
    /* volatile: assigned after setjmp, read after a longjmp */
    unsigned char *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_err_fn, png_warn_fn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        snprintf(why, why_cap, "out of memory");
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        return NULL;
    }
    if (setjmp(ctx.jb)) {
        one_line(ctx.msg, why, why_cap);
        png_destroy_read_struct(&png, &info, NULL);
        free(px);
        free(rows);
        return NULL;
    }
    png_set_read_fn(png, &rd, png_read_mem);
    png_set_user_limits(png, (png_uint_32)w, (png_uint_32)h);
    png_read_info(png, info);
    if ((int)png_get_image_width(png, info) != w || (int)png_get_image_height(png, info) != h)
        png_error(png, "size differs from the header read before");
    png_set_expand(png); /* palette -> RGB, gray < 8 bits -> 8, tRNS -> alpha */
    png_set_strip_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int nc = png_get_channels(png, info);
    const size_t rowbytes = png_get_rowbytes(png, info);
    if (nc < 1 || nc > 4 || rowbytes != (size_t)w * nc) png_error(png, "unexpected row layout after expansion");
    px = malloc(rowbytes * (size_t)h);
    rows = malloc(sizeof(png_bytep) * (size_t)h);
    if (!px || !rows) png_error(png, "out of memory");
    for (int y = 0; y < h; y++) rows[y] = px + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *channels = nc;
    return px;
}

/* Writes rows to an open FILE with libpng. bit_depth 8: rows are the image's
 * bytes; bit_depth 16 (gray): samples are converted to big-endian per row. */
static int png_write_stream(FILE *fp, const char *path, int width, int height, int channels,
                            int bit_depth, const void *pixels) {
    png_err_ctx ctx;
    ctx.msg[0] = 0;
    ctx.fp = fp;
    size_t row_bytes = (size_t)width * channels * (bit_depth / 8);
    /* volatile: lives across setjmp/longjmp (set before setjmp, never after) */
    unsigned char *volatile row16 = bit_depth == 16 ? malloc(row_bytes) : NULL;
    if (bit_depth == 16 && !row16) return uf_error("png '%s': out of memory", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_err_fn, png_warn_fn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        free(row16);
        return uf_error("png '%s': cannot create libpng writer", path);
    }
    if (setjmp(ctx.jb)) {
        /* only png, info and row16 live across the jump; none were modified */
        png_destroy_write_struct(&png, &info);
        free(row16);
        return uf_error("png '%s': libpng: %s", path, ctx.msg);
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, bit_depth,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) {
        if (bit_depth == 16) {
            const uint16_t *s = (const uint16_t *)pixels + (size_t)y * width * channels;
            unsigned char *r = row16;
            for (size_t i = 0; i < (size_t)width * channels; i++) {
                r[2 * i] = (unsigned char)(s[i] >> 8); /* PNG is big-endian */
                r[2 * i + 1] = (unsigned char)(s[i] & 0xff);
            }
            png_write_row(png, r);
        } else {
            png_write_row(png, (png_const_bytep)pixels + (size_t)y * row_bytes);
        }
    }
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(row16);
    return UF_OK;
}

static int png_write_atomic(const char *path, int width, int height, int channels, int bit_depth,
                            const void *pixels, uf_png_mode mode, int durable) {
    if (!path || !*path) return uf_error("png: empty path");
    if (!pixels) return uf_error("png '%s': NULL pixels", path);
    if (check_dims(width, height) != UF_OK) return uf_error_prefix("png '%s'", path);
    uf_atomic_file af;
    if (uf_atomic_begin(&af, path) != UF_OK) return UF_ERR;
    const uf_png_filter filter = mode == UF_PNG_FAST         ? UF_PNG_FILTER_UP
                                 : mode == UF_PNG_FAST_PHOTO ? UF_PNG_FILTER_PAETH
                                                             : UF_PNG_FILTER_NONE;
    const int rc = mode == UF_PNG_COMPACT
                       ? png_write_stream(af.fp, path, width, height, channels, bit_depth, pixels)
                       : uf_png_fast_write(af.fp, path, width, height, channels, bit_depth, pixels, filter,
                                           mode == UF_PNG_FAST_PHOTO ? 1 : 0);
    if (rc != UF_OK) {
        uf_atomic_abort(&af);
        return UF_ERR;
    }
    return uf_atomic_commit_as(&af, durable);
}

int uf_image_write_png_as(const char *path, const uf_image *img, uf_png_mode mode, int durable) {
    if (!img || !img->pixels || (img->channels != 1 && img->channels != 3))
        return uf_error("png '%s': image must be 8-bit gray or RGB", path ? path : "(null)");
    return png_write_atomic(path, img->width, img->height, img->channels, 8, img->pixels, mode, durable);
}

int uf_png_write_gray16_as(const char *path, const uint16_t *pixels, int width, int height, uf_png_mode mode,
                           int durable) {
    return png_write_atomic(path, width, height, 1, 16, pixels, mode, durable);
}

int uf_image_write_png(const char *path, const uf_image *img) {
    return uf_image_write_png_as(path, img, UF_PNG_COMPACT, 1);
}

int uf_png_write_gray16(const char *path, const uint16_t *pixels, int width, int height) {
    return uf_png_write_gray16_as(path, pixels, width, height, UF_PNG_COMPACT, 1);
}

int uf_image_write_jpeg(const char *path, const uf_image *img, int quality, int durable) {
    if (!img || !img->pixels || (img->channels != 1 && img->channels != 3))
        return uf_error("jpeg '%s': image must be 8-bit gray or RGB", path ? path : "(null)");
    if (check_dims(img->width, img->height) != UF_OK) return uf_error_prefix("jpeg '%s'", path);
    tjhandle tj = tjInitCompress();
    if (!tj) return uf_error("jpeg '%s': cannot create a libjpeg-turbo compressor", path);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    const int gray = img->channels == 1;
    int rc = UF_OK;
    if (tjCompress2(tj, img->pixels, img->width, 0, img->height, gray ? TJPF_GRAY : TJPF_RGB, &buf, &len,
                    gray ? TJSAMP_GRAY : TJSAMP_420, quality, 0) != 0)
        rc = uf_error("jpeg '%s': libjpeg-turbo: %s", path, tjGetErrorStr2(tj));
    tjDestroy(tj);
    if (rc == UF_OK) rc = uf_write_file_atomic_as(path, buf, len, durable);
    tjFree(buf);
    return rc;
}

/* A PNG file in memory (libpng defaults), as uf_image_encode_png. */
static int png_encode(int width, int height, int channels, int bit_depth, const void *pixels, unsigned char **data,
                      size_t *len) {
    *data = NULL, *len = 0;
    if (check_dims(width, height) != UF_OK) return uf_error_prefix("png in memory");
    char *buf = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&buf, &n);
    if (!fp) return uf_error("png in memory: out of memory");
    int rc = png_write_stream(fp, "(memory)", width, height, channels, bit_depth, pixels);
    if (fclose(fp) != 0 && rc == UF_OK) rc = uf_error("png in memory: out of memory");
    if (rc != UF_OK) {
        free(buf);
        return UF_ERR;
    }
    *data = (unsigned char *)buf, *len = n;
    return UF_OK;
}

int uf_image_encode_png(const uf_image *img, unsigned char **data, size_t *len) {
    *data = NULL, *len = 0;
    if (!img || !img->pixels || (img->channels != 1 && img->channels != 3))
        return uf_error("png in memory: image must be 8-bit gray or RGB");
    return png_encode(img->width, img->height, img->channels, 8, img->pixels, data, len);
}

int uf_png_encode_gray16(const uint16_t *pixels, int width, int height, unsigned char **data, size_t *len) {
    *data = NULL, *len = 0;
    if (!pixels) return uf_error("png in memory: no pixels");
    return png_encode(width, height, 1, 16, pixels, data, len);
}
