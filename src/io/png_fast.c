#include "io/png_fast.h"

#include <errno.h>
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h> /* crc32 */

#include "core/error.h"

#define IDAT_CHUNK (1 << 20)
#define ISAL_PAD 256

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* One chunk: length, type, data, CRC-32 of type and data. */
static int put_chunk(FILE *fp, const char type[4], const unsigned char *data, size_t n) {
    unsigned char head[8], tail[4];
    put_be32(head, (uint32_t)n);
    memcpy(head + 4, type, 4);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, (uInt)n);
    put_be32(tail, (uint32_t)crc);
    return fwrite(head, 1, 8, fp) == 8 && (n == 0 || fwrite(data, 1, n, fp) == n) && fwrite(tail, 1, 4, fp) == 4;
}

/* Row y of 16-bit gray samples (host order) as the PNG holds them, big-endian, into out. */
static void row_bytes16(const uint16_t *pixels, int width, int y, unsigned char *out) {
    const uint16_t *s = pixels + (size_t)y * width;
    for (int x = 0; x < width; x++) out[2 * x] = (unsigned char)(s[x] >> 8), out[2 * x + 1] = (unsigned char)s[x];
}

/* Paeth predictor of one byte (PNG spec 9.4). */
static unsigned char paeth(int a, int b, int c) {
    const int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    return (unsigned char)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

/* d = the filtered row (PNG spec 9): cur and prev the row and the one above (zeros above the
 * first), n bytes, bpp bytes per pixel. Each byte depends on the unfiltered rows only, so the
 * loops vectorise. */
static void filter_row(uf_png_filter filter, const unsigned char *cur, const unsigned char *prev, size_t n, int bpp,
                       unsigned char *restrict d) {
    switch (filter) {
    case UF_PNG_FILTER_NONE: memcpy(d, cur, n); break;
    case UF_PNG_FILTER_UP:
        for (size_t i = 0; i < n; i++) d[i] = (unsigned char)(cur[i] - prev[i]);
        break;
    case UF_PNG_FILTER_PAETH:
        for (size_t i = 0; i < (size_t)bpp && i < n; i++) d[i] = (unsigned char)(cur[i] - prev[i]); /* a = c = 0 */
        for (size_t i = (size_t)bpp; i < n; i++)
            d[i] = (unsigned char)(cur[i] - paeth(cur[i - bpp], prev[i], prev[i - bpp]));
        break;
    }
}

int uf_png_fast_write(FILE *fp, const char *name, int width, int height, int channels, int bit_depth,
                      const void *pixels, uf_png_filter filter, int window_bits) {
    if (width < 1 || height < 1 || !pixels || !(channels == 1 || channels == 3) ||
        !(bit_depth == 8 || (bit_depth == 16 && channels == 1)) ||
        !(filter == UF_PNG_FILTER_NONE || filter == UF_PNG_FILTER_UP || filter == UF_PNG_FILTER_PAETH) ||
        window_bits < 0 || window_bits > 15)
        return uf_error("png '%s': unsupported layout (%dx%d, %d channels, %d bits, filter %d, window %d bits)", name,
                        width, height, channels, bit_depth, (int)filter, window_bits);
    const int bpp = channels * (bit_depth / 8);
    const size_t row = (size_t)width * bpp, n = (row + 1) * height;
    /* deflate's worst case is n plus 5 bytes per 64 KiB stored block; ISA-L's own headers fit
     * in the rest */
    const size_t cap = n + n / 8 + (1 << 16);
    /* ISA-L's vector code may read a little past the input and into its level buffer before writing it;
     * both are zeroed so that nothing it reads is undefined (valgrind memcheck) */
    unsigned char *filtered = malloc(n + ISAL_PAD), *out = malloc(cap), *level_buf = calloc(1, ISAL_DEF_LVL1_DEFAULT);
    unsigned char *rows = calloc(3, row);
    int rc = UF_OK;
    if (!filtered || !out || !level_buf || !rows) {
        rc = uf_error("png '%s': out of memory", name);
        goto done;
    }
    memset(filtered + n, 0, ISAL_PAD);
    /* rows: the zero row above the first, then two row buffers used in turn (16-bit rows are
     * byte-swapped into them; 8-bit rows are read in place) */
    for (int y = 0; y < height; y++) {
        unsigned char *f = filtered + (size_t)y * (row + 1);
        f[0] = (unsigned char)filter;
        const unsigned char *cur, *prev;
        if (bit_depth == 16) {
            unsigned char *slot = rows + row * (size_t)(1 + (y & 1));
            row_bytes16(pixels, width, y, slot);
            cur = slot;
            prev = y ? rows + row * (size_t)(1 + ((y - 1) & 1)) : rows;
        } else {
            cur = (const unsigned char *)pixels + (size_t)y * row;
            prev = y ? cur - row : rows;
        }
        filter_row(filter, cur, prev, row, bpp, f + 1);
    }
    struct isal_zstream z;
    memset(&z, 0, sizeof z);
    isal_deflate_stateless_init(&z);
    z.level = 1;
    z.level_buf = level_buf;
    z.level_buf_size = ISAL_DEF_LVL1_DEFAULT;
    z.hist_bits = (uint16_t)window_bits;
    z.gzip_flag = IGZIP_ZLIB;
    z.end_of_stream = 1;
    z.flush = NO_FLUSH;
    z.next_in = filtered;
    z.avail_in = (uint32_t)n;
    z.next_out = out;
    z.avail_out = (uint32_t)cap;
    if (n > UINT32_MAX - (1u << 20) || isal_deflate_stateless(&z) != COMP_OK) {
        rc = uf_error("png '%s': ISA-L could not deflate the image", name);
        goto done;
    }
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char ihdr[13];
    put_be32(ihdr, (uint32_t)width);
    put_be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = (unsigned char)bit_depth;
    ihdr[9] = channels == 1 ? 0 : 2; /* gray, RGB */
    ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, adaptive filtering, no interlace */
    int ok = fwrite(signature, 1, 8, fp) == 8 && put_chunk(fp, "IHDR", ihdr, sizeof ihdr);
    for (size_t off = 0; ok && off < z.total_out; off += IDAT_CHUNK) {
        const size_t len = z.total_out - off < IDAT_CHUNK ? z.total_out - off : IDAT_CHUNK;
        ok = put_chunk(fp, "IDAT", out + off, len);
    }
    if (!(ok && put_chunk(fp, "IEND", NULL, 0))) rc = uf_error("png '%s': write failed: %s", name, strerror(errno));
done:
    free(filtered), free(out), free(level_buf), free(rows);
    return rc;
}

/* ---- reading ---------------------------------------------------------------------- */

#include <emmintrin.h> /* SSE2: every x86-64 CPU */

static uint32_t get_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint32_t load24(const unsigned char *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16; }
static inline uint32_t load32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The Paeth row for BPP 3 or 4 with SSE2, one pixel per step, as libpng's intel code does:
 * 16-bit lanes, the same choice as paeth() (ties: a, then b). BPP is a constant at each call,
 * so the pixel loads and stores are plain moves (the loop is latency-bound on the left pixel). */
static inline __attribute__((always_inline)) void paeth_row_sse2(unsigned char *row, const unsigned char *prev,
                                                                 size_t n, const int BPP) {
    const __m128i zero = _mm_setzero_si128(), ones = _mm_set1_epi16(-1), low = _mm_set1_epi16(0xff);
    __m128i a = zero, c = zero; /* left and upper-left pixels, widened */
    for (size_t i = 0; i < n; i += (size_t)BPP) {
        /* 3 bytes assembled in a register: through memory, the narrow stores and the wide load
         * after them stall store forwarding (measured 4x slower) */
        const uint32_t bw = BPP == 4 ? load32(prev + i) : load24(prev + i);
        const uint32_t xw = BPP == 4 ? load32(row + i) : load24(row + i);
        const __m128i b = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)bw), zero);
        const __m128i x = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)xw), zero);
        const __m128i pa0 = _mm_sub_epi16(b, c), pb0 = _mm_sub_epi16(a, c);
        const __m128i pc0 = _mm_add_epi16(pa0, pb0);
        const __m128i pa = _mm_max_epi16(pa0, _mm_sub_epi16(zero, pa0)); /* |b - c| */
        const __m128i pb = _mm_max_epi16(pb0, _mm_sub_epi16(zero, pb0)); /* |a - c| */
        const __m128i pc = _mm_max_epi16(pc0, _mm_sub_epi16(zero, pc0)); /* |a + b - 2c| */
        /* a where pa <= pb and pa <= pc; else b where pb <= pc; else c */
        const __m128i not_a = _mm_or_si128(_mm_cmpgt_epi16(pa, pb), _mm_cmpgt_epi16(pa, pc));
        const __m128i use_b = _mm_andnot_si128(_mm_cmpgt_epi16(pb, pc), ones);
        __m128i pred = _mm_or_si128(_mm_and_si128(use_b, b), _mm_andnot_si128(use_b, c));
        pred = _mm_or_si128(_mm_andnot_si128(not_a, a), _mm_and_si128(not_a, pred));
        a = _mm_and_si128(_mm_add_epi16(x, pred), low);
        c = b;
        const uint32_t out = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(a, zero));
        row[i] = (unsigned char)out, row[i + 1] = (unsigned char)(out >> 8), row[i + 2] = (unsigned char)(out >> 16);
        if (BPP == 4) row[i + 3] = (unsigned char)(out >> 24);
    }
}

/* The Average row for BPP 3 or 4 with SSE2, one pixel per step in 16-bit lanes: the scalar
 * loop carries each byte through memory to the pixel on its right (a store-forwarding stall
 * per byte); here the left pixel stays in a register. floor((left + up) / 2), as the spec. */
static inline __attribute__((always_inline)) void avg_row_sse2(unsigned char *row, const unsigned char *prev,
                                                               size_t n, const int BPP) {
    const __m128i zero = _mm_setzero_si128(), low = _mm_set1_epi16(0xff);
    __m128i a = zero; /* the left pixel, widened */
    for (size_t i = 0; i < n; i += (size_t)BPP) {
        /* 3-byte pixels are read 4 bytes at a time but at the row's end (the 4th lane is
         * dropped by the store) */
        const int wide = BPP == 4 || i + 4 <= n;
        const uint32_t bw = wide ? load32(prev + i) : load24(prev + i);
        const uint32_t xw = wide ? load32(row + i) : load24(row + i);
        const __m128i b = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)bw), zero);
        const __m128i x = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)xw), zero);
        a = _mm_and_si128(_mm_add_epi16(x, _mm_srli_epi16(_mm_add_epi16(a, b), 1)), low);
        const uint32_t out = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(a, zero));
        row[i] = (unsigned char)out, row[i + 1] = (unsigned char)(out >> 8), row[i + 2] = (unsigned char)(out >> 16);
        if (BPP == 4) row[i + 3] = (unsigned char)(out >> 24);
    }
}

/* Average (3) or Paeth (4) rows of 3- or 4-byte pixels, with BPP a constant in each call. */
static void unfilter_row_sse2(int type, unsigned char *row, const unsigned char *prev, size_t n, int bpp) {
    if (type == 3)
        bpp == 3 ? avg_row_sse2(row, prev, n, 3) : avg_row_sse2(row, prev, n, 4);
    else
        bpp == 3 ? paeth_row_sse2(row, prev, n, 3) : paeth_row_sse2(row, prev, n, 4);
}

/* Undoes row's filter in place (n bytes, bpp bytes per pixel), prev the unfiltered row above
 * (zeros for the first). 0, or -1 for an unknown filter type. */
static int unfilter_row(int type, unsigned char *row, const unsigned char *prev, size_t n, int bpp) {
    switch (type) {
    case 0: return 0;
    case 1:
        for (size_t i = (size_t)bpp; i < n; i++) row[i] = (unsigned char)(row[i] + row[i - (size_t)bpp]);
        return 0;
    case 2:
        for (size_t i = 0; i < n; i++) row[i] = (unsigned char)(row[i] + prev[i]);
        return 0;
    case 3:
        if (bpp == 3 || bpp == 4) {
            unfilter_row_sse2(type, row, prev, n, bpp);
            return 0;
        }
        for (size_t i = 0; i < (size_t)bpp; i++) row[i] = (unsigned char)(row[i] + (prev[i] >> 1));
        for (size_t i = (size_t)bpp; i < n; i++)
            row[i] = (unsigned char)(row[i] + ((row[i - (size_t)bpp] + prev[i]) >> 1));
        return 0;
    case 4:
        if (bpp == 3 || bpp == 4) {
            unfilter_row_sse2(type, row, prev, n, bpp);
            return 0;
        }
        for (size_t i = 0; i < (size_t)bpp; i++) row[i] = (unsigned char)(row[i] + paeth(0, prev[i], 0));
        for (size_t i = (size_t)bpp; i < n; i++)
            row[i] = (unsigned char)(row[i] + paeth(row[i - (size_t)bpp], prev[i], prev[i - (size_t)bpp]));
        return 0;
    default: return -1;
    }
}

unsigned char *uf_png_fast_read(const unsigned char *data, size_t len, int width, int height, int *channels) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 + 25 || memcmp(data, sig, 8) != 0 || width < 1 || height < 1) return NULL;
    /* the chunks: IHDR first; IDATs consecutive; every CRC right; no tRNS; up to IEND (or the
     * end of the file after the IDATs, which libpng accepts too) */
    int nc = 0, seen_idat = 0, idat_done = 0;
    size_t idat_bytes = 0, first_idat = 0, pos = 8;
    while (pos + 12 <= len) {
        const uint32_t n = get_be32(data + pos);
        const unsigned char *type = data + pos + 4;
        if (n > 0x7fffffffu || n > len - pos - 12) return NULL;
        if (get_be32(data + pos + 8 + n) != crc32_gzip_refl(0, type, 4 + n)) return NULL;
        if (pos == 8) { /* IHDR */
            const unsigned char *d = type + 4;
            if (memcmp(type, "IHDR", 4) != 0 || n != 13 || get_be32(d) != (uint32_t)width ||
                get_be32(d + 4) != (uint32_t)height || d[8] != 8 || d[10] || d[11] || d[12])
                return NULL;
            nc = d[9] == 0 ? 1 : d[9] == 2 ? 3 : d[9] == 4 ? 2 : d[9] == 6 ? 4 : 0;
            if (!nc) return NULL; /* palette, or not a colour type */
        } else if (!memcmp(type, "IDAT", 4)) {
            if (idat_done) return NULL;
            if (!seen_idat) first_idat = pos;
            seen_idat = 1;
            idat_bytes += n;
        } else {
            if (seen_idat) idat_done = 1;
            if (!memcmp(type, "tRNS", 4) || !memcmp(type, "IHDR", 4)) return NULL;
            if (!memcmp(type, "IEND", 4)) break;
            if (!(type[0] & 0x20) && memcmp(type, "PLTE", 4) != 0) return NULL; /* an unknown critical chunk */
        }
        pos += 12 + n;
    }
    if (!seen_idat || !nc) return NULL;
    /* the zlib stream: the IDATs' data, joined when there are several */
    unsigned char *joined = NULL;
    const unsigned char *z = data + first_idat + 8;
    if (idat_bytes != get_be32(data + first_idat)) {
        if (!(joined = malloc(idat_bytes))) return NULL;
        size_t off = 0;
        for (size_t p = first_idat; off < idat_bytes; p += 12 + get_be32(data + p)) {
            const uint32_t n = get_be32(data + p);
            memcpy(joined + off, data + p + 8, n);
            off += n;
        }
        z = joined;
    }
    const size_t stride = (size_t)width * (size_t)nc, raw_n = (stride + 1) * (size_t)height;
    unsigned char *raw = malloc(raw_n), *px = raw ? malloc(stride * (size_t)height) : NULL;
    int ok = px != NULL;
    if (ok) {
        struct inflate_state st;
        isal_inflate_init(&st);
        st.next_in = (uint8_t *)z, st.avail_in = (uint32_t)idat_bytes;
        st.next_out = raw, st.avail_out = (uint32_t)raw_n;
        st.crc_flag = ISAL_ZLIB; /* the zlib header and the Adler-32 are checked */
        ok = idat_bytes <= UINT32_MAX && raw_n <= UINT32_MAX && isal_inflate(&st) == ISAL_DECOMP_OK &&
             st.block_state == ISAL_BLOCK_FINISH && st.avail_out == 0;
    }
    free(joined);
    static const unsigned char zeros[4 * 65536]; /* the row above the first (width <= 65535) */
    for (int y = 0; ok && y < height; y++) {
        unsigned char *row = px + (size_t)y * stride;
        memcpy(row, raw + (size_t)y * (stride + 1) + 1, stride);
        ok = stride <= sizeof zeros &&
             unfilter_row(raw[(size_t)y * (stride + 1)], row, y ? row - stride : zeros, stride, nc) == 0;
    }
    free(raw);
    if (!ok) {
        free(px);
        return NULL;
    }
    *channels = nc;
    return px;
}
