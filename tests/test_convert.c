/* Models trained in Python: small official and anomalib U-Flow checkpoints made by
 * tools/make_convert_refs.py (ResNet, 3 scales; MS-CaiT with a tiny random CaiT pair, 2
 * scales; random weights, BatchNorm statistics and permutations) go through
 * tools/convert_checkpoint.py into self-contained uflow model files, whose latents,
 * log-det and anomaly map must match PyTorch's (float64) within 1e-5 relative. Then the
 * round trip: uflow -> `uflow export --pytorch` -> .pt (official and anomalib names,
 * loaded into the PyTorch modules with strict=True, which recompute the references) ->
 * uflow again gives identical tensors. Bad checkpoints are refused by name. Needs
 * Debian's python3-torch (tools/install_deps.sh test). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor.h"
#include "detect/anomaly_map.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/model.h"

#define DATA "tests/data/convert/"
#define PY "/usr/bin/python3"
#define REL_TOL 1e-5

static const char *const CASES[] = {"official_resnet", "anomalib_resnet", "official_mcait", "anomalib_mcait"};

/* Runs a shell command with stdout+stderr to a file; returns its exit status (-1: did not run). */
static int sh(const char *cmd, char *log_text, size_t cap) {
    char full[9000], log_path[600];
    snprintf(log_path, sizeof log_path, "%s", uf_test_path("cmd.log"));
    if (snprintf(full, sizeof full, "(%s) > '%s' 2>&1", cmd, log_path) >= (int)sizeof full) return -1;
    int st = system(full);
    char *t = uf_test_read_text(log_path);
    snprintf(log_text, cap, "%s", t ? t : "");
    free(t);
    return st == -1 ? -1 : WEXITSTATUS(st);
}

/* latents, logdet and anomaly map of model file `path` on io's x, against io's float64 refs */
static void check_against_torch(const char *path, const char *case_name) {
    char io_path[256];
    snprintf(io_path, sizeof io_path, DATA "%s_io.safetensors", case_name);
    uf_model *m = uf_model_load(path, NULL, NULL, NULL);
    uf_safetensors *io = uf_st_open(io_path);
    CHECK(m && io, "%s: %s", case_name, uf_last_error());
    if (!m || !io) goto done;
    CHECK(m->backbone_embedded, "%s: the converted model does not carry its backbone", case_name);
    uf_tensor *x = uf_st_read_f32(io, "x", -1, NULL), *ld_ref = uf_st_read_f32(io, "logdet", -1, NULL),
              *amap_ref = uf_st_read_f32(io, "amap", -1, NULL);
    CHECK(x && ld_ref && amap_ref, "%s", uf_last_error());
    if (!x || !ld_ref || !amap_ref) goto done2;
    const int n = (int)x->shape[0], S = (int)x->shape[2], L = m->cfg.flow.n_scales;
    CHECK(S == m->cfg.input.height && (int)x->shape[3] == m->cfg.input.width, "%s: input size %dx%d, refs %d", case_name,
          m->cfg.input.width, m->cfg.input.height, S);
    float *feats[UF_FLOW_MAX_SCALES] = {0}, *z[UF_FLOW_MAX_SCALES] = {0};
    double logdet[8];
    for (int l = 0; l < L; l++) {
        const uf_flow_config *c = &m->cfg.flow;
        feats[l] = uf_alloc(sizeof(float) * (size_t)n * c->channels[l] * c->height[l] * c->width[l]);
        z[l] = uf_alloc(sizeof(float) * (size_t)n * m->flow->z_ch[l] * c->height[l] * c->width[l]);
    }
    CHECK(uf_backbone_forward(m->backbone, x->data, n, S, (int)x->shape[3], feats) == UF_OK, "%s", uf_last_error());
    CHECK(uf_flow_forward(m->flow, n, (const float *const *)feats, z, logdet, 0) == UF_OK, "%s", uf_last_error());
    for (int l = 0; l < L; l++) {
        char name[16];
        snprintf(name, sizeof name, "z.%d", l);
        uf_tensor *r = uf_st_read_f32(io, name, -1, NULL);
        CHECK(r != NULL, "%s", uf_last_error());
        if (!r) continue;
        int c, h, w;
        uf_model_latent_shape(m, l, &c, &h, &w);
        CHECK(uf_tensor_numel(r) == (int64_t)n * c * h * w, "%s %s: shape", case_name, name);
        double e = uf_test_scaled_max_err(z[l], r->data, (size_t)uf_tensor_numel(r));
        CHECK(e <= REL_TOL, "%s %s: max err %.3g of the scale", case_name, name, e);
        printf("  %-16s %-6s max err %.2g of the scale\n", case_name, name, e);
        uf_tensor_free(r);
    }
    double ld_err = 0, ld_scale = 1e-30;
    for (int i = 0; i < n; i++) {
        ld_scale = fmax(ld_scale, fabs(ld_ref->data[i]));
        ld_err = fmax(ld_err, fabs(logdet[i] - ld_ref->data[i]));
    }
    CHECK(ld_err / ld_scale <= REL_TOL, "%s logdet: max err %.3g of the scale (%g vs %g)", case_name,
          ld_err / ld_scale, logdet[0], ld_ref->data[0]);
    float *amap = uf_alloc(sizeof(float) * (size_t)n * S * S);
    for (int i = 0; i < n; i++) {
        uf_latent_view v[UF_FLOW_MAX_SCALES];
        for (int l = 0; l < L; l++) {
            uf_model_latent_shape(m, l, &v[l].c, &v[l].h, &v[l].w);
            v[l].z = z[l] + (size_t)i * v[l].c * v[l].h * v[l].w;
        }
        float score;
        CHECK(uf_anomaly_map(v, L, S, S, amap + (size_t)i * S * S, &score) == UF_OK, "%s", uf_last_error());
    }
    double ea = uf_test_scaled_max_err(amap, amap_ref->data, (size_t)n * S * S);
    CHECK(ea <= REL_TOL, "%s anomaly map: max err %.3g of the scale", case_name, ea);
    printf("  %-16s logdet %.2g, anomaly map %.2g of the scale\n", case_name, ld_err / ld_scale, ea);
    uf_free(amap);
    for (int l = 0; l < L; l++) uf_free(feats[l]), uf_free(z[l]);
done2:
    uf_tensor_free(x), uf_tensor_free(ld_ref), uf_tensor_free(amap_ref);
done:
    uf_st_close(io);
    uf_model_free(m);
}

static void test_convert_and_match_pytorch(void) {
    char cmd[2048], log[4096];
    for (size_t k = 0; k < sizeof CASES / sizeof *CASES; k++) {
        char out[600];
        snprintf(out, sizeof out, "%s", uf_test_path(CASES[k]));
        strcat(out, ".safetensors");
        snprintf(cmd, sizeof cmd, PY " tools/convert_checkpoint.py " DATA "%s.ckpt '%s'", CASES[k], out);
        int rc = sh(cmd, log, sizeof log);
        CHECK(rc == 0, "convert %s (status %d): %s", CASES[k], rc, log);
        if (rc == 0) check_against_torch(out, CASES[k]);
    }
}

/* Every tensor of a equals (name, dtype, shape, bytes) one of b and the other way round. */
static void expect_same_tensors(const char *a, const char *b) {
    uf_safetensors *sa = uf_st_open(a), *sb = uf_st_open(b);
    CHECK(sa && sb, "%s", uf_last_error());
    if (sa && sb) {
        CHECK(uf_st_count(sa) == uf_st_count(sb), "%s: %d tensors, %s: %d", a, uf_st_count(sa), b, uf_st_count(sb));
        for (int i = 0; i < uf_st_count(sa); i++) {
            const uf_st_tensor *t = uf_st_at(sa, i), *u = uf_st_find(sb, t->name);
            CHECK(u != NULL, "%s: tensor '%s' lost on the way", b, t->name);
            if (!u) continue;
            int same = t->dtype == u->dtype && t->ndim == u->ndim && t->nbytes == u->nbytes &&
                       !memcmp(t->data, u->data, t->nbytes);
            for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == u->shape[d];
            CHECK(same, "tensor '%s' differs after the round trip", t->name);
        }
    }
    uf_st_close(sa), uf_st_close(sb);
}

static void test_round_trip_through_pytorch(void) {
    char cmd[3000], log[4096], prog[1024];
    CHECK(uf_test_uflow_path(prog, sizeof prog) == 0, "uflow not built");
    for (size_t k = 0; k < sizeof CASES / sizeof *CASES; k++) {
        char u1[600], exp[600], pt[600], back[600];
        snprintf(u1, sizeof u1, "%s.safetensors", uf_test_path(CASES[k]));
        snprintf(exp, sizeof exp, "%s.export.safetensors", uf_test_path(CASES[k]));
        snprintf(pt, sizeof pt, "%s.pt", uf_test_path(CASES[k]));
        snprintf(back, sizeof back, "%s.back.safetensors", uf_test_path(CASES[k]));
        const char *naming = !strncmp(CASES[k], "anomalib", 8) ? "anomalib" : "official";
        snprintf(cmd, sizeof cmd, "'%s' export --pytorch '%s' '%s'", prog, u1, exp);
        CHECK(sh(cmd, log, sizeof log) == 0, "export %s: %s", CASES[k], log);
        /* a bare state_dict for the official/anomalib module: strict=True, references recomputed */
        snprintf(cmd, sizeof cmd, PY " tools/convert_checkpoint.py --to-pytorch --naming %s '%s' '%s'", naming, exp,
                 pt);
        CHECK(sh(cmd, log, sizeof log) == 0, "to-pytorch %s: %s", CASES[k], log);
        snprintf(cmd, sizeof cmd, PY " tools/make_convert_refs.py --check '%s' %s", pt, CASES[k]);
        CHECK(sh(cmd, log, sizeof log) == 0 && strstr(log, "strict=True"), "strict load %s: %s", CASES[k], log);
        /* and as a Lightning checkpoint back to uflow: the same tensors as the exported file */
        snprintf(cmd, sizeof cmd,
                 PY " tools/convert_checkpoint.py --to-pytorch --lightning --naming %s '%s' '%s.ckpt' && " PY
                    " tools/convert_checkpoint.py '%s.ckpt' '%s'",
                 naming, exp, pt, pt, back);
        CHECK(sh(cmd, log, sizeof log) == 0, "back to uflow %s: %s", CASES[k], log);
        expect_same_tensors(exp, back);
    }
}

/* Models trained by uflow itself, with a timm/torchvision-layout ResNet (BatchNorm, layer4, fc) and
 * with the tiny CaiT pair, exported with --pytorch, load into the official modules with strict=True. */
static void test_uflow_trained_to_pytorch(void) {
    char cmd[8192], log[4096], prog[1024], data[600];
    CHECK(uf_test_uflow_path(prog, sizeof prog) == 0, "uflow not built");
    snprintf(data, sizeof data, "%s", uf_test_path("train"));
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp tests/data/image/resize_down_rgb.png tests/data/image/gray.png "
             "tests/data/image/pal.png '%s/'", data, data);
    CHECK(sh(cmd, log, sizeof log) == 0, "%s", log);
    static const struct {
        const char *name, *args;
    } runs[] = {
        {"official_resnet", "--weights tests/data/resnet/r18_small.safetensors --ln-affine logdet"},
        {"official_mcait", "--backbone mcait --weights tests/data/cait/tiny_m.safetensors,"
                           "tests/data/cait/tiny_s.safetensors --feature-cache off"},
    };
    for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
        char model[600], exp[600], pt[600];
        snprintf(model, sizeof model, "%s.trained.safetensors", uf_test_path(runs[k].name));
        snprintf(exp, sizeof exp, "%s.trained.pt.safetensors", uf_test_path(runs[k].name));
        snprintf(pt, sizeof pt, "%s.trained.pt", uf_test_path(runs[k].name));
        snprintf(cmd, sizeof cmd,
                 "'%s' train --data '%s' -o '%s' --size 64 --steps 2 --epochs 1 --batch 2 --threads 1 %s && "
                 "'%s' export --pytorch '%s' '%s' && " PY " tools/convert_checkpoint.py --to-pytorch '%s' '%s' && " PY
                 " tools/make_convert_refs.py --check-load '%s' %s",
                 prog, data, model, runs[k].args, prog, model, exp, exp, pt, pt, runs[k].name);
        CHECK(sh(cmd, log, sizeof log) == 0 && strstr(log, "strict=True"), "%s: %s", runs[k].name, log);
    }
}

static void expect_refused(const char *ckpt, const char *needle) {
    char cmd[1024], log[4096];
    snprintf(cmd, sizeof cmd, PY " tools/convert_checkpoint.py " DATA "%s '%s'", ckpt, uf_test_path("bad.safetensors"));
    int rc = sh(cmd, log, sizeof log);
    CHECK(rc == 1 && strstr(log, needle) && strstr(log, "convert_checkpoint: error:") && uf_test_count_lines(log) == 1,
          "%s: status %d, message '%s' (expected one line with '%s')", ckpt, rc, log, needle);
}

static void test_bad_checkpoints(void) {
    expect_refused("bad_key.ckpt", "'extra_head.weight'");
    expect_refused("bad_perm.ckpt", "'flow.module_list.5.w_perm' is not a permutation");
    expect_refused("official_resnet_io.safetensors", "cannot be read as a PyTorch checkpoint");
    expect_refused("missing.ckpt", "missing.ckpt");
}

int main(void) {
    UF_TEST(test_convert_and_match_pytorch);
    UF_TEST(test_round_trip_through_pytorch);
    UF_TEST(test_uflow_trained_to_pytorch);
    UF_TEST(test_bad_checkpoints);
    return uf_test_summary();
}
