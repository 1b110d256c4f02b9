/* file_hash.h - SHA-256 (via Debian's nettle) of a file or of a stream of
 * buffers, as 64 hex digits. */
#ifndef UF_IO_FILE_HASH_H
#define UF_IO_FILE_HASH_H

#include <nettle/sha2.h>
#include <stddef.h>

/* hex: 64 digits + NUL. A path that is not a regular file (a folder,
 * /dev/zero, a FIFO) is an error, so that hashing always ends. */
int uf_sha256_file(const char *path, char hex[65]);

/* uf_sha256_file through a cache of earlier results, for files hashed again and again (a
 * model's backbone weights at every load: 45 MB, 100+ ms). An entry is used only when the
 * file's device, inode, size, mtime and ctime (nanoseconds) are all those recorded with it:
 * a file rewritten in any way (ctime cannot be set back) is hashed again. The cache is
 * $UFLOW_CACHE_DIR/sha256 (default $XDG_CACHE_HOME/uflow, else ~/.cache/uflow), a text file
 * of at most UF_HASH_CACHE_ENTRIES lines, rewritten atomically; UFLOW_CACHE_DIR=off, or a
 * cache that cannot be read or written, means plain uf_sha256_file (never an error). It
 * guards against mistakes, not against someone who can write the user's cache folder. */
#define UF_HASH_CACHE_ENTRIES 64
int uf_sha256_file_cached(const char *path, char hex[65]);

/* Incremental hashing: init, update any number of times, then hex (which ends it). */
typedef struct sha256_ctx uf_sha256_ctx;
void uf_sha256_init(uf_sha256_ctx *ctx);
void uf_sha256_update(uf_sha256_ctx *ctx, const void *data, size_t n);
void uf_sha256_hex(uf_sha256_ctx *ctx, char hex[65]);

#endif
