/* The flow against PyTorch on the same weights (tests/data/flow/ (block, graph_reference, graph_logdet), written by
 * tools/make_flow_refs.py, an independent torch implementation of the spec): latents, log-det,
 * loss, every gradient, feature gradients and parameters after 3 Adam steps; the weights are
 * loaded by their FrEIA/official state_dict names. */
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
#include "flow/adam.h"
#include "flow/graph.h"
#include "flow/loss.h"
#include "harness.h"
#include "io/safetensors.h"

#define U_F32 0x1p-24  /* float unit roundoff */
/* Both sides are float32 with their own (different) summation orders, so every check is
 * relative to the tensor's scale; the bounds are test_flow's float-vs-double ones (see
 * test_block_float_vs_ref there), which cover one float implementation, and torch's error is
 * of the same size. Seen under Haswell, SkylakeX and Sandybridge kernels: z 1.1e-7 (bound
 * 1e-5), gradients 3.7e-7 (bound TOL_GRAD), loss and log-det 7e-10 relative (bound 1e-5: a
 * double sum of per-sample terms each known to ~1e-7). */
#define TOL_GRAD 1e-4   /* gradients: max |ours - torch| / max |torch| per tensor */
#define ADAM_STEPS 3    /* the reference's torch.optim.Adam steps */
#define ADAM_STEP_MAX 1.004 /* |m_hat / sqrt(v_hat)| <= sqrt(sum_k w_k^2 / w'_k) = 1.0013, 1.0032 at t = 2, 3
                              (Cauchy-Schwarz over Adam's bias-corrected weights) */

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs((double)a[i] - b[i])), mb = fmax(mb, fabs(b[i]));
    return md / mb;
}

static int meta_int(const uf_safetensors *st, const char *key) {
    const char *v = uf_st_metadata_get(st, key);
    CHECK(v != NULL, "metadata %s missing", key);
    return v ? atoi(v) : 0;
}

static int read_f64(const uf_safetensors *st, const char *name, double *out, size_t n) {
    const uf_st_tensor *t = uf_st_find(st, name);
    CHECK(t && t->dtype == UF_DT_F64 && (size_t)t->numel == n, "%s missing or not F64[%zu]", name, n);
    if (!t || t->dtype != UF_DT_F64 || (size_t)t->numel != n) return UF_ERR;
    memcpy(out, t->data, sizeof(double) * n);
    return UF_OK;
}

static float *read_exact(const uf_safetensors *st, const char *name, size_t n) {
    uf_tensor *t = uf_st_read_f32(st, name, -1, NULL);
    CHECK(t != NULL && (size_t)uf_tensor_numel(t) == n, "%s: %s", name, t ? "wrong size" : uf_last_error());
    if (!t || (size_t)uf_tensor_numel(t) != n) {
        uf_tensor_free(t);
        return NULL;
    }
    float *d = uf_alloc(sizeof(float) * n);
    memcpy(d, t->data, sizeof(float) * n);
    uf_tensor_free(t);
    return d;
}

static void check_file(const char *path) {
    CHECK(uf_blas_init() == UF_OK, "%s", uf_last_error());
    uf_safetensors *st = uf_st_open(path);
    CHECK(st != NULL, "%s", uf_last_error());
    if (!st) return;
    uf_flow_config cfg = uf_flow_default_config();
    cfg.n_scales = meta_int(st, "n_scales");
    cfg.n_steps = meta_int(st, "steps");
    const int B = meta_int(st, "batch"), h0 = meta_int(st, "height0"), w0 = meta_int(st, "width0");
    const double lr = atof(uf_st_metadata_get(st, "lr") ? uf_st_metadata_get(st, "lr") : "0");
    CHECK(uf_ln_mode_parse(uf_st_metadata_get(st, "ln_mode"), &cfg.ln_mode) == UF_OK, "%s", uf_last_error());
    const char *chs = uf_st_metadata_get(st, "channels");
    for (int l = 0; l < cfg.n_scales && l < UF_FLOW_MAX_SCALES && chs; l++) {
        cfg.channels[l] = atoi(chs);
        cfg.height[l] = h0 >> l, cfg.width[l] = w0 >> l;
        chs = strchr(chs, ',');
        if (chs) chs++;
    }
    uf_flow *m = uf_flow_new(&cfg, 0);
    CHECK(m != NULL, "%s", uf_last_error());
    if (!m || uf_flow_alloc_grads(m) != UF_OK) {
        uf_st_close(st);
        return;
    }
    const int L = cfg.n_scales, np = uf_flow_param_count(m);
    /* load every named tensor with its exact shape; then no parameter-like tensor may be left unused */
    int used = 0;
    for (int i = 0; i < np; i++) {
        uf_flow_param p;
        uf_flow_param_get(m, i, &p);
        uf_tensor *t = uf_st_read_f32(st, p.name, p.ndim, p.shape);
        CHECK(t != NULL, "%s", uf_last_error());
        if (!t) continue;
        CHECK(uf_flow_param_write(m, i, t->data) == UF_OK, "%s", uf_last_error());
        uf_tensor_free(t);
        used++;
    }
    int in_file = 0;
    for (int i = 0; i < uf_st_count(st); i++) {
        const char *n = uf_st_at(st, i)->name;
        if (!strncmp(n, "flow.", 5) || !strncmp(n, "feature_extractor.", 18)) in_file++;
    }
    CHECK(in_file == used, "%s: %d parameter tensors in the file, %d used", path, in_file, used);

    float *f[UF_FLOW_MAX_SCALES], *z[UF_FLOW_MAX_SCALES], *gz[UF_FLOW_MAX_SCALES], *gf[UF_FLOW_MAX_SCALES];
    size_t zn[UF_FLOW_MAX_SCALES], fnl[UF_FLOW_MAX_SCALES];
    char name[128];
    for (int l = 0; l < L; l++) {
        size_t hw = (size_t)cfg.height[l] * cfg.width[l];
        zn[l] = (size_t)m->z_ch[l] * hw, fnl[l] = (size_t)cfg.channels[l] * hw;
        snprintf(name, sizeof name, "feat.%d", l);
        f[l] = read_exact(st, name, B * fnl[l]);
        z[l] = uf_alloc(sizeof(float) * B * zn[l]), gz[l] = uf_alloc(sizeof(float) * B * zn[l]);
        gf[l] = uf_calloc(B * fnl[l], sizeof(float));
        if (!f[l]) goto done;
    }
    double ld[8], ld_ref[8], gld[8], loss_ref;
    if (B > 8 || read_f64(st, "logdet", ld_ref, B) || read_f64(st, "loss", &loss_ref, 1)) goto done;
    uf_flow_zero_grads(m);
    CHECK(uf_flow_forward(m, B, (const float *const *)f, z, ld, 1) == UF_OK, "%s", uf_last_error());
    double loss = uf_flow_nll(B, L, zn, (const float *const *)z, ld, gz, gld, NULL, 0);
    CHECK(uf_flow_backward(m, B, (const float *const *)gz, gld, gf) == UF_OK, "%s", uf_last_error());
    CHECK_CLOSE(loss, loss_ref, 0, 1e-5);
    for (int b = 0; b < B; b++) CHECK_CLOSE(ld[b], ld_ref[b], 0, 1e-5);
    double worst_z = 0, worst_g = 0;
    for (int l = 0; l < L; l++) {
        snprintf(name, sizeof name, "z.%d", l);
        float *zr = read_exact(st, name, B * zn[l]);
        snprintf(name, sizeof name, "grad.feat.%d", l);
        float *gr = read_exact(st, name, B * fnl[l]);
        if (zr && gr) {
            double ez = rel_err(z[l], zr, B * zn[l]), eg = rel_err(gf[l], gr, B * fnl[l]);
            CHECK(ez < 1e-5, "%s: z_%d rel err %.3g", path, l, ez);
            CHECK(eg < TOL_GRAD, "%s: feature gradient %d rel err %.3g", path, l, eg);
            worst_z = fmax(worst_z, ez), worst_g = fmax(worst_g, eg);
        }
        uf_free(zr), uf_free(gr);
    }
    for (int i = 0; i < np; i++) {
        uf_flow_param p;
        uf_flow_param_get(m, i, &p);
        if (p.kind != UF_PARAM_TRAINABLE) continue;
        snprintf(name, sizeof name, "grad.%s", p.name);
        float *gr = read_exact(st, name, p.numel);
        if (gr) {
            double e = rel_err(p.grad, gr, p.numel);
            CHECK(e < TOL_GRAD, "%s: %s rel err %.3g", path, name, e);
            worst_g = fmax(worst_g, e);
        }
        uf_free(gr);
    }
    /* 3 Adam steps on the same batch */
    uf_adam adam;
    CHECK(uf_adam_init(&adam, m->n_trainable, lr) == UF_OK, "%s", uf_last_error());
    for (int step = 0; step < ADAM_STEPS; step++) {
        uf_flow_zero_grads(m);
        uf_flow_forward(m, B, (const float *const *)f, z, ld, 1);
        uf_flow_nll(B, L, zn, (const float *const *)z, ld, gz, gld, NULL, 0);
        uf_flow_backward(m, B, (const float *const *)gz, gld, NULL);
        uf_adam_step(&adam, m->params, m->grads);
    }
    double worst_a = 0, worst_adam_ratio = 0;
    for (int i = 0; i < np; i++) {
        uf_flow_param p;
        uf_flow_param_get(m, i, &p);
        if (p.kind != UF_PARAM_TRAINABLE) continue;
        snprintf(name, sizeof name, "adam3.%s", p.name);
        float *pr = read_exact(st, name, p.numel);
        snprintf(name, sizeof name, "grad.%s", p.name);
        float *gr = read_exact(st, name, p.numel), *p0 = read_exact(st, p.name, p.numel);
        if (pr && gr && p0) {
            /* Adam moves each value by lr * r, r = m_hat / (sqrt(v_hat) + eps), a ratio that does
             * not depend on |g|. m_hat and v_hat are weighted means of g_k and g_k^2 with weights
             * w_k, w'_k summing to 1, so with g_k = g (1 + e_k): r = sign(g) (1 + sum (w_k - w'_k)
             * e_k) to first order, and sum |w_k - w'_k| <= 2: a gradient that the two
             * implementations compute d apart moves r by at most 2 d/|g| per step. And |r| <=
             * ADAM_STEP_MAX always. So after `steps` steps the parameters differ by at most
             *     2 lr steps min(ADAM_STEP_MAX, d/|g|) ...
             * with d = TOL_GRAD * max|g|, the disagreement the gradient check above allows for this
             * tensor, and |g| including the weight-decay term. Where |g| <= d the gradient's sign
             * is rounding noise: each implementation moves by up to ADAM_STEP_MAX lr per step in
             * unrelated directions, hence the cap.
             * ... + steps * 2u |p|: both round p to float after each step (a global scale near
             * 45 has ulp 3.8e-6, the largest difference seen), + steps * 12u * lr for the float
             * arithmetic of the update itself. (The parameters' own difference changes the
             * later gradients only at second order.) */
            double gmax = 0, e = 0, worst_ratio = 0;
            for (size_t j = 0; j < p.numel; j++) gmax = fmax(gmax, fabs(gr[j]));
            const double d = TOL_GRAD * gmax;
            for (size_t j = 0; j < p.numel; j++) {
                double g = fabs((double)gr[j] + 1e-5 * p0[j]), diff = fabs((double)p.data[j] - pr[j]);
                double dr = g > 0 ? fmin(ADAM_STEP_MAX, d / g) : ADAM_STEP_MAX;
                double bound = ADAM_STEPS * (lr * (2 * dr + 12 * U_F32) +
                                             2 * U_F32 * fmax(fabs(pr[j]), fabs(p0[j])));
                CHECK(diff <= bound, "%s: adam3.%s[%zu] = %.9g, torch %.9g, |g| %.3g (noise floor %.3g), bound %.3g",
                      path, p.name, j, p.data[j], pr[j], g, d, bound);
                e = fmax(e, diff), worst_ratio = fmax(worst_ratio, diff / bound);
            }
            worst_a = fmax(worst_a, e), worst_adam_ratio = fmax(worst_adam_ratio, worst_ratio);
        }
        uf_free(pr), uf_free(gr), uf_free(p0);
    }
    uf_adam_free(&adam);
    printf("  %s: loss %.6f (torch %.6f), z rel err %.2g, gradients rel err %.2g, Adam x3 max err %.2g (worst "
           "%.2f of its bound)\n", path, loss, loss_ref, worst_z, worst_g, worst_a, worst_adam_ratio);
done:
    for (int l = 0; l < L; l++) uf_free(f[l]), uf_free(z[l]), uf_free(gz[l]), uf_free(gf[l]);
    uf_flow_free(m);
    uf_st_close(st);
}

static void test_torch_block(void) { check_file("tests/data/flow/block.safetensors"); }
static void test_torch_block_wide(void) { check_file("tests/data/flow/block_wide.safetensors"); }
static void test_torch_graph_reference(void) { check_file("tests/data/flow/graph_reference.safetensors"); }
static void test_torch_graph_logdet(void) { check_file("tests/data/flow/graph_logdet.safetensors"); }
static void test_torch_block_wide_rect(void) { check_file("tests/data/flow/block_wide_rect.safetensors"); }
static void test_torch_graph_rect(void) { check_file("tests/data/flow/graph_rect.safetensors"); }

int main(void) {
    UF_TEST(test_torch_block);
    UF_TEST(test_torch_block_wide);
    UF_TEST(test_torch_graph_reference);
    UF_TEST(test_torch_graph_logdet);
    UF_TEST(test_torch_block_wide_rect);
    UF_TEST(test_torch_graph_rect);
    return uf_test_summary();
}
