/* train.h - training a U-Flow model on a folder of normal images (spec 5).
 *
 * Features are computed once per training image and cached (exact: the
 * backbone is frozen and there is no augmentation). Each epoch shuffles the
 * images with a generator seeded by (seed, epoch), so a run is reproducible bit
 * for bit for the same seed and thread count, and a resumed run continues
 * exactly where the checkpoint left off. A resume checks that the training
 * images (their normalised inputs, in order) are those of the checkpoint. Loss: mean over the batch of
 * (sum 0.5 ||z||^2 - logdet), in double; Adam with L2 weight decay.
 */
#ifndef UF_MODEL_TRAIN_H
#define UF_MODEL_TRAIN_H

#include <stdint.h>

#include "backbone/backbone.h"
#include "flow/layernorm.h"
#include "io/image.h"
#include "model/model.h"

/* Validation needs at least this many held-out images: with fewer it is off (a note says so). */
#define UF_VAL_MIN_IMAGES 2
/* Early stopping (with validation, early_stop on): training ends when
 *  - the held-out z^2 has been inside the band and is then above UF_VAL_Z2_HIGH at some scale
 *    for UF_VAL_ABOVE_EPOCHS epochs in a row (the flow over-fits its training images: the
 *    latents of unseen normal images spread, and the NFA threshold with them), or
 *  - the validation loss has not improved for `patience` epochs.
 * The model file then holds the best epoch: the one with the lowest validation loss among
 * those inside the band (among all epochs while none was). z^2 below the band does not stop
 * training (it is the flow's state early on, and only makes the threshold conservative). The
 * checkpoint for resume, with the last epoch's state, is "<model>.checkpoint.safetensors". */
#define UF_VAL_ABOVE_EPOCHS 2
#define UF_EARLY_STOP_PATIENCE 10
/* A tiled model's training keeps at most this many bytes of tile features in memory. */
#define UF_TRAIN_TILE_CACHE_BYTES 4e9

/* What the epoch callback is told after each epoch. */
typedef struct uf_epoch_progress {
    int epoch, epochs;          /* epochs done (1-based, counting a resumed run's earlier ones) and planned */
    double loss;                /* mean loss per image of this epoch */
    double images_per_second;   /* of this epoch */
    double eta_seconds;         /* estimated time left */
    int n_val;                  /* held-out images (0: no validation; the two below are then NaN) */
    double val_nll;             /* mean loss per held-out image (the training loss's definition) */
    double val_z2[UF_FLOW_MAX_SCALES]; /* per-scale mean z^2 of the held-out images */
} uf_epoch_progress;

typedef struct uf_train_options {
    const char *data_dir;  /* MVTec-AD category, MVTec 3D-AD category or plain folder of normal images */
    uf_backbone_kind backbone; /* resnet (default) or mcait */
    const char *weights;   /* backbone weights (.safetensors; "FINE,COARSE" for mcait); on resume NULL
                              means the ones recorded in the checkpoint */
    const char *out_path;  /* model file, also the checkpoint */
    uf_input_geometry input; /* model input width x height and fit (io/image.h); width = height = 0 (the
                                default): the backbone's fixed size (mcait: 448), else 256 x 256, stretched */
    int n_steps;           /* flow steps per scale, 4 */
    int epochs, batch;     /* 100, 16 */
    double lr, weight_decay;
    uint64_t seed;
    uf_ln_mode ln_mode;
    int anomalib_loss;     /* batch-summed z term of the paper-time code / anomalib */
    int checkpoint_every;  /* epochs between checkpoints (0: only at the end) */
    int max_images;        /* use the first N images (0: all); -1 (the default): all, or on resume the checkpoint's */
    int skip_bad_images;   /* 0: an unreadable training image stops training (nothing is written);
                              1: it is left out with a warning and counted */
    double val_split;      /* fraction of the normal images held out for validation, 0.1 (0: none); which
                              ones is decided by seed, and recorded in the model */
    const char *val_dir;   /* instead: a folder of normal validation images (val_split is then ignored) */
    int early_stop;        /* 1 (default): the rule above, when there is validation */
    int patience;          /* epochs without a better validation loss before stopping, UF_EARLY_STOP_PATIENCE */
    int tile;              /* -1 (default): tile when the training images are large (io/tiling.h,
                              uf_tiling_choose) and the input size is the default one (an explicit
                              input size is a choice of resolution: resized); 0: never; 1: always */
    int tile_overlap;      /* -1: the default (tile's shorter side / 8) */
    int tile_max_short;    /* the working resolution's cap on the shorter side: 0 the default (2 x the
                              tile's shorter side), -1 none (the image's own resolution) */
    double calib_rate;     /* model/calibration.h: share of normal images allowed a detection, 0.05 (0: the
                              spec's uncalibrated test) */
    double map_sigma;      /* the anomaly map's smoothing recorded in the model (model.h cfg.map_sigma), in
                              input pixels; -1 (default): UF_MAP_SIGMA_DEFAULT, or on resume the checkpoint's */
    int resume;            /* continue from out_path */
    int stop_after;        /* >0: stop (with a checkpoint) after this many epochs in this run (tests) */
    const char *feature_cache; /* folder of stored features (see model/feature_store.h); "auto" (the default):
                                  "<out_path>.features" for mcait, none for resnet; "off" or NULL: none */
    int verbose;           /* progress lines through the log callback (core/log.h) */
    /* Called after each epoch when not NULL (from the calling thread); a nonzero return stops
     * training there, the model (a checkpoint, resumable) written, as stop_after does. */
    int (*on_epoch)(const uf_epoch_progress *progress, void *user);
    void *on_epoch_user;
} uf_train_options;

uf_train_options uf_train_default_options(void);

typedef struct uf_train_report {
    int n_images, epochs_done;    /* n_images: training samples (tiles for a tiled model) */
    int n_tiled_images;           /* a tiled model: the images the n_images tiles came from (0: not tiled) */
    int n_skipped;                /* unreadable images left out (skip_bad_images) */
    int features_from_cache;      /* images whose features came from the disk store */
    double first_loss, last_loss; /* mean loss per image of the first and last epoch run */
    double feature_seconds, train_seconds, images_per_second;
    double gemm_seconds;          /* time inside SGEMM during training epochs */
    double gemm_flops;            /* SGEMM FLOPs during training epochs */
    int n_val;                    /* held-out images (0: no validation) */
    int best_epoch;               /* the epoch the model file holds */
    int stopped_early;            /* 1: the rule ended training; stop_reason says why */
    char stop_reason[160];
    double val_nll, val_z2[UF_FLOW_MAX_SCALES]; /* of the last epoch run (NaN without validation) */
    uf_calibration calib;         /* the model's NFA calibration (n_images 0: none) */
} uf_train_report;



/* Trains (or resumes) and writes the model to o->out_path. UF_OK or UF_ERR. */
int uf_train(const uf_train_options *o, uf_train_report *report);

#endif
