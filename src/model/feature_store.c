#include "model/feature_store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/log.h"
#include "io/file_hash.h"
#include "io/safetensors.h"

#define STORE_FORMAT "uflow-features-1"

int uf_feature_store_open(uf_feature_store *fs, const char *dir, const uf_model *m) {
    memset(fs, 0, sizeof *fs);
    if (snprintf(fs->dir, sizeof fs->dir, "%s", dir) >= (int)sizeof fs->dir)
        return uf_error("feature cache folder name too long: '%.60s...'", dir);
    struct stat st;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return uf_error("feature cache folder '%s': cannot create it: %s", dir, strerror(errno));
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return uf_error("feature cache folder '%s': exists and is not a folder", dir);
    snprintf(fs->backbone_sha256, sizeof fs->backbone_sha256, "%s", m->cfg.backbone_sha256);
    /* "256" for square stretched inputs (as before non-square models came), else "WxH" and the fit */
    if (m->cfg.input.width == m->cfg.input.height && m->cfg.input.fit == UF_FIT_STRETCH)
        snprintf(fs->size, sizeof fs->size, "%d", m->cfg.input.width);
    else
        snprintf(fs->size, sizeof fs->size, "%dx%d %s", m->cfg.input.width, m->cfg.input.height,
                 uf_fit_mode_name(m->cfg.input.fit));
    fs->n_levels = m->cfg.flow.n_scales;
    for (int l = 0; l < fs->n_levels; l++) {
        fs->shape[l][0] = m->cfg.flow.channels[l];
        fs->shape[l][1] = m->cfg.flow.height[l];
        fs->shape[l][2] = m->cfg.flow.width[l];
    }
    return UF_OK;
}

void uf_feature_store_key(const uf_feature_store *fs, const char *input_sha256, char key[65]) {
    const char *size = fs->size;
    uf_sha256_ctx c;
    uf_sha256_init(&c);
    const char *parts[4] = {STORE_FORMAT, fs->backbone_sha256, size, input_sha256};
    for (int i = 0; i < 4; i++) uf_sha256_update(&c, parts[i], strlen(parts[i]) + 1); /* with the NUL: unambiguous */
    uf_sha256_hex(&c, key);
}

static void path_of(const uf_feature_store *fs, const char *key, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s.safetensors", fs->dir, key);
}

static int meta_is(const uf_safetensors *st, const char *key, const char *value) {
    const char *v = uf_st_metadata_get(st, key);
    return v && !strcmp(v, value);
}

int uf_feature_store_get(uf_feature_store *fs, const char *key, const char *input_sha256, float *const *feat) {
    char path[4200];
    const char *size = fs->size;
    path_of(fs, key, path, sizeof path);
    struct stat sb;
    if (stat(path, &sb) != 0) return 0; /* the common miss: not stored yet */
    uf_safetensors *st = uf_st_open(path);
    int hit = 0;
    if (st && meta_is(st, "uflow.features", STORE_FORMAT) && meta_is(st, "backbone_sha256", fs->backbone_sha256) &&
        meta_is(st, "input_size", size) && meta_is(st, "input_sha256", input_sha256)) {
        hit = 1;
        for (int l = 0; l < fs->n_levels && hit; l++) {
            char name[16];
            snprintf(name, sizeof name, "%d", l);
            const int64_t n = fs->shape[l][0] * fs->shape[l][1] * fs->shape[l][2];
            hit = uf_st_read_f32_into(st, name, 3, fs->shape[l], feat[l], n) == UF_OK;
        }
    }
    if (!hit)
        uf_log(UF_LOG_WARNING, "feature cache file %s is unusable (%s): computing it again", path,
                st ? "it does not match" : uf_last_error());
    uf_st_close(st);
    fs->n_hits += hit;
    return hit;
}

void uf_feature_store_put(uf_feature_store *fs, const char *key, const char *input_sha256, const char *image_path,
                          const float *const *feat) {
    char path[4200];
    const char *size = fs->size;
    path_of(fs, key, path, sizeof path);
    uf_st_writer *w = uf_st_writer_new();
    int rc = w ? UF_OK : UF_ERR;
    for (int l = 0; l < fs->n_levels && rc == UF_OK; l++) {
        char name[16];
        snprintf(name, sizeof name, "%d", l);
        rc = uf_st_writer_add_f32(w, name, UF_DT_F32, 3, fs->shape[l], feat[l]);
    }
    if (rc == UF_OK)
        rc = uf_st_writer_set_metadata(w, "uflow.features", STORE_FORMAT) |
             uf_st_writer_set_metadata(w, "backbone_sha256", fs->backbone_sha256) |
             uf_st_writer_set_metadata(w, "input_size", size) |
             uf_st_writer_set_metadata(w, "input_sha256", input_sha256) |
             uf_st_writer_set_metadata(w, "image", image_path);
    if (rc == UF_OK) rc = uf_st_writer_save(w, path);
    uf_st_writer_free(w);
    if (rc == UF_OK) {
        fs->n_written++;
    } else {
        if (fs->n_write_failed++ == 0)
            uf_log(UF_LOG_WARNING, "feature cache: %s (training goes on; features not stored)",
                    uf_last_error());
    }
}
