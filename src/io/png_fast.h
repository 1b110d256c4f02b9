/* png_fast.h - PNG files written and read for speed (the common kinds; see each function).
 *
 * Writing: the image data deflated by ISA-L's igzip
 * (Debian libisal-dev), 4-10x faster than zlib on predict's maps and overlays
 * (docs/results.md, issue 25), in a PNG that any decoder reads as usual.
 *
 * libpng cannot hand its deflate to another library, so the few chunks around the data
 * are written here: the signature, IHDR, IDAT (the zlib stream of the filtered rows, in
 * chunks of at most 1 MiB), IEND, each with its CRC-32 (zlib's crc32). Only what the
 * outputs need: 8-bit gray or RGB, 16-bit gray; no interlacing; one filter for all rows
 * (None, Up or Paeth). tests/test_image.c (test_png_fast_write) reads every mode back with libpng.
 */
#ifndef UF_IO_PNG_FAST_H
#define UF_IO_PNG_FAST_H

#include <stdio.h>

/* The PNG row filter (the PNG spec's numbers), one for all rows. */
typedef enum { UF_PNG_FILTER_NONE = 0, UF_PNG_FILTER_UP = 2, UF_PNG_FILTER_PAETH = 4 } uf_png_filter;

/* Writes a PNG of pixels (height rows of width * channels samples; bit_depth 8: bytes,
 * 16: uint16_t in host order, gray only) to fp, every row filtered with `filter`, deflated
 * with ISA-L level 1 looking back at most 2^window_bits bytes (0: deflate's 32 KiB). UF_OK, or
 * UF_ERR + message naming `name` (bad arguments, out of memory, a write error). */
int uf_png_fast_write(FILE *fp, const char *name, int width, int height, int channels, int bit_depth,
                      const void *pixels, uf_png_filter filter, int window_bits);

/* Reading, for speed, the common kind of PNG: 8-bit gray, gray + alpha, RGB or RGBA, not
 * interlaced, no tRNS chunk (what cameras and Pillow write). The chunks are walked here (every
 * CRC checked), the image data inflated by ISA-L (its Adler-32 checked; 3x zlib's speed) and the
 * rows unfiltered here (Paeth with SSE2). The pixels (height rows of width * *channels bytes,
 * malloc'ed), or NULL when the file is of another kind or anything in it is off: the caller
 * then decodes it with libpng, which reads every kind and words the errors. width and height
 * are the IHDR's, which the caller has checked against its limits. */
unsigned char *uf_png_fast_read(const unsigned char *data, size_t len, int width, int height, int *channels);

#endif
