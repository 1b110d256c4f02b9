/* png_fast.h - PNG files written for speed: the image data deflated by ISA-L's igzip
 * (Debian libisal-dev), 4-10x faster than zlib on predict's maps and overlays
 * (docs/results.md, issue 25), in a PNG that any decoder reads as usual.
 *
 * libpng cannot hand its deflate to another library, so the few chunks around the data
 * are written here: the signature, IHDR, IDAT (the zlib stream of the filtered rows, in
 * chunks of at most 1 MiB), IEND, each with its CRC-32 (zlib's crc32). Only what the
 * outputs need: 8-bit gray or RGB, 16-bit gray; no interlacing; one filter for all rows
 * (None or Up). tests/test_pipeline.c decodes the files with libpng and compares pixels.
 */
#ifndef UF_IO_PNG_FAST_H
#define UF_IO_PNG_FAST_H

#include <stdio.h>

/* Writes a PNG of pixels (height rows of width * channels samples; bit_depth 8: bytes,
 * 16: uint16_t in host order, gray only) to fp. filter_up 1: every row filtered Up, 0:
 * None. UF_OK, or UF_ERR + message naming `name` (bad arguments, out of memory, a write
 * error; data that ISA-L cannot fit in its bound is an error the caller may retry with
 * libpng). */
int uf_png_fast_write(FILE *fp, const char *name, int width, int height, int channels, int bit_depth,
                      const void *pixels, int filter_up);

#endif
