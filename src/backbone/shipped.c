#define _GNU_SOURCE /* dladdr */
#include "backbone/shipped.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static char g_path[4200];

/* 1 and g_path = dir/rel/<file> when that is readable. */
static int try_dir(const char *dir, const char *rel) {
    if (!dir || !*dir) return 0;
    if ((size_t)snprintf(g_path, sizeof g_path, "%s%s/%s", dir, rel, UF_SHIPPED_WEIGHTS) >= sizeof g_path) return 0;
    return access(g_path, R_OK) == 0;
}

/* The folder of a file path, in buf ("" when it has none). */
static const char *folder_of(const char *file, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", file);
    char *slash = strrchr(buf, '/');
    if (!slash) return "";
    *slash = '\0';
    return buf;
}

static void find(void) {
    char dir[4096];
    if (try_dir(getenv("UFLOW_DATA_DIR"), "")) return;
    if (try_dir("models", "")) return;
    Dl_info info;
    if (dladdr((void *)uf_shipped_weights, &info) && info.dli_fname) {
        const char *d = folder_of(info.dli_fname, dir, sizeof dir);
        if (try_dir(d, "/../models") || try_dir(d, "/../share/uflow")) return;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        if (try_dir(folder_of(exe, dir, sizeof dir), "/../models")) return;
    }
    snprintf(g_path, sizeof g_path, "models/%s", UF_SHIPPED_WEIGHTS);
}

const char *uf_shipped_weights(void) {
    pthread_once(&g_once, find);
    return g_path;
}
