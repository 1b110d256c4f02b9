/* nfa_tree.c - see nfa_tree.h.
 *
 * Design (grids up to ~112x112 per scale, C up to ~816):
 *  - Q is accumulated in double, channel-major (streams z once). The tree is
 *    built on Q rather than on S = Q/C: the order is the same and then
 *    min_{R(n)} Q = level(n) exactly, so x(n) = level(n)/C needs no extra pass.
 *    (The reference builds on float32 S; only ties at 1e-7 relative could differ.)
 *  - Component tree: Berger et al. 2007 union-find max-tree over pixels sorted by
 *    decreasing Q, then canonicalisation (equal-level pixels share a node). Nodes
 *    are numbered in increasing level order, so parent id < child id; that
 *    invariant survives PRUNE (a node is re-attached to an ancestor) and MERGE
 *    (only leaves are deleted), and gives "parent before child" by id order.
 *  - Region areas come from one bottom-up pass; pixel sets are never stored: the
 *    final map is a top-down pass over the original tree (a cell belongs to the
 *    final leaf among its ancestors; final leaves are disjoint).
 *  - Simplification works on parent pointers + child counts only: a PRUNE pass
 *    walks each leaf up while the parent has one child; a MERGE pass first
 *    computes, for every node, "has a non-leaf child" and the min log10P of its
 *    children, then merges every eligible bifurcation. Because bifurcations are
 *    visited parent-first in the reference, a merge in a pass never changes the
 *    eligibility of a later-visited node, so precomputed flags give the same
 *    result. Each pass is O(alive nodes); the alive list is compacted each pass.
 *  - Memory: about 60 bytes per cell, allocated per call and freed before
 *    returning (no state between calls).
 * Known difference from the reference (spec 7.1 "Quirk"): leaves with
 * bit-identical log10P do not collide here; both keep their pixels.
 */
#include "detect/nfa_tree.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/interp.h"
#include "core/tensor.h"

double uf_nfa_log10_ntests(const int *cells, int n_scales) {
    /* ln N_T = lse_l( ln m_l + lse_r( ln alpha + r ln beta - ln r ) ), r = 1..m_l,
     * accumulated as a running (max, scaled sum) pair. */
    const double la = log(UF_NFA_ALPHA), lb = log(UF_NFA_BETA);
    double mx = -INFINITY, acc = 0;
    for (int l = 0; l < n_scales; l++) {
        int m = cells[l];
        if (m < 1) continue;
        /* beta^r / r increases for r >= 1 (ln beta > 1), so the largest term is r = m. */
        double top = la + m * lb - log((double)m), s = 0;
        for (int r = m; r >= 1; r--) {
            double t = la + r * lb - log((double)r) - top;
            if (t < -60) break; /* the rest adds < 1e-26 relative */
            s += exp(t);
        }
        double term = log((double)m) + top + log(s);
        if (term > mx) {
            acc = acc * exp(mx - term) + 1.0;
            mx = term;
        } else {
            acc += exp(term - mx);
        }
    }
    return (mx + log(acc)) / M_LN10;
}

typedef struct {
    double key;
    int idx;
} keyed;

/* Sorts a[0..n) by decreasing key, ties by increasing idx (the input's
 * order, which is by idx). Keys are >= 0, so their IEEE bits order like the
 * values: an LSD radix sort (stable) of the complemented bits, 11 bits a
 * pass, skipping passes where every key has the same digit. tmp: n entries.
 * It replaced qsort, which took a third of the tree NFA's time. */
static void sort_desc(keyed *a, keyed *tmp, int n) {
    enum { BITS = 11, BUCKETS = 1 << BITS };
    static _Thread_local int count[BUCKETS];
    for (int shift = 0; shift < 64; shift += BITS) {
        for (int b = 0; b < BUCKETS; b++) count[b] = 0;
        for (int i = 0; i < n; i++) {
            uint64_t bits;
            double k = a[i].key == 0.0 ? 0.0 : a[i].key; /* -0 sorts as +0 */
            memcpy(&bits, &k, sizeof bits);
            count[(~bits >> shift) & (BUCKETS - 1)]++;
        }
        int same = 0;
        for (int b = 0; b < BUCKETS; b++) same |= count[b] == n;
        if (same) continue;
        for (int b = 0, sum = 0; b < BUCKETS; b++) {
            int c = count[b];
            count[b] = sum;
            sum += c;
        }
        for (int i = 0; i < n; i++) {
            uint64_t bits;
            double k = a[i].key == 0.0 ? 0.0 : a[i].key;
            memcpy(&bits, &k, sizeof bits);
            tmp[count[(~bits >> shift) & (BUCKETS - 1)]++] = a[i];
        }
        memcpy(a, tmp, sizeof *a * (size_t)n);
    }
}

static int uf_find(int *zpar, int p) {
    while (zpar[p] != p) {
        zpar[p] = zpar[zpar[p]];
        p = zpar[p];
    }
    return p;
}

/* Workspace for one scale; every array has n entries (cells or nodes). */
typedef struct {
    keyed *order;    /* cells by decreasing q */
    keyed *sort_tmp; /* radix sort buffer */
    int *par;        /* pixel parent (max-tree, then canonical) */
    int *zpar;       /* union-find */
    int *pix_node;   /* node of each cell */
    int *node_pix;   /* canonical cell of each node */
    int *oparent;    /* original node parent (-1 root) */
    int *parent;     /* current node parent during simplification */
    int *nchild;     /* current child count */
    int *area;       /* |R(n)| */
    int *alive;      /* list of alive nodes, increasing id */
    int *scratch;    /* branch / leaf lists */
    int *cover;      /* final leaf covering each node, -1 none */
    double *lp;      /* log10P(n) */
    double *minch;   /* MERGE: min log10P of children */
    uint8_t *flag;   /* MERGE: has a non-leaf child; also liveness */
    uint8_t *dead;
    uint8_t *mark;   /* merged bifurcation / final leaf */
} tree_ws;

static void *ws_take(unsigned char **cur, size_t bytes) {
    void *p = *cur;
    *cur += (bytes + 63) & ~(size_t)63;
    return p;
}

/* PRUNE pass: every branch (leaf, then ancestors while the ancestor has exactly
 * one child) is reduced to its node of smallest log10P (first from the leaf up). */
static void nfa_prune(tree_ws *w, int *n_alive) {
    int nl = 0;
    int *leaves = w->scratch; /* leaves occupy the front; branches are walked into cover[] */
    for (int i = 0; i < *n_alive; i++)
        if (w->nchild[w->alive[i]] == 0) leaves[nl++] = w->alive[i];
    int *branch = w->cover;
    for (int i = 0; i < nl; i++) {
        int len = 0, cur = leaves[i];
        branch[len++] = cur;
        while (w->parent[cur] >= 0 && w->nchild[w->parent[cur]] == 1) {
            cur = w->parent[cur];
            branch[len++] = cur;
        }
        if (len == 1) continue;
        int m = 0;
        for (int k = 1; k < len; k++)
            if (w->lp[branch[k]] < w->lp[branch[m]]) m = k;
        int keep = branch[m];
        w->parent[keep] = w->parent[branch[len - 1]];
        w->nchild[keep] = 0;
        for (int k = 0; k < len; k++)
            if (k != m) w->dead[branch[k]] = 1;
    }
    int j = 0;
    for (int i = 0; i < *n_alive; i++)
        if (!w->dead[w->alive[i]]) w->alive[j++] = w->alive[i];
    *n_alive = j;
}

/* MERGE pass: a bifurcation whose children are all leaves and whose log10P is
 * <= every child's absorbs them (becomes a leaf). Returns 1 if anything merged. */
static int nfa_merge(tree_ws *w, int *n_alive) {
    for (int i = 0; i < *n_alive; i++) {
        int n = w->alive[i];
        w->flag[n] = 0;
        w->mark[n] = 0;
        w->minch[n] = INFINITY;
    }
    for (int i = 0; i < *n_alive; i++) {
        int n = w->alive[i], p = w->parent[n];
        if (p < 0) continue;
        if (w->nchild[n] > 0) w->flag[p] = 1;
        if (w->lp[n] < w->minch[p]) w->minch[p] = w->lp[n];
    }
    int merged = 0;
    for (int i = 0; i < *n_alive; i++) {
        int b = w->alive[i];
        if (w->nchild[b] >= 2 && !w->flag[b] && w->lp[b] <= w->minch[b]) {
            w->mark[b] = 1;
            merged = 1;
        }
    }
    if (!merged) return 0;
    int j = 0;
    for (int i = 0; i < *n_alive; i++) {
        int n = w->alive[i], p = w->parent[n];
        if (p >= 0 && w->mark[p]) {
            w->dead[n] = 1;
            continue;
        }
        w->alive[j++] = n;
    }
    *n_alive = j;
    for (int i = 0; i < j; i++)
        if (w->mark[w->alive[i]]) w->nchild[w->alive[i]] = 0;
    return 1;
}

int uf_nfa_tree_log10p_q(const double *q, int c, int h, int w_, float *lp_out, uf_nfa_tree_stats *stats) {
    if (c < 1 || h < 1 || w_ < 1 || (int64_t)h * w_ > (INT32_MAX / 2))
        return uf_error("tree NFA: bad grid (%d channels, %dx%d)", c, h, w_);
    const int n = h * w_;
    for (int p = 0; p < n; p++)
        if (!(q[p] >= 0) || !isfinite(q[p])) return uf_error("tree NFA: non-finite or negative energy at cell %d", p);

    size_t per = (2 * sizeof(keyed) + 12 * sizeof(int) + 2 * sizeof(double) + 3) + 64;
    size_t bytes;
    if (uf_mul_size((size_t)n, per, &bytes) != UF_OK) return uf_error_prefix("tree NFA");
    unsigned char *block = uf_alloc(bytes + 21 * 64), *cur = block;
    if (!block) return uf_error_prefix("tree NFA");
    tree_ws w;
    w.order = ws_take(&cur, sizeof(keyed) * n);
    w.sort_tmp = ws_take(&cur, sizeof(keyed) * n);
    w.par = ws_take(&cur, sizeof(int) * n);
    w.zpar = ws_take(&cur, sizeof(int) * n);
    w.pix_node = ws_take(&cur, sizeof(int) * n);
    w.node_pix = ws_take(&cur, sizeof(int) * n);
    w.oparent = ws_take(&cur, sizeof(int) * n);
    w.parent = ws_take(&cur, sizeof(int) * n);
    w.nchild = ws_take(&cur, sizeof(int) * n);
    w.area = ws_take(&cur, sizeof(int) * n);
    w.alive = ws_take(&cur, sizeof(int) * n);
    w.scratch = ws_take(&cur, sizeof(int) * n);
    w.cover = ws_take(&cur, sizeof(int) * n);
    w.lp = ws_take(&cur, sizeof(double) * n);
    w.minch = ws_take(&cur, sizeof(double) * n);
    w.flag = ws_take(&cur, (size_t)n);
    w.dead = ws_take(&cur, (size_t)n);
    w.mark = ws_take(&cur, (size_t)n);

    /* 1. Max-tree (Berger et al.): cells by decreasing q, union with processed neighbours. */
    for (int p = 0; p < n; p++) {
        w.order[p].key = q[p];
        w.order[p].idx = p;
        w.zpar[p] = -1;
    }
    sort_desc(w.order, w.sort_tmp, n);
    /* Union by rank (Berger et al.'s variant): the union-find root of a component is any
     * of its cells, so repr[root] keeps the component's max-tree root (its latest cell),
     * which is what gets p as parent. Same tree as linking every root under p, with
     * shallow union-find trees (that linking made find() two fifths of the time). */
    int *repr = w.scratch;    /* free until simplification */
    uint8_t *rank = w.flag;   /* likewise */
    for (int i = 0; i < n; i++) {
        int p = w.order[i].idx, y = p / w_, x = p % w_;
        w.par[p] = p;
        w.zpar[p] = p;
        rank[p] = 0;
        repr[p] = p;
        int zp = p; /* p's union-find root */
        int nb[4], nn = 0;
        if (y > 0) nb[nn++] = p - w_;
        if (x > 0) nb[nn++] = p - 1;
        if (x < w_ - 1) nb[nn++] = p + 1;
        if (y < h - 1) nb[nn++] = p + w_;
        for (int k = 0; k < nn; k++) {
            if (w.zpar[nb[k]] < 0) continue;
            int r = uf_find(w.zpar, nb[k]);
            if (r == zp) continue;
            w.par[repr[r]] = p;
            if (rank[zp] < rank[r]) {
                int t = zp;
                zp = r, r = t;
            }
            w.zpar[r] = zp;
            if (rank[zp] == rank[r]) rank[zp]++;
            repr[zp] = p;
        }
    }
    /* Canonicalise: from the root down, equal-level parents collapse. */
    for (int i = n - 1; i >= 0; i--) {
        int p = w.order[i].idx, pp = w.par[p];
        if (q[w.par[pp]] == q[pp]) w.par[p] = w.par[pp];
    }
    /* 2. Nodes = canonical cells, numbered root first (increasing level). */
    int nn = 0;
    for (int i = n - 1; i >= 0; i--) {
        int p = w.order[i].idx;
        if (w.par[p] == p || q[w.par[p]] != q[p]) {
            w.pix_node[p] = nn;
            w.node_pix[nn] = p;
            w.oparent[nn] = w.par[p] == p ? -1 : w.pix_node[w.par[p]];
            w.area[nn] = 0;
            nn++;
        }
    }
    for (int i = n - 1; i >= 0; i--) {
        int p = w.order[i].idx;
        if (!(w.par[p] == p || q[w.par[p]] != q[p])) w.pix_node[p] = w.pix_node[w.par[p]];
        w.area[w.pix_node[p]]++;
    }
    for (int k = nn - 1; k > 0; k--) {
        UF_ASSERT(w.oparent[k] >= 0 && w.oparent[k] < k);
        w.area[w.oparent[k]] += w.area[k];
    }
    UF_ASSERT(w.oparent[0] == -1 && w.area[0] == n);
    /* 3. Chernoff log10P per node: x = min over the region of q / C = level / C. */
    const double half_c = 0.5 * c;
    for (int k = 0; k < nn; k++) {
        double x = q[w.node_pix[k]] / c;
        if (x < 1e-300) x = 1e-300; /* q = 0: all channels exactly 0 (spec 11.3 guard) */
        double d = x - 1.0;
        /* x - 1 - ln x, without cancellation near x = 1 */
        double e = fabs(d) < 0.5 ? d - log1p(d) : d - log(x);
        w.lp[k] = (double)w.area[k] * (-half_c * e / M_LN10);
        w.parent[k] = w.oparent[k];
        w.nchild[k] = 0;
        w.dead[k] = 0;
        w.alive[k] = k;
    }
    for (int k = 1; k < nn; k++) w.nchild[w.oparent[k]]++;
    /* 4. PRUNE; m = MERGE; while (m) { PRUNE; m = MERGE; } PRUNE. */
    int n_alive = nn, merges = 0;
    nfa_prune(&w, &n_alive);
    while (nfa_merge(&w, &n_alive)) {
        merges++;
        nfa_prune(&w, &n_alive);
    }
    nfa_prune(&w, &n_alive);
    /* 5. Final clusters: per leaf, argmin over its branch (a single node after PRUNE). */
    for (int k = 0; k < nn; k++) w.mark[k] = 0;
    int n_final = 0;
    double min_lp = INFINITY;
    for (int i = 0; i < n_alive; i++) {
        int leaf = w.alive[i];
        if (w.nchild[leaf] != 0) continue;
        int best = leaf, cur_n = leaf;
        while (w.parent[cur_n] >= 0 && w.nchild[w.parent[cur_n]] == 1) {
            cur_n = w.parent[cur_n];
            if (w.lp[cur_n] < w.lp[best]) best = cur_n;
        }
        w.mark[best] = 1;
        n_final++;
        if (w.lp[best] < min_lp) min_lp = w.lp[best];
    }
    /* Top-down over the ORIGINAL tree: the final node among each node's ancestors. */
    for (int k = 0; k < nn; k++) w.cover[k] = w.mark[k] ? k : (w.oparent[k] >= 0 ? w.cover[w.oparent[k]] : -1);
    int uncovered = 0;
    for (int p = 0; p < n; p++) {
        int f = w.cover[w.pix_node[p]];
        if (f >= 0) {
            lp_out[p] = (float)w.lp[f];
        } else {
            lp_out[p] = NAN;
            uncovered++;
        }
    }
    if (stats) {
        stats->n_nodes = nn;
        stats->n_final = n_final;
        stats->n_merges = merges;
        stats->n_uncovered = uncovered;
        stats->min_log10p = min_lp;
    }
    uf_free(block);
    return UF_OK;
}

int uf_nfa_tree_log10p(const float *z, int c, int h, int w, float *lp, uf_nfa_tree_stats *stats) {
    if (c < 1 || h < 1 || w < 1 || (int64_t)h * w > (INT32_MAX / 2))
        return uf_error("tree NFA: bad latent shape (%d, %d, %d)", c, h, w);
    const size_t n = (size_t)h * w;
    double *q = uf_calloc(n, sizeof(double));
    if (!q) return uf_error_prefix("tree NFA");
    for (int k = 0; k < c; k++) {
        const float *zk = z + (size_t)k * n;
        for (size_t p = 0; p < n; p++) q[p] += (double)zk[p] * zk[p];
    }
    int rc = uf_nfa_tree_log10p_q(q, c, h, w, lp, stats);
    uf_free(q);
    return rc;
}

uf_nfa_null uf_nfa_null_standard(void) {
    uf_nfa_null n;
    for (int l = 0; l < UF_MAX_SCALES; l++) n.z2_scale[l] = 1.0;
    n.log10_extra_tests = 0.0;
    return n;
}

int uf_nfa_tree_score(const uf_latent_view *scales, int n_scales, int out_h, int out_w, float *score) {
    const uf_nfa_null standard = uf_nfa_null_standard();
    return uf_nfa_tree_score_null(scales, n_scales, &standard, out_h, out_w, score);
}

/* Tree NFA of one scale whose latents are N(0, var) under H0: Q / var. */
static int scale_log10p(const uf_latent_view *s, double var, float *lp) {
    if (var == 1.0) return uf_nfa_tree_log10p(s->z, s->c, s->h, s->w, lp, NULL);
    if (s->c < 1 || s->h < 1 || s->w < 1 || (int64_t)s->h * s->w > (INT32_MAX / 2))
        return uf_error("tree NFA: bad latent shape (%d, %d, %d)", s->c, s->h, s->w);
    const size_t n = (size_t)s->h * s->w;
    double *q = uf_calloc(n, sizeof(double));
    if (!q) return uf_error_prefix("tree NFA");
    for (int k = 0; k < s->c; k++) {
        const float *zk = s->z + (size_t)k * n;
        for (size_t p = 0; p < n; p++) q[p] += (double)zk[p] * zk[p];
    }
    for (size_t p = 0; p < n; p++) q[p] /= var;
    int rc = uf_nfa_tree_log10p_q(q, s->c, s->h, s->w, lp, NULL);
    uf_free(q);
    return rc;
}

int uf_nfa_tree_score_null(const uf_latent_view *scales, int n_scales, const uf_nfa_null *null, int out_h, int out_w,
                           float *score) {
    if (uf_latent_views_check(scales, n_scales, out_h, out_w, "tree NFA") != UF_OK) return UF_ERR;
    for (int l = 0; l < n_scales; l++)
        if (!(null->z2_scale[l] > 0 && isfinite(null->z2_scale[l])))
            return uf_error("tree NFA: scale %d: null variance %g is not positive", l, null->z2_scale[l]);
    if (!(null->log10_extra_tests >= 0 && isfinite(null->log10_extra_tests)))
        return uf_error("tree NFA: extra tests 10^%g", null->log10_extra_tests);
    size_t n_out = (size_t)out_h * (size_t)out_w;
    int cells[UF_MAX_SCALES] = {0};
    for (int l = 0; l < n_scales; l++) cells[l] = (int)((size_t)scales[l].h * (size_t)scales[l].w);
    const float log_nt = (float)(uf_nfa_log10_ntests(cells, n_scales) + null->log10_extra_tests);
    size_t total_cells = 0, off[UF_MAX_SCALES];
    for (int l = 0; l < n_scales; l++) off[l] = total_cells, total_cells += (size_t)cells[l];
    float *lp = uf_alloc(sizeof(float) * total_cells); /* every scale's (h_l, w_l), one after another */
    float *up = uf_alloc(sizeof(float) * n_out);       /* (out_h, out_w) */
    if (!lp || !up) {
        uf_free(lp), uf_free(up);
        return uf_error_prefix("tree NFA");
    }
    /* The scales' trees are independent: built in parallel (the largest takes ~3/4 of the
     * time, so this mostly helps one image alone; inside a parallel loop over images it
     * runs serially). Errors are thread-local, so a worker's message is carried back. */
    int rc[UF_MAX_SCALES];
    char msg[UF_MAX_SCALES][160];
#pragma omp parallel for schedule(dynamic, 1) if (n_scales > 1)
    for (int l = 0; l < n_scales; l++) {
        const uf_latent_view *s = &scales[l];
        rc[l] = scale_log10p(s, null->z2_scale[l], lp + off[l]);
        if (rc[l] != UF_OK) snprintf(msg[l], sizeof msg[l], "%s", uf_last_error());
    }
    for (int l = 0; l < n_scales; l++)
        if (rc[l] != UF_OK) {
            uf_free(lp), uf_free(up);
            return uf_error("scale %d: %s", l, msg[l]);
        }
    for (int l = 0; l < n_scales; l++) {
        const uf_latent_view *s = &scales[l];
        float *lpl = lp + off[l];
        for (size_t p = 0; p < (size_t)cells[l]; p++)
            if (isnan(lpl[p])) lpl[p] = 0.f;
        uf_interp_bilinear(lpl, 1, s->h, s->w, l == 0 ? score : up, out_h, out_w);
        if (l > 0)
            for (size_t i = 0; i < n_out; i++) score[i] = up[i] < score[i] ? up[i] : score[i]; /* no NaN here */
    }
    for (size_t i = 0; i < n_out; i++) score[i] = -(log_nt + score[i]);
    uf_free(lp), uf_free(up);
    return UF_OK;
}
