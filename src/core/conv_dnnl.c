#define _GNU_SOURCE /* PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP */
/* conv_dnnl.c - oneDNN convolutions:
 * - the forward convolution of conv.h, with plain nchw / oihw arrays (the
 *   caller's layouts; oneDNN picks its gemm-based kernel for them). Measured on
 *   the flow's shapes (2 cores, AVX-512): 1.2-2x the im2col + OpenBLAS path;
 * - the channel-blocked forward, backward-data and backward-weights of
 *   conv_blocked.h (oneDNN's direct jit kernels).
 * Primitives are cached per geometry, pass and epilogue; calls are serialised
 * by a mutex (uflow runs one convolution at a time; the primitive itself uses
 * all threads). */
#include "core/conv.h"
#include "core/conv_blocked.h"

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/conv_winograd.h"
#include "core/dnnl_exec.h"
#include "core/tensor.h"

#define CACHE 48

typedef struct {
    uf_conv_geom g;
    int flags, has_bias;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, bia, dst;
    dnnl_memory_t scratch; /* its scratchpad (no buffer of its own: see run()), NULL if none */
} entry;

/* Guards the caches and runs; recursive, as uf_dnnl_execute takes it again. */
static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static dnnl_engine_t eng;
static dnnl_stream_t stream;

/* Every primitive here uses a user scratchpad (dnnl_exec.h says why), all of them the
 * one buffer below, grown as needed: they run one at a time, under the lock. */
static void *scratch_buf;
static size_t scratch_cap;

/* An attribute with the user scratchpad mode (attr NULL: a new one); NULL on failure. */
static dnnl_primitive_attr_t user_scratch_attr(dnnl_primitive_attr_t attr) {
    if (!attr && dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
    if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success) {
        dnnl_primitive_attr_destroy(attr);
        return NULL;
    }
    return attr;
}

/* 1 and *mem = a bufferless memory for pd's scratchpad (NULL when it needs none), or 0. */
static int scratch_memory(const_dnnl_primitive_desc_t pd, dnnl_memory_t *mem) {
    *mem = NULL;
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (!md || dnnl_memory_desc_get_size(md) == 0) return 1;
    return dnnl_memory_create(mem, md, eng, DNNL_MEMORY_NONE) == dnnl_success;
}

/* With the lock held: the shared scratch buffer with at least `need` bytes, or NULL. */
static void *scratch_of(size_t need) {
    if (need > scratch_cap) {
        uf_free(scratch_buf);
        scratch_cap = (scratch_buf = uf_alloc(need)) ? need : 0;
    }
    return scratch_buf;
}

/* With the lock held: runs p with args[0..n) and its scratchpad (args has room for one
 * more); 1 on success. */
static int run(dnnl_primitive_t p, dnnl_memory_t scratch, int n, dnnl_exec_arg_t *args) {
    if (scratch) {
        const dnnl_memory_desc_t *md = NULL;
        if (dnnl_memory_get_memory_desc(scratch, &md) != dnnl_success) return 0;
        if (!scratch_of(dnnl_memory_desc_get_size(md))) return 0;
        dnnl_memory_set_data_handle(scratch, scratch_buf);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, scratch};
    }
    return uf_dnnl_execute(p, stream, n, args) == dnnl_success;
}

dnnl_status_t uf_dnnl_execute(dnnl_primitive_t p, dnnl_stream_t s, int n_args, const dnnl_exec_arg_t *args) {
    pthread_mutex_lock(&lock);
    dnnl_status_t st = dnnl_primitive_execute(p, s, n_args, args);
    if (st == dnnl_success) st = dnnl_stream_wait(s);
    pthread_mutex_unlock(&lock);
    return st;
}
static int state; /* 0: not tried, 1: ready, -1: oneDNN unusable */
static int enabled = 1;
static entry cache[CACHE];
static int n_cache, next_evict;

static int same_geom(const uf_conv_geom *a, const uf_conv_geom *b) {
    return a->n == b->n && a->c_in == b->c_in && a->h == b->h && a->w == b->w && a->c_out == b->c_out &&
           a->k == b->k && a->stride == b->stride && a->pad == b->pad;
}

static void entry_free(entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->src) dnnl_memory_destroy(e->src);
    if (e->wei) dnnl_memory_destroy(e->wei);
    if (e->bia) dnnl_memory_destroy(e->bia);
    if (e->dst) dnnl_memory_destroy(e->dst);
    if (e->scratch) dnnl_memory_destroy(e->scratch);
    memset(e, 0, sizeof *e);
}

/* 0 and *e ready, or -1 (oneDNN has no kernel for it: im2col runs instead). */
static int build(entry *e, const uf_conv_geom *g, int flags, int has_bias) {
    memset(e, 0, sizeof *e);
    e->g = *g, e->flags = flags, e->has_bias = has_bias;
    const int ho = uf_conv_out_size(g->h, g->k, g->stride, g->pad), wo = uf_conv_out_size(g->w, g->k, g->stride, g->pad);
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    const dnnl_dims_t sd = {g->n, g->c_in, g->h, g->w}, wd = {g->c_out, g->c_in, g->k, g->k}, bd = {g->c_out},
                      dd = {g->n, g->c_out, ho, wo}, strides = {g->stride, g->stride}, pad = {g->pad, g->pad};
    if (dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, dnnl_nchw) ||
        dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_oihw) ||
        dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x) ||
        dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, dnnl_nchw))
        return -1;
    dnnl_convolution_desc_t cd;
    if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &smd, &wmd,
                                           has_bias ? &bmd : NULL, &dmd, strides, pad, pad))
        return -1;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok = dnnl_primitive_attr_create(&attr) == dnnl_success && dnnl_post_ops_create(&po) == dnnl_success;
    if (ok && (flags & UF_CONV_ACCUMULATE)) ok = dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success;
    if (ok && (flags & UF_CONV_RELU))
        ok = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f) == dnnl_success;
    if (ok) ok = dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    if (ok) ok = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
    if (ok) ok = dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL) == dnnl_success;
    if (ok) ok = dnnl_primitive_create(&e->prim, pd) == dnnl_success && scratch_memory(pd, &e->scratch);
    if (ok) ok = dnnl_memory_create(&e->src, &smd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
                 dnnl_memory_create(&e->wei, &wmd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
                 dnnl_memory_create(&e->dst, &dmd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
                 (!has_bias || dnnl_memory_create(&e->bia, &bmd, eng, DNNL_MEMORY_NONE) == dnnl_success);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) entry_free(e);
    return ok ? 0 : -1;
}

void uf_conv_set_dnnl(int on) {
    pthread_mutex_lock(&lock);
    enabled = on;
    pthread_mutex_unlock(&lock);
}

/* With the lock held: 1 when the engine is ready and oneDNN is switched on. */
static int ready_locked(void) {
    if (!enabled || state < 0) return 0;
    if (state == 0)
        state = dnnl_engine_create(&eng, dnnl_cpu, 0) == dnnl_success &&
                        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) == dnnl_success
                    ? 1
                    : -1;
    return state > 0;
}

int uf_conv2d_forward_dnnl(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                           int flags) {
    pthread_mutex_lock(&lock);
    int done = 0;
    if (!ready_locked()) goto out;
    entry *e = NULL;
    for (int i = 0; i < n_cache && !e; i++)
        if (same_geom(&cache[i].g, g) && cache[i].flags == flags && cache[i].has_bias == (b != NULL)) e = &cache[i];
    if (!e) {
        int slot = n_cache < CACHE ? n_cache++ : (next_evict++ % CACHE);
        entry_free(&cache[slot]);
        if (build(&cache[slot], g, flags, b != NULL) != 0) {
            if (slot == n_cache - 1) n_cache--;
            goto out;
        }
        e = &cache[slot];
    }
    dnnl_memory_set_data_handle(e->src, (void *)x);
    dnnl_memory_set_data_handle(e->wei, (void *)w);
    dnnl_memory_set_data_handle(e->dst, y);
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei}, {DNNL_ARG_DST, e->dst}};
    int na = 3;
    if (b) {
        dnnl_memory_set_data_handle(e->bia, (void *)b);
        args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->bia};
    }
    done = run(e->prim, e->scratch, na, args);
out:
    pthread_mutex_unlock(&lock);
    return done;
}

/* ---- channel-blocked convolutions (conv_blocked.h) ---- */

enum { PASS_FWD, PASS_BWD_DATA, PASS_BWD_WEIGHTS };

#define WSLOTS 4 /* weight arrays per Winograd entry: the flow has 2 blocks per geometry */

typedef struct {
    uf_conv_geom g;
    int pass, flags, has_bias;
    dnnl_primitive_t prim;
    /* data: fwd (src, dst), bwd-data (diff_dst, diff_src), bwd-weights (src, diff_dst) */
    dnnl_memory_t in, out, bia;
    dnnl_memory_t wei;      /* weights / diff_weights in the primitive's format (owned buffer) */
    dnnl_memory_t wei_user; /* the same in oihw: the caller's array, or wtmp for bwd-weights */
    dnnl_primitive_t wreorder; /* between wei_user and wei; NULL when the formats agree */
    dnnl_memory_t scratch, wscratch; /* scratchpads of prim and wreorder (see run()), NULL if none */
    float *wtmp, *btmp;     /* bwd-weights results before they are added to the caller's */
    int winograd;           /* Winograd F(4x4, 3x3), not direct: oneDNN's, or (own) ours */
    int own;                /* no primitive: conv_winograd.h's AVX2 kernels (8 lanes) */
    /* Winograd fwd / bwd-data: the last few weight arrays transformed, by address, each with
     * a copy of the oihw values it was made from (a hit needs both to match) */
    struct wslot {
        const float *src;
        float *copy;
        dnnl_memory_t wei; /* oneDNN's */
        float *u;          /* ours */
    } ws[WSLOTS];
    int next_ws;
} bentry;

#define BCACHE 192 /* 3 passes x 12 flow geometries x a few batch sizes */
static bentry bcache[BCACHE];
static int n_bcache, next_bevict;

static void bentry_free(bentry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->wreorder) dnnl_primitive_destroy(e->wreorder);
    dnnl_memory_t *ms[] = {&e->in, &e->out, &e->bia, &e->wei, &e->wei_user, &e->scratch, &e->wscratch};
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
        if (*ms[i]) dnnl_memory_destroy(*ms[i]);
    uf_free(e->wtmp), uf_free(e->btmp);
    for (int i = 0; i < WSLOTS; i++) {
        if (e->ws[i].wei) dnnl_memory_destroy(e->ws[i].wei);
        uf_free(e->ws[i].copy), uf_free(e->ws[i].u);
    }
    memset(e, 0, sizeof *e);
}

static int blocked_enabled = 1, winograd_enabled = -1; /* -1: not read from UFLOW_WINOGRAD yet */

/* With the lock held: Winograd on unless UFLOW_WINOGRAD=0 or uf_cblk_set_winograd(0). */
static int winograd_locked(void) {
    if (winograd_enabled < 0) {
        const char *v = getenv("UFLOW_WINOGRAD");
        winograd_enabled = !(v && strcmp(v, "0") == 0);
    }
    return winograd_enabled;
}

int uf_cblk_get_winograd(void) {
    pthread_mutex_lock(&lock);
    int on = winograd_locked();
    pthread_mutex_unlock(&lock);
    return on;
}

void uf_cblk_set_enabled(int on) {
    pthread_mutex_lock(&lock);
    blocked_enabled = on;
    pthread_mutex_unlock(&lock);
}

void uf_cblk_set_winograd(int on) {
    pthread_mutex_lock(&lock);
    if (winograd_locked() != on) {
        for (int i = 0; i < n_bcache; i++) bentry_free(&bcache[i]);
        n_bcache = next_bevict = 0;
    }
    winograd_enabled = on;
    pthread_mutex_unlock(&lock);
}

static int lanes_locked(void) {
    if (!blocked_enabled || !ready_locked()) return 0;
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core) return 16;
    if ((isa & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2) return 8;
    return 0; /* older CPUs: the plain path */
}

int uf_cblk_lanes(void) {
    pthread_mutex_lock(&lock);
    int l = lanes_locked();
    pthread_mutex_unlock(&lock);
    return l;
}

size_t uf_cblk_floats(int n, int c, size_t hw) {
    /* padded to 16 whatever the lanes are, so a size taken while oneDNN is off stays valid */
    return (size_t)n * (size_t)((c + 15) / 16) * 16 * hw;
}


void uf_cblk_from_nchw(int n, int c, size_t hw, const float *src, int src_c, float *dst) {
    const int L = uf_cblk_lanes(), nb = (c + L - 1) / L;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < n; b++)
        for (int cb = 0; cb < nb; cb++) {
            float *d = dst + ((size_t)b * nb + cb) * hw * L;
            const int c0 = cb * L, nl = c - c0 < L ? c - c0 : L;
            const float *s = src + ((size_t)b * src_c + c0) * hw;
            for (size_t i = 0; i < hw; i++) {
                int l = 0;
                for (; l < nl; l++) d[i * L + l] = s[(size_t)l * hw + i];
                for (; l < L; l++) d[i * L + l] = 0.0f;
            }
        }
}

void uf_cblk_to_nchw(int n, int c, size_t hw, const float *src, float *dst, int dst_c, int accumulate) {
    const int L = uf_cblk_lanes(), nb = (c + L - 1) / L;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < n; b++)
        for (int cb = 0; cb < nb; cb++) {
            const float *s = src + ((size_t)b * nb + cb) * hw * L;
            const int c0 = cb * L, nl = c - c0 < L ? c - c0 : L;
            float *d = dst + ((size_t)b * dst_c + c0) * hw;
            for (int l = 0; l < nl; l++) {
                float *dl = d + (size_t)l * hw;
                if (accumulate)
                    for (size_t i = 0; i < hw; i++) dl[i] += s[i * L + l];
                else
                    for (size_t i = 0; i < hw; i++) dl[i] = s[i * L + l];
            }
        }
}

static dnnl_format_tag_t blocked_tag(int lanes) { return lanes == 16 ? dnnl_nChw16c : dnnl_nChw8c; }

/* The primitive descriptor for op desc d: for Winograd the jit_wino_4x3 kernel when oneDNN
 * offers it (at batch 1 its default is F(2x2, 3x3), 1.5x slower on the flow's stage 0),
 * else oneDNN's first choice. A fixed rule, not a timing: results must not depend on noise. */
static dnnl_status_t pd_create(dnnl_primitive_desc_t *pd, const_dnnl_op_desc_t d, const_dnnl_primitive_attr_t attr,
                               const_dnnl_primitive_desc_t hint, int winograd) {
    if (!winograd) return dnnl_primitive_desc_create(pd, d, attr, eng, hint);
    dnnl_primitive_desc_iterator_t it;
    dnnl_status_t st = dnnl_primitive_desc_iterator_create(&it, d, attr, eng, hint);
    if (st != dnnl_success) return st;
    dnnl_primitive_desc_t first = NULL;
    do {
        dnnl_primitive_desc_t c = dnnl_primitive_desc_iterator_fetch(it);
        const char *impl = NULL;
        if (!c) continue;
        if (dnnl_primitive_desc_query(c, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
            strncmp(impl, "jit_wino_4x3", 12) == 0) {
            if (first) dnnl_primitive_desc_destroy(first);
            *pd = c;
            dnnl_primitive_desc_iterator_destroy(it);
            return dnnl_success;
        }
        if (!first)
            first = c;
        else
            dnnl_primitive_desc_destroy(c);
    } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
    dnnl_primitive_desc_iterator_destroy(it);
    if (!first) return dnnl_unimplemented;
    *pd = first;
    return dnnl_success;
}

/* 0 and *e ready with algorithm alg (direct or Winograd), or -1. With the lock held. */
static int bbuild_alg(bentry *e, const uf_conv_geom *g, int pass, int flags, int has_bias, int lanes,
                      dnnl_alg_kind_t alg) {
    memset(e, 0, sizeof *e);
    e->g = *g, e->pass = pass, e->flags = flags, e->has_bias = has_bias;
    e->winograd = alg == dnnl_convolution_winograd;
    const int ho = uf_conv_out_size(g->h, g->k, g->stride, g->pad), wo = uf_conv_out_size(g->w, g->k, g->stride, g->pad);
    const dnnl_dims_t sd = {g->n, g->c_in, g->h, g->w}, wd = {g->c_out, g->c_in, g->k, g->k}, bd = {g->c_out},
                      dd = {g->n, g->c_out, ho, wo}, strides = {g->stride, g->stride}, pad = {g->pad, g->pad};
    const dnnl_format_tag_t tag = blocked_tag(lanes);
    dnnl_memory_desc_t smd, wany, wplain, bmd, dmd;
    if (dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, tag) ||
        dnnl_memory_desc_init_by_tag(&wany, 4, wd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&wplain, 4, wd, dnnl_f32, dnnl_oihw) ||
        dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x) ||
        dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, tag))
        return -1;
    dnnl_convolution_desc_t fd, cd;
    if (dnnl_convolution_forward_desc_init(&fd, pass == PASS_FWD ? dnnl_forward_inference : dnnl_forward_training,
                                           alg, &smd, &wany, has_bias ? &bmd : NULL, &dmd,
                                           strides, pad, pad))
        return -1;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    int ok = (attr = user_scratch_attr(NULL)) != NULL;
    if (ok && pass == PASS_FWD && (flags & UF_CONV_RELU)) {
        ok = dnnl_post_ops_create(&po) == dnnl_success &&
             dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    }
    if (ok) ok = pd_create(&fpd, &fd, attr, NULL, e->winograd) == dnnl_success;
    if (ok && pass == PASS_FWD) {
        pd = fpd, fpd = NULL;
    } else if (ok && pass == PASS_BWD_DATA) {
        ok = dnnl_convolution_backward_data_desc_init(&cd, alg, &smd, &wany, &dmd, strides, pad, pad) == dnnl_success &&
             pd_create(&pd, &cd, attr, fpd, e->winograd) == dnnl_success;
    } else if (ok) {
        ok = dnnl_convolution_backward_weights_desc_init(&cd, alg, &smd, &wany,
                                                         has_bias ? &bmd : NULL, &dmd, strides, pad,
                                                         pad) == dnnl_success &&
             pd_create(&pd, &cd, attr, fpd, e->winograd) == dnnl_success;
    }
    /* only the jit kernels are worth the layout (jit_wino_4x3, jit_fp32_wino_2x3 for
     * Winograd); a reference or gemm fallback is refused */
    const char *impl = NULL;
    if (ok) ok = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
                 strncmp(impl, "jit", 3) == 0 && (!e->winograd || strstr(impl, "wino"));
    if (ok) ok = dnnl_primitive_create(&e->prim, pd) == dnnl_success && scratch_memory(pd, &e->scratch);
    const dnnl_memory_desc_t *wq =
        ok ? dnnl_primitive_desc_query_md(pd, pass == PASS_BWD_WEIGHTS ? dnnl_query_diff_weights_md : dnnl_query_weights_md, 0)
           : NULL;
    ok = ok && wq;
    if (ok) ok = dnnl_memory_create(&e->in, pass == PASS_BWD_DATA ? &dmd : &smd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
                 dnnl_memory_create(&e->out, pass == PASS_FWD ? &dmd : pass == PASS_BWD_DATA ? &smd : &dmd, eng,
                                    DNNL_MEMORY_NONE) == dnnl_success &&
                 dnnl_memory_create(&e->wei_user, &wplain, eng, DNNL_MEMORY_NONE) == dnnl_success;
    if (ok && has_bias) ok = dnnl_memory_create(&e->bia, &bmd, eng, DNNL_MEMORY_NONE) == dnnl_success;
    const size_t nw = (size_t)g->c_out * g->c_in * g->k * g->k;
    if (ok && pass == PASS_BWD_WEIGHTS) {
        ok = (e->wtmp = uf_alloc(sizeof(float) * nw)) != NULL && (e->btmp = uf_alloc(sizeof(float) * g->c_out)) != NULL;
        if (ok) dnnl_memory_set_data_handle(e->wei_user, e->wtmp);
        if (ok && has_bias) dnnl_memory_set_data_handle(e->bia, e->btmp);
    }
    if (ok && dnnl_memory_desc_equal(wq, &wplain)) {
        /* the primitive reads / writes oihw itself: wei aliases wei_user's buffer per call */
        ok = dnnl_memory_create(&e->wei, wq, eng, DNNL_MEMORY_NONE) == dnnl_success;
    } else if (ok) {
        dnnl_primitive_desc_t rpd = NULL;
        dnnl_primitive_attr_t rattr = user_scratch_attr(NULL); /* no post-ops on a reorder */
        /* Winograd fwd / bwd-data keep their transformed weights in ws[] (load_weights):
         * e->wei only carries the format there */
        const int slots = e->winograd && pass != PASS_BWD_WEIGHTS;
        ok = dnnl_memory_create(&e->wei, wq, eng, slots ? DNNL_MEMORY_NONE : DNNL_MEMORY_ALLOCATE) == dnnl_success &&
             rattr &&
             (pass == PASS_BWD_WEIGHTS ? dnnl_reorder_primitive_desc_create(&rpd, wq, eng, &wplain, eng, rattr)
                                       : dnnl_reorder_primitive_desc_create(&rpd, &wplain, eng, wq, eng, rattr)) ==
                 dnnl_success &&
             dnnl_primitive_create(&e->wreorder, rpd) == dnnl_success && scratch_memory(rpd, &e->wscratch);
        if (rpd) dnnl_primitive_desc_destroy(rpd);
        if (rattr) dnnl_primitive_attr_destroy(rattr);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) bentry_free(e);
    return ok ? 0 : -1;
}

/* Winograd F(4x4, 3x3) where it is on and has a kernel: oneDNN's (AVX-512 only, 3x3 stride
 * 1), ours with 8 lanes (conv_winograd.h: AVX2, 3x3 stride 1 pad 1, 8+ channels); else the
 * direct kernel. */
static int bbuild(bentry *e, const uf_conv_geom *g, int pass, int flags, int has_bias, int lanes) {
    if (winograd_locked() && lanes == 8 && uf_wino_available() && uf_wino_fits(g)) {
        memset(e, 0, sizeof *e);
        e->g = *g, e->pass = pass, e->flags = flags, e->has_bias = has_bias;
        e->winograd = e->own = 1;
        return 0;
    }
    if (winograd_locked() && g->k == 3 && g->stride == 1 &&
        bbuild_alg(e, g, pass, flags, has_bias, lanes, dnnl_convolution_winograd) == 0)
        return 0;
    return bbuild_alg(e, g, pass, flags, has_bias, lanes, dnnl_convolution_direct);
}

/* With the lock held: the cached entry, built when new; NULL when oneDNN cannot run it. */
static bentry *bfind(const uf_conv_geom *g, int pass, int flags, int has_bias) {
    const int lanes = lanes_locked();
    if (!lanes) return NULL;
    for (int i = 0; i < n_bcache; i++) {
        bentry *e = &bcache[i];
        if (same_geom(&e->g, g) && e->pass == pass && e->flags == flags && e->has_bias == has_bias) return e;
    }
    int slot = n_bcache < BCACHE ? n_bcache++ : (next_bevict++ % BCACHE);
    bentry_free(&bcache[slot]);
    if (bbuild(&bcache[slot], g, pass, flags, has_bias, lanes) != 0) {
        if (slot == n_bcache - 1) n_bcache--;
        return NULL;
    }
    return &bcache[slot];
}

int uf_cblk_winograd(const uf_conv_geom *g, int with_bias) {
    pthread_mutex_lock(&lock);
    bentry *e = bfind(g, PASS_FWD, 0, with_bias);
    int w = e && e->winograd;
    pthread_mutex_unlock(&lock);
    return w;
}

int uf_cblk_supported(const uf_conv_geom *g, int with_bias) {
    pthread_mutex_lock(&lock);
    int ok = bfind(g, PASS_FWD, 0, with_bias) && bfind(g, PASS_FWD, UF_CONV_RELU, with_bias) &&
             bfind(g, PASS_BWD_DATA, 0, 0) &&
             bfind(g, PASS_BWD_WEIGHTS, 0, with_bias);
    pthread_mutex_unlock(&lock);
    return ok;
}


/* Weights into the primitive's format (fwd, bwd-data); 1 on success. */
static int reorder_weights(bentry *e, const float *w, dnnl_memory_t to) {
    dnnl_memory_set_data_handle(e->wei_user, (void *)w);
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_FROM, e->wei_user}, {DNNL_ARG_TO, to}};
    return run(e->wreorder, e->wscratch, 2, a);
}

/* The slot of e->ws for weight array w: *hit = 1 when it holds w's transform for w's present
 * values (found by address, checked exactly against its copy of the values); else w's slot or
 * the next one to reuse, its copy allocated and marked invalid until wslot_commit (the caller
 * transforms into it). NULL when out of memory. */
static struct wslot *wslot_find(bentry *e, const float *w, int *hit) {
    const size_t nw = (size_t)e->g.c_out * e->g.c_in * e->g.k * e->g.k;
    struct wslot *sl = NULL;
    *hit = 0;
    for (int i = 0; i < WSLOTS && !sl; i++)
        if (e->ws[i].src == w) sl = &e->ws[i];
    if (sl && memcmp(sl->copy, w, sizeof(float) * nw) == 0) {
        *hit = 1;
        return sl;
    }
    if (!sl) sl = &e->ws[e->next_ws++ % WSLOTS];
    sl->src = NULL; /* valid again only once transformed */
    if (!sl->copy && !(sl->copy = uf_alloc(sizeof(float) * nw))) return NULL;
    return sl;
}

/* sl now holds the transform of w's present values. */
static void wslot_commit(bentry *e, struct wslot *sl, const float *w) {
    memcpy(sl->copy, w, sizeof(float) * (size_t)e->g.c_out * e->g.c_in * e->g.k * e->g.k);
    sl->src = w;
}

/* The weights w in the primitive's format (fwd, bwd-data): the memory to pass as
 * DNNL_ARG_WEIGHTS, or NULL on failure. Winograd's weight transform is slow (oneDNN's
 * wino_reorder: up to 3x the convolution itself), so its results are kept per weight
 * array and redone only when the values changed, checked exactly against a copy
 * (inference reuses them; each training step changes them once). */
static dnnl_memory_t load_weights(bentry *e, const float *w) {
    if (!e->wreorder) {
        dnnl_memory_set_data_handle(e->wei, (void *)w);
        return e->wei;
    }
    if (!e->winograd) return reorder_weights(e, w, e->wei) ? e->wei : NULL;
    int hit;
    struct wslot *sl = wslot_find(e, w, &hit);
    if (!sl || hit) return sl ? sl->wei : NULL;
    const dnnl_memory_desc_t *md = NULL;
    if (!sl->wei && (dnnl_memory_get_memory_desc(e->wei, &md) != dnnl_success ||
                     dnnl_memory_create(&sl->wei, md, eng, DNNL_MEMORY_ALLOCATE) != dnnl_success))
        return NULL;
    if (!reorder_weights(e, w, sl->wei)) return NULL;
    wslot_commit(e, sl, w);
    return sl->wei;
}

/* Our Winograd's transformed weights for w (fwd, or bwd-data: transposed), cached in e->ws
 * as load_weights does for oneDNN's; NULL when out of memory. */
static const float *own_weights(bentry *e, const float *w) {
    int hit;
    struct wslot *sl = wslot_find(e, w, &hit);
    if (!sl || hit) return sl ? sl->u : NULL;
    if (!sl->u && !(sl->u = uf_alloc(sizeof(float) * uf_wino_weights_floats(e->g.c_in, e->g.c_out)))) return NULL;
    uf_wino_transform_weights(e->g.c_in, e->g.c_out, w, e->pass == PASS_BWD_DATA, sl->u);
    wslot_commit(e, sl, w);
    return sl->u;
}

/* With the lock held: e's pass on our Winograd kernels; 1 on success. */
static int own_run(bentry *e, const float *in, const float *w, const float *b, float *out, float *dw, int flags) {
    const int threads = omp_get_max_threads();
    float *scratch = scratch_of(sizeof(float) * uf_wino_scratch_floats(&e->g, threads, e->pass == PASS_BWD_WEIGHTS));
    if (!scratch) return 0;
    if (e->pass == PASS_BWD_WEIGHTS) {
        uf_wino_backward_weights(&e->g, in, out, dw, (float *)b, threads, scratch);
        return 1;
    }
    const float *u = own_weights(e, w);
    if (!u) return 0;
    if (e->pass == PASS_FWD)
        uf_wino_forward(&e->g, in, u, b, out, flags, threads, scratch);
    else
        uf_wino_backward_data(&e->g, in, u, out, threads, scratch);
    return 1;
}

int uf_cblk_conv_forward(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                         int flags) {
    pthread_mutex_lock(&lock);
    bentry *e = bfind(g, PASS_FWD, flags & UF_CONV_RELU, b != NULL);
    if (e && e->own) {
        int done = own_run(e, x, w, b, y, NULL, flags & UF_CONV_RELU);
        pthread_mutex_unlock(&lock);
        return done;
    }
    dnnl_memory_t wei = e ? load_weights(e, w) : NULL;
    int done = wei != NULL;
    if (done) {
        dnnl_memory_set_data_handle(e->in, (void *)x);
        dnnl_memory_set_data_handle(e->out, y);
        dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, e->in}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, e->out}};
        int na = 3;
        if (b) {
            dnnl_memory_set_data_handle(e->bia, (void *)b);
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->bia};
        }
        done = run(e->prim, e->scratch, na, a);
    }
    pthread_mutex_unlock(&lock);
    return done;
}

int uf_cblk_conv_backward_data(const uf_conv_geom *g, const float *dy, const float *w, float *dx) {
    pthread_mutex_lock(&lock);
    bentry *e = bfind(g, PASS_BWD_DATA, 0, 0);
    if (e && e->own) {
        int done = own_run(e, dy, w, NULL, dx, NULL, 0);
        pthread_mutex_unlock(&lock);
        return done;
    }
    dnnl_memory_t wei = e ? load_weights(e, w) : NULL;
    int done = wei != NULL;
    if (done) {
        dnnl_memory_set_data_handle(e->in, (void *)dy);
        dnnl_memory_set_data_handle(e->out, dx);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, e->in}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, e->out}};
        done = run(e->prim, e->scratch, 3, a);
    }
    pthread_mutex_unlock(&lock);
    return done;
}

int uf_cblk_conv_backward_weights(const uf_conv_geom *g, const float *x, const float *dy, float *dw, float *db) {
    pthread_mutex_lock(&lock);
    bentry *e = bfind(g, PASS_BWD_WEIGHTS, 0, db != NULL);
    if (e && e->own) {
        int done = own_run(e, x, NULL, db, (float *)dy, dw, 0); /* accumulates dw and db itself */
        pthread_mutex_unlock(&lock);
        return done;
    }
    int done = e != NULL;
    if (done) {
        if (!e->wreorder) dnnl_memory_set_data_handle(e->wei, e->wtmp);
        dnnl_memory_set_data_handle(e->in, (void *)x);
        dnnl_memory_set_data_handle(e->out, (void *)dy);
        dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, e->in}, {DNNL_ARG_DIFF_DST, e->out}, {DNNL_ARG_DIFF_WEIGHTS, e->wei}};
        int na = 3;
        if (db) a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, e->bia};
        done = run(e->prim, e->scratch, na, a);
        if (done && e->wreorder) {
            dnnl_exec_arg_t r[3] = {{DNNL_ARG_FROM, e->wei}, {DNNL_ARG_TO, e->wei_user}};
            done = run(e->wreorder, e->wscratch, 2, r);
        }
    }
    if (done) {
        const size_t nw = (size_t)g->c_out * g->c_in * g->k * g->k;
        for (size_t i = 0; i < nw; i++) dw[i] += e->wtmp[i];
        if (db)
            for (int i = 0; i < g->c_out; i++) db[i] += e->btmp[i];
    }
    pthread_mutex_unlock(&lock);
    return done;
}
