/* harness.h - a tiny test harness.
 *
 * A test file defines `static void test_xxx(void)` functions that use CHECK*,
 * and a main() that runs them:
 *     int main(void) { UF_TEST(test_xxx); UF_TEST(test_yyy); return uf_test_summary(); }
 * A test passes when none of its checks failed. Each binary ends with the line
 * "RESULT <passed> <failed>" that tests/run_all.sh adds up; run it from the
 * repository root (tests read tests/data/).
 */
#ifndef UF_TESTS_HARNESS_H
#define UF_TESTS_HARNESS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int uf_test_check_failures;

void uf_test_run(const char *name, void (*fn)(void));
int uf_test_summary(void);
/* A fresh empty directory under /tmp for this test binary (removed at exit). */
const char *uf_test_tmpdir(void);
/* Joins uf_test_tmpdir() and name into a static buffer (valid until the next call). */
const char *uf_test_path(const char *name);

/* Runs the `uflow` program built beside this test binary (build[/variant]/uflow)
 * with the NULL-terminated argument list args (without argv[0]); stdout and
 * stderr go to the files out_path and err_path. Returns the exit status, or -1
 * when it could not run or died of a signal. */
int uf_test_run_uflow(const char *const *args, const char *out_path, const char *err_path);
/* Path of the uflow program beside this test binary; 0, or -1 if not built. */
int uf_test_uflow_path(char *prog, size_t cap);
/* uf_test_run_uflow with more control over the child process. */
typedef struct uf_test_run_opts {
    const char *const *env; /* NULL-terminated "NAME=value" settings for the child, or NULL */
    long fsize_limit;       /* > 0: RLIMIT_FSIZE of the child in bytes (a "disk" that fills up) */
    int unprivileged;       /* 1: when run as root, the child drops to uid/gid 65534 (nobody), so
                               file permissions apply to it */
    const char *program;    /* NULL: the uflow beside the test binary; else this executable */
    const char *cwd;        /* NULL: the test's working directory; else the child's */
    int term_signal;        /* out: the signal that killed the child, or 0 */
    long max_rss_kb;        /* out: the child's peak resident memory (KiB) */
} uf_test_run_opts;
int uf_test_run_uflow_opts(const char *const *args, const char *out_path, const char *err_path,
                           uf_test_run_opts *opts);
/* Number of leftover temporary files ("*.tmp.*", as io/atomic_file names them) in dir; -1 if unreadable. */
int uf_test_count_temp_files(const char *dir);
/* Reads a whole file into a NUL-terminated malloc'd string (NULL if missing). */
char *uf_test_read_text(const char *path);
/* Writes n bytes to path (a failed check when it cannot). */
void uf_test_write_file(const char *path, const void *data, size_t n);
/* Copies a file; 0 on success. */
int uf_test_copy_file(const char *from, const char *to);
/* The CRC-32 of PNG chunks (and zlib), for hand-made PNG files. */
uint32_t uf_test_crc32(const unsigned char *p, size_t n);
/* 1 when both files exist and hold the same bytes. */
int uf_test_files_equal(const char *a, const char *b);
/* Number of '\n' in text (0 for NULL). */
int uf_test_count_lines(const char *text);

#define UF_TEST(fn) uf_test_run(#fn, fn)

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fputc('\n', stderr);                                                    \
            uf_test_check_failures++;                                               \
        }                                                                           \
    } while (0)

/* |a - b| <= atol + rtol * |b|, with b the reference. */
#define CHECK_CLOSE(a, b, atol, rtol)                                                      \
    do {                                                                                   \
        double ck_a_ = (double)(a), ck_b_ = (double)(b);                                   \
        CHECK(fabs(ck_a_ - ck_b_) <= (atol) + (rtol) * fabs(ck_b_), "%s = %.9g, %s = %.9g", \
              #a, ck_a_, #b, ck_b_);                                                       \
    } while (0)

/* Float rounding of a dot product (GEMM, convolution) of k terms, in any summation order,
 * blocking or FMA use, as a kernel family may choose: |fl(sum) - sum| <= c * sum |a_i b_i| with
 * c = gamma_k ~ k u, u = 2^-24 (deterministic; Higham, Accuracy and Stability of Numerical
 * Algorithms, 3.1), or the probabilistic 8 sqrt(k) u when smaller (rounding errors independent
 * with mean zero: holds with probability >= 1 - 2 exp(-32) per value; Higham & Mary, SIAM J. Sci.
 * Comput. 41, 2019), plus 3u for the alpha/beta scaling and the final roundings of the result
 * and of a double-accumulating reference. Returns c. */
/* max |a - ref| / max |ref| over n values: an error relative to the tensor's scale. */
static inline double uf_test_scaled_max_err(const float *a, const float *ref, size_t n) {
    double scale = 1e-30, err = 0.0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(ref[i]));
        err = fmax(err, fabs((double)a[i] - ref[i]));
    }
    return err / scale;
}
static inline double uf_test_dot_tol(double k) { return (fmin(k, 8.0 * sqrt(k)) + 3.0) * 0x1p-24; }
/* Largest |a - b| / (tol(k) * mag) over n values: the error in units of the dot-product rounding
 * bound above, mag = each value's sum of |terms| (the reference run on absolute values). */
static inline double uf_test_dot_err(const float *a, const float *b, const float *mag, size_t n, double k) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]) / (uf_test_dot_tol(k) * mag[i] + 1e-300));
    return worst;
}
/* |x[0..n)| in a new array (free with uf_free, core/tensor.h). */
float *uf_test_abs_copy(const float *x, size_t n);

#endif
