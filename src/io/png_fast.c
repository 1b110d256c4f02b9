#include "io/png_fast.h"

#include <errno.h>
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

int uf_png_fast_write(FILE *fp, const char *name, int width, int height, int channels, int bit_depth,
                      const void *pixels, int filter_up) {
    if (width < 1 || height < 1 || !pixels || !(channels == 1 || channels == 3) ||
        !(bit_depth == 8 || (bit_depth == 16 && channels == 1)))
        return uf_error("png '%s': unsupported layout (%dx%d, %d channels, %d bits)", name, width, height, channels,
                        bit_depth);
    const size_t row = (size_t)width * channels * (bit_depth / 8), n = (row + 1) * height;
    /* deflate's worst case is n plus 5 bytes per 64 KiB stored block; ISA-L's own headers fit
     * in the rest */
    const size_t cap = n + n / 8 + (1 << 16);
    /* ISA-L's vector code may read a little past the input and into its level buffer before writing it;
     * both are zeroed so that nothing it reads is undefined (valgrind memcheck) */
    unsigned char *filtered = malloc(n + ISAL_PAD), *out = malloc(cap), *level_buf = calloc(1, ISAL_DEF_LVL1_DEFAULT);
    int rc = UF_OK;
    if (!filtered || !out || !level_buf) {
        rc = uf_error("png '%s': out of memory", name);
        goto done;
    }
    memset(filtered + n, 0, ISAL_PAD);
    for (int y = 0; y < height; y++) {
        unsigned char *f = filtered + (size_t)y * (row + 1);
        f[0] = filter_up ? 2 : 0;
        unsigned char *d = f + 1;
        if (bit_depth == 16) { /* PNG samples are big-endian */
            const uint16_t *s = (const uint16_t *)pixels + (size_t)y * width;
            for (int x = 0; x < width; x++) d[2 * x] = (unsigned char)(s[x] >> 8), d[2 * x + 1] = (unsigned char)s[x];
        } else {
            memcpy(d, (const unsigned char *)pixels + (size_t)y * row, row);
        }
    }
    if (filter_up) /* Up: each byte minus the one above (the first row against zeros); bottom up */
        for (int y = height - 1; y > 0; y--) {
            unsigned char *d = filtered + (size_t)y * (row + 1) + 1;
            const unsigned char *u = d - (row + 1);
            for (size_t i = 0; i < row; i++) d[i] = (unsigned char)(d[i] - u[i]);
        }
    struct isal_zstream z;
    memset(&z, 0, sizeof z);
    isal_deflate_stateless_init(&z);
    z.level = 1;
    z.level_buf = level_buf;
    z.level_buf_size = ISAL_DEF_LVL1_DEFAULT;
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
    free(filtered), free(out), free(level_buf);
    return rc;
}
