/* vmath.h - expf and tanhf that the compiler can vectorise.
 *
 * glibc's expf / tanhf are scalar calls (tanhf goes through expm1f): in the flow's
 * coupling they took a third of inference time. These are branch-free (selects only),
 * so a loop over them becomes SIMD code at -O3 for the target's vector width.
 *
 * Accuracy (checked against double exp / tanh in tests/test_core.c over the float
 * range): uf_vexpf within 2 ulp, uf_vtanhf within 3 ulp. Special values as libm: NaN in,
 * NaN out; uf_vexpf gives +inf above 88.72 and 0 below -103.97 (subnormal results
 * in between lose precision gradually, as 2^k scaling does); uf_vtanhf gives +-1 for
 * large |x|.
 *
 * Method: exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 split in two parts
 * (Cody-Waite), exp(r) by a degree-6 polynomial on |r| <= ln 2 / 2 (Cephes' expf
 * coefficients); the 2^k scaling is done in two halves so k down to -150 works.
 * tanh(x) = x + x^3 P(x^2) for |x| < 0.625 (Cephes' tanhf coefficients) and
 * sign(x) (1 - 2 / (exp(2|x|) + 1)) otherwise.
 */
#ifndef UF_CORE_VMATH_H
#define UF_CORE_VMATH_H

#include <stdint.h>
#include <string.h>

static inline float uf_bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t uf_float_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float uf_vexpf(float x) {
    const float hi = 88.72283935546875f, lo = -103.972084045410f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc; /* NaN passes both compares unchanged */
    /* k = round(x / ln 2) by the 1.5 * 2^23 trick: t's low mantissa bits hold k */
    const float shifter = 12582912.0f;
    float t = xc * 1.44269504088896341f + shifter;
    float k = t - shifter;
    int32_t ki = (int32_t)(uf_float_to_bits(t) - uf_float_to_bits(shifter));
    float r = xc - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * (r * r) + r + 1.0f;
    /* 2^k = 2^k1 * 2^k2 with both halves normal for k in [-150, 128] */
    int32_t k1 = ki / 2, k2 = ki - k1;
    e = e * uf_bits_to_float((uint32_t)(k1 + 127) << 23) * uf_bits_to_float((uint32_t)(k2 + 127) << 23);
    e = x > hi ? __builtin_inff() : e;
    return x < lo ? 0.0f : e;
}

static inline float uf_vtanhf(float x) {
    float ax = x < 0.0f ? -x : x;
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float big = 1.0f - 2.0f / (uf_vexpf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big; /* NaN: ax < 0.625 is false, big is NaN */
}

#endif
