/* interp.h - PyTorch F.interpolate equivalents on planar float maps.
 * in: (channels, in_h, in_w); out: (channels, out_h, out_w). */
#ifndef UF_CORE_INTERP_H
#define UF_CORE_INTERP_H

/* mode='bilinear', align_corners=False (no antialias). */
void uf_interp_bilinear(const float *in, int channels, int in_h, int in_w, float *out, int out_h, int out_w);

/* mode='bicubic', align_corners=True, Keys kernel A=-0.75, taps clamped to the border. */
void uf_interp_bicubic_ac(const float *in, int channels, int in_h, int in_w, float *out, int out_h, int out_w);

#endif
