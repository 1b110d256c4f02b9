/* The pictures of io/render.h against their per-pixel definitions: the overlay byte for byte
 * against jet() and a rounded blend computed pixel by pixel, the 16-bit map against lrintf. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "harness.h"
#include "io/render.h"

/* The definition: out = round((1 - alpha) * base + alpha * jet((map - lo) / (hi - lo))), per
 * pixel, with lrintf and the jet of uf_colormap_jet. */
static void overlay_reference(const uf_image *base, const float *map, float lo, float hi, float alpha, uint8_t *out) {
    const float span = hi > lo ? hi - lo : 1.0f, keep = 1.0f - alpha;
    const size_t n = (size_t)base->width * base->height;
    for (size_t i = 0; i < n; i++) {
        uint8_t heat[3];
        uf_colormap_jet((map[i] - lo) / span, heat);
        for (int c = 0; c < 3; c++) {
            const uint8_t b = base->pixels[i * base->channels + (base->channels == 3 ? c : 0)];
            out[3 * i + c] = (uint8_t)lrintf(keep * (float)b + alpha * (float)heat[c]);
        }
    }
}

static void test_jet_colours(void) {
    uint8_t rgb[3];
    uf_colormap_jet(0.0f, rgb);
    CHECK(rgb[0] == 0 && rgb[1] == 0 && rgb[2] == 128, "jet(0) = %d %d %d, dark blue expected", rgb[0], rgb[1], rgb[2]);
    uf_colormap_jet(0.5f, rgb);
    CHECK(rgb[0] == 128 && rgb[1] == 255 && rgb[2] == 128, "jet(.5) = %d %d %d", rgb[0], rgb[1], rgb[2]);
    uf_colormap_jet(1.0f, rgb);
    CHECK(rgb[0] == 128 && rgb[1] == 0 && rgb[2] == 0, "jet(1) = %d %d %d, dark red expected", rgb[0], rgb[1], rgb[2]);
    uf_colormap_jet(7.0f, rgb);
    CHECK(rgb[0] == 128 && rgb[1] == 0 && rgb[2] == 0, "jet clamps above 1");
}

static void test_overlay_matches_definition(void) {
    /* sizes around the renderer's chunk (1024 pixels), gray and RGB bases, maps in and out of
     * [lo, hi], several blends */
    static const int sizes[][2] = {{1, 1}, {31, 33}, {32, 32}, {45, 23}, {300, 7}, {97, 211}};
    static const float blends[][3] = {{0.0f, 1.0f, 0.5f}, {0.2f, 0.7f, 0.35f}, {-1.0f, 2.0f, 1.0f}, {0.5f, 0.5f, 0.0f}};
    uf_rng rng = uf_rng_seed(21);
    int cases = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int ch = 1; ch <= 3; ch += 2)
            for (size_t k = 0; k < sizeof blends / sizeof *blends; k++) {
                const int W = sizes[s][0], H = sizes[s][1];
                const size_t n = (size_t)W * H;
                uf_image *base = uf_image_new(W, H, ch);
                float *map = malloc(sizeof(float) * n);
                uint8_t *want = malloc(3 * n);
                for (size_t i = 0; i < n * ch; i++) base->pixels[i] = (uint8_t)(uf_rng_next(&rng) & 255);
                for (size_t i = 0; i < n; i++) map[i] = 1.4f * (float)uf_rng_uniform(&rng) - 0.2f;
                if (n > 4) map[0] = 0.0f, map[1] = 1.0f, map[2] = 0.375f, map[3] = 0.625f; /* tent corners */
                const float lo = blends[k][0], hi = blends[k][1], alpha = blends[k][2];
                overlay_reference(base, map, lo, hi, alpha, want);
                uf_image *got = uf_render_overlay(base, map, W, H, lo, hi, alpha);
                CHECK(got && got->channels == 3 && got->width == W && got->height == H, "%s", uf_last_error());
                size_t diff = 0;
                for (size_t i = 0; got && i < 3 * n; i++) {
                    if (got->pixels[i] != want[i] && !diff)
                        printf("  byte %zu: base %d map %.9g got %d want %d\n", i, base->pixels[ch == 3 ? i : i / 3],
                               (double)map[i / 3], got->pixels[i], want[i]);
                    diff += got->pixels[i] != want[i];
                }
                CHECK(diff == 0, "%dx%d, %d channel(s), lo %g hi %g alpha %g: %zu bytes differ", W, H, ch, lo, hi,
                      alpha, diff);
                cases++;
                uf_image_free(got);
                uf_image_free(base);
                free(map);
                free(want);
            }
    uf_image *base = uf_image_new(4, 4, 3);
    float map[20] = {0};
    CHECK(uf_render_overlay(base, map, 5, 4, 0.0f, 1.0f, 0.5f) == NULL && strstr(uf_last_error(), "5x4"),
          "a map of another size must be refused: %s", uf_last_error());
    uf_image_free(base);
    printf("  %d overlays byte for byte as the per-pixel definition\n", cases);
}

static void test_gray16_matches_lrintf(void) {
    enum { N = 70001 };
    float *map = malloc(sizeof(float) * N);
    uf_rng rng = uf_rng_seed(5);
    for (int i = 0; i < N; i++) map[i] = 1.2f * (float)uf_rng_uniform(&rng) - 0.1f;
    /* ties: k + 0.5 steps of 1/65535 round to the even neighbour */
    for (int i = 0; i < 64; i++) map[i] = ((float)(2 * i + 1) * 0.5f) / 65535.0f;
    map[64] = 0.0f, map[65] = 1.0f, map[66] = -0.0f, map[67] = 3.0f, map[68] = -2.0f;
    uint16_t *g = uf_render_gray16(map, N);
    CHECK(g != NULL, "%s", uf_last_error());
    int diff = 0;
    for (int i = 0; g && i < N; i++) {
        const float a = map[i] < 0.0f ? 0.0f : map[i] > 1.0f ? 1.0f : map[i];
        diff += g[i] != (uint16_t)lrintf(a * 65535.0f);
    }
    CHECK(diff == 0, "%d of %d values differ from lrintf", diff, N);
    CHECK(g && g[65] == 65535 && g[67] == 65535 && g[68] == 0, "clamping");
    free(g);
    free(map);
}

int main(void) {
    UF_TEST(test_jet_colours);
    UF_TEST(test_overlay_matches_definition);
    UF_TEST(test_gray16_matches_lrintf);
    return uf_test_summary();
}
