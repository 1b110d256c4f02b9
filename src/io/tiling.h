/* tiling.h - large images cut into model-sized tiles, and the tiles' fields stitched back.
 *
 * A tiled model (uf_tiling.enabled) does not resize an image to its W x H input: it
 * looks at the image at a working resolution close to its own and cuts it into W x H
 * tiles, each of which is one model input. Small defects keep their pixels.
 *
 *  - Working resolution: the image is scaled by s = min(1, max_short / shorter side)
 *    (max_short 0: s = 1, the image's own pixels), then, if a side is still below the
 *    tile's, up by the factor that makes both sides at least the tile's (Pillow-bilinear
 *    resize in both cases, as the stretch fit does).
 *  - Tiles along an axis of length n (tile t, overlap o): 1 tile at 0 when n <= t, else
 *    k = ceil((n - o) / (t - o)) tiles at x_i = round(i (n - t) / (k - 1)): evenly spread,
 *    neighbours overlapping by at least o, the last one ending at the border.
 *  - Stitching (uf_tile_stitch_*): the anomaly map is the mean of the tiles covering a
 *    pixel; the -log10 NFA field is their maximum (each tile is a group of tests whose
 *    count is in N_T, see model/batch.h). Where tiles do not overlap, both are the tile's
 *    own values. The stitched fields at the working resolution are then resized
 *    (bilinear, align_corners False) to the image's own size when s != 1.
 */
#ifndef UF_IO_TILING_H
#define UF_IO_TILING_H

#include "io/image.h"

typedef struct uf_tiling {
    int enabled;   /* 0: the whole image is fitted to the model input (io/image.h) */
    int overlap;   /* pixels of the working resolution shared by neighbouring tiles, 0 <= overlap < tile side */
    int max_short; /* the working resolution's shorter side is at most this (0: the image's own) */
} uf_tiling;

/* The defaults chosen by `uflow train` (uf_tiling_choose) when the user passes none. */
#define UF_TILE_OVERLAP_DIV 8  /* overlap = tile's shorter side / 8 (32 for 256) */
#define UF_TILE_MAX_SHORT_TILES 2 /* max_short = 2 x the tile's shorter side */
/* Tile when the median training image's shorter side is at least this many times the model
 * input's shorter side: resizing would lose more than a third of its pixels' resolution. */
#define UF_TILE_WHEN_RATIO 1.5

typedef struct uf_tile_grid {
    int image_w, image_h; /* the image as given */
    int work_w, work_h;   /* the working resolution */
    int tile_w, tile_h;
    int nx, ny;           /* tiles per row and per column; tile t is (t % nx, t / nx) */
    int *x0, *y0;         /* (nx), (ny) top-left corners at the working resolution */
} uf_tile_grid;

/* Plans the tiles of an image_w x image_h image for tiles of g's width x height. UF_ERR for
 * sizes out of range or no memory. Free with uf_tile_grid_free. */
int uf_tile_grid_plan(const uf_tiling *t, const uf_input_geometry *g, int image_w, int image_h, uf_tile_grid *grid);
void uf_tile_grid_free(uf_tile_grid *grid);
static inline int uf_tile_count(const uf_tile_grid *grid) { return grid->nx * grid->ny; }

/* The image at the grid's working resolution (a copy when it already is), RGB. NULL + error. */
uf_image *uf_tile_work_image(const uf_image *img, const uf_tile_grid *grid);

/* Tile t of the working image, ImageNet-normalised into x (3, tile_h, tile_w). */
void uf_tile_to_imagenet(const uf_image *work, const uf_tile_grid *grid, int t, float *x);
/* Tile t of the working image as an RGB image (for overlays and tests). NULL + error. */
uf_image *uf_tile_crop(const uf_image *work, const uf_tile_grid *grid, int t);

/* Stitching at the working resolution. sum/weight: map accumulators; best: the NFA field.
 * begin zeroes them (best to -inf); add puts tile t's (tile_h, tile_w) fields in; end
 * finishes the map (sum / weight) in place in sum. */
void uf_tile_stitch_begin(const uf_tile_grid *grid, float *sum, float *weight, float *best);
void uf_tile_stitch_add(const uf_tile_grid *grid, int t, const float *tile_map, const float *tile_nfa, float *sum,
                        float *weight, float *best);
void uf_tile_stitch_end(const uf_tile_grid *grid, float *sum, const float *weight);

/* The tiling `uflow train` chooses for training images of the given sizes (n >= 1) and a
 * model input g: enabled when the median shorter side is at least UF_TILE_WHEN_RATIO times
 * g's shorter side, with the overlap and max_short above. */
uf_tiling uf_tiling_choose(const int *widths, const int *heights, int n, const uf_input_geometry *g);

/* "off" or "on (overlap N, working shorter side <= M)" into buf. */
const char *uf_tiling_describe(const uf_tiling *t, char *buf, size_t cap);

#endif
