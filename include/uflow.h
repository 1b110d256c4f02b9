/* uflow.h - public API of the uflow library (link build/libuflow.a; compile
 * with -Iinclude -Isrc; see the Makefile for the system libraries).
 *
 * uflow implements U-Flow (Tailanian, Pardo, Muse: "U-Flow: A U-shaped
 * Normalizing Flow for Anomaly Detection with Unsupervised Threshold", JMIV
 * 2024): a frozen ImageNet backbone, a U-shaped normalizing flow trained by
 * maximum likelihood, an anomaly map, and an a-contrario (NFA) segmentation.
 *
 * Errors: functions return UF_OK (0) / UF_ERR (-1) or NULL and leave a
 * one-line message for uf_last_error(). Nothing in the library prints, except
 * progress lines when an options struct asks for them (verbose).
 *
 * Typical use:
 *
 *     uf_set_num_threads(0);                                  // all cores
 *     uf_train_options o = uf_train_default_options();        // ResNet-18 @256 ...
 *     o.data_dir = "mvtec/bottle";  o.out_path = "bottle.safetensors";
 *     if (uf_train(&o, NULL) != UF_OK) die(uf_last_error());
 *
 *     uf_model *m = uf_model_load("bottle.safetensors", NULL, NULL, NULL);
 *     uf_detect_batch b;                                      // up to 8 images at a time
 *     uf_detect_batch_init(&b, m, 8, m->cfg.input.width, m->cfg.input.height);
 *     const char *paths[] = {"a.png", "b.png"};
 *     uf_detect_load(&b, m, paths, 2);
 *     uf_detect_run(&b, m, NULL, NULL);
 *     // b.score[i]: image score; b.amap + i*S*S: anomaly map; b.nfa + i*S*S: -log10 NFA (> 0: detected)
 *     uf_detect_batch_free(&b);
 *     uf_model_free(m);
 *
 * Whole-folder helpers: uf_evaluate (metrics on a labelled test split) and
 * uf_predict (maps, overlays and masks written to a folder).
 */
#ifndef UFLOW_H
#define UFLOW_H

#include "core/blas.h"      /* uf_set_num_threads, uf_blas_corename */
#include "core/error.h"     /* UF_OK, UF_ERR, uf_last_error */
#include "core/version.h"   /* UFLOW_VERSION, uf_version */
#include "model/detect.h"   /* uf_detect_batch: images -> scores, maps, NFA */
#include "model/evaluate.h" /* uf_evaluate: metrics of spec 8 */
#include "model/model.h"    /* uf_model: load, save, latents */
#include "model/predict.h"  /* uf_predict: outputs for a folder of images */
#include "model/train.h"    /* uf_train */

#endif
