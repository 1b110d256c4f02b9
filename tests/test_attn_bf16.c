/* The attention's bf16 products (core/attn_bf16.h) against a double reference on the same
 * bf16-rounded operands: every value within the dot-product rounding bound (harness.h), over
 * shapes with row, column and pair tails (an odd key count padded with 0). Where the CPU has
 * no AVX512-BF16 the kernels may not run: the test says so and checks only that. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/attn_bf16.h"
#include "core/matmul_bf16.h"
#include "core/rng.h"
#include "harness.h"

static float bf16_value(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Random bf16 values in +-[0.25, 4) (no denormals: the instruction flushes them). */
static uint16_t random_bf16(uf_rng *r) {
    const double mag = 0.25 * pow(16.0, uf_rng_uniform(r));
    return uf_bf16_of((float)(uf_rng_uniform(r) < 0.5 ? -mag : mag));
}

/* s (r, n) = q (r, 2 d2) k^T, k (n, 2 d2): in the kernel's layout and in double. */
static double check_scores(uf_rng *g, int r, int n, int d2) {
    const int d = 2 * d2, ldq = d + 2, lds = n + 3; /* row strides wider than the rows */
    uint16_t *q = calloc((size_t)r * ldq, 2), *k = malloc(sizeof(uint16_t) * n * d);
    uint32_t *kp = malloc(sizeof(uint32_t) * d2 * n);
    float *s = malloc(sizeof(float) * r * lds), *ref = malloc(sizeof(float) * r * n), *mag = malloc(sizeof(float) * r * n),
          *got = malloc(sizeof(float) * r * n);
    for (int i = 0; i < r; i++)
        for (int t = 0; t < d; t++) q[i * ldq + t] = random_bf16(g);
    for (size_t i = 0; i < (size_t)n * d; i++) k[i] = random_bf16(g);
    for (int t = 0; t < d2; t++)
        for (int j = 0; j < n; j++) kp[t * n + j] = uf_bf16_pair(k[j * d + 2 * t], k[j * d + 2 * t + 1]);
    for (size_t i = 0; i < (size_t)r * lds; i++) s[i] = NAN; /* the gaps between rows must stay untouched */
    uf_attn_bf16_scores(r, n, d2, q, ldq, kp, n, s, lds);
    int gaps_ok = 1;
    for (int i = 0; i < r; i++) {
        for (int j = 0; j < n; j++) {
            double acc = 0, m = 0;
            for (int t = 0; t < d; t++) {
                const double p = (double)bf16_value(q[i * ldq + t]) * bf16_value(k[j * d + t]);
                acc += p, m += fabs(p);
            }
            ref[i * n + j] = (float)acc, mag[i * n + j] = (float)m, got[i * n + j] = s[i * lds + j];
        }
        for (int j = n; j < lds; j++) gaps_ok = gaps_ok && isnan(s[i * lds + j]);
    }
    CHECK(gaps_ok, "scores %dx%d: wrote past its columns", r, n);
    const double e = uf_test_dot_err(got, ref, mag, (size_t)r * n, d);
    free(q), free(k), free(kp), free(s), free(ref), free(mag), free(got);
    return e;
}

/* o (r, dv) = p (r, n) v (n, dv), n2 = ceil(n / 2) pairs, the pad 0. */
static double check_values(uf_rng *g, int r, int n, int dv) {
    const int n2 = (n + 1) / 2, ldp = 2 * n2, ldo = dv + 5;
    uint16_t *p = calloc((size_t)r * ldp, 2), *v = malloc(sizeof(uint16_t) * n * dv);
    uint32_t *vp = malloc(sizeof(uint32_t) * n2 * dv);
    float *o = malloc(sizeof(float) * r * ldo), *ref = malloc(sizeof(float) * r * dv), *mag = malloc(sizeof(float) * r * dv),
          *got = malloc(sizeof(float) * r * dv);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < n; j++) p[i * ldp + j] = random_bf16(g); /* an odd n's pad stays 0 */
    for (size_t i = 0; i < (size_t)n * dv; i++) v[i] = random_bf16(g);
    for (int t = 0; t < n2; t++)
        for (int c = 0; c < dv; c++)
            vp[t * dv + c] = uf_bf16_pair(v[(2 * t) * dv + c], 2 * t + 1 < n ? v[(2 * t + 1) * dv + c] : 0);
    for (size_t i = 0; i < (size_t)r * ldo; i++) o[i] = NAN;
    uf_attn_bf16_values(r, n2, dv, p, ldp, vp, dv, o, ldo);
    int gaps_ok = 1;
    for (int i = 0; i < r; i++) {
        for (int c = 0; c < dv; c++) {
            double acc = 0, m = 0;
            for (int j = 0; j < n; j++) {
                const double x = (double)bf16_value(p[i * ldp + j]) * bf16_value(v[j * dv + c]);
                acc += x, m += fabs(x);
            }
            ref[i * dv + c] = (float)acc, mag[i * dv + c] = (float)m, got[i * dv + c] = o[i * ldo + c];
        }
        for (int c = dv; c < ldo; c++) gaps_ok = gaps_ok && isnan(o[i * ldo + c]);
    }
    CHECK(gaps_ok, "values %dx%d: wrote past its columns", r, dv);
    const double e = uf_test_dot_err(got, ref, mag, (size_t)r * dv, 2 * n2);
    free(p), free(v), free(vp), free(o), free(ref), free(mag), free(got);
    return e;
}

/* 1 (said on stdout) where the CPU has no AVX512-BF16: the kernels may not run. */
static int kernels_unavailable(void) {
    if (uf_attn_bf16_available()) return 0;
    printf("  this CPU has no AVX512-BF16: the kernels are not used here\n");
    return 1;
}

static void test_attn_bf16_products(void) {
    if (kernels_unavailable()) return;
    uf_rng g = uf_rng_seed(11);
    const int rows[] = {1, 3, 4, 5, 64}, cols[] = {1, 15, 16, 17, 63, 64, 65, 100, 196};
    double worst_s = 0, worst_v = 0;
    for (size_t a = 0; a < sizeof rows / sizeof *rows; a++)
        for (size_t b = 0; b < sizeof cols / sizeof *cols; b++) {
            worst_s = fmax(worst_s, check_scores(&g, rows[a], cols[b], 1));
            worst_s = fmax(worst_s, check_scores(&g, rows[a], cols[b], 24));
            worst_v = fmax(worst_v, check_values(&g, rows[a], cols[b], 48));
            worst_v = fmax(worst_v, check_values(&g, rows[a], cols[b], cols[b] % 50 + 1));
        }
    printf("  worst error in units of the dot-product bound: scores %.3f, values %.3f\n", worst_s, worst_v);
    CHECK(worst_s <= 1.0 && worst_v <= 1.0, "scores %.3f, values %.3f of the bound", worst_s, worst_v);
}

/* The talking heads' mixings: uf_attn_bf16_mix_row (FP32 out, one row) and uf_attn_bf16_mix
 * (scaled weights, bf16 out, an odd len's pad) against double sums of the bf16-rounded
 * factors; the bf16 output may differ by its own rounding (2^-8 of the value) besides. */
static double check_mix(uf_rng *g, int H, int r, int len) {
    const size_t n = (size_t)H * r * len;
    const int ldd = len + (len % 2) + 2;
    float *w = malloc(sizeof(float) * H * H), *scale = malloc(sizeof(float) * H * r), *src = malloc(sizeof(float) * n),
          *dst = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n), *mag = malloc(sizeof(float) * n);
    uint16_t *d16 = malloc(sizeof(uint16_t) * H * r * ldd);
    for (int i = 0; i < H * H; i++) w[i] = (float)(uf_rng_uniform(g) * 2.0 - 1.0);
    for (int i = 0; i < H * r; i++) scale[i] = (float)(0.5 + uf_rng_uniform(g));
    for (size_t i = 0; i < n; i++) src[i] = (float)(0.01 + 0.99 * uf_rng_uniform(g)); /* softmax-like */
    for (size_t i = 0; i < (size_t)H * r * ldd; i++) d16[i] = 0xffff;
    double worst = 0;
    int bad16 = 0, pad_ok = 1;
    for (int pass = 0; pass < 2; pass++) {
        const float *sc = pass ? scale : NULL;
        if (pass)
            uf_attn_bf16_mix(H, w, sc, src, r, len, d16, ldd);
        else
            for (int i = 0; i < r; i++) uf_attn_bf16_mix_row(H, w, src, r, i, len, dst);
        for (int o = 0; o < H; o++)
            for (int i = 0; i < r; i++)
                for (int j = 0; j < len; j++) {
                    double acc = 0, m = 0;
                    for (int h = 0; h < H; h++) {
                        const float wf = w[o * H + h] * (sc ? sc[h * r + i] : 1.0f);
                        const double x = (double)bf16_value(uf_bf16_of(wf)) *
                                         bf16_value(uf_bf16_of(src[((size_t)h * r + i) * len + j]));
                        acc += x, m += fabs(x);
                    }
                    const size_t k = ((size_t)o * r + i) * len + j;
                    if (!pass) {
                        ref[k] = (float)acc, mag[k] = (float)m;
                        continue;
                    }
                    const double got = bf16_value(d16[((size_t)o * r + i) * ldd + j]);
                    bad16 += fabs(got - acc) > uf_test_dot_tol(H) * m + 0x1p-8 * fabs(acc);
                }
        if (!pass) worst = uf_test_dot_err(dst, ref, mag, n, H);
    }
    for (int o = 0; o < H; o++)
        for (int i = 0; i < r; i++) {
            const uint16_t *row = d16 + ((size_t)o * r + i) * ldd;
            if (len % 2) pad_ok = pad_ok && row[len] == 0;
            pad_ok = pad_ok && row[ldd - 1] == 0xffff; /* past the pad: untouched */
        }
    CHECK(bad16 == 0, "mix H %d, %d rows x %d: %d bf16 values off", H, r, len, bad16);
    CHECK(pad_ok, "mix H %d, %d rows x %d: the pad or the gap after it", H, r, len);
    free(w), free(scale), free(src), free(dst), free(ref), free(mag), free(d16);
    return worst;
}

static void test_attn_bf16_mixings(void) {
    if (kernels_unavailable()) return;
    uf_rng g = uf_rng_seed(23);
    const int heads[] = {8, 16, 32}, rows[] = {1, 3}, lens[] = {1, 15, 16, 17, 100};
    double worst = 0;
    for (size_t a = 0; a < sizeof heads / sizeof *heads; a++)
        for (size_t b = 0; b < sizeof rows / sizeof *rows; b++)
            for (size_t c = 0; c < sizeof lens / sizeof *lens; c++)
                worst = fmax(worst, check_mix(&g, heads[a], rows[b], lens[c]));
    printf("  first mixing: worst error %.3f of the dot-product bound\n", worst);
    CHECK(worst <= 1.0, "first mixing %.3f of the bound", worst);
}

int main(void) {
    UF_TEST(test_attn_bf16_products);
    UF_TEST(test_attn_bf16_mixings);
    return uf_test_summary();
}
