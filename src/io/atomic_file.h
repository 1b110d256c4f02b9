/* atomic_file.h - write a file so that readers see either the old or the new
 * content, never a partial one: data goes to a temp file in the same
 * directory, which is fsync'ed and renamed over the destination on commit.
 * On any failure the temp file is removed and the destination is untouched.
 * The new file gets the mode of the file it replaces, or 0644. A process
 * killed while writing leaves the destination intact and a stale
 * "<path>.tmp.XXXXXX" beside it.
 *
 *   uf_atomic_file af;
 *   if (uf_atomic_begin(&af, path) != UF_OK) return UF_ERR;
 *   ... fwrite(..., af.fp) or uf_atomic_write(&af, buf, n) ...
 *   return uf_atomic_commit(&af);          // or uf_atomic_abort(&af)
 */
#ifndef UF_IO_ATOMIC_FILE_H
#define UF_IO_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

typedef struct uf_atomic_file {
    FILE *fp;
    char path[4096];
    char tmp_path[4096 + 16];
    int failed; /* set by uf_atomic_write on a short write */
} uf_atomic_file;

int uf_atomic_begin(uf_atomic_file *af, const char *path);
/* Writes n bytes; on error records it, sets the message and returns UF_ERR. */
int uf_atomic_write(uf_atomic_file *af, const void *data, size_t n);
/* Flushes, fsyncs, closes and renames; UF_ERR (and cleanup) if anything failed. */
int uf_atomic_commit(uf_atomic_file *af);
/* uf_atomic_commit, or with durable 0 the same without the fsync: readers still see the old
 * or the whole new file, but after a crash of the machine (not of the process) the new one
 * may be empty. For many small outputs: the caller makes them durable together with
 * uf_sync_filesystem before it publishes anything that refers to them. */
int uf_atomic_commit_as(uf_atomic_file *af, int durable);
/* syncfs(2) on the file system holding path: every write to it so far reaches the disk. */
int uf_sync_filesystem(const char *path);
void uf_atomic_abort(uf_atomic_file *af);

/* Whole-buffer convenience: writes data to path atomically (the _as form: durable as in
 * uf_atomic_commit_as). */
int uf_write_file_atomic(const char *path, const void *data, size_t n);
int uf_write_file_atomic_as(const char *path, const void *data, size_t n, int durable);

/* mkdir -p: path and every folder above it, each made when missing. UF_ERR + a message
 * naming the level that cannot be made or exists and is not a folder. */
int uf_make_dirs(const char *path);

#endif
