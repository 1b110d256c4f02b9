/* stb_image_impl.c - the fuzz build compiles stb_image from the same header
 * that Debian's libstb is built from, so that the decoder is instrumented too
 * (coverage for libFuzzer, bounds checks for ASan); the normal build links
 * libstb instead. */
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
