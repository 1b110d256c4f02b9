/* calibration.c - see calibration.h. */
#include "model/calibration.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "model/batch.h"

#define CALIB_BATCH 8

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int uf_calibration_allowed(int n, double rate) {
    /* P(Bin(n, rate) <= j), summed in the log domain term by term */
    const double lq = log1p(-rate), lp = log(rate);
    double cdf = 0.0;
    int j = -1;
    for (int k = 0; k <= n; k++) {
        const double lterm = lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0) + k * lp + (n - k) * lq;
        cdf += exp(lterm);
        if (cdf > 1.0 - UF_CALIB_CONFIDENCE) break;
        j = k;
    }
    return j < 0 ? 0 : j;
}

double uf_calibration_offset(double *s, int n, double rate) {
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    const double v = s[n - 1 - uf_calibration_allowed(n, rate)];
    return v > 0 ? v : 0.0;
}

/* One pass over the images with the model's current null: per image its mean z^2 per scale
 * (z2, n x UF_FLOW_MAX_SCALES) and its largest -log10 NFA where the test runs (smax). */
static int pass(uf_model *m, uf_batch *b, const char *const *paths, int n, double (*z2)[UF_FLOW_MAX_SCALES],
                double *smax) {
    for (int i0 = 0; i0 < n; i0 += b->cap) {
        const int k = n - i0 < b->cap ? n - i0 : b->cap;
        uf_batch_load(b, m, paths + i0, k);
        int bad = uf_batch_first_error(b);
        if (bad < 0) {
            if (uf_batch_run(b, m, NULL, NULL) != UF_OK) return UF_ERR;
            bad = uf_batch_first_error(b);
        }
        if (bad >= 0) return uf_error("calibration image: %s", b->error[bad]);
        for (int i = 0; i < k; i++) {
            memcpy(z2[i0 + i], b->z2[i], sizeof z2[0]);
            smax[i0 + i] = b->max_nfa[i];
        }
    }
    return UF_OK;
}

int uf_calibrate(uf_model *m, const char *const *paths, int n, double rate, const char *source, int verbose) {
    if (n < UF_CALIB_MIN_IMAGES)
        return uf_error("calibration needs at least %d normal images (%d given)", UF_CALIB_MIN_IMAGES, n);
    if (!(rate > 0 && rate < 1)) return uf_error("calibration rate %g: expected a share in (0, 1)", rate);
    const int L = m->cfg.flow.n_scales;
    double(*z2)[UF_FLOW_MAX_SCALES] = malloc(sizeof *z2 * (size_t)n);
    double *smax = malloc(sizeof(double) * (size_t)n), *col = malloc(sizeof(double) * (size_t)n);
    uf_batch b;
    memset(&b, 0, sizeof b);
    int rc = z2 && smax && col ? UF_OK : uf_error("out of memory");
    if (rc == UF_OK) rc = uf_batch_init(&b, m, CALIB_BATCH, m->cfg.input.width, m->cfg.input.height);
    uf_calibration k;
    memset(&k, 0, sizeof k);
    k.n_images = n, k.rate = rate;
    snprintf(k.source, sizeof k.source, "%s", source);
    /* pass 1, the spec's null: the variances, and how often the spec's test fires */
    m->cfg.calib.n_images = 0;
    if (rc == UF_OK) rc = pass(m, &b, paths, n, z2, smax);
    if (rc == UF_OK) {
        int fired = 0;
        for (int i = 0; i < n; i++) fired += smax[i] > 0;
        k.flagged_spec = (double)fired / n;
        for (int l = 0; l < L; l++) {
            for (int i = 0; i < n; i++) col[i] = z2[i][l];
            qsort(col, (size_t)n, sizeof(double), cmp_double);
            k.z2[l] = n % 2 ? col[n / 2] : 0.5 * (col[n / 2 - 1] + col[n / 2]);
            if (!(k.z2[l] > 0) || !isfinite(k.z2[l])) rc = uf_error("calibration: scale %d has z^2 %g", l, k.z2[l]);
        }
    }
    /* pass 2, the variances applied: the law of the largest -log10 NFA per image */
    if (rc == UF_OK) {
        m->cfg.calib = k;
        m->cfg.calib.log10_offset = 0.0;
        rc = pass(m, &b, paths, n, z2, smax);
    }
    if (rc == UF_OK) {
        memcpy(col, smax, sizeof(double) * (size_t)n);
        k.log10_offset = uf_calibration_offset(col, n, rate);
        int fired = 0;
        for (int i = 0; i < n; i++) fired += smax[i] - k.log10_offset > 0;
        k.flagged = (double)fired / n;
        m->cfg.calib = k;
        if (verbose) {
            char zs[160];
            size_t used = 0;
            zs[0] = '\0';
            for (int l = 0; l < L; l++) used += (size_t)snprintf(zs + used, sizeof zs - used, " %.3f", k.z2[l]);
            uf_log(UF_LOG_INFO,
                   "NFA calibrated on %d normal images (%s): null variance per scale%s, %.2f more decades of tests; "
                   "images with a detection: %.1f%% with the spec's test, %.1f%% calibrated (target <= %.0f%%)",
                   n, source, zs, k.log10_offset, 100 * k.flagged_spec, 100 * k.flagged, 100 * rate);
        }
    } else {
        m->cfg.calib.n_images = 0;
    }
    uf_batch_free(&b);
    free(z2), free(smax), free(col);
    return rc;
}
