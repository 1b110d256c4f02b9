#include "flow/adam.h"

#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor.h"

int uf_adam_init(uf_adam *a, size_t n, double lr) {
    memset(a, 0, sizeof *a);
    a->lr = lr, a->beta1 = 0.9, a->beta2 = 0.999, a->eps = 1e-8, a->weight_decay = 1e-5;
    a->n = n;
    a->m = uf_calloc(n ? n : 1, sizeof(float));
    a->v = uf_calloc(n ? n : 1, sizeof(float));
    if (!a->m || !a->v) {
        uf_adam_free(a);
        return uf_error_prefix("adam: allocating state for %zu parameters", n);
    }
    return UF_OK;
}

void uf_adam_free(uf_adam *a) {
    uf_free(a->m);
    uf_free(a->v);
    a->m = a->v = NULL;
}

void uf_adam_step(uf_adam *a, float *params, const float *grads) {
    a->step++;
    const double bc1 = 1.0 - pow(a->beta1, (double)a->step), bc2 = 1.0 - pow(a->beta2, (double)a->step);
    const float step_size = (float)(a->lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float b1 = (float)a->beta1, b2 = (float)a->beta2, eps = (float)a->eps, wd = (float)a->weight_decay;
    const float omb1 = (float)(1.0 - a->beta1), omb2 = (float)(1.0 - a->beta2);
    float *m = a->m, *v = a->v;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < a->n; i++) {
        float g = grads[i] + wd * params[i];
        m[i] = m[i] * b1 + omb1 * g;
        v[i] = v[i] * b2 + omb2 * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] -= step_size * (m[i] / denom);
    }
}
