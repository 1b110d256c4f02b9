/* file_hash.h - SHA-256 of a file (via Debian's nettle), as 64 hex digits. */
#ifndef UF_IO_FILE_HASH_H
#define UF_IO_FILE_HASH_H

/* hex: 64 digits + NUL. A path that is not a regular file (a folder,
 * /dev/zero, a FIFO) is an error, so that hashing always ends. */
int uf_sha256_file(const char *path, char hex[65]);

#endif
