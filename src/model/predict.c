#include "model/predict.h"

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
#include "io/atomic_file.h"
#include "io/dataset.h"
#include "io/render.h"
#include "io/safetensors.h"
#include "model/batch.h"

#define OVERLAY_ALPHA 0.5f

/* A set of output stems, to give repeated names a suffix. */
typedef struct stem_set {
    char **slot;
    size_t cap, n;
} stem_set;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Inserts s; returns 1 if it was new, 0 if present, -1 when out of memory. */
static int stem_insert(stem_set *set, const char *s) {
    if (2 * (set->n + 1) > set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 1024;
        char **slot = calloc(cap, sizeof(char *));
        if (!slot) return -1;
        for (size_t i = 0; i < set->cap; i++)
            if (set->slot[i]) {
                size_t j = fnv1a(set->slot[i]) & (cap - 1);
                while (slot[j]) j = (j + 1) & (cap - 1);
                slot[j] = set->slot[i];
            }
        free(set->slot);
        set->slot = slot;
        set->cap = cap;
    }
    size_t j = fnv1a(s) & (set->cap - 1);
    for (; set->slot[j]; j = (j + 1) & (set->cap - 1))
        if (!strcmp(set->slot[j], s)) return 0;
    if (!(set->slot[j] = strdup(s))) return -1;
    set->n++;
    return 1;
}

static void stem_set_free(stem_set *set) {
    for (size_t i = 0; i < set->cap; i++) free(set->slot[i]);
    free(set->slot);
}

/* Output stem of image index i, under rel (its folder relative to the folder argument,
 * "" for none): "rel/<file name without extension>"; when taken, "rel/<parent
 * folder>_<stem>" (e.g. "hole_000"); when that is taken too, "_<index>" is appended.
 * Unique within this run. */
static int output_stem(stem_set *set, const char *path, const char *rel, int index, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    const char *sep = rel[0] ? "/" : "";
    snprintf(out, cap, "%s%s%.*s", rel, sep, len, base);
    int r = stem_insert(set, out);
    if (r == 0 && base != path) {
        const char *end = base - 1, *parent = end; /* the '/' before base */
        while (parent > path && parent[-1] != '/') parent--;
        snprintf(out, cap, "%s%s%.*s_%.*s", rel, sep, (int)(end - parent), parent, len, base);
        r = stem_insert(set, out);
    }
    if (r == 0) {
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "_%d", index);
        r = stem_insert(set, out);
    }
    return r < 0 ? uf_error("out of memory") : UF_OK;
}

int uf_plan_output_stems(const uf_dataset *ds, char ***stems_out) {
    stem_set set = {0};
    char **stems = calloc((size_t)ds->count + 1, sizeof(char *));
    int rc = stems ? UF_OK : uf_error("out of memory");
    for (int i = 0; rc == UF_OK && i < ds->count; i++) {
        char stem[1024];
        const char *rel = ds->samples[i].rel_dir ? ds->samples[i].rel_dir : "";
        rc = output_stem(&set, ds->samples[i].image_path, rel, i, stem, sizeof stem);
        if (rc == UF_OK && !(stems[i] = strdup(stem))) rc = uf_error("out of memory");
    }
    stem_set_free(&set);
    if (rc != UF_OK) {
        uf_free_output_stems(stems, ds->count);
        return UF_ERR;
    }
    *stems_out = stems;
    return UF_OK;
}

void uf_free_output_stems(char **stems, int n) {
    if (!stems) return;
    for (int i = 0; i < n; i++) free(stems[i]);
    free(stems);
}

/* v rounded to `decimals` places, so JSON shows 0.993405 rather than every float digit. */
static double rounded(double v, int decimals) {
    double scale = pow(10.0, decimals);
    return isfinite(v) ? round(v * scale) / scale : v;
}

/* One results.jsonl line (cJSON does the escaping); UF_ERR when out of memory.
 * A failed image (error != NULL) has only "image" and "error". */
static int write_json_line(FILE *f, const char *image, float score, int anomalous, int detected, float max_nfa,
                           int width, int height, const char *stem, const char *error) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return uf_error("out of memory");
    cJSON_AddStringToObject(o, "image", image);
    if (error) {
        cJSON_AddStringToObject(o, "error", error);
    } else {
        cJSON_AddNumberToObject(o, "score", rounded(score, 6));
        cJSON_AddBoolToObject(o, "anomalous", anomalous);
        cJSON_AddNumberToObject(o, "detected_pixels", detected);
        cJSON_AddNumberToObject(o, "max_neg_log10_nfa", rounded(max_nfa, 3));
        cJSON_AddNumberToObject(o, "width", width);
        cJSON_AddNumberToObject(o, "height", height);
        cJSON_AddStringToObject(o, "outputs", stem);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return uf_error("out of memory");
    fprintf(f, "%s\n", text);
    cJSON_free(text);
    return UF_OK;
}

/* CSV field: quoted, with doubled quotes. */
static void csv_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* The model-grid field f (gh, gw) on a W x H image: bilinear (align_corners=False)
 * onto the window of the image the model saw (uf_fit_window: all of it, or the
 * keep-aspect centre crop), 0 outside it (not seen: no anomaly, no detection). */
static void field_to_image(const float *f, int gw, int gh, const int win[4], int W, int H, float *out, float *tmp) {
    if (win[0] == 0 && win[1] == 0 && win[2] == W && win[3] == H) {
        uf_interp_bilinear(f, 1, gh, gw, out, H, W);
        return;
    }
    uf_interp_bilinear(f, 1, gh, gw, tmp, win[3], win[2]);
    memset(out, 0, sizeof(float) * (size_t)W * H);
    for (int y = 0; y < win[3] && win[1] + y < H; y++)
        for (int x = 0; x < win[2] && win[0] + x < W; x++)
            out[(size_t)(win[1] + y) * W + win[0] + x] = tmp[(size_t)y * win[2] + x];
}

void uf_image_result_free(uf_image_result *r) {
    free(r->anomaly_map), free(r->neg_log10_nfa), free(r->mask);
    uf_image_free(r->image);
    memset(r, 0, sizeof *r);
}

/* A tiled image's results: the batch's stitched fields, already at the image's size, taken over. */
static int tiled_result(uf_batch *b, int i, uf_image_result *r) {
    const int W = b->orig_w[i], H = b->orig_h[i];
    const size_t np = (size_t)W * H;
    r->width = W, r->height = H;
    r->score = b->score[i];
    r->anomaly_map = b->tiled_amap[i], r->neg_log10_nfa = b->tiled_nfa[i];
    b->tiled_amap[i] = b->tiled_nfa[i] = NULL;
    if (!(r->mask = malloc(np))) {
        uf_image_result_free(r);
        return uf_error("out of memory for the results of a %dx%d image", W, H);
    }
    for (size_t p = 0; p < np; p++) r->detected_pixels += r->mask[p] = r->neg_log10_nfa[p] > 0.0f;
    r->max_neg_log10_nfa = b->max_nfa[i];
    r->anomalous = r->max_neg_log10_nfa > 0.0f; /* the test's decision, at the working resolution */
    r->image = b->original[i];
    b->original[i] = NULL;
    return UF_OK;
}

int uf_image_result_from_batch(uf_batch *b, int i, const uf_input_geometry *g, uf_image_result *r) {
    memset(r, 0, sizeof *r);
    if (b->tiled) return tiled_result(b, i, r);
    const int GW = b->out_w, GH = b->out_h;
    const float *amap_s = b->amap + (size_t)i * GW * GH, *nfa_s = b->nfa + (size_t)i * GW * GH;
    uf_image **slot = b->original && b->original[i] ? &b->original[i] : &b->resized[i];
    const int W = (*slot)->width, H = (*slot)->height;
    const size_t np = (size_t)W * H;
    r->width = W, r->height = H;
    r->score = b->score[i];
    r->max_neg_log10_nfa = -INFINITY;
    for (int p = 0; p < GW * GH; p++)
        if (nfa_s[p] > r->max_neg_log10_nfa) r->max_neg_log10_nfa = nfa_s[p];
    r->anomalous = r->max_neg_log10_nfa > 0.0f; /* the test's decision, on the model's grid */
    r->anomaly_map = malloc(sizeof(float) * np);
    r->neg_log10_nfa = malloc(sizeof(float) * np);
    r->mask = malloc(np);
    int win[4];
    uf_fit_window(g, W, H, win);
    float *tmp = W != GW || H != GH ? malloc(sizeof(float) * ((size_t)win[2] * win[3])) : NULL;
    if (!r->anomaly_map || !r->neg_log10_nfa || !r->mask || ((W != GW || H != GH) && !tmp)) {
        free(tmp);
        uf_image_result_free(r);
        return uf_error("out of memory for the results of a %dx%d image", W, H);
    }
    if (W == GW && H == GH) {
        memcpy(r->anomaly_map, amap_s, sizeof(float) * np);
        memcpy(r->neg_log10_nfa, nfa_s, sizeof(float) * np);
    } else {
        field_to_image(amap_s, GW, GH, win, W, H, r->anomaly_map, tmp);
        field_to_image(nfa_s, GW, GH, win, W, H, r->neg_log10_nfa, tmp);
    }
    free(tmp);
    for (size_t p = 0; p < np; p++) r->detected_pixels += r->mask[p] = r->neg_log10_nfa[p] > 0.0f;
    r->image = *slot; /* taken from the batch: its next load would free it */
    *slot = NULL;
    return UF_OK;
}

int uf_image_result_write(const uf_image_result *r, const char *dir, const char *stem, int map_safetensors) {
    const int W = r->width, H = r->height;
    const size_t np = (size_t)W * H;
    char path[4400];
    if ((size_t)snprintf(path, sizeof path, "%s/%s_overlay.png", dir, stem) >= sizeof path)
        return uf_error("output path too long: '%s/%s'", dir, stem);
    const char *slash = strrchr(stem, '/');
    if (slash) { /* the stem mirrors a sub-folder of the input: make it */
        char sub[4400];
        snprintf(sub, sizeof sub, "%s/%.*s", dir, (int)(slash - stem), stem);
        if (uf_make_dirs(sub) != UF_OK) return UF_ERR;
    }
    int rc = UF_OK;
    if (map_safetensors) {
        snprintf(path, sizeof path, "%s/%s_map.safetensors", dir, stem);
        uf_st_writer *w = uf_st_writer_new();
        int64_t shape[2] = {H, W};
        rc = w ? uf_st_writer_add_f32(w, "anomaly_map", UF_DT_F32, 2, shape, r->anomaly_map) : UF_ERR;
        if (rc == UF_OK) rc = uf_st_writer_save(w, path);
        uf_st_writer_free(w);
    } else {
        uint16_t *px = malloc(sizeof(uint16_t) * np);
        rc = px ? UF_OK : uf_error("out of memory");
        for (size_t p = 0; px && p < np; p++) {
            float a = r->anomaly_map[p] < 0.0f ? 0.0f : r->anomaly_map[p] > 1.0f ? 1.0f : r->anomaly_map[p];
            px[p] = (uint16_t)lrintf(a * 65535.0f);
        }
        snprintf(path, sizeof path, "%s/%s_map.png", dir, stem);
        if (px) rc = uf_png_write_gray16(path, px, W, H);
        free(px);
    }
    uf_image *ov = rc == UF_OK ? uf_render_overlay(r->image, r->anomaly_map, W, H, 0.0f, 1.0f, OVERLAY_ALPHA) : NULL;
    if (rc == UF_OK && !ov) rc = UF_ERR;
    if (rc == UF_OK) {
        snprintf(path, sizeof path, "%s/%s_overlay.png", dir, stem);
        rc = uf_image_write_png(path, ov);
    }
    uf_image_free(ov);
    uf_image *mimg = rc == UF_OK ? uf_render_mask(r->mask, W, H) : NULL;
    if (rc == UF_OK && !mimg) rc = UF_ERR;
    if (rc == UF_OK) {
        snprintf(path, sizeof path, "%s/%s_mask.png", dir, stem);
        rc = uf_image_write_png(path, mimg);
    }
    uf_image_free(mimg);
    return rc;
}

/* -1 when path is under none of the labelled folders, else its label. */
static int label_of(const uf_predict_options *o, const char *path) {
    for (int k = 0; k < o->n_labels; k++) {
        size_t n = strlen(o->labels[k].dir);
        while (n > 1 && o->labels[k].dir[n - 1] == '/') n--;
        if (!strncmp(path, o->labels[k].dir, n) && path[n] == '/') return o->labels[k].anomalous;
    }
    return -1;
}

int uf_predict(uf_model *m, const char *const *inputs, int n_inputs, const uf_predict_options *o,
               uf_predict_report *rep) {
    memset(rep, 0, sizeof *rep);
    rep->image_auroc = NAN;
    char calib[320];
    if (*uf_model_calibration_warning(&m->cfg, calib, sizeof calib)) uf_log(UF_LOG_WARNING, "%s", calib);
    rep->at_nfa.f1 = NAN;
    double t0 = uf_now();
    if (o->n_labels < 0 || o->n_labels > UF_PREDICT_MAX_LABELS)
        return uf_error("at most %d labelled folders", UF_PREDICT_MAX_LABELS);
    const char **all = malloc(sizeof(char *) * (size_t)(n_inputs + o->n_labels + 1));
    if (!all) return uf_error("out of memory");
    for (int i = 0; i < n_inputs; i++) all[i] = inputs[i];
    for (int k = 0; k < o->n_labels; k++) all[n_inputs + k] = o->labels[k].dir;
    uf_dataset *ds = uf_dataset_from_paths(all, n_inputs + o->n_labels);
    free(all);
    if (!ds) return UF_ERR;
    float *lab_score = o->n_labels ? malloc(sizeof(float) * (size_t)ds->count) : NULL;
    uint8_t *lab_label = o->n_labels ? malloc((size_t)ds->count) : NULL,
            *lab_detected = o->n_labels ? malloc((size_t)ds->count) : NULL;
    if (o->n_labels && (!lab_score || !lab_label || !lab_detected)) {
        free(lab_score), free(lab_label), free(lab_detected);
        uf_dataset_free(ds);
        return uf_error("out of memory");
    }
    const int B = o->batch;
    uf_batch b;
    char **stems = NULL;
    uf_atomic_file csv, jsonl;
    int csv_open = 0, jsonl_open = 0, rc = UF_ERR;
    const char **paths = malloc(sizeof(char *) * B);
    char csv_path[4200], jsonl_path[4200];
    snprintf(csv_path, sizeof csv_path, "%s/results.csv", o->out_dir);
    snprintf(jsonl_path, sizeof jsonl_path, "%s/results.jsonl", o->out_dir);
    if (uf_batch_init(&b, m, B, m->cfg.input.width, m->cfg.input.height) != UF_OK) goto out_ds;
    if (!o->model_size_outputs && !b.original && !(b.original = calloc((size_t)B, sizeof *b.original))) {
        uf_error("out of memory");
        goto out;
    }
    if (!paths) goto out;
    /* Planned for every image up front, so an image's names do not depend on which others fail. */
    if (uf_plan_output_stems(ds, &stems) != UF_OK) goto out;
    if (uf_atomic_begin(&csv, csv_path) != UF_OK) goto out;
    csv_open = 1;
    if (uf_atomic_begin(&jsonl, jsonl_path) != UF_OK) goto out;
    jsonl_open = 1;
    fprintf(csv.fp, "image,score,anomalous,detected_pixels,max_neg_log10_nfa,width,height,outputs,error\n");
    for (int i0 = 0; i0 < ds->count; i0 += B) {
        int n = ds->count - i0 < B ? ds->count - i0 : B;
        for (int i = 0; i < n; i++) paths[i] = ds->samples[i0 + i].image_path;
        uf_batch_load(&b, m, paths, n);
        if (uf_batch_run(&b, m, NULL, NULL) != UF_OK) goto out;
        for (int i = 0; i < n; i++) {
            rep->n_images++;
            if (b.error[i][0]) {
                /* Policy: a bad image is reported and the others go on. */
                rep->n_failed++;
                uf_log(UF_LOG_ERROR, "%s", b.error[i]);
                csv_string(csv.fp, paths[i]);
                fputs(",,,,,,,,", csv.fp);
                csv_string(csv.fp, b.error[i]);
                fputc('\n', csv.fp);
                if (write_json_line(jsonl.fp, paths[i], 0, 0, 0, 0, 0, 0, NULL, b.error[i]) != UF_OK) goto out;
                continue;
            }
            uf_image_result r;
            if (uf_image_result_from_batch(&b, i, &m->cfg.input, &r) != UF_OK) goto out;
            const char *stem = stems[i0 + i];
            int wrc = uf_image_result_write(&r, o->out_dir, stem, o->map_safetensors);
            const float score = r.score, max_nfa = r.max_neg_log10_nfa;
            const int anomalous = r.anomalous, detected = r.detected_pixels, ow = r.width, oh = r.height;
            uf_image_result_free(&r);
            if (wrc != UF_OK) goto out;
            rep->n_anomalous += anomalous;
            const int label = o->n_labels ? label_of(o, paths[i]) : -1;
            if (label >= 0) {
                lab_score[rep->n_labelled] = score;
                lab_label[rep->n_labelled] = (uint8_t)label;
                lab_detected[rep->n_labelled++] = (uint8_t)anomalous;
            }
            csv_string(csv.fp, paths[i]);
            fprintf(csv.fp, ",%.6f,%d,%d,%.3f,%d,%d,", score, anomalous, detected, max_nfa, ow, oh);
            csv_string(csv.fp, stem);
            fputs(",\n", csv.fp);
            if (write_json_line(jsonl.fp, paths[i], score, anomalous, detected, max_nfa, ow, oh, stem, NULL) !=
                UF_OK)
                goto out;
        }
        if (o->verbose) uf_log(UF_LOG_PROGRESS, "predicted %d/%d images", i0 + n, ds->count);
    }
    if (o->verbose) uf_log(UF_LOG_INFO, "predicted %d images", ds->count);
    csv_open = 0;
    if (uf_atomic_commit(&csv) != UF_OK) goto out;
    jsonl_open = 0;
    if (uf_atomic_commit(&jsonl) != UF_OK) goto out;
    rep->seconds = uf_now() - t0;
    if (rep->n_labelled) {
        rep->image_auroc = uf_auroc(lab_score, lab_label, (size_t)rep->n_labelled);
        rep->at_nfa = uf_image_confusion_of(lab_label, lab_detected, rep->n_labelled);
    }
    rc = UF_OK;
out:
    if (csv_open) uf_atomic_abort(&csv);
    if (jsonl_open) uf_atomic_abort(&jsonl);
    free(paths);
    uf_free_output_stems(stems, ds->count);
    uf_batch_free(&b);
out_ds:
    free(lab_score), free(lab_label), free(lab_detected);
    uf_dataset_free(ds);
    return rc;
}
