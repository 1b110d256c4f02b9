/* nfa_block.c - see nfa_block.h. */
#include "detect/nfa_block.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/interp.h"
#include "core/tensor.h"

/* Standard normal quantile: Acklam's rational approximation (rel. err 1.2e-9)
 * refined by one Halley step on erfc, which brings it to double precision. */
static double norm_ppf(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01,  -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double x;
    if (p < 0.02425) {
        double q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p > 1 - 0.02425) {
        double q = sqrt(-2 * log1p(-p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else {
        double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    double e = 0.5 * erfc(-x / M_SQRT2) - p;
    double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

double uf_chi2_1_ppf(double p) {
    double x = norm_ppf(0.5 * (1.0 + p));
    return x * x;
}

double uf_binom_log10_sf(double x, int n, double p) {
    if (x < 0) return 0.0;
    double kf = floor(x);
    if (kf >= n) return UF_LOG10P_FLOOR;
    int k0 = (int)kf + 1;
    /* log-sum-exp of ln C(n,k) + k ln p + (n-k) ln(1-p), k = k0..n */
    const double lp = log(p), lq = log1p(-p), lgn = lgamma(n + 1.0);
    double mx = -INFINITY;
    for (int k = k0; k <= n; k++) {
        double t = lgn - lgamma(k + 1.0) - lgamma(n - k + 1.0) + k * lp + (n - k) * lq;
        if (t > mx) mx = t;
    }
    double s = 0;
    for (int k = k0; k <= n; k++)
        s += exp(lgn - lgamma(k + 1.0) - lgamma(n - k + 1.0) + k * lp + (n - k) * lq - mx);
    double r = (mx + log(s)) / M_LN10;
    return r > 0 ? 0 : r;
}

static int reflect(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }

int uf_nfa_block_log10p(const float *z, int c, int h, int w, int scale_index, int win_size, double pthr,
                        float *lp) {
    if (c < 1 || h < 1 || w < 1 || scale_index < 0 || scale_index > 30 || win_size < 1)
        return uf_error("block NFA: bad arguments (C=%d, %dx%d, scale %d, window %d)", c, h, w, scale_index,
                        win_size);
    if (!(pthr > 0 && pthr < 1)) return uf_error("block NFA: probability threshold %g not in (0, 1)", pthr);
    int hw = (int)floor((double)win_size / (double)(1 << (scale_index + 1)));
    if (hw < 1) hw = 1;
    if (hw >= h || hw >= w)
        return uf_error("block NFA: scale %d grid %dx%d too small for half window %d", scale_index, h, w, hw);
    const size_t n = (size_t)h * w;
    int *cnt = uf_calloc(n, sizeof(int)); /* (h, w): channels with z^2 >= tau */
    if (!cnt) return uf_error_prefix("block NFA");
    /* The reference compares float32 z^2 with tau cast to float32 (numpy scalar casting). */
    const float tau = (float)uf_chi2_1_ppf(pthr);
    for (int k = 0; k < c; k++) {
        const float *zk = z + (size_t)k * n;
        for (size_t p = 0; p < n; p++) cnt[p] += (zk[p] * zk[p] >= tau);
    }
    const int nwin = (2 * hw + 1) * (2 * hw + 1);
    const double pb = 1.0 - pthr;
    /* floor(K/C) takes at most nwin + 1 values: tabulate the tail once. */
    double *tail = malloc(sizeof(double) * (size_t)(nwin + 1));
    if (!tail) {
        uf_free(cnt);
        return uf_error("block NFA: out of memory");
    }
    for (int k = 0; k <= nwin; k++) tail[k] = uf_binom_log10_sf((double)k, nwin, pb);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int64_t K = 0;
            for (int dy = -hw; dy <= hw; dy++) {
                const int *row = cnt + (size_t)reflect(y + dy, h) * w;
                for (int dx = -hw; dx <= hw; dx++) K += row[reflect(x + dx, w)];
            }
            lp[(size_t)y * w + x] = (float)tail[K / c];
        }
    free(tail);
    uf_free(cnt);
    return UF_OK;
}

int uf_nfa_block_score(const uf_latent_view *scales, int n_scales, int win_size, double pthr, int out_h,
                       int out_w, float *score) {
    if (uf_latent_views_check(scales, n_scales, out_h, out_w, "block NFA") != UF_OK) return UF_ERR;
    size_t max_cells = 0, n_out = (size_t)out_h * out_w;
    int64_t total = 0;
    for (int l = 0; l < n_scales; l++) {
        size_t m = (size_t)scales[l].h * scales[l].w;
        total += (int64_t)m;
        if (m > max_cells) max_cells = m;
    }
    float *lp = uf_alloc(sizeof(float) * max_cells), *up = uf_alloc(sizeof(float) * n_out);
    if (!lp || !up) {
        uf_free(lp), uf_free(up);
        return uf_error_prefix("block NFA");
    }
    for (size_t i = 0; i < n_out; i++) score[i] = 0.f;
    for (int l = 0; l < n_scales; l++) {
        const uf_latent_view *s = &scales[l];
        if (uf_nfa_block_log10p(s->z, s->c, s->h, s->w, l, win_size, pthr, lp) != UF_OK) {
            uf_free(lp), uf_free(up);
            return UF_ERR;
        }
        uf_interp_bicubic_ac(lp, 1, s->h, s->w, up, out_h, out_w);
        for (size_t i = 0; i < n_out; i++) score[i] += up[i];
    }
    const float log_nt = (float)log10((double)total);
    for (size_t i = 0; i < n_out; i++) score[i] = -(log_nt + score[i]);
    uf_free(lp), uf_free(up);
    return UF_OK;
}
