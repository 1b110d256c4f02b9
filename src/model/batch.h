/* batch.h - the batch runner: a trained model on batches of images, per-image
 * latents, anomaly map, image score and -log10 NFA map out. (The detection
 * kernels it calls, anomaly map and NFA, are in src/detect/.)
 *
 * Data flow: image file -> RGB, fitted to the model's W x H input (Pillow-bilinear
 * resize, or resize + centre crop with keep-aspect; io/image.h), ImageNet
 * normalisation -> backbone -> flow -> latents z_l -> anomaly map (spec 6)
 * and tree NFA score (spec 7.1) at out_w x out_h.
 */
#ifndef UF_MODEL_BATCH_H
#define UF_MODEL_BATCH_H

#include "io/image.h"
#include "model/model.h"

/* Room for one image's error line (longer messages are cut). */
#define UF_BATCH_ERROR_LEN 1024

/* A batch of up to `cap` images and their results; buffers sized once.
 * An image that could not be loaded or gave non-finite latents has a message
 * in error[i] (error[i][0] == 0 means its results are valid); the others are
 * unaffected, so one bad file never costs the rest of its batch. */
typedef struct uf_batch {
    int cap, n, out_w, out_h, n_scales;
    float *x;                          /* (cap, 3, H, W) normalised input */
    float *z[UF_FLOW_MAX_SCALES];      /* (cap, C_l, h_l, w_l) latents */
    float *amap;                       /* (cap, out_h, out_w) anomaly maps */
    float *nfa;                        /* (cap, out_h, out_w) -log10 NFA; detection: > 0 */
    float *score;                      /* (cap) image scores (max of the map) */
    uf_image **resized;                /* (cap) the W x H RGB model inputs (for overlays) */
    uf_image **original;               /* NULL, or (cap) allocated (calloc) by the caller after init: the
                                        * images as loaded, RGB, are kept there; freed with the batch */
    int *orig_w, *orig_h;              /* (cap) size of each image as loaded */
    char (*error)[UF_BATCH_ERROR_LEN]; /* (cap) "" or why image i has no results */
    const char *const *paths;          /* the n paths of the last uf_batch_load (the caller's array) */
    int nfa_block;                     /* 1: the older block/binomial NFA instead of the tree (spec 7.2) */
    double (*z2)[UF_FLOW_MAX_SCALES];  /* (cap) per image and scale, the mean z^2 of its latents (of all its
                                        * tiles when tiled) */
    float *max_nfa;                    /* (cap) the largest -log10 NFA of image i where the test runs (the
                                        * model's grid; a tiled image's working resolution); anomalous: > 0 */
    /* Tiled models (m->cfg.tiling, io/tiling.h): the images as loaded are always kept (original),
     * and uf_batch_run writes image i's stitched fields at its own size orig_w[i] x orig_h[i]
     * into tiled_amap[i] / tiled_nfa[i] (allocated by the run) instead of amap / nfa; score[i]
     * is the stitched map's maximum. The NFA counts the tests of all the image's tiles. */
    int tiled;
    float **tiled_amap, **tiled_nfa;   /* (cap) */
    float *tile_map, *tile_nfa;        /* (cap, H, W) one chunk of tiles' fields */
} uf_batch;

/* out_w x out_h: the size of amap / nfa (not used by tiled models, whose fields are at each
 * image's own size). */
int uf_batch_init(uf_batch *b, const uf_model *m, int cap, int out_w, int out_h);
void uf_batch_free(uf_batch *b);

/* Loads images paths[0..n) in parallel as the backbone wants them: RGB,
 * uf_image_fit to g, ImageNet normalisation into x (n, 3, g->height, g->width).
 * When resized is not NULL each fitted RGB image is kept there (what it held is
 * freed), and likewise the image as loaded in original when that is not NULL;
 * orig_w / orig_h (may be NULL) receive each image's size as loaded.
 * Every image is tried. One that fails gets a zero-filled x, resized[i] NULL,
 * orig size 0 and its one-line reason (naming the file) in errors[i]; the
 * others get errors[i] = "". Returns the number of images that failed. */
int uf_load_backbone_inputs_each(const char *const *paths, int n, const uf_input_geometry *g, float *x,
                                 uf_image **resized,
                                 uf_image **original, int *orig_w, int *orig_h, char (*errors)[UF_BATCH_ERROR_LEN]);

/* Loads paths[0..n) (n <= cap) into the batch, in parallel. Returns the
 * number of images that failed (see error[]); the batch holds all n. */
int uf_batch_load(uf_batch *b, const uf_model *m, const char *const *paths, int n);

/* The same for images already in memory (RGB or gray, any size; gray is promoted to
 * RGB), named names[i] in error messages. The images stay the caller's; originals,
 * when kept, are copies. */
int uf_batch_load_images(uf_batch *b, const uf_model *m, const uf_image *const *images, const char *const *names,
                         int n);

/* Index of the first image of the batch with an error, or -1. */
int uf_batch_first_error(const uf_batch *b);

/* Latents, anomaly maps, scores and NFA maps of the loaded batch's good
 * images. An image whose latents are not finite gets an error[] entry instead
 * of results. Optional timing (seconds) is added to t_latents and t_detect.
 * UF_ERR only when the batch as a whole fails (out of memory). */
int uf_batch_run(uf_batch *b, uf_model *m, double *t_latents, double *t_detect);

/* m's map smoothing (cfg.map_sigma, in input pixels; nothing when 0) on a map of h x w that
 * spans span_w x span_h input pixels (the input's W x H for a resized model's map, h x w itself
 * for a tiled model's stitched map). UF_ERR (message) when out of memory. */
int uf_batch_smooth_map(const uf_model *m, float *map, int h, int w, int span_w, int span_h);

#endif
