/* predict.h - `uflow predict`: a trained model on unlabelled images.
 *
 * For each image, in out_dir, or for an image found in a sub-folder of a folder
 * argument in out_dir/<that sub-folder's path> (the input tree mirrored; stem = file
 * name without extension; a repeated stem becomes "<parent folder>_<stem>", then gets
 * "_<index>" appended):
 *   <stem>_map.png           anomaly map, 16-bit gray, value = A * 65535 (A in [0,1])
 *     or <stem>_map.safetensors  (map_format "safetensors": float32 [height, width])
 *   <stem>_overlay.png       the image with the map as a jet heat map
 *   <stem>_mask.png          the a-contrario detection (-log10 NFA > 0), 0/255
 *   <stem>_nfa.safetensors   (only when asked) the -log10 NFA field, float32 [height, width]
 * (which of them: uf_output_options.outputs; the overlay may be <stem>_overlay.jpg instead)
 * and one line per image in results.csv and results.jsonl (score = max of the
 * map, anomalous = any pixel detected on the model's grid, where the NFA test runs;
 * detected_pixels counts the written mask; width, height: the size written). The
 * outputs are at the image's own size (map and -log10 NFA field upsampled bilinearly,
 * the mask from the upsampled field, the overlay on the image as loaded), or at the
 * model's input size with model_size_outputs. With a keep-aspect model the fields
 * cover the centre crop the model saw; the cropped-off margins get map 0 and no
 * detection.
 * Images are processed in batches, so memory does not grow with their number, as a
 * pipeline (model/pipeline.h): the next batch is decoded and the previous images' outputs
 * are encoded and written while the model runs; rows come out in input order, and the
 * results are those of running the steps one after the other. The image outputs are
 * renamed into place without an fsync each; one sync of the output file system comes
 * before results.csv / results.jsonl are committed, so a row never names a file that a
 * crash of the machine could lose.
 *
 * Bad input policy: every readable image is processed. An image that cannot be
 * read (corrupt, truncated, unsupported, unreadable, too large) or gives
 * non-finite latents is reported (log level error) and gets a row whose "error" field
 * (last CSV column; the only other JSON key is "image") says why; it counts in
 * n_failed and the call still returns UF_OK. UF_ERR is for what stops
 * everything: no inputs, a missing path, an output that cannot be written.
 */
#ifndef UF_MODEL_PREDICT_H
#define UF_MODEL_PREDICT_H

#include "io/dataset.h"
#include "model/batch.h"
#include "model/model.h"

#include "eval/metrics.h"

#define UF_PREDICT_MAX_LABELS 16

/* An image is labelled when its path starts with "<dir>/" of one of these. */
typedef struct uf_predict_label {
    const char *dir;
    int anomalous; /* 0 normal, 1 defective */
} uf_predict_label;

/* Which files an image gets (bits of uf_output_options.outputs). */
enum {
    UF_OUTPUT_MAP = 1,
    UF_OUTPUT_MASK = 2,
    UF_OUTPUT_OVERLAY = 4,
    UF_OUTPUT_NFA = 8,
    UF_OUTPUT_NONE = 0x100, /* explicitly none: the rows alone */
};
#define UF_OUTPUTS_DEFAULT (UF_OUTPUT_MAP | UF_OUTPUT_MASK | UF_OUTPUT_OVERLAY)

/* "map,mask,overlay,nfa" (any of them, comma-separated), "default" or "none" into bits.
 * UF_ERR + a message naming the bad word. */
int uf_outputs_parse(const char *list, unsigned *outputs);

typedef struct uf_output_options {
    unsigned outputs;    /* UF_OUTPUT_* bits; 0: UF_OUTPUTS_DEFAULT */
    int map_safetensors; /* 0: 16-bit PNG maps, 1: float safetensors */
    int overlay_jpeg;    /* 1: the overlay as <stem>_overlay.jpg (libjpeg-turbo, quality 90) */
    int unsynced;        /* 1: no fsync per file (the caller syncs; see uf_atomic_commit_as) */
} uf_output_options;

typedef struct uf_predict_options {
    const char *out_dir;
    int batch;             /* 8 */
    int map_safetensors;   /* 0: 16-bit PNG maps, 1: float safetensors */
    unsigned outputs;      /* UF_OUTPUT_* bits; 0: UF_OUTPUTS_DEFAULT */
    int overlay_jpeg;      /* 1: overlays as JPEG */
    int workers;           /* threads that encode and write outputs; 0: one per core */
    int model_size_outputs; /* 0: outputs at each image's own size; 1: at the model's input size */
    const uf_predict_label *labels; /* n_labels folders of known label (their images are also inputs) */
    int n_labels;
    int verbose;
} uf_predict_options;

typedef struct uf_predict_report {
    int n_images, n_anomalous; /* n_images includes the failed ones */
    int n_failed;              /* images reported with an error */
    double seconds;
    /* with labels: over the labelled images that gave results */
    int n_labelled;
    double image_auroc;        /* NaN with one class only */
    uf_image_confusion at_nfa; /* anomalous = some pixel with NFA < 1 */
} uf_predict_report;

/* One image's results at the size its outputs are written (the image's own, or the
 * model's input size), as uf_predict writes them. */
typedef struct uf_image_result {
    int width, height;        /* of the fields below */
    float score;              /* max of the anomaly map on the model's grid */
    int anomalous;            /* some pixel of the model's grid has -log10 NFA > 0 */
    int detected_pixels;      /* pixels set in mask */
    float max_neg_log10_nfa;  /* on the model's grid */
    float *anomaly_map;       /* (height, width) in [0, 1] */
    float *neg_log10_nfa;     /* (height, width) */
    uint8_t *mask;            /* (height, width) 1 where -log10 NFA > 0 */
    uf_image *image;          /* RGB image the overlay is drawn on (as loaded, or the model input) */
} uf_image_result;

/* Image i of a batch that ran without error for it: its results at the size of the image
 * the batch kept (b->original[i] when kept, else the model input b->resized[i], which the
 * result takes over). UF_ERR when out of memory (*r then empty). */
int uf_image_result_from_batch(uf_batch *b, int i, const uf_input_geometry *g, uf_image_result *r);
/* Writes the outputs o asks for (NULL: the default three, each fsync'ed): dir/<stem>_map.png
 * (or _map.safetensors), _overlay.png (or .jpg), _mask.png, _nfa.safetensors, making the
 * sub-folders a stem with '/' names. */
int uf_image_result_write(const uf_image_result *r, const char *dir, const char *stem, const uf_output_options *o);
/* One of the images uf_image_result_write writes, as a PNG file in memory (libpng's default
 * compression): output UF_OUTPUT_MAP (16-bit gray), _MASK or _OVERLAY. *png: malloc'ed. */
int uf_image_result_png(const uf_image_result *r, unsigned output, unsigned char **png, size_t *len);

/* uf_image_result_from_batch in two steps, so that the batch can be reused before the
 * second: uf_pending_take copies or takes what image i's result needs out of the batch
 * (cheap: the model-grid fields, the image); uf_pending_finish, on any thread, makes the
 * result (upsampling to the image's size: the costly part) and frees the pending one. */
typedef struct uf_pending_result {
    int tiled, grid_w, grid_h;
    float score, max_nfa;
    float *amap, *nfa; /* model grid (grid_h, grid_w), or the stitched fields at the image's size */
    uf_image *image;
} uf_pending_result;
int uf_pending_take(uf_batch *b, int i, uf_pending_result *p);
int uf_pending_finish(uf_pending_result *p, const uf_input_geometry *g, uf_image_result *r);
void uf_pending_free(uf_pending_result *p);
void uf_image_result_free(uf_image_result *r); /* an empty (zeroed) result is fine */

/* The output stem of every image of a uf_dataset_from_paths data set (see above: the
 * input tree mirrored, repeated names made unique), decided for all images at once so
 * that they do not depend on which images fail or on how the work is split.
 * *stems: ds->count strings, free with uf_free_output_stems. */
int uf_plan_output_stems(const uf_dataset *ds, char ***stems);
void uf_free_output_stems(char **stems, int n);

int uf_predict(uf_model *m, const char *const *inputs, int n_inputs, const uf_predict_options *o,
               uf_predict_report *rep);

#endif
