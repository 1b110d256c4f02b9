/* blas.h - the one GEMM entry point, backed by OpenBLAS loaded at run time.
 *
 * Why run-time loading: Debian's OpenBLAS (0.3.21) misdetects recent AVX-512
 * CPUs as "Prescott" and then runs 5-8x slow. It reads OPENBLAS_CORETYPE only
 * once, when the shared library is loaded. So uf_blas_init() first picks the
 * core type from this CPU's features (unless the user set OPENBLAS_CORETYPE),
 * then dlopen()s the library. Every program and library user gets the fast
 * kernels without doing anything.
 *
 * All matrices are row-major. uf_sgemm computes
 *     C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
 * with op(X) = X or X^T. It initialises BLAS on first use; if no BLAS can be
 * loaded it computes the product with uf_sgemm_ref (slowly) after one log warning.
 * Entry points call uf_blas_init() first, so that a missing OpenBLAS is reported
 * to the user as an error.
 */
#ifndef UF_CORE_BLAS_H
#define UF_CORE_BLAS_H

#include <stdbool.h>

/* Loads OpenBLAS (idempotent, thread-safe). UF_OK or UF_ERR with a message. */
int uf_blas_init(void);

/* The kernel family OpenBLAS uses, e.g. "SkylakeX" ("none" before init). */
const char *uf_blas_corename(void);
/* Which library file was loaded, and the OPENBLAS_CORETYPE we chose ("" if the user's was kept). */
const char *uf_blas_library(void);
const char *uf_blas_coretype_chosen(void);

void uf_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);

/* Slow, obviously correct reference with the same contract, for tests. */
void uf_sgemm_ref(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc);

/* Wall-clock seconds spent inside uf_sgemm and its FLOPs (2*m*n*k) since
 * the last reset, for "share of time in GEMM" reports. */
double uf_gemm_seconds(void);
double uf_gemm_flops(void);
void uf_gemm_counters_reset(void);

/* Threads for BLAS and for uflow's own OpenMP loops. n <= 0: all cores. */
void uf_set_num_threads(int n);
int uf_get_num_threads(void);

#endif
