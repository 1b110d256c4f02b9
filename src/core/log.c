#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static uf_log_fn g_log_fn;
static void *g_log_user;

void uf_set_log_callback(uf_log_fn fn, void *user) {
    pthread_mutex_lock(&g_log_lock);
    g_log_fn = fn, g_log_user = user;
    pthread_mutex_unlock(&g_log_lock);
}

int uf_log_enabled(void) {
    pthread_mutex_lock(&g_log_lock);
    int on = g_log_fn != NULL;
    pthread_mutex_unlock(&g_log_lock);
    return on;
}

void uf_log(uf_log_level level, const char *fmt, ...) {
    char line[2048]; /* longer messages are cut */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_log_lock);
    if (g_log_fn) g_log_fn((int)level, line, g_log_user);
    pthread_mutex_unlock(&g_log_lock);
}
