/* conv_dnnl.c - the forward convolution of conv.h on oneDNN, with plain
 * nchw / oihw arrays (the caller's layouts; oneDNN picks its gemm-based
 * kernel for them). Measured on the flow's shapes (2 cores, AVX-512): 1.2-2x
 * the im2col + OpenBLAS path. Primitives are cached per geometry and
 * epilogue; calls are serialised by a mutex (uflow runs one convolution at a
 * time; the primitive itself uses all threads). */
#include "core/conv.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <string.h>

#define CACHE 48

typedef struct {
    uf_conv_geom g;
    int flags, has_bias;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, bia, dst;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t eng;
static dnnl_stream_t stream;
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
    if (ok) ok = dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL) == dnnl_success;
    if (ok) ok = dnnl_primitive_create(&e->prim, pd) == dnnl_success;
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

int uf_conv2d_forward_dnnl(const uf_conv_geom *g, const float *x, const float *w, const float *b, float *y,
                           int flags) {
    pthread_mutex_lock(&lock);
    int done = 0;
    if (!enabled || state < 0) goto out;
    if (state == 0) {
        state = dnnl_engine_create(&eng, dnnl_cpu, 0) == dnnl_success &&
                        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) == dnnl_success
                    ? 1
                    : -1;
        if (state < 0) goto out;
    }
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
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei}, {DNNL_ARG_DST, e->dst}};
    int na = 3;
    if (b) {
        dnnl_memory_set_data_handle(e->bia, (void *)b);
        args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->bia};
    }
    done = dnnl_primitive_execute(e->prim, stream, na, args) == dnnl_success &&
           dnnl_stream_wait(stream) == dnnl_success;
out:
    pthread_mutex_unlock(&lock);
    return done;
}
