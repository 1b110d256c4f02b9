#include "model/evaluate.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/interp.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "io/json_file.h"
#include "io/dataset.h"
#include "model/batch.h"

/* The evaluation grid (evaluate.h): eval_size on the longer side of the model's input, the
 * other side in the same proportion (eval_size x eval_size for a square model). */
void uf_evaluate_grid(const uf_model *m, int eval_size, int *ew, int *eh) {
    const int W = m->cfg.input.width, H = m->cfg.input.height;
    const long shorter = lround((double)eval_size * (W < H ? W : H) / (W > H ? W : H));
    *ew = W >= H ? eval_size : (int)(shorter > 0 ? shorter : 1);
    *eh = H >= W ? eval_size : (int)(shorter > 0 ? shorter : 1);
}

int uf_evaluate_at_image_size(const uf_model *m, const uf_evaluate_options *o) {
    return m->cfg.tiling.enabled || o->eval_native;
}

int uf_evaluate_gt(const uf_model *m, const uf_sample *s, int orig_w, int orig_h, int ew, int eh, int at_image_size,
                   uint8_t *gt) {
    const size_t ne = (size_t)ew * eh;
    if (!s->mask_path) {
        memset(gt, 0, ne);
        return UF_OK;
    }
    uf_image *mask = uf_mask_load(s->mask_path, s->image_path, orig_w, orig_h);
    if (!mask) return UF_ERR;
    uf_image *r = at_image_size ? mask : uf_image_fit(mask, &m->cfg.input);
    if (r != mask) uf_image_free(mask);
    if (!r) return UF_ERR;
    int rc = UF_OK;
    if (r->width == ew && r->height == eh) {
        for (size_t i = 0; i < ne; i++) gt[i] = r->pixels[i] / 255.0f > 0.5f;
    } else {
        const size_t ni = (size_t)r->width * r->height;
        float *src = uf_alloc((ni + ne) * sizeof(float)), *dst = src ? src + ni : NULL;
        if (src) {
            for (size_t i = 0; i < ni; i++) src[i] = r->pixels[i] / 255.0f;
            uf_interp_bilinear(src, 1, r->height, r->width, dst, eh, ew);
            for (size_t i = 0; i < ne; i++) gt[i] = dst[i] > 0.5f;
        } else {
            rc = uf_error("out of memory");
        }
        uf_free(src);
    }
    uf_image_free(r);
    return rc;
}

/* *thr = the largest score of the data set's training images (train/good), with the batch
 * b (its paths array of b->cap entries); NaN and *n = 0 when there is no train split. A
 * training image that cannot be read is an error, as any test image is. */
static int train_max_score(uf_model *m, const uf_evaluate_options *o, uf_batch *b, const char **paths,
                           double *thr, int *n_scored) {
    *thr = NAN, *n_scored = 0;
    const char *train_root = o->train_dir ? o->train_dir : o->data_dir;
    uf_dataset *tr = train_root ? uf_dataset_open(train_root, "train") : NULL;
    if (!tr && o->train_dir) return uf_error_prefix("training images for the score threshold");
    if (!tr) {
        uf_error_clear();
        return UF_OK;
    }
    double mx = -INFINITY;
    int rc = UF_OK;
    for (int i0 = 0; i0 < tr->count && rc == UF_OK; i0 += b->cap) {
        int n = tr->count - i0 < b->cap ? tr->count - i0 : b->cap;
        for (int i = 0; i < n; i++) paths[i] = tr->samples[i0 + i].image_path;
        uf_batch_load(b, m, paths, n);
        int bad = uf_batch_first_error(b);
        if (bad < 0) {
            if (uf_batch_run(b, m, NULL, NULL) != UF_OK) rc = UF_ERR;
            bad = rc == UF_OK ? uf_batch_first_error(b) : -1;
        }
        if (bad >= 0) rc = uf_error("training image: %s", b->error[bad]);
        for (int i = 0; rc == UF_OK && i < n; i++) mx = b->score[i] > mx ? b->score[i] : mx;
    }
    if (rc == UF_OK) *thr = mx, *n_scored = tr->count;
    uf_dataset_free(tr);
    return rc;
}

int uf_evaluate(uf_model *m, const uf_evaluate_options *o, uf_evaluate_report *rep) {
    char calib[320];
    if (*uf_model_calibration_warning(&m->cfg, calib, sizeof calib)) uf_log(UF_LOG_WARNING, "%s", calib);
    memset(rep, 0, sizeof *rep);
    double t_start = uf_now();
    uf_dataset *ds = o->data_dir ? uf_dataset_open(o->data_dir, "test")
                                 : uf_dataset_from_folders(o->normal_dir, o->abnormal_dir, o->mask_dir);
    if (!ds) return UF_ERR;
    const int L = m->cfg.flow.n_scales, B = o->batch;
    int EW, EH;
    uf_evaluate_grid(m, o->eval_size, &EW, &EH);
    const size_t per = (size_t)EW * EH;
    uf_batch b;
    uf_eval *ev = NULL;
    uint8_t *gt = NULL;
    const char **paths = NULL;
    int *idx = NULL, rc = UF_ERR, n_masked_anomalous = 0;
    size_t gt_cap = per;
    float *img_score = NULL, *native_amap = NULL, *native_nfa = NULL; /* eval_native's resized fields */
    size_t native_cap = 0;
    const int at_image_size = uf_evaluate_at_image_size(m, o);
    uint8_t *img_label = NULL, *img_detected = NULL;
    rep->images = calloc((size_t)(ds->count > 0 ? ds->count : 1), sizeof *rep->images);
    if (!rep->images) {
        uf_dataset_free(ds);
        return uf_error("out of memory");
    }
    double z2_sum[UF_FLOW_MAX_SCALES] = {0}, z2_count[UF_FLOW_MAX_SCALES] = {0};
    if (uf_batch_init(&b, m, B, EW, EH) != UF_OK) goto out_ds;
    b.nfa_block = o->nfa_block;
    ev = uf_eval_new();
    gt = malloc(per);
    paths = malloc(sizeof(char *) * B);
    idx = malloc(sizeof(int) * B);
    if (!ev || !gt || !paths || !idx) {
        uf_error("out of memory");
        goto out;
    }
    img_score = malloc(sizeof(float) * (size_t)ds->count);
    img_label = malloc((size_t)ds->count);
    img_detected = malloc((size_t)ds->count);
    if (!img_score || !img_label || !img_detected) {
        uf_error("out of memory");
        goto out;
    }
    for (int i0 = 0; i0 < ds->count;) {
        int n = 0;
        for (; i0 < ds->count && n < B; i0++) {
            idx[n] = i0;
            paths[n++] = ds->samples[i0].image_path;
        }
        if (n == 0) break;
        double t0 = uf_now();
        /* Metrics over part of a labelled test set would mislead: any image
         * that cannot be used stops the evaluation, naming it. */
        uf_batch_load(&b, m, paths, n);
        rep->t_load += uf_now() - t0;
        int bad = uf_batch_first_error(&b);
        if (bad < 0) {
            if (uf_batch_run(&b, m, &rep->t_latents, &rep->t_detect) != UF_OK) goto out;
            bad = uf_batch_first_error(&b);
        }
        if (bad >= 0) {
            uf_error("%s", b.error[bad]);
            goto out;
        }
        double t1 = uf_now();
        for (int i = 0; i < n; i++) {
            const uf_sample *s = &ds->samples[idx[i]];
            float *amap = b.amap + (size_t)i * per, *nfa = b.nfa + (size_t)i * per;
            int ew = EW, eh = EH;
            if (b.tiled) { /* the stitched fields, at the image's own size */
                amap = b.tiled_amap[i], nfa = b.tiled_nfa[i];
                ew = b.orig_w[i], eh = b.orig_h[i];
            } else if (o->eval_native && uf_sample_has_pixel_gt(s)) { /* the grid's fields at the image's size */
                ew = b.orig_w[i], eh = b.orig_h[i];
                if ((size_t)ew * eh > native_cap) {
                    free(native_amap), free(native_nfa);
                    native_cap = (size_t)ew * eh;
                    native_amap = malloc(native_cap * sizeof(float)), native_nfa = malloc(native_cap * sizeof(float));
                    if (!native_amap || !native_nfa) {
                        native_cap = 0;
                        uf_error("out of memory");
                        goto out;
                    }
                }
                uf_interp_bilinear(amap, 1, EH, EW, native_amap, eh, ew);
                uf_interp_bilinear(nfa, 1, EH, EW, native_nfa, eh, ew);
                amap = native_amap, nfa = native_nfa;
            }
            const int detected = b.max_nfa[i] > 0.0f; /* where the test runs */
            img_score[rep->n_images] = b.score[i];
            img_label[rep->n_images] = (uint8_t)(s->label != 0);
            img_detected[rep->n_images] = (uint8_t)detected;
            uf_evaluated_image *e = &rep->images[rep->n_images];
            e->image_path = strdup(s->image_path);
            e->mask_path = s->mask_path ? strdup(s->mask_path) : NULL;
            e->score = b.score[i], e->label = img_label[rep->n_images], e->detected = (uint8_t)detected;
            rep->n_images++;
            if (!e->image_path || (s->mask_path && !e->mask_path)) {
                uf_error("out of memory");
                goto out;
            }
            if (uf_sample_has_pixel_gt(s)) {
                if ((size_t)ew * eh > gt_cap) { /* a tiled model's image at its own size */
                    uint8_t *g = realloc(gt, (size_t)ew * eh);
                    if (!g) {
                        uf_error("out of memory");
                        goto out;
                    }
                    gt = g, gt_cap = (size_t)ew * eh;
                }
                if (uf_evaluate_gt(m, s, b.orig_w[i], b.orig_h[i], ew, eh, at_image_size, gt) != UF_OK) goto out;
                if (uf_eval_add(ev, eh, ew, amap, nfa, gt, s->label, NAN) != UF_OK) {
                    uf_error_prefix("%s", s->image_path);
                    goto out;
                }
                n_masked_anomalous += s->label != 0;
            } else {
                rep->n_skipped++;
            }
            if (s->label == 0) {
                rep->n_good++;
                rep->n_good_with_detection += detected;
                for (int l = 0; l < L; l++) z2_sum[l] += b.z2[i][l], z2_count[l] += 1.0;
            }
        }
        rep->t_metrics += uf_now() - t1;
        if (o->verbose) uf_log(UF_LOG_PROGRESS, "tested %d/%d images", i0, ds->count);
    }
    if (o->verbose) uf_log(UF_LOG_INFO, "tested %d images", ds->count);
    if (rep->n_skipped)
        uf_log(UF_LOG_WARNING, "%d anomalous test images have no mask: in the image-level metrics, not in the "
                               "pixel-level ones", rep->n_skipped);
    for (int l = 0; l < L; l++) rep->good_mean_z2[l] = z2_count[l] > 0 ? z2_sum[l] / z2_count[l] : NAN;
    double t2 = uf_now();
    /* pixel metrics need anomalous pixels: over good images alone they would read as perfect */
    if (n_masked_anomalous > 0) {
        if (uf_eval_compute(ev, UF_AUPRO_FPR_LIMIT, &rep->metrics) != UF_OK) goto out;
    } else {
        memset(&rep->metrics, 0, sizeof rep->metrics);
        rep->metrics.pixel_auroc = rep->metrics.aupro = rep->metrics.aupro_textbook = NAN;
        rep->metrics.miou_auto = rep->metrics.miou_oracle = rep->metrics.f1_auto = NAN;
    }
    /* image level, over every test image */
    rep->metrics.image_auroc = uf_auroc(img_score, img_label, (size_t)rep->n_images);
    uf_roc_curve(img_score, img_label, (size_t)rep->n_images, &rep->image_roc);
    rep->metrics.n_images = rep->n_images;
    rep->metrics.n_anomalous_images = 0;
    for (int i = 0; i < rep->n_images; i++) rep->metrics.n_anomalous_images += img_label[i];
    rep->at_nfa = uf_image_confusion_of(img_label, img_detected, rep->n_images);
    rep->t_metrics += uf_now() - t2;
    /* the score threshold that keeps every training image normal */
    rep->score_threshold = NAN;
    if (train_max_score(m, o, &b, paths, &rep->score_threshold, &rep->n_train_scored) != UF_OK) goto out;
    for (int i = 0; i < rep->n_images; i++) img_detected[i] = img_score[i] > rep->score_threshold;
    rep->at_train_max = uf_image_confusion_of(img_label, img_detected, isnan(rep->score_threshold) ? 0 : rep->n_images);
    rep->t_total = uf_now() - t_start;
    rc = UF_OK;
out:
    free(img_score), free(img_label), free(img_detected), free(native_amap), free(native_nfa);
    free(paths), free(idx), free(gt);
    uf_eval_free(ev);
    uf_batch_free(&b);
out_ds:
    uf_dataset_free(ds);
    return rc;
}

void uf_evaluate_report_free(uf_evaluate_report *rep) {
    if (!rep || !rep->images) return;
    for (int i = 0; i < rep->n_images; i++) free(rep->images[i].image_path), free(rep->images[i].mask_path);
    free(rep->images);
    rep->images = NULL;
}

int uf_evaluate_write_json(const uf_model *m, const uf_evaluate_options *o, const uf_evaluate_report *rep,
                           const char *path) {
    cJSON *root = cJSON_CreateObject();
    if (o->data_dir) {
        cJSON_AddStringToObject(root, "data", o->data_dir);
    } else {
        cJSON_AddStringToObject(root, "normal", o->normal_dir);
        if (o->abnormal_dir) cJSON_AddStringToObject(root, "abnormal", o->abnormal_dir);
        if (o->mask_dir) cJSON_AddStringToObject(root, "masks", o->mask_dir);
    }
    cJSON_AddStringToObject(root, "backbone", m->cfg.backbone);
    cJSON_AddNumberToObject(root, "input_width", m->cfg.input.width);
    cJSON_AddNumberToObject(root, "input_height", m->cfg.input.height);
    cJSON_AddStringToObject(root, "input_fit", uf_fit_mode_name(m->cfg.input.fit));
    int ew, eh;
    uf_evaluate_grid(m, o->eval_size, &ew, &eh);
    cJSON_AddBoolToObject(root, "tiled", m->cfg.tiling.enabled);
    if (uf_evaluate_at_image_size(m, o)) { /* scored at each image's own size */
        cJSON_AddStringToObject(root, "eval_grid", "image");
    } else {
        cJSON_AddNumberToObject(root, "eval_size", o->eval_size);
        cJSON_AddNumberToObject(root, "eval_width", ew);
        cJSON_AddNumberToObject(root, "eval_height", eh);
    }
    cJSON *cal = cJSON_AddObjectToObject(root, "nfa_calibration");
    cJSON_AddNumberToObject(cal, "images", m->cfg.calib.n_images);
    if (m->cfg.calib.n_images) {
        cJSON_AddNumberToObject(cal, "log10_offset", m->cfg.calib.log10_offset);
        cJSON_AddNumberToObject(cal, "rate", m->cfg.calib.rate);
        cJSON_AddNumberToObject(cal, "validation_flagged_spec", m->cfg.calib.flagged_spec);
        cJSON_AddNumberToObject(cal, "validation_flagged", m->cfg.calib.flagged);
    }
    cJSON_AddStringToObject(root, "nfa", o->nfa_block ? "block" : "tree");
    const uf_eval_result *r = &rep->metrics;
    cJSON *mt = cJSON_AddObjectToObject(root, "metrics");
    uf_json_add_number(mt, "image_auroc", r->image_auroc);
    uf_json_add_number(mt, "pixel_auroc", r->pixel_auroc);
    uf_json_add_number(mt, "aupro", r->aupro);
    uf_json_add_number(mt, "aupro_textbook", r->aupro_textbook);
    uf_json_add_number(mt, "miou_auto", r->miou_auto);
    uf_json_add_number(mt, "miou_oracle", r->miou_oracle);
    uf_json_add_number(mt, "oracle_threshold", r->oracle_thr);
    uf_json_add_number(mt, "f1_auto", r->f1_auto);
    cJSON *il = cJSON_AddObjectToObject(root, "image_level");
    const uf_image_confusion *cs[2] = {&rep->at_nfa, &rep->at_train_max};
    static const char *const names[2] = {"at_nfa_1", "at_max_training_score"};
    for (int k = 0; k < 2; k++) {
        cJSON *c = cJSON_AddObjectToObject(il, names[k]);
        if (k == 1) uf_json_add_number(c, "score_threshold", rep->score_threshold);
        cJSON_AddNumberToObject(c, "tp", cs[k]->tp);
        cJSON_AddNumberToObject(c, "fp", cs[k]->fp);
        cJSON_AddNumberToObject(c, "tn", cs[k]->tn);
        cJSON_AddNumberToObject(c, "fn", cs[k]->fn);
        uf_json_add_number(c, "f1", cs[k]->f1);
    }
    cJSON *cnt = cJSON_AddObjectToObject(root, "counts");
    cJSON_AddNumberToObject(cnt, "images", rep->n_images);
    cJSON_AddNumberToObject(cnt, "anomalous_images", r->n_anomalous_images);
    cJSON_AddNumberToObject(cnt, "anomalous_without_mask", rep->n_skipped);
    cJSON_AddNumberToObject(cnt, "training_images_scored", rep->n_train_scored);
    cJSON_AddNumberToObject(cnt, "regions", r->n_regions);
    cJSON_AddNumberToObject(cnt, "good_images", rep->n_good);
    cJSON_AddNumberToObject(cnt, "good_images_with_detection", rep->n_good_with_detection);
    cJSON *z2 = cJSON_AddArrayToObject(root, "good_mean_z2_per_scale");
    for (int l = 0; l < m->cfg.flow.n_scales; l++) cJSON_AddItemToArray(z2, cJSON_CreateNumber(rep->good_mean_z2[l]));
    cJSON *t = cJSON_AddObjectToObject(root, "seconds");
    cJSON_AddNumberToObject(t, "load", rep->t_load);
    cJSON_AddNumberToObject(t, "backbone_and_flow", rep->t_latents);
    cJSON_AddNumberToObject(t, "map_and_nfa", rep->t_detect);
    cJSON_AddNumberToObject(t, "metrics", rep->t_metrics);
    cJSON_AddNumberToObject(t, "total", rep->t_total);
    return uf_json_write_file(root, path);
}
