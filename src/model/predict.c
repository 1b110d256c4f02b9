#include "model/predict.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/interp.h"
#include "core/tensor.h"
#include "core/strset.h"
#include "core/timer.h"
#include "io/atomic_file.h"
#include "io/dataset.h"
#include "io/render.h"
#include "io/result_rows.h"
#include "io/safetensors.h"
#include "model/batch.h"
#include "model/pipeline.h"

#define OVERLAY_ALPHA 0.5f
#define UF_OVERLAY_JPEG_QUALITY 90

/* Output stem of image index i, under rel (its folder relative to the folder argument,
 * "" for none): "rel/<file name without extension>"; when taken, "rel/<parent
 * folder>_<stem>" (e.g. "hole_000"); when that is taken too, "_<index>" is appended.
 * Unique within this run. */
static int output_stem(uf_strset *set, const char *path, const char *rel, int index, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    const char *sep = rel[0] ? "/" : "";
    snprintf(out, cap, "%s%s%.*s", rel, sep, len, base);
    int r = uf_strset_add(set, out);
    if (r == 0 && base != path) {
        const char *end = base - 1, *parent = end; /* the '/' before base */
        while (parent > path && parent[-1] != '/') parent--;
        snprintf(out, cap, "%s%s%.*s_%.*s", rel, sep, (int)(end - parent), parent, len, base);
        r = uf_strset_add(set, out);
    }
    if (r == 0) {
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "_%d", index);
        r = uf_strset_add(set, out);
    }
    return r < 0 ? uf_error("out of memory") : UF_OK;
}

int uf_plan_output_stems(const uf_dataset *ds, char ***stems_out) {
    uf_strset set = {0};
    char **stems = calloc((size_t)ds->count + 1, sizeof(char *));
    int rc = stems ? UF_OK : uf_error("out of memory");
    for (int i = 0; rc == UF_OK && i < ds->count; i++) {
        char stem[1024];
        const char *rel = ds->samples[i].rel_dir ? ds->samples[i].rel_dir : "";
        rc = output_stem(&set, ds->samples[i].image_path, rel, i, stem, sizeof stem);
        if (rc == UF_OK && !(stems[i] = strdup(stem))) rc = uf_error("out of memory");
    }
    uf_strset_free(&set);
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

void uf_pending_free(uf_pending_result *p) {
    free(p->amap), free(p->nfa);
    uf_image_free(p->image);
    memset(p, 0, sizeof *p);
}

int uf_pending_take(uf_batch *b, int i, uf_pending_result *p) {
    memset(p, 0, sizeof *p);
    p->score = b->score[i];
    if (b->tiled) { /* the stitched fields, already at the image's size, taken over */
        p->tiled = 1;
        p->grid_w = b->orig_w[i], p->grid_h = b->orig_h[i];
        p->amap = b->tiled_amap[i], p->nfa = b->tiled_nfa[i];
        b->tiled_amap[i] = b->tiled_nfa[i] = NULL;
        p->max_nfa = b->max_nfa[i];
        p->image = b->original[i];
        b->original[i] = NULL;
        return UF_OK;
    }
    const int GW = b->out_w, GH = b->out_h;
    const size_t np = (size_t)GW * GH;
    p->grid_w = GW, p->grid_h = GH;
    p->amap = malloc(sizeof(float) * np);
    p->nfa = malloc(sizeof(float) * np);
    if (!p->amap || !p->nfa) {
        uf_pending_free(p);
        return uf_error("out of memory");
    }
    memcpy(p->amap, b->amap + (size_t)i * np, sizeof(float) * np);
    memcpy(p->nfa, b->nfa + (size_t)i * np, sizeof(float) * np);
    p->max_nfa = b->max_nfa[i];
    uf_image **slot = b->original && b->original[i] ? &b->original[i] : &b->resized[i];
    p->image = *slot; /* taken from the batch: its next load would free it */
    *slot = NULL;
    return UF_OK;
}

int uf_pending_finish(uf_pending_result *p, const uf_input_geometry *g, uf_image_result *r) {
    memset(r, 0, sizeof *r);
    const int GW = p->grid_w, GH = p->grid_h;
    const int W = p->image->width, H = p->image->height;
    const size_t np = (size_t)W * H;
    r->width = W, r->height = H;
    r->score = p->score;
    r->max_neg_log10_nfa = p->max_nfa;
    /* The test's decision: on the model's grid, or for a tiled image at the working resolution. */
    r->anomalous = p->max_nfa > 0.0f;
    if (p->tiled || (W == GW && H == GH)) { /* the fields are at the image's size: taken over */
        r->anomaly_map = p->amap, r->neg_log10_nfa = p->nfa;
        p->amap = p->nfa = NULL;
    } else {
        int win[4];
        uf_fit_window(g, W, H, win);
        r->anomaly_map = malloc(sizeof(float) * np);
        r->neg_log10_nfa = malloc(sizeof(float) * np);
        float *tmp = malloc(sizeof(float) * ((size_t)win[2] * win[3]));
        if (r->anomaly_map && r->neg_log10_nfa && tmp) {
            field_to_image(p->amap, GW, GH, win, W, H, r->anomaly_map, tmp);
            field_to_image(p->nfa, GW, GH, win, W, H, r->neg_log10_nfa, tmp);
        }
        free(tmp);
        if (!r->anomaly_map || !r->neg_log10_nfa) {
            uf_image_result_free(r);
            uf_pending_free(p);
            return uf_error("out of memory for the results of a %dx%d image", W, H);
        }
    }
    if (!(r->mask = malloc(np))) {
        uf_image_result_free(r);
        uf_pending_free(p);
        return uf_error("out of memory for the results of a %dx%d image", W, H);
    }
    for (size_t q = 0; q < np; q++) r->detected_pixels += r->mask[q] = r->neg_log10_nfa[q] > 0.0f;
    r->image = p->image;
    p->image = NULL;
    uf_pending_free(p);
    return UF_OK;
}

int uf_image_result_from_batch(uf_batch *b, int i, const uf_input_geometry *g, uf_image_result *r) {
    uf_pending_result p;
    memset(r, 0, sizeof *r);
    if (uf_pending_take(b, i, &p) != UF_OK) return UF_ERR;
    return uf_pending_finish(&p, g, r);
}

int uf_outputs_parse(const char *list, unsigned *outputs) {
    static const struct {
        const char *name;
        unsigned bit;
    } words[] = {{"map", UF_OUTPUT_MAP}, {"mask", UF_OUTPUT_MASK}, {"overlay", UF_OUTPUT_OVERLAY},
                 {"nfa", UF_OUTPUT_NFA}, {"default", UF_OUTPUTS_DEFAULT}, {"none", UF_OUTPUT_NONE}};
    unsigned bits = 0;
    const char *w = list;
    for (;;) {
        size_t len = strcspn(w, ",");
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof words / sizeof *words; k++)
            if (strlen(words[k].name) == len && !strncmp(w, words[k].name, len)) bit = words[k].bit;
        if (!bit) return uf_error("outputs: unknown '%.*s' (map, mask, overlay, nfa, default or none)", (int)len, w);
        bits |= bit;
        if (!w[len]) break;
        w += len + 1;
    }
    if ((bits & UF_OUTPUT_NONE) && bits != UF_OUTPUT_NONE) return uf_error("outputs: 'none' with other outputs");
    *outputs = bits;
    return UF_OK;
}

/* A float32 [H, W] field as <path> (safetensors, one tensor). */
static int write_field(const char *path, const char *name, const float *field, int W, int H, int durable) {
    uf_st_writer *w = uf_st_writer_new();
    int64_t shape[2] = {H, W};
    int rc = w ? uf_st_writer_add_f32(w, name, UF_DT_F32, 2, shape, field) : UF_ERR;
    if (rc == UF_OK) rc = uf_st_writer_save_as(w, path, durable);
    uf_st_writer_free(w);
    return rc;
}

/* The anomaly map as 16-bit gray, as the _map.png file holds it; NULL + error when out of memory. */
static uint16_t *map_gray16(const uf_image_result *r) {
    return uf_render_gray16(r->anomaly_map, (size_t)r->width * r->height);
}

int uf_image_result_png(const uf_image_result *r, unsigned output, unsigned char **png, size_t *len) {
    *png = NULL, *len = 0;
    const int W = r->width, H = r->height;
    if (output == UF_OUTPUT_MAP) {
        uint16_t *px = map_gray16(r);
        int rc = px ? uf_png_encode_gray16(px, W, H, png, len) : UF_ERR;
        free(px);
        return rc;
    }
    uf_image *img = output == UF_OUTPUT_OVERLAY ? uf_render_overlay(r->image, r->anomaly_map, W, H, 0.0f, 1.0f, OVERLAY_ALPHA)
                    : output == UF_OUTPUT_MASK  ? uf_render_mask(r->mask, W, H)
                                                : NULL;
    if (!img) return output == UF_OUTPUT_OVERLAY || output == UF_OUTPUT_MASK ? UF_ERR : uf_error("no such output image");
    int rc = uf_image_encode_png(img, png, len);
    uf_image_free(img);
    return rc;
}

int uf_image_result_write(const uf_image_result *r, const char *dir, const char *stem, const uf_output_options *o) {
    const uf_output_options def = {0};
    if (!o) o = &def;
    const unsigned out = o->outputs ? o->outputs : UF_OUTPUTS_DEFAULT;
    if (out & UF_OUTPUT_NONE) return UF_OK;
    const int W = r->width, H = r->height, durable = !o->unsynced;
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
    if ((out & UF_OUTPUT_MAP) && o->map_safetensors) {
        snprintf(path, sizeof path, "%s/%s_map.safetensors", dir, stem);
        rc = write_field(path, "anomaly_map", r->anomaly_map, W, H, durable);
    } else if (out & UF_OUTPUT_MAP) {
        uint16_t *px = map_gray16(r);
        rc = px ? UF_OK : UF_ERR;
        snprintf(path, sizeof path, "%s/%s_map.png", dir, stem);
        if (px) rc = uf_png_write_gray16_as(path, px, W, H, UF_PNG_FAST, durable);
        free(px);
    }
    if (rc == UF_OK && (out & UF_OUTPUT_OVERLAY)) {
        uf_image *ov = uf_render_overlay(r->image, r->anomaly_map, W, H, 0.0f, 1.0f, OVERLAY_ALPHA);
        if (!ov) rc = UF_ERR;
        if (rc == UF_OK && o->overlay_jpeg) {
            snprintf(path, sizeof path, "%s/%s_overlay.jpg", dir, stem);
            rc = uf_image_write_jpeg(path, ov, UF_OVERLAY_JPEG_QUALITY, durable);
        } else if (rc == UF_OK) {
            snprintf(path, sizeof path, "%s/%s_overlay.png", dir, stem);
            rc = uf_image_write_png_as(path, ov, UF_PNG_FAST_PHOTO, durable);
        }
        uf_image_free(ov);
    }
    if (rc == UF_OK && (out & UF_OUTPUT_MASK)) {
        uf_image *mimg = uf_render_mask(r->mask, W, H);
        if (!mimg) rc = UF_ERR;
        if (rc == UF_OK) {
            snprintf(path, sizeof path, "%s/%s_mask.png", dir, stem);
            rc = uf_image_write_png_as(path, mimg, UF_PNG_FAST_MASK, durable);
        }
        uf_image_free(mimg);
    }
    if (rc == UF_OK && (out & UF_OUTPUT_NFA)) {
        /* safetensors holds finite values: an infinite -log10 NFA (a probability below the
         * float range) is written as +-FLT_MAX, which reads as the same decision. */
        float *f = malloc(sizeof(float) * np);
        rc = f ? UF_OK : uf_error("out of memory");
        for (size_t p = 0; f && p < np; p++) {
            const float v = r->neg_log10_nfa[p];
            f[p] = isnan(v) ? 0.0f : v > FLT_MAX ? FLT_MAX : v < -FLT_MAX ? -FLT_MAX : v;
        }
        snprintf(path, sizeof path, "%s/%s_nfa.safetensors", dir, stem);
        if (f) rc = write_field(path, "neg_log10_nfa", f, W, H, durable);
        free(f);
    }
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

/* What uf_predict's pipeline callbacks share. */
typedef struct predict_run {
    const uf_predict_options *o;
    const uf_output_options *wo;
    const uf_dataset *ds;
    char **stems;
    FILE *csv, *jsonl;
    uf_predict_report *rep;
    float *lab_score;
    uint8_t *lab_label, *lab_detected;
} predict_run;

/* Worker thread: image index's files. */
static int predict_consume(void *user, int index, uf_image_result *r) {
    const predict_run *run = user;
    int rc = uf_image_result_write(r, run->o->out_dir, run->stems[index], run->wo);
    uf_image_result_free(r);
    return rc;
}

/* Calling thread, in order: image index's rows. */
static int predict_row(void *user, int index, const uf_image_summary *s, const char *error) {
    predict_run *run = user;
    const char *path = run->ds->samples[index].image_path;
    uf_predict_report *rep = run->rep;
    rep->n_images++;
    if (error) {
        /* Policy: a bad image is reported and the others go on. */
        rep->n_failed++;
        uf_log(UF_LOG_ERROR, "%s", error);
        const uf_result_row row = {.image = path, .error = error};
        uf_result_row_csv(run->csv, &row);
        return uf_result_row_jsonl(run->jsonl, &row);
    }
    const char *stem = run->stems[index];
    rep->n_anomalous += s->anomalous;
    const int label = run->o->n_labels ? label_of(run->o, path) : -1;
    if (label >= 0) {
        run->lab_score[rep->n_labelled] = s->score;
        run->lab_label[rep->n_labelled] = (uint8_t)label;
        run->lab_detected[rep->n_labelled++] = (uint8_t)s->anomalous;
    }
    const uf_result_row row = {.image = path, .score = s->score, .anomalous = s->anomalous,
                               .detected_pixels = s->detected_pixels, .max_neg_log10_nfa = s->max_neg_log10_nfa,
                               .width = s->width, .height = s->height, .outputs = stem};
    uf_result_row_csv(run->csv, &row);
    return uf_result_row_jsonl(run->jsonl, &row);
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
    if (o->batch < 1) return uf_error("batch %d (>= 1)", o->batch);
    const char **all = malloc(sizeof(char *) * (size_t)(n_inputs + o->n_labels + 1));
    if (!all) return uf_error("out of memory");
    for (int i = 0; i < n_inputs; i++) all[i] = inputs[i];
    for (int k = 0; k < o->n_labels; k++) all[n_inputs + k] = o->labels[k].dir;
    uf_dataset *ds = uf_dataset_from_paths(all, n_inputs + o->n_labels);
    free(all);
    if (!ds) return UF_ERR;
    const uf_output_options wo = {.outputs = o->outputs, .map_safetensors = o->map_safetensors,
                                  .overlay_jpeg = o->overlay_jpeg, .unsynced = 1};
    predict_run run = {.o = o, .wo = &wo, .ds = ds, .rep = rep};
    uf_atomic_file csv, jsonl;
    int csv_open = 0, jsonl_open = 0, rc = UF_ERR;
    const char **paths = malloc(sizeof(char *) * (size_t)(ds->count + 1));
    char csv_path[4200], jsonl_path[4200];
    snprintf(csv_path, sizeof csv_path, "%s/results.csv", o->out_dir);
    snprintf(jsonl_path, sizeof jsonl_path, "%s/results.jsonl", o->out_dir);
    if (o->n_labels) {
        run.lab_score = malloc(sizeof(float) * (size_t)(ds->count + 1));
        run.lab_label = malloc((size_t)ds->count + 1);
        run.lab_detected = malloc((size_t)ds->count + 1);
    }
    if (!paths || (o->n_labels && (!run.lab_score || !run.lab_label || !run.lab_detected))) {
        uf_error("out of memory");
        goto out;
    }
    for (int i = 0; i < ds->count; i++) paths[i] = ds->samples[i].image_path;
    /* Planned for every image up front, so an image's names do not depend on which others fail. */
    if (uf_plan_output_stems(ds, &run.stems) != UF_OK) goto out;
    if (uf_atomic_begin(&csv, csv_path) != UF_OK) goto out;
    csv_open = 1;
    if (uf_atomic_begin(&jsonl, jsonl_path) != UF_OK) goto out;
    jsonl_open = 1;
    run.csv = csv.fp, run.jsonl = jsonl.fp;
    fputs(UF_RESULTS_CSV_HEADER, csv.fp);
    const uf_pipeline_options po = {.batch = o->batch, .model_size_outputs = o->model_size_outputs,
                                    .workers = o->workers, .verbose = o->verbose};
    if (uf_pipeline_run(m, paths, ds->count, &po, predict_consume, predict_row, &run) != UF_OK) goto out;
    if (o->verbose) uf_log(UF_LOG_INFO, "predicted %d images", ds->count);
    /* The image files were renamed into place unsynced: make them durable before the
     * results that name them. */
    if (uf_sync_filesystem(o->out_dir) != UF_OK) goto out;
    csv_open = 0;
    if (uf_atomic_commit(&csv) != UF_OK) goto out;
    jsonl_open = 0;
    if (uf_atomic_commit(&jsonl) != UF_OK) goto out;
    rep->seconds = uf_now() - t0;
    if (rep->n_labelled) {
        rep->image_auroc = uf_auroc(run.lab_score, run.lab_label, (size_t)rep->n_labelled);
        rep->at_nfa = uf_image_confusion_of(run.lab_label, run.lab_detected, rep->n_labelled);
    }
    rc = UF_OK;
out:
    if (csv_open) uf_atomic_abort(&csv);
    if (jsonl_open) uf_atomic_abort(&jsonl);
    free(paths);
    uf_free_output_stems(run.stems, ds->count);
    free(run.lab_score), free(run.lab_label), free(run.lab_detected);
    uf_dataset_free(ds);
    return rc;
}
