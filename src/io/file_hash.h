/* file_hash.h - SHA-256 (via Debian's nettle) of a file or of a stream of
 * buffers, as 64 hex digits. */
#ifndef UF_IO_FILE_HASH_H
#define UF_IO_FILE_HASH_H

#include <nettle/sha2.h>
#include <stddef.h>

/* hex: 64 digits + NUL. A path that is not a regular file (a folder,
 * /dev/zero, a FIFO) is an error, so that hashing always ends. */
int uf_sha256_file(const char *path, char hex[65]);

/* Incremental hashing: init, update any number of times, then hex (which ends it). */
typedef struct sha256_ctx uf_sha256_ctx;
void uf_sha256_init(uf_sha256_ctx *ctx);
void uf_sha256_update(uf_sha256_ctx *ctx, const void *data, size_t n);
void uf_sha256_hex(uf_sha256_ctx *ctx, char hex[65]);

#endif
