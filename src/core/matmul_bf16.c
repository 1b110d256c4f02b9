#include "core/matmul_bf16.h"

#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/dnnl_exec.h"
#include "core/error.h"
#include "core/tensor.h"

#define CACHE 16

typedef struct {
    int rows, in, out, has_bias; /* a dense layer: W (out, in) read transposed (tag ba) */
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, bia, dst, scratch; /* bufferless: handles set per call */
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t eng;
static dnnl_stream_t stream;
static int state; /* 0: not tried, 1: ready, -1: oneDNN unusable */
static entry cache[CACHE];
static int n_cache, next_evict;
static void *scratch_buf;
static size_t scratch_cap;

/* AVX512-BF16's conversion, 16 floats per instruction: round to nearest even as uf_bf16_of, but
 * denormals (below 1.2e-38) become zero. The bf16 paths run only where the CPU has it. */
__attribute__((target("avx512f,avx512bf16"))) static void to_bf16_avx512(const float *src, uint16_t *dst,
                                                                          size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        memcpy(dst + i, &v, sizeof v);
    }
    for (; i < n; i++) dst[i] = uf_bf16_of(src[i]);
}

void uf_to_bf16_serial(const float *src, uint16_t *dst, size_t n) {
    static int has = -1; /* a benign race: every thread computes the same value */
    if (has < 0) has = __builtin_cpu_supports("avx512bf16") != 0;
    if (has) {
        to_bf16_avx512(src, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = uf_bf16_of(src[i]);
}

void uf_to_bf16(const float *src, uint16_t *dst, size_t n) {
    const size_t chunk = 32768;
#pragma omp parallel for schedule(static) if (n > 2 * chunk)
    for (size_t c = 0; c < n; c += chunk) uf_to_bf16_serial(src + c, dst + c, n - c < chunk ? n - c : chunk);
}

static void entry_free(entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    dnnl_memory_t *m[] = {&e->src, &e->wei, &e->bia, &e->dst, &e->scratch};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        if (*m[i]) dnnl_memory_destroy(*m[i]);
    memset(e, 0, sizeof *e);
}

/* With the lock held: the cached primitive for this shape, or a new one; NULL on failure. */
static entry *get(int rows, int in, int out, int has_bias) {
    for (int i = 0; i < n_cache; i++)
        if (cache[i].rows == rows && cache[i].in == in && cache[i].out == out && cache[i].has_bias == has_bias)
            return &cache[i];
    entry *e = n_cache < CACHE ? &cache[n_cache++] : &cache[next_evict++ % CACHE];
    entry_free(e);
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    const dnnl_dims_t sd = {rows, in}, wd = {in, out}, bd = {1, out}, dd = {rows, out};
    int ok = dnnl_memory_desc_init_by_tag(&smd, 2, sd, dnnl_bf16, dnnl_ab) == dnnl_success &&
             /* W (out, in) row-major is the (in, out) matrix with strides (1, in): tag ba */
             dnnl_memory_desc_init_by_tag(&wmd, 2, wd, dnnl_bf16, dnnl_ba) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab) == dnnl_success;
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    ok = ok && dnnl_matmul_desc_init(&md, &smd, &wmd, has_bias ? &bmd : NULL, &dmd) == dnnl_success &&
         dnnl_primitive_attr_create(&attr) == dnnl_success &&
         dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
         dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL) == dnnl_success;
    if (attr) dnnl_primitive_attr_destroy(attr);
    const dnnl_memory_desc_t *scr = ok ? dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) : NULL;
    ok = ok && dnnl_primitive_create(&e->prim, pd) == dnnl_success &&
         dnnl_memory_create(&e->src, &smd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
         dnnl_memory_create(&e->wei, &wmd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
         dnnl_memory_create(&e->dst, &dmd, eng, DNNL_MEMORY_NONE) == dnnl_success &&
         (!has_bias || dnnl_memory_create(&e->bia, &bmd, eng, DNNL_MEMORY_NONE) == dnnl_success) &&
         (!scr || dnnl_memory_desc_get_size(scr) == 0 ||
          dnnl_memory_create(&e->scratch, scr, eng, DNNL_MEMORY_NONE) == dnnl_success);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (!ok) {
        entry_free(e);
        uf_error("bf16 matmul %dx%d x %dx%d: oneDNN has no kernel for it here", rows, in, in, out);
        return NULL;
    }
    e->rows = rows, e->in = in, e->out = out, e->has_bias = has_bias;
    return e;
}

/* Runs the cached product for the shape on bf16 x16, w16 (and f32 bias b) into y. */
static int run_product(int rows, int in, int out, const uint16_t *x16, const uint16_t *w16, const float *b, float *y) {
    pthread_mutex_lock(&lock);
    if (state == 0)
        state = dnnl_engine_create(&eng, dnnl_cpu, 0) == dnnl_success &&
                        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) == dnnl_success
                    ? 1
                    : -1;
    entry *e = state == 1 ? get(rows, in, out, b != NULL) : NULL;
    int rc = UF_ERR;
    if (state != 1) uf_error("bf16 matmul: oneDNN unusable");
    if (e) {
        dnnl_exec_arg_t a[5];
        int na = 0;
        dnnl_memory_set_data_handle(e->src, (void *)x16);
        dnnl_memory_set_data_handle(e->wei, (void *)w16);
        dnnl_memory_set_data_handle(e->dst, y);
        a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, e->src};
        a[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, e->wei};
        a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, e->dst};
        if (b) {
            dnnl_memory_set_data_handle(e->bia, (void *)b);
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->bia};
        }
        int ok = 1;
        if (e->scratch) {
            const dnnl_memory_desc_t *md = NULL;
            dnnl_memory_get_memory_desc(e->scratch, &md);
            const size_t need = dnnl_memory_desc_get_size(md);
            if (need > scratch_cap) {
                uf_free(scratch_buf);
                scratch_cap = (scratch_buf = uf_alloc(need)) ? need : 0;
            }
            ok = scratch_buf != NULL;
            if (ok) {
                dnnl_memory_set_data_handle(e->scratch, scratch_buf);
                a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->scratch};
            }
        }
        if (!ok)
            uf_error("bf16 matmul: out of memory");
        else if (uf_dnnl_execute(e->prim, stream, na, a) != dnnl_success)
            uf_error("bf16 matmul %dx%d x %dx%d: oneDNN failed", rows, in, in, out);
        else
            rc = UF_OK;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

int uf_linear_bf16_in(const uint16_t *x16, int rows, int in, const uint16_t *w16, const float *b, int out, float *y) {
    return run_product(rows, in, out, x16, w16, b, y);
}

int uf_linear_bf16(const float *x, int rows, int in, const uint16_t *w16, const float *b, int out, float *y,
                   uint16_t *x16) {
    uf_to_bf16(x, x16, (size_t)rows * in);
    return uf_linear_bf16_in(x16, rows, in, w16, b, out, y);
}
