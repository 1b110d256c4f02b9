/* uflow.c - the public API (include/uflow.h) over the library's internals.
 *
 * Each handle wraps an internal object: uflow_model a uf_model plus the batch
 * buffers its predictions reuse (hence one thread per model), uflow_result a
 * uf_image_result, uflow_image_list a uf_dataset with its planned output stems.
 * Every entry point that runs the backbone first makes sure OpenBLAS is loaded, so
 * a missing BLAS is an error returned here, never an abort deeper down.
 */
#include "uflow.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/backbone.h"
#include "backbone/shipped.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/log.h"
#include "core/version.h"
#include "io/atomic_file.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "model/batch.h"
#include "model/evaluate.h"
#include "model/model.h"
#include "model/pipeline.h"
#include "model/predict.h"
#include "model/report.h"
#include "model/train.h"

#define API_BATCH 8 /* images per backbone call in uflow_predict_files */

_Static_assert((int)UFLOW_LOG_PROGRESS == (int)UF_LOG_PROGRESS && (int)UFLOW_LOG_ERROR == (int)UF_LOG_ERROR,
               "public and internal log levels agree");
_Static_assert((int)UFLOW_OK == (int)UF_OK && (int)UFLOW_ERROR == (int)UF_ERR, "public and internal status codes agree");

struct uflow_model {
    uf_model *m;
    uf_batch batch; /* cap API_BATCH, made at the first prediction; original images kept */
    int batch_ready;
};

struct uflow_result {
    uf_image_result r;
};

struct uflow_image_list {
    uf_dataset *ds;
    char **stems;
};

/* ---- library ---- */

const char *uflow_version(void) { return uf_version(); }
const char *uflow_last_error(void) { return uf_last_error(); }
void uflow_set_threads(int n) { uf_set_num_threads(n); }
void uflow_set_log(uflow_log_fn fn, void *user) { uf_set_log_callback(fn, user); }

/* ---- training ---- */

uflow_train_options uflow_train_default_options(void) {
    uf_train_options d = uf_train_default_options();
    uflow_train_options o;
    memset(&o, 0, sizeof o);
    o.backbone = "resnet18";
    o.flow_steps = d.n_steps;
    o.epochs = d.epochs, o.batch = d.batch;
    o.lr = d.lr, o.weight_decay = d.weight_decay;
    o.seed = d.seed;
    o.val_split = d.val_split;
    o.early_stop = d.early_stop;
    o.patience = d.patience;
    o.tile = d.tile;
    o.calib_rate = d.calib_rate;
    return o;
}

typedef struct {
    uflow_epoch_fn fn;
    void *user;
} epoch_adapter;

static int on_epoch(const uf_epoch_progress *p, void *user) {
    const epoch_adapter *a = user;
    return a->fn(p->epoch, p->epochs, p->loss, p->eta_seconds, a->user);
}

int uflow_train(const uflow_train_options *o, uflow_train_summary *summary) {
    if (summary) memset(summary, 0, sizeof *summary);
    if (!o || !o->data_dir || !o->out_path) return uf_error("uflow_train: data_dir and out_path are required");
    if (uf_blas_init() != UF_OK) return UF_ERR;
    uf_train_options t = uf_train_default_options();
    const char *backbone = o->backbone ? o->backbone : "resnet18";
    if (strcmp(backbone, "resnet18") && strcmp(backbone, "wide_resnet50_2") && strcmp(backbone, "mcait"))
        return uf_error("uflow_train: backbone '%.40s' (expected resnet18, wide_resnet50_2 or mcait)", backbone);
    if (uf_backbone_kind_of(backbone, &t.backbone) != UF_OK) return UF_ERR;
    t.weights = o->weights;
    if (!t.weights && !o->resume) {
        if (strcmp(backbone, "resnet18"))
            return uf_error("uflow_train: no weights are shipped for %s: set weights", backbone);
        t.weights = uf_shipped_weights();
    }
    if (t.backbone == UF_BACKBONE_MCAIT) t.ln_mode = UF_LN_NONE;
    if ((o->width == 0) != (o->height == 0))
        return uf_error("uflow_train: width and height are both 0 (the default) or both set");
    t.input.width = o->width, t.input.height = o->height;
    t.input.fit = o->keep_aspect ? UF_FIT_KEEP_ASPECT : UF_FIT_STRETCH;
    if (o->keep_aspect && !t.input.width) t.input.width = t.input.height = t.backbone == UF_BACKBONE_MCAIT ? 448 : 256;
    t.data_dir = o->data_dir, t.out_path = o->out_path;
    t.n_steps = o->flow_steps, t.epochs = o->epochs, t.batch = o->batch;
    t.lr = o->lr, t.weight_decay = o->weight_decay, t.seed = o->seed;
    t.max_images = o->resume && o->max_images == 0 ? -1 : o->max_images;
    t.skip_bad_images = o->skip_bad_images;
    t.resume = o->resume;
    t.val_split = o->val_split, t.val_dir = o->val_dir, t.early_stop = o->early_stop, t.patience = o->patience;
    if (t.patience < 1) return uf_error("uflow_train: patience %d (>= 1)", t.patience);
    if (o->tile < -1 || o->tile > 1) return uf_error("uflow_train: tile %d (-1 auto, 0 off, 1 on)", o->tile);
    if (!(o->calib_rate >= 0 && o->calib_rate < 1))
        return uf_error("uflow_train: calib_rate %g (a share in [0, 1))", o->calib_rate);
    t.tile = o->tile, t.calib_rate = o->calib_rate;
    epoch_adapter a = {o->on_epoch, o->user};
    if (o->on_epoch) t.on_epoch = on_epoch, t.on_epoch_user = &a;
    uf_train_report rep;
    if (uf_train(&t, &rep) != UF_OK) return UF_ERR;
    if (summary) {
        summary->images = rep.n_images, summary->epochs_done = rep.epochs_done, summary->skipped = rep.n_skipped;
        summary->first_loss = rep.first_loss, summary->last_loss = rep.last_loss;
        summary->seconds = rep.feature_seconds + rep.train_seconds;
        summary->val_images = rep.n_val, summary->best_epoch = rep.best_epoch;
        summary->stopped_early = rep.stopped_early;
        for (int l = 0; l < 3; l++) summary->val_z2[l] = l < UF_FLOW_MAX_SCALES ? rep.val_z2[l] : NAN;
    }
    return UF_OK;
}

/* ---- models ---- */

uflow_model *uflow_model_load(const char *path, const char *weights) {
    if (!path) {
        uf_error("uflow_model_load: no path");
        return NULL;
    }
    if (uf_blas_init() != UF_OK) return NULL;
    uflow_model *h = calloc(1, sizeof *h);
    if (!h) {
        uf_error("out of memory");
        return NULL;
    }
    if (!(h->m = uf_model_load(path, weights, NULL, NULL))) {
        free(h);
        return NULL;
    }
    return h;
}

void uflow_model_free(uflow_model *h) {
    if (!h) return;
    if (h->batch_ready) uf_batch_free(&h->batch);
    uf_model_free(h->m);
    free(h);
}

int uflow_model_input_width(const uflow_model *h) { return h ? h->m->cfg.input.width : 0; }
int uflow_model_input_height(const uflow_model *h) { return h ? h->m->cfg.input.height : 0; }
const char *uflow_model_backbone(const uflow_model *h) { return h ? h->m->cfg.backbone : ""; }
int uflow_model_epochs(const uflow_model *h) { return h ? h->m->cfg.epochs_done : 0; }

int uflow_model_set_precision(uflow_model *h, const char *precision) {
    uf_precision p;
    if (!h || !precision) return uf_error("uflow_model_set_precision: no model or precision");
    if (uf_precision_parse(precision, &p) != UF_OK) return UF_ERR;
    return uf_backbone_set_precision(h->m->backbone, p);
}

/* ---- prediction ---- */

uflow_predict_options uflow_predict_default_options(void) {
    uflow_predict_options o;
    memset(&o, 0, sizeof o);
    return o;
}

static int ready_batch(uflow_model *h) {
    if (h->batch_ready) return UF_OK;
    if (uf_batch_init(&h->batch, h->m, API_BATCH, h->m->cfg.input.width, h->m->cfg.input.height) != UF_OK)
        return UF_ERR;
    if (!h->batch.original && !(h->batch.original = calloc(API_BATCH, sizeof *h->batch.original))) {
        uf_batch_free(&h->batch);
        return uf_error("out of memory");
    }
    h->batch_ready = 1;
    return UF_OK;
}

/* Results of the loaded batch (after uf_batch_run): results[i] or errors[i]. */
static int collect(uflow_model *h, const uflow_predict_options *o, int n, uflow_result **results, char **errors) {
    uf_batch *b = &h->batch;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        results[i] = NULL;
        if (errors) errors[i] = NULL;
        uflow_result *r = b->error[i][0] ? NULL : calloc(1, sizeof *r);
        if (r && o->model_size) { /* the result then takes the model input instead */
            uf_image_free(b->original[i]);
            b->original[i] = NULL;
        }
        if (r && uf_image_result_from_batch(b, i, &h->m->cfg.input, &r->r) != UF_OK) {
            free(r);
            r = NULL;
            snprintf(b->error[i], UF_BATCH_ERROR_LEN, "%s", uf_last_error());
        } else if (!r && !b->error[i][0]) {
            snprintf(b->error[i], UF_BATCH_ERROR_LEN, "out of memory");
        }
        results[i] = r;
        if (!r) {
            failed++;
            if (errors) errors[i] = strdup(b->error[i]);
        }
    }
    return failed;
}

typedef struct files_run {
    uflow_result **results;
    char **errors;
    int failed;
} files_run;

/* Pipeline worker: the result goes to results[index]. */
static int files_consume(void *user, int index, uf_image_result *r) {
    files_run *run = user;
    uflow_result *out = calloc(1, sizeof *out);
    if (!out) {
        uf_image_result_free(r);
        return uf_error("out of memory");
    }
    out->r = *r; /* taken over */
    run->results[index] = out;
    return UF_OK;
}

static int files_row(void *user, int index, const uf_image_summary *s, const char *error) {
    files_run *run = user;
    (void)s;
    if (!error) return UF_OK;
    run->failed++;
    if (run->errors && !(run->errors[index] = strdup(error))) return uf_error("out of memory");
    return UF_OK;
}

int uflow_predict_files(uflow_model *h, const char *const *paths, int n, const uflow_predict_options *o,
                        uflow_result **results, char **errors) {
    uflow_predict_options def = uflow_predict_default_options();
    if (!o) o = &def;
    if (!h || (n > 0 && (!paths || !results)) || n < 0) return uf_error("uflow_predict_files: bad arguments");
    for (int i = 0; i < n; i++) {
        results[i] = NULL;
        if (errors) errors[i] = NULL;
    }
    /* The pipeline of uflow predict (model/pipeline.h): decoding, the model and the
     * upsampling of the results overlap. */
    files_run run = {results, errors, 0};
    const uf_pipeline_options po = {.batch = API_BATCH, .model_size_outputs = o->model_size,
                                    .nfa_block = o->nfa_block};
    if (uf_pipeline_run(h->m, paths, n, &po, files_consume, files_row, &run) != UF_OK) {
        for (int i = 0; i < n; i++) {
            uflow_result_free(results[i]), results[i] = NULL;
            if (errors) free(errors[i]), errors[i] = NULL;
        }
        return UF_ERR;
    }
    return run.failed;
}

/* The batch's error for a single image as the thread's error; NULL. */
static uflow_result *single(uflow_model *h, const uflow_predict_options *o) {
    uflow_result *r;
    char *err = NULL;
    if (uf_batch_run(&h->batch, h->m, NULL, NULL) != UF_OK) return NULL;
    if (collect(h, o, 1, &r, &err)) {
        uf_error("%s", err ? err : "out of memory");
        free(err);
        return NULL;
    }
    return r;
}

uflow_result *uflow_predict_file(uflow_model *h, const char *path, const uflow_predict_options *o) {
    uflow_predict_options def = uflow_predict_default_options();
    if (!o) o = &def;
    if (!h || !path) {
        uf_error("uflow_predict_file: no model or no path");
        return NULL;
    }
    if (ready_batch(h) != UF_OK) return NULL;
    h->batch.nfa_block = o->nfa_block;
    uf_batch_load(&h->batch, h->m, &path, 1);
    return single(h, o);
}

/* The result of one decoded image (freed here), named `name` in messages. */
static uflow_result *predict_image(uflow_model *h, uf_image *img, const char *name, const uflow_predict_options *o) {
    uflow_result *r = NULL;
    if (ready_batch(h) == UF_OK) {
        const char *names[1] = {name};
        const uf_image *imgs[1] = {img};
        h->batch.nfa_block = o->nfa_block;
        uf_batch_load_images(&h->batch, h->m, imgs, names, 1);
        r = single(h, o);
    }
    uf_image_free(img);
    return r;
}

uflow_result *uflow_predict_encoded(uflow_model *h, const void *data, size_t len, const char *name,
                                    const uflow_predict_options *o) {
    uflow_predict_options def = uflow_predict_default_options();
    if (!o) o = &def;
    if (!name) name = "image in memory";
    if (!h || (!data && len)) {
        uf_error("uflow_predict_encoded: no model or no data");
        return NULL;
    }
    uf_image *img = uf_image_decode(name, data, len, 0);
    if (!img) return NULL;
    return predict_image(h, img, name, o);
}

uflow_result *uflow_predict_pixels(uflow_model *h, const unsigned char *pixels, int width, int height, int channels,
                                   size_t stride, const uflow_predict_options *o) {
    uflow_predict_options def = uflow_predict_default_options();
    if (!o) o = &def;
    if (!h || !pixels) {
        uf_error("uflow_predict_pixels: no model or no pixels");
        return NULL;
    }
    if (channels != 1 && channels != 3 && channels != 4) {
        uf_error("uflow_predict_pixels: %d channels (expected 1 gray, 3 RGB or 4 RGBA)", channels);
        return NULL;
    }
    if (width < 1 || height < 1 || width > UF_IMAGE_MAX_SIDE || height > UF_IMAGE_MAX_SIDE ||
        (int64_t)width * height > UF_IMAGE_MAX_PIXELS) {
        uf_error("uflow_predict_pixels: image size %dx%d (sides 1..%d, at most %ld pixels)", width, height,
                 UF_IMAGE_MAX_SIDE, (long)UF_IMAGE_MAX_PIXELS);
        return NULL;
    }
    const size_t row = (size_t)width * channels;
    if (stride == 0) stride = row;
    if (stride < row) {
        uf_error("uflow_predict_pixels: stride %zu is less than width x channels = %zu", stride, row);
        return NULL;
    }
    uf_image *img = uf_image_new(width, height, channels == 1 ? 1 : 3);
    if (!img) return NULL;
    for (int y = 0; y < height; y++) {
        const unsigned char *src = pixels + (size_t)y * stride;
        uint8_t *dst = img->pixels + (size_t)y * width * img->channels;
        if (channels == 4)
            for (int x = 0; x < width; x++) memcpy(dst + 3 * x, src + 4 * x, 3); /* alpha dropped, as Pillow's RGB */
        else
            memcpy(dst, src, row);
    }
    char name[64];
    snprintf(name, sizeof name, "<%dx%d image in memory>", width, height);
    return predict_image(h, img, name, o);
}

float uflow_result_score(const uflow_result *r) { return r ? r->r.score : NAN; }
int uflow_result_anomalous(const uflow_result *r) { return r ? r->r.anomalous : 0; }
int uflow_result_width(const uflow_result *r) { return r ? r->r.width : 0; }
int uflow_result_height(const uflow_result *r) { return r ? r->r.height : 0; }
const float *uflow_result_anomaly_map(const uflow_result *r) { return r ? r->r.anomaly_map : NULL; }
const float *uflow_result_neg_log10_nfa(const uflow_result *r) { return r ? r->r.neg_log10_nfa : NULL; }
const unsigned char *uflow_result_mask(const uflow_result *r) { return r ? r->r.mask : NULL; }
int uflow_result_detected_pixels(const uflow_result *r) { return r ? r->r.detected_pixels : 0; }
float uflow_result_max_neg_log10_nfa(const uflow_result *r) { return r ? r->r.max_neg_log10_nfa : NAN; }

int uflow_model_info_json(const char *model_path, char **json) {
    if (!json) return uf_error("uflow_model_info_json: no output pointer");
    *json = NULL;
    if (!model_path) return uf_error("uflow_model_info_json: no path");
    uf_safetensors *st = uf_st_open(model_path);
    if (!st) return UF_ERR;
    int rc = uf_st_metadata_get(st, "uflow.format") ? UF_OK : uf_error("'%s': not a uflow model (no uflow.format)", model_path);
    cJSON *o = rc == UF_OK ? cJSON_CreateObject() : NULL;
    if (rc == UF_OK && !o) rc = uf_error("out of memory");
    for (int i = 0; rc == UF_OK && i < uf_st_metadata_count(st); i++) {
        const char *k = uf_st_metadata_key(st, i), *v = uf_st_metadata_value(st, i);
        if (strncmp(k, "uflow.", 6) != 0 || strchr(v, '/')) continue; /* paths: not told */
        if (!cJSON_AddStringToObject(o, k + 6, v)) rc = uf_error("out of memory");
    }
    if (rc == UF_OK && !(*json = cJSON_PrintUnformatted(o))) rc = uf_error("out of memory");
    cJSON_Delete(o);
    uf_st_close(st);
    return rc;
}

int uflow_result_png(const uflow_result *r, const char *what, unsigned char **png, size_t *len) {
    if (!png || !len) return uf_error("uflow_result_png: no output pointers");
    *png = NULL, *len = 0;
    if (!r || !what) return uf_error("uflow_result_png: no result or no image name");
    const unsigned out = strcmp(what, "map") == 0       ? UF_OUTPUT_MAP
                         : strcmp(what, "mask") == 0    ? UF_OUTPUT_MASK
                         : strcmp(what, "overlay") == 0 ? UF_OUTPUT_OVERLAY
                                                        : 0;
    if (!out) return uf_error("uflow_result_png: '%s' is not map, mask or overlay", what);
    return uf_image_result_png(&r->r, out, png, len);
}

int uflow_result_write(const uflow_result *r, const char *out_dir, const char *stem, int map_safetensors) {
    if (!r || !out_dir || !stem || !*stem) return uf_error("uflow_result_write: no result, folder or stem");
    if (uf_make_dirs(out_dir) != UF_OK) return UF_ERR;
    const uf_output_options wo = {.map_safetensors = map_safetensors};
    return uf_image_result_write(&r->r, out_dir, stem, &wo);
}

uflow_write_options uflow_write_default_options(void) {
    uflow_write_options o;
    memset(&o, 0, sizeof o);
    return o;
}

typedef struct to_files_run {
    const char *const *stems;
    const char *out_dir;
    uf_output_options wo;
    uflow_row *rows;
    char **errors;
    int failed;
} to_files_run;

static int to_files_consume(void *user, int index, uf_image_result *r) {
    const to_files_run *run = user;
    int rc = uf_image_result_write(r, run->out_dir, run->stems[index], &run->wo);
    uf_image_result_free(r);
    return rc;
}

static int to_files_row(void *user, int index, const uf_image_summary *s, const char *error) {
    to_files_run *run = user;
    uflow_row *row = &run->rows[index];
    if (error) {
        run->failed++;
        if (run->errors && !(run->errors[index] = strdup(error))) return uf_error("out of memory");
        return UF_OK;
    }
    *row = (uflow_row){1, s->score, s->max_neg_log10_nfa, s->anomalous, s->detected_pixels, s->width, s->height};
    return UF_OK;
}

int uflow_predict_to_files(uflow_model *h, const char *const *paths, const char *const *stems, int n,
                           const char *out_dir, const uflow_write_options *o, uflow_row *rows, char **errors) {
    uflow_write_options def = uflow_write_default_options();
    if (!o) o = &def;
    if (!h || n < 0 || (n > 0 && (!paths || !stems || !rows)) || !out_dir)
        return uf_error("uflow_predict_to_files: bad arguments");
    for (int i = 0; i < n; i++) {
        rows[i] = (uflow_row){0};
        if (errors) errors[i] = NULL;
        if (!paths[i] || !stems[i] || !*stems[i]) return uf_error("uflow_predict_to_files: image %d has no path or stem", i);
    }
    to_files_run run = {.stems = stems, .out_dir = out_dir, .rows = rows, .errors = errors};
    run.wo = (uf_output_options){.map_safetensors = o->map_safetensors, .overlay_jpeg = o->overlay_jpeg, .unsynced = 1};
    if (o->outputs && uf_outputs_parse(o->outputs, &run.wo.outputs) != UF_OK) return UF_ERR;
    if (uf_make_dirs(out_dir) != UF_OK) return UF_ERR;
    const uf_pipeline_options po = {.batch = API_BATCH, .model_size_outputs = o->model_size, .nfa_block = o->nfa_block};
    if (uf_pipeline_run(h->m, paths, n, &po, to_files_consume, to_files_row, &run) != UF_OK ||
        uf_sync_filesystem(out_dir) != UF_OK) {
        if (errors)
            for (int i = 0; i < n; i++) free(errors[i]), errors[i] = NULL;
        return UF_ERR;
    }
    return run.failed;
}

void uflow_result_free(uflow_result *r) {
    if (!r) return;
    uf_image_result_free(&r->r);
    free(r);
}

uflow_image_list *uflow_list_images(const char *const *paths, int n) {
    uflow_image_list *l = calloc(1, sizeof *l);
    if (!l) {
        uf_error("out of memory");
        return NULL;
    }
    if (!(l->ds = uf_dataset_from_paths(paths, n)) || uf_plan_output_stems(l->ds, &l->stems) != UF_OK) {
        uflow_image_list_free(l);
        return NULL;
    }
    return l;
}

int uflow_image_list_count(const uflow_image_list *l) { return l ? l->ds->count : 0; }

const char *uflow_image_list_path(const uflow_image_list *l, int i) {
    return l && i >= 0 && i < l->ds->count ? l->ds->samples[i].image_path : NULL;
}

const char *uflow_image_list_stem(const uflow_image_list *l, int i) {
    return l && i >= 0 && i < l->ds->count ? l->stems[i] : NULL;
}

void uflow_image_list_free(uflow_image_list *l) {
    if (!l) return;
    if (l->ds) uf_free_output_stems(l->stems, l->ds->count);
    uf_dataset_free(l->ds);
    free(l);
}

/* ---- testing ---- */

uflow_test_options uflow_test_default_options(void) {
    uflow_test_options o;
    memset(&o, 0, sizeof o);
    o.eval_size = 256;
    return o;
}

int uflow_test(uflow_model *h, const uflow_test_options *o, uflow_metrics *out) {
    if (!h || !o || !o->data_dir || !out) return uf_error("uflow_test: model, options with data_dir and metrics needed");
    if (o->eval_size < 8 || o->eval_size > 4096) return uf_error("uflow_test: eval_size %d (8..4096)", o->eval_size);
    if (o->out_dir && uf_make_dirs(o->out_dir) != UF_OK) return UF_ERR;
    uf_evaluate_options eo = {.data_dir = o->data_dir, .eval_size = o->eval_size, .batch = API_BATCH, .verbose = 1};
    uf_evaluate_report rep;
    int rc = uf_evaluate(h->m, &eo, &rep);
    if (rc == UF_OK) {
        memset(out, 0, sizeof *out);
        out->images = rep.n_images, out->good_images = rep.n_good, out->good_with_detection = rep.n_good_with_detection;
        out->image_auroc = rep.metrics.image_auroc, out->pixel_auroc = rep.metrics.pixel_auroc;
        out->aupro = rep.metrics.aupro;
        out->miou_auto = rep.metrics.miou_auto, out->miou_oracle = rep.metrics.miou_oracle;
        out->f1_auto = rep.metrics.f1_auto;
        out->tp = rep.at_nfa.tp, out->fp = rep.at_nfa.fp, out->tn = rep.at_nfa.tn, out->fn = rep.at_nfa.fn;
    }
    if (rc == UF_OK && o->out_dir) {
        char path[4200];
        snprintf(path, sizeof path, "%s/metrics.json", o->out_dir);
        rc = uf_evaluate_write_json(h->m, &eo, &rep, path);
        snprintf(path, sizeof path, "%s/report.html", o->out_dir);
        if (rc == UF_OK) rc = uf_report_write_html(h->m, &eo, &rep, path);
    }
    uf_evaluate_report_free(&rep);
    return rc;
}
