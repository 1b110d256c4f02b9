#include "flow/loss.h"

double uf_flow_nll(int batch, int n_scales, const size_t *zn, const float *const *z, const double *logdet,
                   float *const *gz, double *g_ld, double *per_sample, int anomalib_sum) {
    double total_z = 0.0, total_ld = 0.0;
    for (int b = 0; b < batch; b++) {
        double sq = 0.0;
        for (int l = 0; l < n_scales; l++) {
            const float *zb = z[l] + (size_t)b * zn[l];
            double acc = 0.0;
#pragma omp parallel for reduction(+ : acc) schedule(static)
            for (size_t i = 0; i < zn[l]; i++) acc += (double)zb[i] * zb[i];
            sq += acc;
        }
        total_z += 0.5 * sq;
        total_ld += logdet[b];
        if (per_sample) per_sample[b] = 0.5 * sq - logdet[b];
    }
    float zscale = anomalib_sum ? 1.0f : (float)(1.0 / batch);
    if (gz)
        for (int l = 0; l < n_scales; l++) {
            size_t n = (size_t)batch * zn[l];
            const float *zl = z[l];
            float *gl = gz[l];
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; i++) gl[i] = zl[i] * zscale;
        }
    if (g_ld)
        for (int b = 0; b < batch; b++) g_ld[b] = -1.0 / batch;
    return (anomalib_sum ? total_z : total_z / batch) - total_ld / batch;
}
