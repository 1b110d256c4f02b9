/* synth.c - seeded procedural fabric category with synthetic defects (see synth.h).
 *
 * Rendering works in float RGB in [0, 1]: texture first, then the defect as a
 * coverage map alpha (H, W) in [0, 1] blended over it, then rounding to 8 bits.
 * The mask is alpha > 0.5. Sizes are given for 256x256 and scaled by size/256.
 */
#include "io/synth.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "io/atomic_file.h"

#define PI 3.14159265358979323846

/* ---- RNG: splitmix64 (seeding, hashing) + xoshiro256** -------------------- */

typedef struct rng {
    uint64_t s[4];
} rng;

/* A well-mixed 64-bit key from a and b (order matters). */
static uint64_t hash2(uint64_t a, uint64_t b) {
    uint64_t x = a;
    uint64_t h = uf_splitmix64(&x);
    x = h ^ b;
    return uf_splitmix64(&x);
}

static void rng_seed(rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = uf_splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static double u64_to_unit(uint64_t x) { return (double)(x >> 11) * 0x1.0p-53; } /* [0, 1) */
static double rng_unif(rng *r) { return u64_to_unit(rng_next(r)); }
static double rng_range(rng *r, double a, double b) { return a + (b - a) * rng_unif(r); }

static double rng_normal(rng *r) {
    double u1 = 1.0 - rng_unif(r), u2 = rng_unif(r); /* u1 in (0, 1] */
    return sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
}

/* ---- category and per-image parameters ------------------------------------ */

enum { KEY_CATEGORY = 1, KEY_TEXTURE = 2, KEY_DEFECT = 3 };
#define LF_GRID 5 /* low-frequency shading: (LF_GRID+1)^2 nodes over the image */

typedef struct category {
    double base[3];  /* fabric colour */
    double spot[3];  /* "color" defect colour: the complementary hue, saturated */
    double period;   /* weave cell size at 256 px */
    double twist_f;  /* yarn twists per cell */
    double twist_a;  /* twist shading amplitude */
} category;

typedef struct texture {
    double phase_u, phase_v, cos_t, sin_t, period;
    double gain[3]; /* brightness x tint */
    double lf[(LF_GRID + 1) * (LF_GRID + 1)];
    uint64_t thread_key;
    double noise;
} texture;

static void hsv_to_rgb(double h, double s, double v, double rgb[3]) {
    h = (h - floor(h)) * 6.0;
    int i = (int)h;
    double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    double tab[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    memcpy(rgb, tab[i % 6], sizeof(double) * 3);
}

static void make_category(uint64_t seed, category *c) {
    rng r;
    rng_seed(&r, hash2(seed, KEY_CATEGORY));
    double h = rng_unif(&r);
    hsv_to_rgb(h, rng_range(&r, 0.30, 0.50), rng_range(&r, 0.62, 0.76), c->base);
    hsv_to_rgb(h + 0.5, 0.85, 0.85, c->spot);
    c->period = rng_range(&r, 14.0, 20.0);
    c->twist_f = (double)(2 + (int)(rng_unif(&r) * 3)); /* 2..4 */
    c->twist_a = rng_range(&r, 0.04, 0.08);
}

static void make_texture(uint64_t key, const category *c, int size, texture *t) {
    rng r;
    rng_seed(&r, key);
    double scale = size / 256.0;
    t->period = c->period * scale * rng_range(&r, 0.96, 1.04);
    t->phase_u = rng_range(&r, 0, 2 * t->period);
    t->phase_v = rng_range(&r, 0, 2 * t->period);
    double theta = rng_range(&r, -3.0, 3.0) * PI / 180.0;
    t->cos_t = cos(theta);
    t->sin_t = sin(theta);
    double bright = rng_range(&r, 0.95, 1.05);
    for (int ch = 0; ch < 3; ch++) t->gain[ch] = bright * rng_range(&r, 0.97, 1.03);
    for (int i = 0; i < (LF_GRID + 1) * (LF_GRID + 1); i++) t->lf[i] = 0.03 * rng_normal(&r);
    t->thread_key = rng_next(&r);
    t->noise = 0.012;
}

/* Per-thread brightness offset in [-0.05, 0.05). */
static double thread_var(uint64_t key, int64_t k, int dir) {
    return 0.10 * (u64_to_unit(hash2(key, (uint64_t)k * 2 + (uint64_t)dir)) - 0.5);
}

static double smooth(double x) { return x * x * (3 - 2 * x); }

/* Low-frequency relative shading at (x, y). */
static double low_freq(const texture *t, int size, int x, int y) {
    double gx = x * (double)LF_GRID / (size - 1), gy = y * (double)LF_GRID / (size - 1);
    int ix = gx >= LF_GRID ? LF_GRID - 1 : (int)gx, iy = gy >= LF_GRID ? LF_GRID - 1 : (int)gy;
    double fx = smooth(gx - ix), fy = smooth(gy - iy);
    const double *g = t->lf;
    int w = LF_GRID + 1;
    double a = g[iy * w + ix] * (1 - fx) + g[iy * w + ix + 1] * fx;
    double b = g[(iy + 1) * w + ix] * (1 - fx) + g[(iy + 1) * w + ix + 1] * fx;
    return a * (1 - fy) + b * fy;
}

/* Basket weave shading (about 0.6..1.1) at pixel (x, y). */
static double weave(const category *c, const texture *t, int size, int x, int y) {
    double cx = x - 0.5 * size, cy = y - 0.5 * size;
    double u = (t->cos_t * cx + t->sin_t * cy + t->phase_u) / t->period;
    double v = (-t->sin_t * cx + t->cos_t * cy + t->phase_v) / t->period;
    double fi = floor(u), fj = floor(v);
    double fu = u - fi, fv = v - fj;
    int64_t i = (int64_t)fi, j = (int64_t)fj;
    int horizontal = ((i + j) & 1) == 0; /* which thread lies on top in this cell */
    double across = horizontal ? fv : fu, along = horizontal ? u : v, in_cell = horizontal ? fu : fv;
    double tv = horizontal ? thread_var(t->thread_key, j, 0) : thread_var(t->thread_key, i, 1);
    double profile = 0.62 + 0.38 * sin(PI * across);      /* dark gaps between threads */
    double twist = 1.0 + c->twist_a * sin(2 * PI * (c->twist_f * along + 0.5 * across));
    double dip = 0.90 + 0.10 * sin(PI * in_cell);          /* thread dives under its neighbour */
    return profile * twist * dip * (1.0 + tv);
}

/* ---- defects --------------------------------------------------------------- */

const char *uf_synth_defect_name(int defect) {
    static const char *names[UF_SYNTH_N_DEFECTS] = {"color", "hole", "scratch", "stain"};
    return defect >= 0 && defect < UF_SYNTH_N_DEFECTS ? names[defect] : NULL;
}

#define N_HARM 6
typedef struct blob {
    double cx, cy, radius, softness;
    double amp[N_HARM], phase[N_HARM]; /* harmonics k = 2 .. N_HARM+1 */
} blob;

static double clamp01(double x) { return x < 0 ? 0 : x > 1 ? 1 : x; }

/* Draws an irregular blob of mean radius in [rmin, rmax] that lies inside the image. */
static void make_blob(rng *r, int size, double rmin, double rmax, double jag, double softness, blob *b) {
    b->radius = rng_range(r, rmin, rmax);
    double sum = 0;
    for (int k = 0; k < N_HARM; k++) {
        b->amp[k] = rng_range(r, -jag, jag) / (1.0 + 0.5 * k);
        b->phase[k] = rng_range(r, 0, 2 * PI);
        sum += fabs(b->amp[k]);
    }
    double margin = b->radius * (1 + sum) + softness + 2;
    b->cx = rng_range(r, margin, size - margin);
    b->cy = rng_range(r, margin, size - margin);
    b->softness = softness;
}

/* Signed distance-like depth inside the blob (> 0 inside), in pixels. */
static double blob_depth(const blob *b, double x, double y) {
    double dx = x - b->cx, dy = y - b->cy, rho = sqrt(dx * dx + dy * dy), phi = atan2(dy, dx);
    double rr = 1.0;
    for (int k = 0; k < N_HARM; k++) rr += b->amp[k] * cos((k + 2) * phi + b->phase[k]);
    return b->radius * rr - rho;
}

static void blob_alpha(const blob *b, int size, float *alpha) {
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
            alpha[(size_t)y * size + x] = (float)clamp01(blob_depth(b, x, y) / b->softness + 0.5);
}

/* Scratch: quadratic Bezier, width w, antialiased by distance. */
static void scratch_alpha(rng *r, int size, float *alpha, double w) {
    double p0x, p0y, p2x, p2y, len;
    do {
        p0x = rng_range(r, 0.1, 0.9) * size;
        p0y = rng_range(r, 0.1, 0.9) * size;
        double a = rng_range(r, 0, 2 * PI);
        len = rng_range(r, 0.40, 0.65) * size;
        p2x = p0x + len * cos(a);
        p2y = p0y + len * sin(a);
    } while (p2x < 0.06 * size || p2x > 0.94 * size || p2y < 0.06 * size || p2y > 0.94 * size);
    double bend = rng_range(r, -0.15, 0.15) * len;
    double p1x = 0.5 * (p0x + p2x) - bend * (p2y - p0y) / len;
    double p1y = 0.5 * (p0y + p2y) + bend * (p2x - p0x) / len;
    enum { NPT = 48 };
    double px[NPT + 1], py[NPT + 1];
    for (int i = 0; i <= NPT; i++) {
        double s = (double)i / NPT, a = (1 - s) * (1 - s), b = 2 * s * (1 - s), c = s * s;
        px[i] = a * p0x + b * p1x + c * p2x;
        py[i] = a * p0y + b * p1y + c * p2y;
    }
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            double best = 1e30;
            for (int i = 0; i < NPT; i++) {
                double ex = px[i + 1] - px[i], ey = py[i + 1] - py[i];
                double qx = x - px[i], qy = y - py[i];
                double l2 = ex * ex + ey * ey, s = l2 > 0 ? (qx * ex + qy * ey) / l2 : 0;
                s = clamp01(s);
                double dx = qx - s * ex, dy = qy - s * ey, d2 = dx * dx + dy * dy;
                if (d2 < best) best = d2;
            }
            alpha[(size_t)y * size + x] = (float)clamp01(0.5 * w + 0.5 - sqrt(best));
        }
}

static double mask_fraction(const float *alpha, int size) {
    size_t n = (size_t)size * size, k = 0;
    for (size_t i = 0; i < n; i++) k += alpha[i] > 0.5f;
    return (double)k / (double)n;
}

static double luminance(const double *rgb) { return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]; }

/* Paints the defect into rgb (H, W, 3) and leaves its coverage in alpha (H, W). */
static void paint_defect(uint64_t key, const category *c, int defect, int size, float *rgb, float *alpha) {
    rng r;
    rng_seed(&r, key);
    double s = size / 256.0;
    blob b = {0};
    /* Redraw until the area is within 0.8% .. 5% (rarely needed; bounded). */
    for (int attempt = 0; attempt < 64; attempt++) {
        switch (defect) {
        case UF_SYNTH_COLOR: make_blob(&r, size, 16 * s, 26 * s, 0.12, fmax(2 * s, 1), &b); break;
        case UF_SYNTH_HOLE: make_blob(&r, size, 13 * s, 21 * s, 0.18, 1.0, &b); break;
        case UF_SYNTH_STAIN: make_blob(&r, size, 16 * s, 26 * s, 0.15, fmax(3 * s, 1), &b); break;
        default: break;
        }
        if (defect == UF_SYNTH_SCRATCH) scratch_alpha(&r, size, alpha, fmax(rng_range(&r, 5, 7) * s, 2.0));
        else blob_alpha(&b, size, alpha);
        double f = mask_fraction(alpha, size);
        if (f >= 0.008 && f <= 0.05) break;
    }
    int dark_scratch = rng_unif(&r) < 0.5;
    double rim = fmax(3 * s, 1.5);
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            size_t p = (size_t)y * size + x;
            double a = alpha[p];
            if (a <= 0) continue;
            float *px = rgb + 3 * p;
            double orig[3] = {px[0], px[1], px[2]}, d[3];
            switch (defect) {
            case UF_SYNTH_COLOR: {
                double shade = luminance(orig) / luminance(c->base);
                for (int ch = 0; ch < 3; ch++) d[ch] = c->spot[ch] * shade;
                break;
            }
            case UF_SYNTH_HOLE:
                if (blob_depth(&b, x, y) > rim) {
                    for (int ch = 0; ch < 3; ch++) d[ch] = 0.05 + 0.02 * rng_normal(&r);
                } else { /* frayed bright rim */
                    double fray = 0.8 + 0.4 * rng_unif(&r);
                    for (int ch = 0; ch < 3; ch++) d[ch] = (orig[ch] * 1.3 + 0.12) * fray;
                }
                break;
            case UF_SYNTH_SCRATCH:
                for (int ch = 0; ch < 3; ch++)
                    d[ch] = dark_scratch ? 0.10 * orig[ch] + 0.03 : 0.88 + 0.08 * orig[ch];
                break;
            default: { /* stain */
                static const double tint[3] = {0.58, 0.46, 0.32};
                for (int ch = 0; ch < 3; ch++) d[ch] = orig[ch] * tint[ch];
                break;
            }
            }
            for (int ch = 0; ch < 3; ch++) px[ch] = (float)((1 - a) * orig[ch] + a * d[ch]);
        }
}

/* ---- rendering and writing -------------------------------------------------- */

int uf_synth_render(uint64_t seed, int stream, int index, int defect, int size, uf_image **img_out,
                    uf_image **mask_out) {
    *img_out = NULL;
    if (mask_out) *mask_out = NULL;
    if (size < 32 || size > 8192)
        return uf_error("synth: image size %d out of range 32..8192", size);
    if (defect < UF_SYNTH_NONE || defect >= UF_SYNTH_N_DEFECTS || stream < 0 || index < 0)
        return uf_error("synth: bad defect %d, stream %d or index %d", defect, stream, index);
    category c;
    texture t;
    make_category(seed, &c);
    uint64_t image_key = hash2(hash2(hash2(seed, KEY_TEXTURE), (uint64_t)stream), (uint64_t)index);
    make_texture(image_key, &c, size, &t);

    size_t npix = (size_t)size * size;
    float *rgb = uf_alloc(sizeof(float) * 3 * npix); /* (H, W, 3) */
    float *alpha = uf_calloc(npix, sizeof(float));    /* (H, W) */
    uf_image *img = uf_image_new(size, size, 3);
    uf_image *mask = mask_out ? uf_image_new(size, size, 1) : NULL;
    if (!rgb || !alpha || !img || (mask_out && !mask)) {
        uf_free(rgb), uf_free(alpha), uf_image_free(img), uf_image_free(mask);
        return UF_ERR;
    }
    rng noise;
    rng_seed(&noise, hash2(image_key, 0x6e6f697365)); /* "noise" */
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            double sh = weave(&c, &t, size, x, y) * (1.0 + low_freq(&t, size, x, y));
            float *px = rgb + 3 * ((size_t)y * size + x);
            for (int ch = 0; ch < 3; ch++)
                px[ch] = (float)(c.base[ch] * t.gain[ch] * sh + t.noise * rng_normal(&noise));
        }
    if (defect != UF_SYNTH_NONE)
        paint_defect(hash2(image_key, KEY_DEFECT + (uint64_t)defect * 16), &c, defect, size, rgb, alpha);
    for (size_t i = 0; i < 3 * npix; i++) img->pixels[i] = (uint8_t)lround(255.0 * clamp01(rgb[i]));
    if (mask)
        for (size_t i = 0; i < npix; i++) mask->pixels[i] = alpha[i] > 0.5f ? 255 : 0;
    uf_free(rgb);
    uf_free(alpha);
    *img_out = img;
    if (mask_out) *mask_out = mask;
    return UF_OK;
}

/* snprintf into a path buffer; UF_ERR when the path does not fit. */
static int fmt_path(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fmt_path(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) return uf_error("synth: output path too long (%.60s...)", buf);
    return UF_OK;
}

/* Number of digits in file names: at least 3, enough for n - 1. */
static int name_digits(int n) {
    int d = 3;
    for (int m = 1000; m <= n - 1 && d < 10; m *= 10) d++;
    return d;
}

/* The window (x0, y0) of w x h in a side x side image: centred, or centred on the
 * mask's pixels when it has any, clamped to the image. */
static void strip_origin(const uf_image *mask, int side, int w, int h, int *x0, int *y0) {
    double sx = 0, sy = 0, n = 0;
    for (int y = 0; mask && y < side; y++)
        for (int x = 0; x < side; x++)
            if (mask->pixels[(size_t)y * side + x]) sx += x, sy += y, n++;
    const double cx = n > 0 ? sx / n : 0.5 * (side - 1), cy = n > 0 ? sy / n : 0.5 * (side - 1);
    long ox = lround(cx - 0.5 * (w - 1)), oy = lround(cy - 0.5 * (h - 1));
    *x0 = (int)(ox < 0 ? 0 : ox > side - w ? side - w : ox);
    *y0 = (int)(oy < 0 ? 0 : oy > side - h ? side - h : oy);
}

static uf_image *crop(const uf_image *src, int x0, int y0, int w, int h) {
    uf_image *out = uf_image_new(w, h, src->channels);
    for (int y = 0; out && y < h; y++)
        memcpy(out->pixels + (size_t)y * w * src->channels,
               src->pixels + ((size_t)(y0 + y) * src->width + x0) * src->channels, (size_t)w * src->channels);
    return out;
}

/* uf_synth_render at width x height (see uf_synth_write_category_wh). */
static int render_wh(uint64_t seed, int stream, int index, int defect, int width, int height, uf_image **img,
                     uf_image **mask) {
    if (width == height) return uf_synth_render(seed, stream, index, defect, width, img, mask);
    const int side = width > height ? width : height;
    uf_image *full = NULL, *full_mask = NULL;
    int rc = uf_synth_render(seed, stream, index, defect, side, &full, &full_mask);
    if (rc != UF_OK) return rc;
    int x0, y0;
    strip_origin(defect == UF_SYNTH_NONE ? NULL : full_mask, side, width, height, &x0, &y0);
    *img = crop(full, x0, y0, width, height);
    if (mask) *mask = crop(full_mask, x0, y0, width, height);
    uf_image_free(full), uf_image_free(full_mask);
    if (!*img || (mask && !*mask)) {
        uf_image_free(*img);
        if (mask) uf_image_free(*mask);
        return UF_ERR;
    }
    return UF_OK;
}

int uf_synth_write_category_size(const char *out_dir, uint64_t seed, int n_train, int n_test_good,
                                 int n_test_defect, int size) {
    return uf_synth_write_category_wh(out_dir, seed, n_train, n_test_good, n_test_defect, size, size);
}

int uf_synth_write_category_wh(const char *out_dir, uint64_t seed, int n_train, int n_test_good, int n_test_defect,
                               int width, int height) {
    if (!out_dir || n_train < 0 || n_test_good < 0 || n_test_defect < 0)
        return uf_error("synth: bad arguments (out_dir '%s', counts %d/%d/%d)", out_dir ? out_dir : "(null)",
                        n_train, n_test_good, n_test_defect);
    char path[4096], mpath[4096];
    int rc = UF_OK;

    /* Defect-free streams. */
    struct { const char *dir; int stream, n; } good[2] = {
        {"train/good", UF_SYNTH_STREAM_TRAIN, n_train},
        {"test/good", UF_SYNTH_STREAM_TEST_GOOD, n_test_good},
    };
    for (int g = 0; g < 2 && rc == UF_OK; g++) {
        if (good[g].n == 0) continue;
        if ((rc = fmt_path(path, sizeof path, "%s/%s", out_dir, good[g].dir)) != UF_OK) break;
        if ((rc = uf_make_dirs(path)) != UF_OK) break;
        int digits = name_digits(good[g].n);
        for (int i = 0; i < good[g].n && rc == UF_OK; i++) {
            uf_image *img;
            if ((rc = render_wh(seed, good[g].stream, i, UF_SYNTH_NONE, width, height, &img, NULL)) != UF_OK) break;
            rc = fmt_path(path, sizeof path, "%s/%s/%0*d.png", out_dir, good[g].dir, digits, i);
            if (rc == UF_OK) rc = uf_image_write_png(path, img);
            uf_image_free(img);
        }
    }

    /* Defective images: defects in turn; numbered within each defect folder. */
    for (int d = 0; d < UF_SYNTH_N_DEFECTS && rc == UF_OK; d++) {
        int n_d = n_test_defect / UF_SYNTH_N_DEFECTS + (d < n_test_defect % UF_SYNTH_N_DEFECTS);
        if (n_d == 0) continue;
        const char *name = uf_synth_defect_name(d);
        if ((rc = fmt_path(path, sizeof path, "%s/test/%s", out_dir, name)) != UF_OK) break;
        if ((rc = uf_make_dirs(path)) != UF_OK) break;
        if ((rc = fmt_path(path, sizeof path, "%s/ground_truth/%s", out_dir, name)) != UF_OK) break;
        if ((rc = uf_make_dirs(path)) != UF_OK) break;
        int digits = name_digits(n_d);
        for (int i = 0; i < n_d && rc == UF_OK; i++) {
            uf_image *img, *mask;
            rc = render_wh(seed, UF_SYNTH_STREAM_TEST_DEFECT + d, i, d, width, height, &img, &mask);
            if (rc != UF_OK) break;
            rc = fmt_path(path, sizeof path, "%s/test/%s/%0*d.png", out_dir, name, digits, i);
            if (rc == UF_OK)
                rc = fmt_path(mpath, sizeof mpath, "%s/ground_truth/%s/%0*d_mask.png", out_dir, name, digits, i);
            if (rc == UF_OK) rc = uf_image_write_png(path, img);
            if (rc == UF_OK) rc = uf_image_write_png(mpath, mask);
            uf_image_free(img);
            uf_image_free(mask);
        }
    }
    return rc;
}

int uf_synth_write_category(const char *out_dir, uint64_t seed, int n_train, int n_test_good,
                            int n_test_defect) {
    return uf_synth_write_category_size(out_dir, seed, n_train, n_test_good, n_test_defect,
                                        UF_SYNTH_DEFAULT_SIZE);
}
