/* latent.h - a read-only view of one scale's latent, shared by the detectors.
 *
 * The flow produces, per image and per scale l, z_l of shape (C_l, h_l, w_l),
 * stored planar (channel-major) as float32. The detectors only read it.
 */
#ifndef UF_DETECT_LATENT_H
#define UF_DETECT_LATENT_H

#define UF_MAX_SCALES 16

typedef struct uf_latent_view {
    const float *z; /* (c, h, w) planar */
    int c, h, w;
} uf_latent_view;

/* UF_OK when 1 <= n_scales <= UF_MAX_SCALES, out size positive and every view has data and a
 * positive shape; else UF_ERR with a message starting with `what`. */
int uf_latent_views_check(const uf_latent_view *scales, int n_scales, int out_h, int out_w, const char *what);

#endif
