#include "core/error.h"

#include <stdarg.h>
#include <string.h>

#define UF_ERROR_CAP 1024

static _Thread_local char g_error[UF_ERROR_CAP];

int uf_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return UF_ERR;
}

int uf_error_prefix(const char *fmt, ...) {
    char prefix[UF_ERROR_CAP];
    char old[UF_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_error, sizeof old);
    size_t n = strlen(prefix);
    if (n > UF_ERROR_CAP - 3) n = UF_ERROR_CAP - 3;
    memcpy(g_error, prefix, n);
    memcpy(g_error + n, ": ", 2);
    size_t rest = UF_ERROR_CAP - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(g_error + n + 2, old, m);
    g_error[n + 2 + m] = '\0';
    return UF_ERR;
}

const char *uf_last_error(void) { return g_error; }

void uf_error_clear(void) { g_error[0] = '\0'; }
