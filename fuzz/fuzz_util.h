/* fuzz_util.h - helpers shared by the libFuzzer targets in fuzz/ (header only).
 *
 * The parsers under test take file paths, so each target writes its input to
 * a file in a private temporary directory (created on first use under $TMPDIR
 * or /tmp, removed at exit) and calls the library on that path.
 * FUZZ_CHECK is an invariant check that aborts, so libFuzzer reports it as a
 * crash with the input that broke it.
 */
#ifndef UF_FUZZ_UTIL_H
#define UF_FUZZ_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* nftw */
#endif
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

#define FUZZ_CHECK(cond)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "%s:%d: fuzz invariant '%s' failed (last error: %s)\n", __FILE__,    \
                    __LINE__, #cond, uf_last_error());                                            \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

static char fuzz_dir_[512];

static inline int fuzz_rm_entry_(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(path); /* best effort: keep going */
    return 0;
}

/* Removes path and everything below it (symbolic links are not followed). */
static inline void fuzz_rm_tree(const char *path) { nftw(path, fuzz_rm_entry_, 16, FTW_DEPTH | FTW_PHYS); }

static inline void fuzz_cleanup_(void) {
    if (fuzz_dir_[0]) fuzz_rm_tree(fuzz_dir_);
}

/* The private temporary directory of this process. */
static inline const char *fuzz_tmpdir(void) {
    if (!fuzz_dir_[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_dir_, sizeof fuzz_dir_, "%s/uflow-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_dir_)) {
            perror("mkdtemp");
            abort();
        }
        atexit(fuzz_cleanup_);
    }
    return fuzz_dir_;
}

/* Writes data to <tmpdir>/<name> (replacing it) and returns the path (static buffer). */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    static char path[640];
    snprintf(path, sizeof path, "%s/%s", fuzz_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

/* A failed call must leave exactly one non-empty line in uf_last_error(). */
static inline void fuzz_check_error(void) {
    const char *e = uf_last_error();
    if (!e[0] || strchr(e, '\n') || strchr(e, '\r')) {
        fprintf(stderr, "fuzz: error message must be one non-empty line, got '%s'\n", e);
        abort();
    }
}

#endif
