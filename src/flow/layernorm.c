#include "flow/layernorm.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

static const char *const mode_names[] = {"none", "reference", "logdet", "frozen"};

const char *uf_ln_mode_name(uf_ln_mode m) {
    return (unsigned)m < sizeof mode_names / sizeof *mode_names ? mode_names[m] : "?";
}

int uf_ln_mode_parse(const char *s, uf_ln_mode *out) {
    for (int i = 0; i < (int)(sizeof mode_names / sizeof *mode_names); i++)
        if (s && !strcmp(s, mode_names[i])) {
            *out = (uf_ln_mode)i;
            return UF_OK;
        }
    return uf_error("unknown LayerNorm mode '%s' (expected none, reference, logdet or frozen)", s ? s : "");
}

int uf_ln_mode_trains(uf_ln_mode m) { return m == UF_LN_REFERENCE || m == UF_LN_LOGDET; }

void uf_layernorm_forward(int batch, size_t n, const float *x, const float *w, const float *b, float *y,
                          float *xhat, float *rstd) {
    for (int s = 0; s < batch; s++) {
        const float *xs = x + (size_t)s * n;
        double sum = 0.0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
        for (size_t i = 0; i < n; i++) sum += xs[i];
        double mean = sum / (double)n, sq = 0.0;
#pragma omp parallel for reduction(+ : sq) schedule(static)
        for (size_t i = 0; i < n; i++) sq += ((double)xs[i] - mean) * ((double)xs[i] - mean);
        double rs = 1.0 / sqrt(sq / (double)n + UF_LN_EPS);
        float fm = (float)mean, fr = (float)rs;
        if (rstd) rstd[s] = fr;
        float *ys = y + (size_t)s * n, *hs = xhat ? xhat + (size_t)s * n : NULL;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            float h = (xs[i] - fm) * fr;
            if (hs) hs[i] = h;
            ys[i] = h * w[i] + b[i];
        }
    }
}

void uf_layernorm_backward(int batch, size_t n, const float *xhat, const float *rstd, const float *w,
                           const float *dy, float *dx, float *dw, float *db) {
    if (dw || db) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            float aw = 0.0f, ab = 0.0f;
            for (int s = 0; s < batch; s++) {
                float d = dy[(size_t)s * n + i];
                aw += d * xhat[(size_t)s * n + i];
                ab += d;
            }
            if (dw) dw[i] += aw;
            if (db) db[i] += ab;
        }
    }
    if (!dx) return;
    for (int s = 0; s < batch; s++) {
        const float *hs = xhat + (size_t)s * n, *ds = dy + (size_t)s * n;
        double m1 = 0.0, m2 = 0.0;
#pragma omp parallel for reduction(+ : m1, m2) schedule(static)
        for (size_t i = 0; i < n; i++) {
            double gh = (double)ds[i] * w[i];
            m1 += gh;
            m2 += gh * hs[i];
        }
        float fm1 = (float)(m1 / (double)n), fm2 = (float)(m2 / (double)n), r = rstd[s];
        float *xs = dx + (size_t)s * n;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) xs[i] += r * (ds[i] * w[i] - fm1 - hs[i] * fm2);
    }
}

double uf_layernorm_logabsdet(size_t n, const float *w) {
    double acc = 0.0;
#pragma omp parallel for reduction(+ : acc) schedule(static)
    for (size_t i = 0; i < n; i++) acc += log(fabs((double)w[i]));
    return acc;
}

void uf_layernorm_logdet_backward(size_t n, const float *w, double g_ld_sum, float *dw) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dw[i] += (float)(g_ld_sum / (double)w[i]);
}
