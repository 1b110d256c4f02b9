/* rng.h - small seeded RNG (splitmix64): flow initialisation, training
 * shuffles, and the seeding/hashing of the synthetic data generator.
 * Not PyTorch's generator: uflow-initialised weights follow PyTorch's
 * *distributions*, not its bit streams. */
#ifndef UF_CORE_RNG_H
#define UF_CORE_RNG_H

#include <stdint.h>

typedef struct uf_rng {
    uint64_t state;
} uf_rng;

static inline uf_rng uf_rng_seed(uint64_t seed) {
    uf_rng r = {seed ^ 0x9E3779B97F4A7C15ULL};
    return r;
}

/* One splitmix64 step: advances *state and returns the next output. */
static inline uint64_t uf_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t uf_rng_next(uf_rng *r) { return uf_splitmix64(&r->state); }

/* Uniform in [0, 1) with 53 random bits. */
static inline double uf_rng_uniform(uf_rng *r) { return (double)(uf_rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n > 0 (rejection sampling, no modulo bias). */
static inline uint64_t uf_rng_below(uf_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = uf_rng_next(r);
    while (v >= limit);
    return v % n;
}

#endif
