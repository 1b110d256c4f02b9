/* pipeline.h - a model over many image files, its three stages overlapped.
 *
 *   loader thread:  decode + fit batch k+1          (uf_batch_load, its own OpenMP team)
 *   calling thread: the model on batch k            (uf_batch_run), then each image's
 *                   model-grid fields taken out     (uf_pending_take: a copy, cheap)
 *   worker threads: each image's result made        (uf_pending_finish: upsampling)
 *                   and handed to `consume`         (e.g. encode and write its files)
 *   calling thread: `row` for each image, in input order, once it is consumed
 *
 * Two batches alternate between the loader and the model; at most 2 x batch images wait
 * for a worker, so memory does not grow with the number of images. The batches are those
 * of a sequential loop over the same list (images 0..batch-1, batch..2 batch-1, ...) and
 * each image's arithmetic is the same, so the results are bit for bit those of running
 * the steps one after the other.
 *
 * Failure policy: an image that cannot be loaded or gives non-finite latents gets its row
 * with the batch's message (error != NULL) and the others go on. `consume` or `row`
 * returning UF_ERR (a write that failed: disk full) stops the run: the images in flight
 * are dropped, no further row is given, and uf_pipeline_run returns UF_ERR with that
 * message.
 */
#ifndef UF_MODEL_PIPELINE_H
#define UF_MODEL_PIPELINE_H

#include "model/batch.h"
#include "model/model.h"
#include "model/predict.h"

/* What a row reports of an image (those of uf_image_result). */
typedef struct uf_image_summary {
    float score, max_neg_log10_nfa;
    int anomalous, detected_pixels, width, height;
} uf_image_summary;

/* On a worker thread, any order, concurrently with other calls: image `index`'s result,
 * which consume owns from then on (frees it, or keeps it). UF_OK, or UF_ERR + message. */
typedef int (*uf_pipeline_consume_fn)(void *user, int index, uf_image_result *r);
/* On the calling thread, in index order: s when the image gave a result, else error (the
 * batch's one-line message) and s NULL. UF_OK, or UF_ERR + message. */
typedef int (*uf_pipeline_row_fn)(void *user, int index, const uf_image_summary *s, const char *error);

typedef struct uf_pipeline_options {
    int batch;              /* images per batch (>= 1) */
    int model_size_outputs; /* 1: results at the model's input size (the images as loaded are not kept) */
    int nfa_block;          /* 1: the block NFA (spec 7.2) */
    int workers;            /* worker threads; 0: one per core (uf_get_num_threads) */
    int verbose;            /* progress lines every batch */
} uf_pipeline_options;

/* Runs the model over paths[0..n). consume may be NULL (results freed), row may be NULL.
 * UF_OK when every image was processed (some may have failed: their rows say why);
 * UF_ERR + message when the run stopped (out of memory, consume / row failed). */
int uf_pipeline_run(uf_model *m, const char *const *paths, int n, const uf_pipeline_options *o,
                    uf_pipeline_consume_fn consume, uf_pipeline_row_fn row, void *user);

#endif
