/* detect.h - running a trained model on images: batches of images in,
 * per-image latents, anomaly map, image score and -log10 NFA map out.
 *
 * Data flow: image file -> RGB, Pillow-bilinear resize to S x S, ImageNet
 * normalisation -> backbone -> flow -> latents z_l -> anomaly map (spec 6)
 * and tree NFA score (spec 7.1) at out_size x out_size.
 */
#ifndef UF_MODEL_DETECT_H
#define UF_MODEL_DETECT_H

#include "io/image.h"
#include "model/model.h"

/* A batch of up to `cap` images and their results; buffers sized once. */
typedef struct uf_detect_batch {
    int cap, n, out_size, n_scales;
    float *x;                          /* (cap, 3, S, S) normalised input */
    float *z[UF_FLOW_MAX_SCALES];      /* (cap, C_l, h_l, w_l) latents */
    float *amap;                       /* (cap, out, out) anomaly maps */
    float *nfa;                        /* (cap, out, out) -log10 NFA; detection: > 0 */
    float *score;                      /* (cap) image scores (max of the map) */
    uf_image **resized;                /* (cap) the S x S RGB images (for overlays) */
    int *orig_w, *orig_h;              /* (cap) size of each image as loaded */
    int nfa_block;                     /* 1: the older block/binomial NFA instead of the tree (spec 7.2) */
} uf_detect_batch;

int uf_detect_batch_init(uf_detect_batch *b, const uf_model *m, int cap, int out_size);
void uf_detect_batch_free(uf_detect_batch *b);

/* Loads images paths[0..n) in parallel as the backbone wants them: RGB,
 * Pillow-bilinear resize to S x S, ImageNet normalisation into x (n, 3, S, S).
 * When resized is not NULL each S x S RGB image is kept there (what it held is
 * freed); orig_w / orig_h (may be NULL) receive each image's size as loaded.
 * On failure the error names the first image that failed. */
int uf_load_backbone_inputs(const char *const *paths, int n, int S, float *x, uf_image **resized, int *orig_w,
                            int *orig_h);

/* Loads paths[0..n) (n <= cap) into the batch, in parallel. On failure the
 * error names the first image that failed. */
int uf_detect_load(uf_detect_batch *b, const uf_model *m, const char *const *paths, int n);

/* Latents, anomaly maps, scores and NFA maps of the loaded batch. Optional
 * timing (seconds) is added to t_latents and t_detect. */
int uf_detect_run(uf_detect_batch *b, uf_model *m, double *t_latents, double *t_detect);

#endif
