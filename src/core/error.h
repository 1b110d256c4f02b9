/* error.h - the library's two error channels.
 *
 * 1. Recoverable errors (bad input, I/O, allocation): a function returns a
 *    status (UF_OK / UF_ERR) or NULL after calling uf_error(), which stores one
 *    readable line in a thread-local buffer. The caller may add context with
 *    uf_error_prefix() and returns the failure upward; only the CLI prints it.
 * 2. Broken invariants (programming errors): UF_ASSERT prints file:line and
 *    aborts. Never use it for anything a user's input can trigger: it is the
 *    library's only abort (no exit(), no abort() on bad input; the public API,
 *    include/uflow.h, checks its arguments and returns errors).
 */
#ifndef UF_CORE_ERROR_H
#define UF_CORE_ERROR_H

#include <stdio.h>
#include <stdlib.h>

enum { UF_OK = 0, UF_ERR = -1 };

/* Sets the thread's last error message (printf-style). Always returns UF_ERR
 * so that `return uf_error(...)` reads naturally. */
int uf_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prepends "prefix: " to the current message, e.g. the file being read. */
int uf_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The thread's last error message ("" when none). */
const char *uf_last_error(void);

void uf_error_clear(void);

#define UF_ASSERT(cond)                                                                \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: internal error: assertion '%s' failed\n", __FILE__, \
                    __LINE__, #cond);                                                  \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#endif
