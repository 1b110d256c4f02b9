#define _GNU_SOURCE /* syncfs */
#include "io/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

int uf_atomic_begin(uf_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    if (strlen(path) >= sizeof af->path) return uf_error("%s: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp_path, sizeof af->tmp_path, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(af->tmp_path);
    if (fd < 0) return uf_error("%s: cannot create a temporary file beside it: %s", path, strerror(errno));
    /* mkstemp makes the file 0600: give it the destination's mode, or 0644 for a new file. */
    struct stat st;
    mode_t mode = (stat(path, &st) == 0 && S_ISREG(st.st_mode)) ? (st.st_mode & 07777) : 0644;
    if (fchmod(fd, mode) != 0) {
        int e = errno;
        close(fd);
        unlink(af->tmp_path);
        return uf_error("%s: cannot set the file mode: %s", path, strerror(e));
    }
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        int e = errno;
        close(fd);
        unlink(af->tmp_path);
        return uf_error("%s: %s", path, strerror(e));
    }
    return UF_OK;
}

int uf_atomic_write(uf_atomic_file *af, const void *data, size_t n) {
    if (af->failed) return UF_ERR;
    if (n && fwrite(data, 1, n, af->fp) != n) {
        af->failed = 1;
        return uf_error("%s: write failed: %s", af->path, strerror(errno));
    }
    return UF_OK;
}

void uf_atomic_abort(uf_atomic_file *af) {
    if (af->fp) fclose(af->fp);
    af->fp = NULL;
    unlink(af->tmp_path);
}

/* Fault injection for the crash-safety tests: with UFLOW_FAULT_KILL_AT_COMMIT=N
 * in the environment, the N-th commit of this process cuts its temporary file
 * to half its length and kills the process with SIGKILL, as a power cut or an
 * OOM kill in the middle of writing would. */
static void fault_kill_at_commit(FILE *fp) {
    static int commits;
    const char *v = getenv("UFLOW_FAULT_KILL_AT_COMMIT");
    if (!v || atoi(v) != ++commits) return;
    fflush(fp);
    off_t len = lseek(fileno(fp), 0, SEEK_END);
    if (len > 0 && ftruncate(fileno(fp), len / 2) != 0) perror("fault injection: ftruncate");
    raise(SIGKILL);
}

int uf_atomic_commit_as(uf_atomic_file *af, int durable) {
    fault_kill_at_commit(af->fp);
    if (af->failed || ferror(af->fp)) {
        uf_atomic_abort(af);
        return uf_error("%s: write failed", af->path);
    }
    if (fflush(af->fp) != 0 || (durable && fsync(fileno(af->fp)) != 0)) {
        int e = errno;
        uf_atomic_abort(af);
        return uf_error("%s: write failed: %s", af->path, strerror(e));
    }
    if (fclose(af->fp) != 0) {
        int e = errno;
        af->fp = NULL;
        unlink(af->tmp_path);
        return uf_error("%s: write failed: %s", af->path, strerror(e));
    }
    af->fp = NULL;
    if (rename(af->tmp_path, af->path) != 0) {
        int e = errno;
        unlink(af->tmp_path);
        return uf_error("%s: cannot rename the temporary file into place: %s", af->path, strerror(e));
    }
    return UF_OK;
}

int uf_atomic_commit(uf_atomic_file *af) { return uf_atomic_commit_as(af, 1); }

int uf_sync_filesystem(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return uf_error("%s: cannot open to sync: %s", path, strerror(errno));
    int rc = syncfs(fd);
    int e = errno;
    close(fd);
    return rc == 0 ? UF_OK : uf_error("%s: sync failed: %s", path, strerror(e));
}

int uf_write_file_atomic_as(const char *path, const void *data, size_t n, int durable) {
    uf_atomic_file af;
    if (uf_atomic_begin(&af, path) != UF_OK) return UF_ERR;
    if (uf_atomic_write(&af, data, n) != UF_OK) {
        uf_atomic_abort(&af);
        return UF_ERR;
    }
    return uf_atomic_commit_as(&af, durable);
}

int uf_write_file_atomic(const char *path, const void *data, size_t n) {
    return uf_write_file_atomic_as(path, data, n, 1);
}

int uf_make_dirs(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return uf_error("bad folder path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return uf_error("cannot create folder '%s': %s", buf, strerror(errno));
        struct stat st;
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) return uf_error("'%s' exists and is not a folder", buf);
        buf[i] = saved;
    }
    return UF_OK;
}
