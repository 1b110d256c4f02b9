/* metrics.c - see metrics.h.
 *
 * Layout of the accumulated data:
 *   neg[]  uint32 keys of GT-normal pixels;
 *   pos[]  uint64 (key << 32 | region) of GT-anomalous pixels (region ids from 1);
 * uf_eval_compute sorts both in place (radix), walks them once from the top for
 * the global quantities (AUROC, the global ROC size, textbook AUPRO, and the list
 * of distinct normal-pixel values down to just past the FPR limit), then re-sorts
 * pos by (region, key) and builds each region's ROC by merging its values into
 * that list. The official AUPRO resampling is O(global ROC points) per region and
 * runs in parallel over the points.
 */
#include "eval/metrics.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/error.h"
#include "core/tensor.h"

#define EPS64 2.220446049250313e-16 /* float64 machine epsilon, as in the official mIoU */

/* ------------------------------------------------------------------ sorting */
#define AFS_SMALL 48

#define DEFINE_AFS(NAME, T)                                                                       \
    static void NAME##_ins(T *a, size_t n) {                                                       \
        for (size_t i = 1; i < n; i++) {                                                           \
            T v = a[i];                                                                            \
            size_t j = i;                                                                          \
            while (j > 0 && a[j - 1] > v) {                                                        \
                a[j] = a[j - 1];                                                                   \
                j--;                                                                               \
            }                                                                                      \
            a[j] = v;                                                                              \
        }                                                                                          \
    }                                                                                              \
    /* Sorts a[0..n) whose keys agree above bit shift+8; partitions on the byte at shift. */     \
    static void NAME##_rec(T *a, size_t n, int shift, int parallel) {                              \
        if (n <= AFS_SMALL) {                                                                      \
            NAME##_ins(a, n);                                                                      \
            return;                                                                                \
        }                                                                                          \
        size_t cnt[256] = {0}, head[256], tail[256];                                               \
        for (size_t i = 0; i < n; i++) cnt[(a[i] >> shift) & 255]++;                               \
        size_t s = 0;                                                                              \
        for (int b = 0; b < 256; b++) {                                                            \
            head[b] = s;                                                                           \
            s += cnt[b];                                                                           \
            tail[b] = s;                                                                           \
        }                                                                                          \
        for (int b = 0; b < 256; b++) {                                                            \
            while (head[b] < tail[b]) {                                                            \
                T v = a[head[b]];                                                                  \
                int d = (int)((v >> shift) & 255);                                                 \
                while (d != b) {                                                                   \
                    T t = a[head[d]];                                                              \
                    a[head[d]++] = v;                                                              \
                    v = t;                                                                         \
                    d = (int)((v >> shift) & 255);                                                 \
                }                                                                                  \
                a[head[b]++] = v;                                                                  \
            }                                                                                      \
        }                                                                                          \
        if (shift == 0) return;                                                                    \
        if (parallel) {                                                                            \
            _Pragma("omp parallel for schedule(dynamic, 1)") for (int b = 0; b < 256; b++) {        \
                size_t lo = tail[b] - cnt[b];                                                      \
                if (cnt[b] > 1) NAME##_rec(a + lo, cnt[b], shift - 8, 0);                          \
            }                                                                                      \
        } else {                                                                                   \
            for (int b = 0; b < 256; b++)                                                          \
                if (cnt[b] > 1) NAME##_rec(a + tail[b] - cnt[b], cnt[b], shift - 8, 0);            \
        }                                                                                          \
    }

DEFINE_AFS(afs32, uint32_t)
DEFINE_AFS(afs64, uint64_t)

void uf_sort_u32(uint32_t *a, size_t n) { afs32_rec(a, n, 24, n > (1u << 16)); }
void uf_sort_u64(uint64_t *a, size_t n) { afs64_rec(a, n, 56, n > (1u << 16)); }

/* ------------------------------------------------------------------ AUROC */
/* Exact sklearn roc_auc_score from ascending-sorted negative and positive keys:
 * 2 * area * P * N = sum over distinct thresholds of dFP * (2 TP_before + dTP). */
static double auroc_sorted(const uint32_t *neg, size_t nn, const uint32_t *pos, size_t np) {
    if (nn == 0 || np == 0) return NAN;
    size_t i = nn, j = np;
    uint64_t tp = 0, s = 0;
    while (i > 0 || j > 0) {
        uint32_t k = (i > 0 && (j == 0 || neg[i - 1] >= pos[j - 1])) ? neg[i - 1] : pos[j - 1];
        uint64_t dn = 0, dp = 0;
        while (i > 0 && neg[i - 1] == k) i--, dn++;
        while (j > 0 && pos[j - 1] == k) j--, dp++;
        s += dn * (2 * tp + dp);
        tp += dp;
    }
    return (double)s / (2.0 * (double)nn * (double)np);
}

double uf_auroc(const float *scores, const uint8_t *labels, size_t n) {
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(scores[i])) {
            uf_error("AUROC: NaN score at %zu", i);
            return NAN;
        }
        np += labels[i] != 0;
    }
    uint32_t *k = uf_alloc(sizeof(uint32_t) * (n ? n : 1));
    if (!k) return NAN;
    size_t a = 0, b = n - np; /* negatives first, positives after */
    for (size_t i = 0; i < n; i++) k[labels[i] ? b++ : a++] = uf_float_key(scores[i]);
    uf_sort_u32(k, n - np);
    uf_sort_u32(k + (n - np), np);
    double r = auroc_sorted(k, n - np, k + (n - np), np);
    uf_free(k);
    return r;
}

/* ------------------------------------------------------------------ curves */
#define CURVE_STEP (1.0 / 250.0)

/* Adds (x, y) to c when it lies CURVE_STEP or more from the last point, or when force
 * (the ends of a curve) and it differs from the last point. */
static void curve_add(uf_curve *c, double x, double y, double x_range, int force) {
    if (c->n > 0) {
        double d = fabs(x - c->x[c->n - 1]) / x_range + fabs(y - c->y[c->n - 1]);
        if (d < CURVE_STEP && !force) return;
        if (d == 0.0) return;
    }
    if (c->n == UF_CURVE_MAX) c->n--; /* cannot happen for monotone curves; keep the end */
    c->x[c->n] = (float)x, c->y[c->n] = (float)y, c->n++;
}

void uf_roc_curve(const float *scores, const uint8_t *labels, size_t n, uf_curve *out) {
    out->n = 0;
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(scores[i])) return;
        np += labels[i] != 0;
    }
    const size_t nn = n - np;
    if (np == 0 || nn == 0) return;
    uint32_t *k = uf_alloc(sizeof(uint32_t) * n);
    if (!k) return;
    size_t a = 0, b = nn;
    for (size_t i = 0; i < n; i++) k[labels[i] ? b++ : a++] = uf_float_key(scores[i]);
    uf_sort_u32(k, nn);
    uf_sort_u32(k + nn, np);
    const uint32_t *neg = k, *pos = k + nn;
    size_t i = nn, j = np;
    curve_add(out, 0.0, 0.0, 1.0, 1);
    while (i > 0 || j > 0) { /* from the highest threshold down */
        uint32_t t = (i > 0 && (j == 0 || neg[i - 1] >= pos[j - 1])) ? neg[i - 1] : pos[j - 1];
        while (i > 0 && neg[i - 1] == t) i--;
        while (j > 0 && pos[j - 1] == t) j--;
        curve_add(out, (double)(nn - i) / nn, (double)(np - j) / np, 1.0, i == 0 && j == 0);
    }
    uf_free(k);
}

uf_image_confusion uf_image_confusion_of(const uint8_t *label, const uint8_t *decided, int n) {
    uf_image_confusion c = {0, 0, 0, 0, NAN};
    for (int i = 0; i < n; i++) {
        if (label[i])
            decided[i] ? c.tp++ : c.fn++;
        else
            decided[i] ? c.fp++ : c.tn++;
    }
    if (2 * c.tp + c.fp + c.fn > 0) c.f1 = 2.0 * c.tp / (2.0 * c.tp + c.fp + c.fn);
    return c;
}

double uf_iou(const float *score, const uint8_t *gt, size_t n, float thr) {
    size_t inter = 0, uni = 0;
    for (size_t i = 0; i < n; i++) {
        int p = score[i] > thr, g = gt[i] != 0;
        inter += p & g;
        uni += p | g;
    }
    return ((double)inter + EPS64) / ((double)uni + EPS64);
}

/* ------------------------------------------------------------------ accumulator */
struct uf_eval {
    uint32_t *neg;
    size_t n_neg, cap_neg;
    uint64_t *pos; /* key << 32 | region, except inside uf_eval_compute */
    size_t n_pos, cap_pos;
    int64_t *region_size; /* [region - 1] */
    size_t n_regions, cap_regions;
    float *img_score;
    uint8_t *img_label;
    size_t n_img, cap_img;
    double iou_sum[UF_MIOU_NTHR];
    int64_t tp0, fp0, fn0;
    int has_amap, has_nfa; /* -1 until the first image */
    int64_t n_pixels;
    int *lab, *stack; /* labelling scratch, cap_lab entries */
    size_t cap_lab;
};

uf_eval *uf_eval_new(void) {
    uf_eval *ev = calloc(1, sizeof *ev);
    if (!ev) {
        uf_error("evaluation: out of memory");
        return NULL;
    }
    ev->has_amap = ev->has_nfa = -1;
    return ev;
}

void uf_eval_free(uf_eval *ev) {
    if (!ev) return;
    free(ev->neg), free(ev->pos), free(ev->region_size), free(ev->img_score), free(ev->img_label);
    free(ev->lab), free(ev->stack);
    free(ev);
}

/* Grows *p (elements of size sz) to hold at least need elements (x1.5). */
static int grow(void **p, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return UF_OK;
    size_t nc = *cap ? *cap : 1024;
    while (nc < need) nc = nc + nc / 2 + 1;
    size_t bytes;
    if (uf_mul_size(nc, sz, &bytes) != UF_OK) return UF_ERR;
    void *q = realloc(*p, bytes);
    if (!q) return uf_error("evaluation: out of memory (%zu bytes)", bytes);
    *p = q;
    *cap = nc;
    return UF_OK;
}

int uf_eval_reserve(uf_eval *ev, size_t n_pixels) {
    return grow((void **)&ev->neg, &ev->cap_neg, n_pixels, sizeof(uint32_t));
}

/* 8-connected components of gt (h, w) into lab (0 = background, 1.. = local ids).
 * Returns the number of components. */
static int label8(const uint8_t *gt, int h, int w, int *lab, int *stack) {
    const size_t n = (size_t)h * w;
    memset(lab, 0, sizeof(int) * n);
    int nl = 0;
    for (size_t s = 0; s < n; s++) {
        if (!gt[s] || lab[s]) continue;
        lab[s] = ++nl;
        size_t top = 0;
        stack[top++] = (int)s;
        while (top) {
            int p = stack[--top], y = p / w, x = p % w;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int yy = y + dy, xx = x + dx;
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                    int q = yy * w + xx;
                    if (gt[q] && !lab[q]) {
                        lab[q] = nl;
                        stack[top++] = q;
                    }
                }
        }
    }
    return nl;
}

int uf_eval_add(uf_eval *ev, int h, int w, const float *amap, const float *nfa_score, const uint8_t *gt,
                int image_label, float image_score) {
    const size_t idx = ev->n_img;
    if (h < 1 || w < 1 || (size_t)h * (size_t)w > (size_t)1 << 30)
        return uf_error("evaluation: image %zu: bad size %dx%d", idx, h, w);
    if (!gt) return uf_error("evaluation: image %zu: no ground-truth mask", idx);
    if (ev->has_amap >= 0 && (ev->has_amap != (amap != NULL) || ev->has_nfa != (nfa_score != NULL)))
        return uf_error("evaluation: image %zu: maps given differ from the first image's", idx);
    if (!amap && isnan(image_score))
        return uf_error("evaluation: image %zu: no anomaly map and no image score", idx);
    const size_t n = (size_t)h * w;
    size_t n_gt = 0;
    for (size_t i = 0; i < n; i++) n_gt += gt[i] != 0;
    float mx = -INFINITY;
    if (amap) {
        for (size_t i = 0; i < n; i++) {
            if (isnan(amap[i])) return uf_error("evaluation: image %zu: NaN in the anomaly map at %zu", idx, i);
            if (amap[i] > mx) mx = amap[i];
        }
        if (grow((void **)&ev->neg, &ev->cap_neg, ev->n_neg + (n - n_gt), sizeof(uint32_t)) != UF_OK ||
            grow((void **)&ev->pos, &ev->cap_pos, ev->n_pos + n_gt, sizeof(uint64_t)) != UF_OK)
            return UF_ERR;
        if (n_gt) {
            if (ev->cap_lab < n) {
                free(ev->lab), free(ev->stack);
                ev->lab = malloc(sizeof(int) * n);
                ev->stack = malloc(sizeof(int) * n);
                ev->cap_lab = (ev->lab && ev->stack) ? n : 0;
                if (!ev->cap_lab) return uf_error("evaluation: out of memory");
            }
            int nl = label8(gt, h, w, ev->lab, ev->stack);
            if (ev->n_regions + (size_t)nl > 0xFFFFFFFEu) return uf_error("evaluation: too many GT regions");
            if (grow((void **)&ev->region_size, &ev->cap_regions, ev->n_regions + nl, sizeof(int64_t)) != UF_OK)
                return UF_ERR;
            for (int r = 0; r < nl; r++) ev->region_size[ev->n_regions + r] = 0;
            for (size_t i = 0; i < n; i++) {
                if (!gt[i]) continue;
                uint64_t region = ev->n_regions + (uint64_t)ev->lab[i]; /* global id, from 1 */
                ev->region_size[region - 1]++;
                ev->pos[ev->n_pos++] = ((uint64_t)uf_float_key(amap[i]) << 32) | region;
            }
            ev->n_regions += (size_t)nl;
        }
        for (size_t i = 0; i < n; i++)
            if (!gt[i]) ev->neg[ev->n_neg++] = uf_float_key(amap[i]);
    }
    if (idx + 1 > ev->cap_img) {
        size_t cap_s = ev->cap_img, cap_l = ev->cap_img;
        if (grow((void **)&ev->img_score, &cap_s, idx + 1, sizeof(float)) != UF_OK ||
            grow((void **)&ev->img_label, &cap_l, idx + 1, 1) != UF_OK)
            return UF_ERR;
        ev->cap_img = cap_s < cap_l ? cap_s : cap_l;
    }
    ev->img_score[idx] = isnan(image_score) ? mx : image_score;
    ev->img_label[idx] = (uint8_t)(image_label < 0 ? n_gt > 0 : image_label != 0);
    if (nfa_score) {
        /* A pixel with score s is detected at integer thr t iff t <= ceil(s) - 1. */
        int64_t all[UF_MIOU_NTHR + 1] = {0}, hit[UF_MIOU_NTHR + 1] = {0};
        for (size_t i = 0; i < n; i++) {
            double s = nfa_score[i];
            int b;
            if (isnan(s)) b = 0;
            else {
                double u = ceil(s) - 1.0;
                b = u < UF_MIOU_THR_MIN ? 0 : (u > UF_MIOU_THR_MAX ? UF_MIOU_NTHR : (int)u - UF_MIOU_THR_MIN + 1);
            }
            all[b]++;
            hit[b] += gt[i] != 0;
        }
        int64_t pred = 0, inter = 0;
        for (int t = UF_MIOU_NTHR; t >= 1; t--) { /* t indexes thr = UF_MIOU_THR_MIN + t - 1 */
            pred += all[t];
            inter += hit[t];
            int64_t uni = pred + (int64_t)n_gt - inter;
            ev->iou_sum[t - 1] += ((double)inter + EPS64) / ((double)uni + EPS64);
            if (UF_MIOU_THR_MIN + t - 1 == 0) {
                ev->tp0 += inter;
                ev->fp0 += pred - inter;
                ev->fn0 += (int64_t)n_gt - inter;
            }
        }
    }
    ev->has_amap = amap != NULL;
    ev->has_nfa = nfa_score != NULL;
    ev->n_pixels += (int64_t)n;
    ev->n_img++;
    return UF_OK;
}

int uf_eval_miou_curve(const uf_eval *ev, double *miou) {
    for (int t = 0; t < UF_MIOU_NTHR; t++) miou[t] = ev->has_nfa == 1 && ev->n_img ? ev->iou_sum[t] / ev->n_img : NAN;
    return UF_OK;
}

/* ------------------------------------------------------------------ AUPRO */
/* torch.searchsorted (left) on a float array, the same binary search as ATen's. */
static size_t lower_bound_f(const float *x, size_t n, float v) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + ((hi - lo) >> 1);
        if (!(x[mid] >= v)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

typedef struct {
    const uint32_t *bgk; /* distinct normal-pixel keys, descending */
    const uint64_t *bgc; /* normal pixels with key >= bgk[g] */
    size_t n_groups;
    uint64_t n_neg;
    float lim;           /* fpr limit as float32 */
    size_t out;          /* global ROC points with fpr <= limit */
    float *fpr, *tpr, *ox, *oy_f, *oy_t; /* scratch, capacity cap */
    double *acc_f, *acc_t;               /* (out) accumulated resampled curves */
} aupro_ctx;

/* Adds one region's resampled (fpr, tpr) curve to the accumulators. keys: the
 * region's keys ascending (m of them). Follows the reference step by step. */
static void aupro_region(aupro_ctx *c, const uint64_t *keys, size_t m) {
    /* 1. Points of the ROC over normal pixels + this region, from the top, with the
     *    origin first; stop after the second normal-pixel group past the limit. */
    size_t np = 0, g = 0, i = m;
    uint64_t fps = 0, tps = 0;
    int past = 0;
    c->fpr[np] = 0.f, c->tpr[np] = 0.f, np++;
    const float nneg = (float)c->n_neg, fm = (float)m;
    while ((g < c->n_groups || i > 0) && past < 2) {
        uint32_t kb = g < c->n_groups ? c->bgk[g] : 0, kr = i > 0 ? (uint32_t)keys[i - 1] : 0;
        int take_b = g < c->n_groups && (i == 0 || kb >= kr);
        int take_r = i > 0 && (g >= c->n_groups || kr >= kb);
        uint32_t k = take_b ? kb : kr;
        if (take_b) fps = c->bgc[g++];
        if (take_r)
            while (i > 0 && (uint32_t)keys[i - 1] == k) i--, tps++;
        c->fpr[np] = (float)fps / nneg;
        c->tpr[np] = (float)tps / fm;
        if (take_b && c->fpr[np] > c->lim) past++;
        np++;
    }
    /* 2. Cut at the limit (edge case: nothing > 0 below it -> the first FPR above). */
    size_t k_le = 0;
    while (k_le < np && c->fpr[k_le] <= c->lim) k_le++;
    float lim2 = c->lim;
    if (c->fpr[k_le - 1] == 0.f && k_le < np) lim2 = c->fpr[k_le];
    size_t kk = k_le;
    while (kk < np && c->fpr[kk] <= lim2) kk++;
    int interp = !(fabsf(c->fpr[kk - 1] - c->lim) <= 1e-8f + 1e-5f * c->lim);
    size_t len = kk, tmp = 0;
    float slope = 0.f;
    if (interp) {
        tmp = lower_bound_f(c->fpr, np, c->lim);
        if (tmp >= np || tmp == 0) { /* cannot happen for a complete curve; keep the cut */
            interp = 0;
        } else {
            slope = 1.f - ((c->fpr[tmp] - c->lim) / (c->fpr[tmp] - c->fpr[tmp - 1]));
            len = kk + 1;
        }
    }
    /* 3. Index-based abscissae, normalised so the largest index maps to out - 1. */
    size_t kmax = kk - 1;
    if (interp && tmp > kmax) kmax = tmp;
    const float fo = (float)(c->out - 1), fk = (float)kmax;
    for (size_t k = 0; k < len; k++) {
        size_t src = (k < kk) ? k : tmp;
        c->ox[k] = kmax ? ((float)src / fk) * fo : 0.f;
        c->oy_f[k] = c->fpr[src];
        c->oy_t[k] = c->tpr[src];
    }
    float last_x = fo;
    if (interp) last_x = c->ox[len - 2] + ((c->ox[len - 1] - c->ox[len - 2]) * slope);
    int sorted = 1;
    for (size_t k = 1; k < len; k++)
        if (c->ox[k] < c->ox[k - 1]) sorted = 0;
    /* 4. interp1d: y = y[i] + slope_i (x - x[i]), i = searchsorted(x) - 1 clamped. */
    const size_t out = c->out;
    const float *ox = c->ox, *yf = c->oy_f, *yt = c->oy_t;
    const float eps = FLT_EPSILON;
#pragma omp parallel
    {
        size_t nt = 1, t = 0;
#ifdef _OPENMP
        nt = (size_t)omp_get_num_threads();
        t = (size_t)omp_get_thread_num();
#endif
        size_t j0 = out * t / nt, j1 = out * (t + 1) / nt;
        size_t ptr = j0 < out - 1 && sorted ? lower_bound_f(ox, len, (float)j0) : 0;
        for (size_t j = j0; j < j1; j++) {
            float x = j == out - 1 ? last_x : (float)j;
            size_t lb;
            if (j == out - 1 || !sorted) {
                lb = lower_bound_f(ox, len, x);
            } else {
                while (ptr < len && ox[ptr] < x) ptr++;
                lb = ptr;
            }
            size_t a = lb == 0 ? 0 : lb - 1;
            if (a > len - 2) a = len - 2;
            float dx = eps + (ox[a + 1] - ox[a]);
            float vf = yf[a] + ((yf[a + 1] - yf[a]) / dx) * (x - ox[a]);
            float vt = yt[a] + ((yt[a + 1] - yt[a]) / dx) * (x - ox[a]);
            c->acc_f[j] += vf;
            c->acc_t[j] += vt;
        }
    }
}

int uf_eval_compute(uf_eval *ev, double fpr_limit, uf_eval_result *r) {
    if (!(fpr_limit >= 1e-3 && fpr_limit <= 1.0))
        return uf_error("evaluation: FPR limit %g not in [0.001, 1]", fpr_limit);
    memset(r, 0, sizeof *r);
    r->n_images = (int)ev->n_img;
    r->n_regions = (int)ev->n_regions;
    r->n_pixels = ev->n_pixels;
    for (size_t i = 0; i < ev->n_img; i++) r->n_anomalous_images += ev->img_label[i];
    r->image_auroc = ev->n_img ? uf_auroc(ev->img_score, ev->img_label, ev->n_img) : NAN;
    r->pixel_auroc = r->aupro = r->aupro_textbook = NAN;
    r->miou_auto = r->miou_oracle = r->f1_auto = NAN;
    r->oracle_thr = 0;
    r->n_anomalous_pixels = (int64_t)ev->n_pos;
    if (ev->has_nfa == 1 && ev->n_img) {
        double best = -1;
        for (int t = 0; t < UF_MIOU_NTHR; t++) {
            double m = ev->iou_sum[t] / ev->n_img;
            if (m > best) best = m, r->oracle_thr = UF_MIOU_THR_MIN + t;
        }
        r->miou_oracle = best;
        r->miou_auto = ev->iou_sum[-UF_MIOU_THR_MIN] / ev->n_img;
        int64_t den = 2 * ev->tp0 + ev->fp0 + ev->fn0;
        r->f1_auto = den ? 2.0 * ev->tp0 / den : 1.0;
    }
    if (ev->has_amap != 1 || ev->n_neg == 0 || ev->n_pos == 0) return UF_OK;

    /* Global pass: pos sorted by (key, region). */
    uf_sort_u32(ev->neg, ev->n_neg);
    uf_sort_u64(ev->pos, ev->n_pos);
    const uint64_t N = ev->n_neg, P = ev->n_pos;
    const float lim = (float)fpr_limit;
    const double inv_r = 1.0 / (double)ev->n_regions;
    size_t i = N, j = P, out = 1, n_groups = 0, cap_groups = 0;
    uint32_t *bgk = NULL;
    uint64_t *bgc = NULL;
    uint64_t tp = 0, fp = 0, s2 = 0;
    double pro = 0, area = 0, f_prev = 0, p_prev = 0;
    int area_done = 0, past = 0, rc = UF_OK;
    curve_add(&r->pixel_roc, 0.0, 0.0, 1.0, 1);
    curve_add(&r->pro, 0.0, 0.0, fpr_limit, 1);
    while (i > 0 || j > 0) {
        uint32_t kn = i > 0 ? ev->neg[i - 1] : 0, kp = j > 0 ? (uint32_t)(ev->pos[j - 1] >> 32) : 0;
        uint32_t k = (i > 0 && (j == 0 || kn >= kp)) ? kn : kp;
        uint64_t dn = 0, dp = 0;
        while (i > 0 && ev->neg[i - 1] == k) i--, dn++;
        while (j > 0 && (uint32_t)(ev->pos[j - 1] >> 32) == k) {
            uint32_t reg = (uint32_t)ev->pos[j - 1];
            pro += inv_r / (double)ev->region_size[reg - 1];
            j--, dp++;
        }
        s2 += dn * (2 * tp + dp);
        tp += dp;
        fp += dn;
        float fpr_f = (float)fp / (float)N;
        if (fpr_f <= lim) out++;
        if (dn && past < 2) { /* normal-pixel groups down to the second one past the limit */
            if (n_groups == cap_groups) {
                size_t nc = cap_groups ? cap_groups * 2 : 4096;
                uint32_t *a = realloc(bgk, nc * sizeof *a);
                if (a) bgk = a;
                uint64_t *b = realloc(bgc, nc * sizeof *b);
                if (b) bgc = b;
                if (!a || !b) {
                    rc = uf_error("evaluation: out of memory");
                    goto done;
                }
                cap_groups = nc;
            }
            bgk[n_groups] = k;
            bgc[n_groups++] = fp;
            if (fpr_f > lim) past++;
        }
        /* textbook PRO: trapezoid of (global FPR, mean region overlap) up to the limit */
        double f = (double)fp / (double)N;
        curve_add(&r->pixel_roc, f, (double)tp / (double)P, 1.0, i == 0 && j == 0);
        if (!area_done) {
            if (f <= fpr_limit) {
                area += (f - f_prev) * (pro + p_prev) * 0.5;
                curve_add(&r->pro, f, pro, fpr_limit, f == fpr_limit);
            } else {
                double pl = p_prev + (pro - p_prev) * (fpr_limit - f_prev) / (f - f_prev);
                area += (fpr_limit - f_prev) * (pl + p_prev) * 0.5;
                curve_add(&r->pro, fpr_limit, pl, fpr_limit, 1);
                area_done = 1;
            }
        }
        f_prev = f, p_prev = pro;
    }
    r->pixel_auroc = (double)s2 / (2.0 * (double)N * (double)P);
    r->aupro_textbook = area / fpr_limit;
    r->aupro_curve_points = (int)(out > (size_t)INT32_MAX ? INT32_MAX : out);

    /* Per-region pass: pos re-keyed as (region, key). */
    for (size_t q = 0; q < P; q++) ev->pos[q] = (ev->pos[q] << 32) | (ev->pos[q] >> 32);
    uf_sort_u64(ev->pos, P);
    if (out >= 2) {
        size_t max_m = 0;
        for (size_t q = 0; q < ev->n_regions; q++)
            if ((size_t)ev->region_size[q] > max_m) max_m = (size_t)ev->region_size[q];
        size_t cap = n_groups + max_m + 3;
        aupro_ctx c = {bgk, bgc, n_groups, N, lim, out, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
        c.fpr = malloc(sizeof(float) * cap), c.tpr = malloc(sizeof(float) * cap), c.ox = malloc(sizeof(float) * cap);
        c.oy_f = malloc(sizeof(float) * cap), c.oy_t = malloc(sizeof(float) * cap);
        c.acc_f = calloc(out, sizeof(double)), c.acc_t = calloc(out, sizeof(double));
        if (c.fpr && c.tpr && c.ox && c.oy_f && c.oy_t && c.acc_f && c.acc_t) {
            size_t q = 0;
            while (q < P) {
                size_t e = q;
                uint32_t reg = (uint32_t)(ev->pos[q] >> 32);
                while (e < P && (uint32_t)(ev->pos[e] >> 32) == reg) e++;
                /* the low 32 bits hold the key: pass them through a view of the same array */
                aupro_region(&c, ev->pos + q, e - q);
                q = e;
            }
            const double R = (double)ev->n_regions;
            double a = 0;
            for (size_t k = 1; k < out; k++)
                a += (c.acc_f[k] / R - c.acc_f[k - 1] / R) * (c.acc_t[k] / R + c.acc_t[k - 1] / R) * 0.5;
            r->aupro = a / (c.acc_f[out - 1] / R);
        } else {
            rc = uf_error("evaluation: out of memory for AUPRO (%zu points)", cap);
        }
        free(c.fpr), free(c.tpr), free(c.ox), free(c.oy_f), free(c.oy_t), free(c.acc_f), free(c.acc_t);
    }
    /* back to the (key, region) layout so that more images can be added */
    for (size_t q = 0; q < P; q++) ev->pos[q] = (ev->pos[q] << 32) | (ev->pos[q] >> 32);
done:
    free(bgk), free(bgc);
    return rc;
}
