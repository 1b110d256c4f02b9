/* feature_store.h - backbone features of training images kept on disk, so
 * that a second training run or a --resume skips the extraction (MS-CaiT
 * takes seconds per image on a CPU).
 *
 * One file per image: DIR/<key>.safetensors, where key = sha256 of (the
 * backbone weights' sha256s, the input size, the sha256 of the image's
 * normalised S x S input). Keying on the normalised input rather than on the
 * image file's bytes covers the file and the size, and also any change in
 * decoding or resizing between uflow versions (a changed input is a new key,
 * never stale features). Inputs are decoded anyway: they are cheap next to
 * the backbone and give the training fingerprint.
 *
 * A file holds tensors "0".."L-1" (C_l, H_l, W_l) float32 and metadata with
 * the key's parts (checked on reading) and the image path (information).
 * Files are written atomically; one that is unreadable or does not match is
 * a miss (recomputed and replaced), never an error. A failed write is a
 * warning: training goes on without storing that image.
 */
#ifndef UF_MODEL_FEATURE_STORE_H
#define UF_MODEL_FEATURE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef struct uf_feature_store {
    char dir[4096];
    char backbone_sha256[132];
    char size[48];        /* "256" (square, stretched) or "WxH <fit>" */
    int n_levels;
    int64_t shape[UF_FLOW_MAX_SCALES][3];
    int n_hits, n_written, n_write_failed;
} uf_feature_store;

/* Prepares dir (created if missing, one level) for model m's features. UF_ERR + message. */
int uf_feature_store_open(uf_feature_store *fs, const char *dir, const uf_model *m);

/* The key of an image from the sha256 (hex) of its normalised input. */
void uf_feature_store_key(const uf_feature_store *fs, const char *input_sha256, char key[65]);

/* 1 and feat[l] (C_l H_l W_l floats each) filled when the store has the key; 0 when not. */
int uf_feature_store_get(uf_feature_store *fs, const char *key, const char *input_sha256, float *const *feat);

/* Stores one image's features (a failure is counted and warned about, not returned). */
void uf_feature_store_put(uf_feature_store *fs, const char *key, const char *input_sha256, const char *image_path,
                          const float *const *feat);

#endif
