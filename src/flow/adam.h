/* adam.h - torch.optim.Adam with L2 weight decay (spec 5.2), float32 state.
 *
 * Per step (PyTorch's single-tensor order): t += 1; g += wd * p;
 *     m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
 *     p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * The weight decay is added to the gradient (coupled L2), not AdamW.
 * State (m, v) is allocated by uf_adam_init, when training starts.
 */
#ifndef UF_FLOW_ADAM_H
#define UF_FLOW_ADAM_H

#include <stddef.h>

typedef struct uf_adam {
    double lr, beta1, beta2, eps, weight_decay;
    long step;
    size_t n;
    float *m, *v; /* (n) first and second moments */
} uf_adam;

/* n parameters, lr, and the U-Flow defaults betas (0.9, 0.999), eps 1e-8, weight decay 1e-5.
 * UF_ERR + message when out of memory. */
int uf_adam_init(uf_adam *a, size_t n, double lr);
void uf_adam_free(uf_adam *a);
/* One step on params (n) with grads (n); grads are not modified. Set a->lr before
 * the call for a schedule. */
void uf_adam_step(uf_adam *a, float *params, const float *grads);

#endif
