/* uflow.h - the public C API of libuflow: U-Flow image anomaly detection and
 * segmentation (Tailanian, Pardo, Muse, "U-Flow: A U-shaped Normalizing Flow for
 * Anomaly Detection with Unsupervised Threshold", JMIV 2024) on the CPU.
 *
 * This header stands alone: compile with -I<prefix>/include and link with
 * -luflow (pkg-config --cflags --libs uflow). It is C11 and C++ safe. Every name
 * it declares starts with uflow_ / UFLOW_ (the library's internal code uses uf_,
 * which libuflow.so does not export).
 *
 *     uflow_model *m = uflow_model_load("bottle.safetensors", NULL);
 *     if (!m) { fprintf(stderr, "%s\n", uflow_last_error()); return 1; }
 *     uflow_predict_options po = uflow_predict_default_options();
 *     uflow_result *r = uflow_predict_pixels(m, rgb, width, height, 3, 0, &po);
 *     if (!r) { fprintf(stderr, "%s\n", uflow_last_error()); ... }
 *     printf("score %.4f anomalous %d\n", uflow_result_score(r), uflow_result_anomalous(r));
 *     const float *map = uflow_result_anomaly_map(r);   // height x width, row-major
 *     uflow_result_free(r);
 *     uflow_model_free(m);
 *
 * Errors: functions return UFLOW_OK (0) / UFLOW_ERROR (-1) or NULL, and leave one
 * line saying what and where for uflow_last_error() (per thread). The library never
 * prints, never calls exit(), and does not abort on bad input: a failed assertion of
 * an internal invariant (a bug, not something input can cause) is the only abort.
 *
 * Threads: a model is used by one thread at a time (it holds the work buffers of its
 * flow). Load one model per thread to predict in parallel: different models may be
 * used concurrently, and results, image lists and the log callback are safe to use
 * from any thread. Each call also runs on several cores itself (uflow_set_threads).
 *
 * Results are at the image's own size: the anomaly map and the -log10 NFA field are
 * upsampled bilinearly from the model's grid; mask = -log10 NFA > 0 (NFA < 1) on the
 * upsampled field; score and anomalous are decided on the model's grid.
 *
 * Option structs are returned by value by uflow_*_default_options(); set the fields
 * you need and pass a pointer. A new field may be added in a later version, with a
 * new soname.
 */
#ifndef UFLOW_H
#define UFLOW_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UFLOW_VERSION_STRING "0.2.0"

enum { UFLOW_OK = 0, UFLOW_ERROR = -1 };

typedef struct uflow_model uflow_model;           /* a trained detector (opaque) */
typedef struct uflow_result uflow_result;         /* one image's results (opaque) */
typedef struct uflow_image_list uflow_image_list; /* images found under paths (opaque) */

/* ---- library ---------------------------------------------------------------------- */

const char *uflow_version(void);     /* "0.2.0" */
const char *uflow_last_error(void);  /* this thread's last error ("" when none) */
/* Threads of the library's own parallel loops and of OpenBLAS; n <= 0: all cores. */
void uflow_set_threads(int n);

/* Log messages: one line each, without newline. PROGRESS lines may be overwritten in
 * place ("predicted 40/582 images"); INFO is a run's account; WARNING something the
 * user should know (a skipped file); ERROR one item that failed while the run goes on.
 * Default: no callback, nothing is printed. The callback may be called from any thread
 * that runs library code, one call at a time; it must not call back into the library. */
typedef enum { UFLOW_LOG_PROGRESS = 0, UFLOW_LOG_INFO = 1, UFLOW_LOG_WARNING = 2, UFLOW_LOG_ERROR = 3 } uflow_log_level;
typedef void (*uflow_log_fn)(int level, const char *message, void *user);
void uflow_set_log(uflow_log_fn fn, void *user); /* fn NULL: silent */

/* ---- training ----------------------------------------------------------------------- */

/* After each epoch. Return nonzero to stop there (the model file is written and can be
 * resumed with resume = 1). */
typedef int (*uflow_epoch_fn)(int epoch, int epochs, double loss, double eta_seconds, void *user);

typedef struct uflow_train_options {
    const char *data_dir;  /* MVTec-AD / BTAD / VisA category or a folder of normal images */
    const char *out_path;  /* the model file (.safetensors), also the checkpoint */
    const char *backbone;  /* "resnet18" (default), "wide_resnet50_2", "mcait" */
    const char *weights;   /* backbone weights; NULL: the shipped ResNet-18 (or, on resume, the recorded ones) */
    int width, height;     /* model input; 0, 0: 256 x 256 (448 for mcait); sides multiples of 16 */
    int keep_aspect;       /* 1: resize the shorter side and centre-crop instead of stretching */
    int flow_steps;        /* per scale, 4 */
    int epochs, batch;     /* 100, 16 */
    double lr, weight_decay; /* 1e-3, 1e-5 */
    unsigned long long seed; /* 0 */
    int max_images;        /* the first N training images (0: all) */
    int skip_bad_images;   /* 1: leave unreadable images out with a warning; 0 (default): stop */
    int resume;            /* continue the run recorded in out_path (or its .checkpoint.safetensors) */
    double val_split;      /* fraction of the images held out to check calibration, 0.1 (0: none; needs >= 2) */
    const char *val_dir;   /* instead: a folder of normal validation images */
    int early_stop;        /* 1 (default): with validation, stop when the held-out z^2 rises above 1.25 or the
                              validation loss stalls for `patience` epochs; the model file keeps the best epoch
                              and <model>.checkpoint.safetensors the last state (README: Early stopping) */
    int patience;          /* 10 */
    int tile;              /* -1 (default): cut large training images into input-sized tiles when the input
                              size is the default (README: Large images are tiled); 0: never; 1: always */
    double calib_rate;     /* 0.05: the NFA is calibrated on the held-out normal images so that at most this
                              share of such images gets a detection (90% confidence); 0: the spec's test */
    uflow_epoch_fn on_epoch; /* NULL: none */
    void *user;            /* passed to on_epoch */
} uflow_train_options;

typedef struct uflow_train_summary {
    int images, epochs_done, skipped;
    int val_images, best_epoch, stopped_early; /* best_epoch: the one the model file holds */
    double val_z2[3];             /* held-out mean z^2 per scale at the last epoch (NaN: no validation) */
    double first_loss, last_loss; /* mean per image, of the first and last epoch of this run */
    double seconds;               /* feature extraction + training */
} uflow_train_summary;

uflow_train_options uflow_train_default_options(void);
/* Trains and writes o->out_path (atomically). summary may be NULL. */
int uflow_train(const uflow_train_options *o, uflow_train_summary *summary);

/* ---- models -------------------------------------------------------------------------- */

/* Loads a model file. weights NULL: the backbone inside the file, else the one it records
 * (as recorded, then beside the model, then the shipped one); its sha256 must match. */
uflow_model *uflow_model_load(const char *path, const char *weights);
void uflow_model_free(uflow_model *m);    /* NULL is fine */
int uflow_model_input_width(const uflow_model *m);
int uflow_model_input_height(const uflow_model *m);
const char *uflow_model_backbone(const uflow_model *m); /* e.g. "resnet18" */
int uflow_model_epochs(const uflow_model *m);                /* epochs trained */
/* What a model file records (`uflow inspect`'s metadata: backbone, sizes, training, validation,
 * calibration, tiling), without what names a place: the "uflow.*" keys (prefix dropped) whose
 * value is not a path (no '/'), as one JSON object of strings. *json is malloc'ed (free() it).
 * UFLOW_OK, or UFLOW_ERROR + message (unreadable file, not a uflow model). */
int uflow_model_info_json(const char *model_path, char **json);
/* The backbone's arithmetic: "fp32" (default), "bf16" (ResNet on CPUs with AVX512-BF16 or AMX:
 * faster, maps within rounding of FP32), or "auto" (bf16 where it runs). UFLOW_ERROR + message
 * for an unknown name, or bf16 where the CPU or backbone cannot. */
int uflow_model_set_precision(uflow_model *m, const char *precision);

/* ---- prediction -------------------------------------------------------------------------- */

typedef struct uflow_predict_options {
    int model_size;  /* 1: results at the model's input size instead of the image's */
    int nfa_block;   /* 1: the older block NFA (spec 7.2) instead of the tree NFA */
} uflow_predict_options;

uflow_predict_options uflow_predict_default_options(void);

/* One image from memory: 8-bit, row-major, channels 1 (gray), 3 (RGB) or 4 (RGBA, alpha
 * ignored), stride bytes per row (0: width * channels). Any size up to 65535 x 65535.
 * o may be NULL (defaults). NULL + error for bad arguments or non-finite latents. */
uflow_result *uflow_predict_pixels(uflow_model *m, const unsigned char *pixels, int width, int height, int channels,
                                   size_t stride, const uflow_predict_options *o);
/* One image file (PNG, JPEG, BMP, TIFF). */
uflow_result *uflow_predict_file(uflow_model *m, const char *path, const uflow_predict_options *o);
/* One image file held in memory (data[0..len), not kept), with the same checks as a file
 * (size limits, truncation, decompression bombs); name stands for its path in messages
 * (NULL: "image in memory"). */
uflow_result *uflow_predict_encoded(uflow_model *m, const void *data, size_t len, const char *name,
                                    const uflow_predict_options *o);
/* n image files in batches (faster than one at a time; the next batch is decoded and the
 * previous results are upsampled on other threads while the model runs: uflow predict's
 * pipeline, same results). results[i] gets image i's result,
 * or NULL with errors[i] (when errors is not NULL) set to a malloc'ed message the caller
 * frees. Returns the number of images that failed, or UFLOW_ERROR when nothing could run
 * (out of memory). One bad file never costs the others. */
int uflow_predict_files(uflow_model *m, const char *const *paths, int n, const uflow_predict_options *o,
                        uflow_result **results, char **errors);

float uflow_result_score(const uflow_result *r);         /* max of the anomaly map */
int uflow_result_anomalous(const uflow_result *r);       /* 1: some pixel has NFA < 1 */
int uflow_result_width(const uflow_result *r);
int uflow_result_height(const uflow_result *r);
const float *uflow_result_anomaly_map(const uflow_result *r);  /* height x width, in [0, 1] */
const float *uflow_result_neg_log10_nfa(const uflow_result *r); /* height x width; > 0: detected */
const unsigned char *uflow_result_mask(const uflow_result *r); /* height x width, 1 where NFA < 1 */
int uflow_result_detected_pixels(const uflow_result *r);
float uflow_result_max_neg_log10_nfa(const uflow_result *r);
/* Writes out_dir/<stem>_map.png (16-bit; or _map.safetensors with map_safetensors),
 * _overlay.png and _mask.png, as `uflow predict` does; stem may name sub-folders
 * ("hole/000"), which are made. */
int uflow_result_write(const uflow_result *r, const char *out_dir, const char *stem, int map_safetensors);
/* One of those images as a PNG file in memory: what = "map" (16-bit gray), "mask" (8-bit,
 * 255 where detected) or "overlay" (RGB). *png is malloc'ed (free() it), *len bytes.
 * UFLOW_OK, or UFLOW_ERROR + uflow_last_error(). */
int uflow_result_png(const uflow_result *r, const char *what, unsigned char **png, size_t *len);
void uflow_result_free(uflow_result *r); /* NULL is fine */

/* Predicting straight to files, as `uflow predict` does (its pipeline: decoding, the model,
 * and the encoding and writing of the outputs overlap on all cores). */
typedef struct uflow_write_options {
    const char *outputs; /* any of "map,mask,overlay,nfa" (comma-separated) or "none"; NULL: map,mask,overlay */
    int map_safetensors; /* 1: <stem>_map.safetensors (float32) instead of the 16-bit PNG */
    int overlay_jpeg;    /* 1: <stem>_overlay.jpg instead of .png */
    int model_size;      /* 1: outputs at the model's input size */
    int nfa_block;       /* 1: the older block NFA */
} uflow_write_options;

uflow_write_options uflow_write_default_options(void);

/* One image's row of uflow predict's results.csv. */
typedef struct uflow_row {
    int ok; /* 1: the image gave results (the fields below); 0: it failed (errors[i]) */
    float score, max_neg_log10_nfa;
    int anomalous, detected_pixels, width, height;
} uflow_row;

/* Predicts paths[i] and writes its files as out_dir/<stems[i]>_map.png etc. (stems from
 * uflow_list_images give uflow predict's names; sub-folders are made); rows[i] gets its row
 * and errors[i] (when errors is not NULL) a malloc'ed message if it failed. The files are
 * on disk (synced) when the call returns. Returns the number of images that failed, or
 * UFLOW_ERROR when the run stopped (a write failed, out of memory: the message names it). */
int uflow_predict_to_files(uflow_model *m, const char *const *paths, const char *const *stems, int n,
                           const char *out_dir, const uflow_write_options *o, uflow_row *rows, char **errors);

/* The images `uflow predict` would process for these paths (files, or folders walked
 * recursively, in its order) and the output stem each gets there, so that work split
 * over processes or machines writes exactly what one `uflow predict` writes. */
uflow_image_list *uflow_list_images(const char *const *paths, int n);
int uflow_image_list_count(const uflow_image_list *l);
const char *uflow_image_list_path(const uflow_image_list *l, int i);
const char *uflow_image_list_stem(const uflow_image_list *l, int i);
void uflow_image_list_free(uflow_image_list *l);

/* ---- testing ------------------------------------------------------------------------------- */

typedef struct uflow_test_options {
    const char *data_dir; /* a labelled category folder (MVTec-AD, MVTec 3D-AD, BTAD, VisA) */
    const char *out_dir;  /* NULL, or a folder for metrics.json and report.html */
    int eval_size;        /* 256 */
} uflow_test_options;

/* NaN where the data do not allow a metric (e.g. pixel metrics without masks). */
typedef struct uflow_metrics {
    int images, good_images, good_with_detection;
    double image_auroc, pixel_auroc, aupro;
    double miou_auto, miou_oracle, f1_auto; /* segmentation at NFA = 1, and at the best threshold */
    int tp, fp, tn, fn;                    /* image-level, anomalous = some pixel with NFA < 1 */
} uflow_metrics;

uflow_test_options uflow_test_default_options(void);
int uflow_test(uflow_model *m, const uflow_test_options *o, uflow_metrics *metrics);

#ifdef __cplusplus
}
#endif

#endif
