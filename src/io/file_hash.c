#include "io/file_hash.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "io/atomic_file.h"

void uf_sha256_init(uf_sha256_ctx *ctx) { sha256_init(ctx); }

void uf_sha256_update(uf_sha256_ctx *ctx, const void *data, size_t n) { sha256_update(ctx, n, data); }

void uf_sha256_hex(uf_sha256_ctx *ctx, char hex[65]) {
    unsigned char digest[SHA256_DIGEST_SIZE];
    sha256_digest(ctx, sizeof digest, digest);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

int uf_sha256_file(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return uf_error("%s: %s", path, strerror(errno));
    /* a model file names this path: /dev/zero or a FIFO would never end */
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return uf_error("%s: not a regular file", path);
    }
    uf_sha256_ctx ctx;
    uf_sha256_init(&ctx);
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) uf_sha256_update(&ctx, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) return uf_error("%s: read error", path);
    uf_sha256_hex(&ctx, hex);
    return UF_OK;
}

/* The cache file's path into out; 0 when caching is off or no folder can be named. */
static int cache_path(char *out, size_t cap) {
    const char *dir = getenv("UFLOW_CACHE_DIR");
    if (dir && !strcmp(dir, "off")) return 0;
    int n;
    if (dir && *dir) {
        n = snprintf(out, cap, "%s/sha256", dir);
    } else if ((dir = getenv("XDG_CACHE_HOME")) && *dir) {
        n = snprintf(out, cap, "%s/uflow/sha256", dir);
    } else if ((dir = getenv("HOME")) && *dir) {
        n = snprintf(out, cap, "%s/.cache/uflow/sha256", dir);
    } else {
        return 0;
    }
    return n > 0 && (size_t)n < cap;
}

/* One cache line's key: what identifies this version of the file. */
static void file_key(const struct stat *sb, char *out, size_t cap) {
    snprintf(out, cap, "%llu %llu %lld %lld.%09ld %lld.%09ld", (unsigned long long)sb->st_dev,
             (unsigned long long)sb->st_ino, (long long)sb->st_size, (long long)sb->st_mtim.tv_sec,
             sb->st_mtim.tv_nsec, (long long)sb->st_ctim.tv_sec, sb->st_ctim.tv_nsec);
}

static int is_hex64(const char *s) {
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[64] == '\0' || s[64] == '\n';
}

/* Appends line to lines[0..*n), dropping the oldest when all UF_HASH_CACHE_ENTRIES are taken. */
static void push_line(char lines[][256], int *n, const char *line) {
    if (*n == UF_HASH_CACHE_ENTRIES) {
        memmove(lines[0], lines[1], sizeof lines[0] * (UF_HASH_CACHE_ENTRIES - 1));
        (*n)--;
    }
    snprintf(lines[(*n)++], sizeof lines[0], "%s", line);
}

int uf_sha256_file_cached(const char *path, char hex[65]) {
    char cpath[4096], key[160];
    struct stat sb;
    if (!cache_path(cpath, sizeof cpath) || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return uf_sha256_file(path, hex);
    file_key(&sb, key, sizeof key);
    const size_t klen = strlen(key);
    /* Lines "<key> <sha256>", newest last. */
    char lines[UF_HASH_CACHE_ENTRIES][256];
    int n = 0;
    FILE *f = fopen(cpath, "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (strlen(line) < klen + 66 || line[strlen(line) - 1] != '\n') continue; /* not ours: skip */
            if (!strncmp(line, key, klen) && line[klen] == ' ' && is_hex64(line + klen + 1)) {
                memcpy(hex, line + klen + 1, 64);
                hex[64] = '\0';
                fclose(f);
                return UF_OK;
            }
            push_line(lines, &n, line);
        }
        fclose(f);
    }
    if (uf_sha256_file(path, hex) != UF_OK) return UF_ERR;
    struct stat after;
    if (stat(path, &after) != 0 || after.st_mtim.tv_nsec != sb.st_mtim.tv_nsec ||
        after.st_mtim.tv_sec != sb.st_mtim.tv_sec || after.st_size != sb.st_size)
        return UF_OK; /* changed while hashed: do not remember */
    char entry[256];
    snprintf(entry, sizeof entry, "%s %s\n", key, hex);
    push_line(lines, &n, entry);
    /* Best effort: a cache that cannot be written only costs the next hash. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", cpath);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    if (uf_make_dirs(dir) == UF_OK) {
        uf_atomic_file af;
        if (uf_atomic_begin(&af, cpath) == UF_OK) {
            for (int i = 0; i < n; i++) fputs(lines[i], af.fp);
            uf_atomic_commit(&af);
        }
    }
    return UF_OK;
}
