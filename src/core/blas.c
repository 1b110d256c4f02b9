#include "core/blas.h"

#include <dlfcn.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"

/* CBLAS enum values (fixed by the CBLAS standard); we do not include cblas.h
 * because nothing is linked against BLAS at build time. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta, float *c,
                               int ldc);
typedef char *(*corename_fn)(void);
typedef void (*set_threads_fn)(int);

static struct {
    pthread_once_t once;
    int status;
    char error[512];
    char library[256];
    char coretype[32];
    cblas_sgemm_fn sgemm;
    corename_fn corename;
    set_threads_fn set_threads;
} g_blas = {.once = PTHREAD_ONCE_INIT, .status = UF_ERR};

static uint64_t g_gemm_ns, g_gemm_flop;

/* OpenBLAS core type for this CPU, or NULL to let OpenBLAS decide. */
static const char *pick_coretype(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

static void blas_load(void) {
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (!user || !*user) {
        const char *pick = pick_coretype();
        if (pick) {
            setenv("OPENBLAS_CORETYPE", pick, 1);
            snprintf(g_blas.coretype, sizeof g_blas.coretype, "%s", pick);
        }
    }
    /* The OpenMP build shares libgomp's thread pool with uflow's own loops. */
    static const char *candidates[] = {
#ifdef UF_MULTIARCH
        "/usr/lib/" UF_MULTIARCH "/openblas-openmp/libopenblas.so.0",
        "/usr/lib/" UF_MULTIARCH "/openblas-pthread/libopenblas.so.0",
#endif
        "libopenblas.so.0",
        "libopenblas.so",
    };
    void *h = NULL;
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates && !h; i++) {
        h = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
        if (h) snprintf(g_blas.library, sizeof g_blas.library, "%s", candidates[i]);
    }
    if (!h) {
        snprintf(g_blas.error, sizeof g_blas.error,
                 "cannot load OpenBLAS (libopenblas.so.0): install it with 'apt-get install "
                 "libopenblas0-openmp'");
        return;
    }
    g_blas.sgemm = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
    g_blas.corename = (corename_fn)dlsym(h, "openblas_get_corename");
    g_blas.set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
    if (!g_blas.sgemm) {
        snprintf(g_blas.error, sizeof g_blas.error, "%s has no cblas_sgemm", g_blas.library);
        return;
    }
    g_blas.status = UF_OK;
}

int uf_blas_init(void) {
    pthread_once(&g_blas.once, blas_load);
    if (g_blas.status != UF_OK) return uf_error("%s", g_blas.error);
    return UF_OK;
}

const char *uf_blas_corename(void) {
    if (g_blas.status != UF_OK || !g_blas.corename) return "none";
    return g_blas.corename();
}

const char *uf_blas_library(void) { return g_blas.library; }
const char *uf_blas_coretype_chosen(void) { return g_blas.coretype; }

void uf_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (g_blas.status != UF_OK && uf_blas_init() != UF_OK) {
        /* No OpenBLAS: the public API's entry points report that as an error before
         * they get here; a direct caller of the internals gets correct, slow results and
         * one warning instead of an abort. */
        static int warned;
        if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
            uf_log(UF_LOG_WARNING, "%s; using a slow portable matrix product", g_blas.error);
        uf_sgemm_ref(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    double t0 = uf_now();
    g_blas.sgemm(CBLAS_ROW_MAJOR, trans_a ? CBLAS_TRANS : CBLAS_NO_TRANS,
                 trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    /* Counters in integer nanoseconds / flops so concurrent callers can add atomically. */
    __atomic_add_fetch(&g_gemm_ns, (uint64_t)((uf_now() - t0) * 1e9), __ATOMIC_RELAXED);
    __atomic_add_fetch(&g_gemm_flop, (uint64_t)2 * m * n * k, __ATOMIC_RELAXED);
}

double uf_gemm_seconds(void) { return 1e-9 * (double)__atomic_load_n(&g_gemm_ns, __ATOMIC_RELAXED); }
double uf_gemm_flops(void) { return (double)__atomic_load_n(&g_gemm_flop, __ATOMIC_RELAXED); }
void uf_gemm_counters_reset(void) {
    __atomic_store_n(&g_gemm_ns, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&g_gemm_flop, 0, __ATOMIC_RELAXED);
}

void uf_sgemm_ref(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int p = 0; p < k; p++) {
                float av = trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                float bv = trans_b ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                acc += (double)av * bv;
            }
            float *cv = &c[(size_t)i * ldc + j];
            *cv = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *cv));
        }
}

void uf_set_num_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    if (g_blas.status == UF_OK || uf_blas_init() == UF_OK)
        if (g_blas.set_threads) g_blas.set_threads(n);
}

int uf_get_num_threads(void) { return omp_get_max_threads(); }
