/* model.h - a complete U-Flow detector: frozen backbone + trained flow (with
 * its per-scale LayerNorms) + the configuration, saved as one .safetensors
 * file, so `predict` needs nothing else but the backbone weights it names.
 *
 * Model file: the flow tensors under the official/FrEIA state_dict names
 * (flow.module_list.{i}.*, feature_extractor.feature_normalizations.{l}.*),
 * optionally the backbone's weights (feature_extractor.extractor[1|2].*,
 * metadata uflow.backbone_embedded = 1),
 * the Adam state when saved as a training checkpoint (optimizer.exp_avg and
 * optimizer.exp_avg_sq over the trainable parameters), and in __metadata__ the
 * configuration as "uflow.*" string entries (backbone name, weights file and
 * their sha256, input size ("256" when square, else "WxH") and fit ("stretch" /
 * "keep-aspect"; absent in older files: stretch), scales, channels, flow steps,
 * clamp, LayerNorm mode, training settings, epochs done, optimizer step).
 */
#ifndef UF_MODEL_MODEL_H
#define UF_MODEL_MODEL_H

#include <stdint.h>

#include "backbone/backbone.h"
#include "flow/adam.h"
#include "flow/graph.h"
#include "detect/nfa_tree.h"
#include "io/image.h"
#include "io/tiling.h"

typedef struct uf_train_settings {
    int epochs, batch;
    double lr, weight_decay;
    uint64_t seed;
    int anomalib_loss; /* 1: the paper-time/anomalib batch-summed z term (spec 5.1) */
} uf_train_settings;

/* The a-contrario test's null hypothesis as measured on normal images the flow did not train
 * on (model/calibration.h). n_images 0: not calibrated, the spec's null (N(0, 1) latents, the
 * spec's number of tests), which is what models written before it get.
 *  - z2[l]: the variance of scale l's latents under H0, the median over the calibration images
 *    of their mean z^2; the tree NFA divides the energies by it.
 *  - log10_offset >= 0: added to log10 N_T, so that with z2 applied at most a share `rate` of
 *    the calibration images keeps a detection (conformal quantile, calibration.h says what
 *    that guarantees).
 *  - flagged_spec / flagged: the share of calibration images with a detection under the spec's
 *    null and under this one. */
typedef struct uf_calibration {
    int n_images;
    double z2[UF_FLOW_MAX_SCALES];
    double log10_offset;
    double rate;
    double flagged_spec, flagged;
    char source[64]; /* "validation split" or the folder */
} uf_calibration;

typedef struct uf_model_config {
    char backbone[112];          /* architecture, e.g. "resnet18" or "mcait" */
    char backbone_file[2100];    /* weights as given when training ("FINE,COARSE" for mcait) */
    char backbone_sha256[132];   /* sha256 of each weights file, comma-separated */
    uf_input_geometry input;     /* images become input.width x input.height model inputs (io/image.h) */
    uf_flow_config flow;         /* scales (0 = finest), channels, sizes, steps, LayerNorm mode */
    uf_train_settings train;
    int epochs_done;
    char train_data[1024];       /* data folder the model was trained on (information) */
    int train_max_images;        /* --max-images of the run (0: all) */
    int train_images;            /* images trained on (after --max-images and skipped bad files) */
    char train_inputs_sha256[65]; /* sha256 of the normalised inputs of the images read (training and
                                     validation) in order; "" if unknown */
    /* Validation (model/train.h): held-out images, their fingerprint (sha256 of their inputs' sha256s
     * in order; "" with val_dir), and the mean loss per image and per-scale mean z^2 at the saved epoch
     * (val_images 0: trained without validation, the others unset). */
    double val_split;
    int val_images;
    char val_dir[1024];
    char val_inputs_sha256[65];
    double val_nll, val_z2[UF_FLOW_MAX_SCALES];
    /* Early stopping's state (model/train.h), recorded with validation: the best epoch so far
     * (the one the model file holds), its loss, whether it is inside the z^2 band, the lowest
     * validation loss and the epochs since, the epochs in a row above the band, and whether
     * the rule ended training (stop_reason says why). */
    int best_epoch, best_in_band, nll_stall, above_band, stopped_early;
    double best_val_nll, min_val_nll;
    char stop_reason[160];
    uf_tiling tiling;            /* io/tiling.h: off (every model before it), or tiles of input's size */
    uf_calibration calib;
    /* Gaussian smoothing of the anomaly map, sigma in model-input pixels (0: the spec's map, as
     * every model before it); the image score is the smoothed map's maximum. model/batch.c. */
    double map_sigma;
} uf_model_config;

typedef struct uf_model {
    uf_model_config cfg;
    int backbone_embedded;       /* 1: the backbone's weights are inside the model file */
    char backbone_source[4200];  /* where they were read: the weights files ("A" or "A,B"), or the model
                                    file when embedded (uf_model_save copies them from there) */
    uf_backbone *backbone;      /* frozen extractor (uf_train releases it once the features are cached) */
    uf_flow *flow;
} uf_model;

/* Anomaly-map smoothing (cfg.map_sigma): what `uflow train` records unless told otherwise, and
 * the widest accepted. 4 input pixels is one cell of the finest (1/4) latent grid, the smoothing
 * PatchCore and anomalib apply to their maps; measured on MTD and BSD (docs/results.md). */
#define UF_MAP_SIGMA_DEFAULT 4.0
#define UF_MAP_SIGMA_MAX 16.0

/* Validation (held-out normal images): the band of per-scale mean z^2 inside which the
 * latents of unseen normal images count as calibrated, i.e. N(0, 1) enough for the
 * automatic NFA threshold. Symmetric in log: 1/1.25 = 0.8. */
#define UF_VAL_Z2_LOW 0.8
#define UF_VAL_Z2_HIGH 1.25
/* 1 when the model's recorded validation z^2 is inside [UF_VAL_Z2_LOW, UF_VAL_Z2_HIGH] at every
 * scale, 0 when outside, -1 when the model records none (trained without validation). */
int uf_model_val_calibrated(const uf_model_config *c);

/* The warning to give when the model's validation z^2 is outside the band (for `test` and
 * `predict`); "" when inside or unknown. */
const char *uf_model_calibration_warning(const uf_model_config *c, char *buf, size_t cap);

/* The NFA's null hypothesis for model m on an image cut into n_tiles tiles (1 when not tiled):
 * the calibrated variances and offset (the spec's when uncalibrated) plus log10 n_tiles tests. */
uf_nfa_null uf_model_nfa_null(const uf_model_config *c, int n_tiles);

/* A new untrained model: loads the backbone weights (see
 * uf_backbone_weight_files), derives the feature shapes for the input
 * geometry (width and height 0: the backbone's fixed size, else 256 x 256; a
 * size the backbone cannot take is refused, see uf_backbone_check_size), builds
 * the flow (seeded init). ln_mode applies to backbones whose features get a
 * LayerNorm (ResNet); it is UF_LN_NONE for the others. NULL + error. */
uf_model *uf_model_create(uf_backbone_kind kind, const char *backbone_weights, uf_input_geometry input, int n_steps,
                          uf_ln_mode ln_mode, uint64_t seed);

/* Loads a model file. The backbone weights are taken from `backbone_weights`
 * when not NULL, else from the path recorded in the file (as given, then beside
 * the model file); their sha256 must match the recorded one. When `opt` is not
 * NULL and the file holds an optimizer state, it is restored into *opt (which
 * must be uninitialised). NULL + error naming the file and tensor. */
uf_model *uf_model_load(const char *path, const char *backbone_weights, uf_adam *opt, int *has_opt);

/* Writes the model (and the optimizer state when opt is not NULL) atomically;
 * a model that embeds its backbone keeps it. */
int uf_model_save(const uf_model *m, const char *path, const uf_adam *opt);
/* The same, choosing whether the backbone's weights go inside the file: every
 * tensor of its weights file(s) (for a ResNet up to layer3, as timm's
 * features_only extractor holds them), dtype kept, under the official names of
 * uf_backbone_embed_prefix (feature_extractor.extractor[1|2].*). Such a file
 * needs nothing else to run, and with opt NULL holds exactly the official
 * U-Flow state_dict (plus "uflow.*" metadata). */
int uf_model_save_as(const uf_model *m, const char *path, const uf_adam *opt, int with_backbone);

void uf_model_free(uf_model *m);

/* Latent count and shape of scale l (0 = finest): z_l is (z_channels, h, w). */
void uf_model_latent_shape(const uf_model *m, int l, int *c, int *h, int *w);

/* Backbone + flow on n ImageNet-normalised images x (n, 3, input.height, input.width): writes the
 * latents z[l] (n, C_l, h_l, w_l). Processes in groups of `group` images to
 * bound memory. UF_OK or UF_ERR. */
int uf_model_latents(uf_model *m, const float *x, int n, float *const *z);

#endif
