/* file_hash.h - SHA-256 of a file (via Debian's nettle), as 64 hex digits. */
#ifndef UF_IO_FILE_HASH_H
#define UF_IO_FILE_HASH_H

int uf_sha256_file(const char *path, char hex[65]);

#endif
