#include "io/file_hash.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"

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
