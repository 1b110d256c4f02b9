/* watch.c - `uflow watch` (see watch.h). Only the public API (uflow.h) reaches the model. */
#define _GNU_SOURCE /* F_SETLEASE */
#include "serve/watch.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* the model is reached through uflow.h only; these are plain data, the file-name rule and formatting */
#include "core/strset.h"
#include "io/dataset.h"
#include "io/result_rows.h"
#include "uflow.h"

/* ---- the watcher ---------------------------------------------------------------- */

typedef struct {
    const uf_watch_options *o;
    uflow_model *m;
    uf_strset taken, stems;
    int journal;      /* results.jsonl, O_APPEND */
    FILE *csv;        /* results.csv, appended */
    /* files seen by a scan but not settled yet: name, size, mtime at the last look */
    struct pending {
        char *name;
        off_t size;
        struct timespec mtime;
        double since;
    } *pend;
    int n_pend, cap_pend;
    int n_done, n_failed;
} watcher;

/* Prints "uflow watch: error: <fmt ...>" as one line; returns 1. */
__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "uflow watch: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The files taken: not hidden, with an extension the folder scans of uflow predict take. */
static int is_image_name(const char *name) { return name[0] != '.' && uf_has_image_ext(name); }

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Reads the journal (OUT/results.jsonl): cuts a torn last line, records the names and stems
 * it lists, rewrites results.csv from it, and leaves both open for appending. */
static int open_journal(watcher *w) {
    char path[4200], csv_path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/results.jsonl", w->o->out);
    snprintf(csv_path, sizeof csv_path, "%s/results.csv", w->o->out);
    w->journal = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w->journal < 0) return fail("cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(w->journal, &st) != 0) return fail("cannot read '%s': %s", path, strerror(errno));
    char *text = malloc((size_t)st.st_size + 1);
    if (!text) return fail("out of memory reading '%s'", path);
    size_t len = 0;
    while (len < (size_t)st.st_size) {
        ssize_t r = pread(w->journal, text + len, (size_t)st.st_size - len, (off_t)len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    text[len] = '\0';
    size_t keep = len;
    while (keep && text[keep - 1] != '\n') keep--; /* a torn last line: its image is taken again */
    if (keep != len && ftruncate(w->journal, (off_t)keep) != 0) {
        free(text);
        return fail("cannot cut the torn last line of '%s': %s", path, strerror(errno));
    }
    text[keep] = '\0';
    snprintf(tmp, sizeof tmp, "%s.tmp", csv_path);
    FILE *csv = fopen(tmp, "w");
    if (!csv) {
        free(text);
        return fail("cannot write '%s': %s", tmp, strerror(errno));
    }
    fputs(UF_RESULTS_CSV_HEADER, csv);
    int rc = 0;
    for (char *line = text, *next; *line && !rc; line = next) {
        next = strchr(line, '\n');
        *next++ = '\0';
        cJSON *o = cJSON_Parse(line);
        uf_result_row row;
        if (!o || uf_result_row_from_json(o, &row) != 0) {
            rc = fail("'%s': a line is not a results row: %.80s", path, line);
        } else {
            uf_result_row_csv(csv, &row);
            if (uf_strset_add(&w->taken, base_name(row.image)) < 0 ||
                (row.outputs && uf_strset_add(&w->stems, row.outputs) < 0))
                rc = fail("out of memory");
        }
        cJSON_Delete(o);
    }
    free(text);
    if (fflush(csv) != 0 || fsync(fileno(csv)) != 0) rc = rc ? rc : fail("cannot write '%s': %s", tmp, strerror(errno));
    fclose(csv);
    if (!rc && rename(tmp, csv_path) != 0) rc = fail("cannot replace '%s': %s", csv_path, strerror(errno));
    if (!rc && !(w->csv = fopen(csv_path, "a"))) rc = fail("cannot open '%s': %s", csv_path, strerror(errno));
    return rc;
}

/* 1 when no other process has path open for writing (a read lease is granted), or when the
 * kernel cannot tell (not the file's owner, no lease support): then 1 too. */
static int not_being_written(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return 0;
    int ok = 1;
    if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0)
        fcntl(fd, F_SETLEASE, F_UNLCK);
    else if (errno == EAGAIN || errno == EBUSY)
        ok = 0;
    close(fd);
    return ok;
}

/* Predicts DIR/name, writes its outputs, commits its row. 0, or 1 after printing why the
 * watcher must stop (outputs or journal cannot be written). */
static int take(watcher *w, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", w->o->dir, name);
    /* the stem: the name without its extension, unless another image has it */
    char stem[1024];
    snprintf(stem, sizeof stem, "%s", name);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = '\0';
    if (uf_strset_has(&w->stems, stem)) {
        snprintf(stem, sizeof stem, "%s", name);
        for (char *c = stem; *c; c++)
            if (*c == '.') *c = '_';
    }
    uf_result_row row = {.image = path};
    char error[1024];
    uflow_result *r = uflow_predict_file(w->m, path, NULL);
    if (r) {
        if (uflow_result_write(r, w->o->out, stem, 0) != UFLOW_OK) {
            const int rc = fail("%s (the image is taken again at the next start)", uflow_last_error());
            uflow_result_free(r);
            return rc;
        }
        row.score = uflow_result_score(r), row.anomalous = uflow_result_anomalous(r);
        row.detected_pixels = uflow_result_detected_pixels(r);
        row.max_neg_log10_nfa = uflow_result_max_neg_log10_nfa(r);
        row.width = uflow_result_width(r), row.height = uflow_result_height(r), row.outputs = stem;
        uflow_result_free(r);
        w->n_done++;
    } else { /* predict's policy: a bad image gets a row with its error, and the others go on */
        snprintf(error, sizeof error, "%s", uflow_last_error());
        fprintf(stderr, "uflow watch: %s\n", error);
        row.error = error;
        w->n_failed++;
    }
    cJSON *o = uf_result_row_json(&row);
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text) return fail("out of memory");
    /* the commit: the whole line in one write, then fsync */
    const size_t n = strlen(text);
    text[n] = '\n';
    ssize_t wr = write(w->journal, text, n + 1);
    text[n] = '\0';
    int rc = 0;
    if (wr != (ssize_t)(n + 1) || fsync(w->journal) != 0) {
        /* a short write leaves a torn line: the next start cuts it */
        rc = fail("cannot append to results.jsonl in '%s': %s", w->o->out, strerror(errno ? errno : EIO));
    } else {
        uf_result_row_csv(w->csv, &row);
        fflush(w->csv);
        if (uf_strset_add(&w->taken, name) < 0 || uf_strset_add(&w->stems, stem) < 0) rc = fail("out of memory");
    }
    cJSON_free(text);
    return rc;
}

/* Scans DIR: files not taken become pending (taken once settled). */
static int scan(watcher *w) {
    DIR *d = opendir(w->o->dir);
    if (!d) return fail("cannot read the folder '%s': %s", w->o->dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_image_name(e->d_name) || uf_strset_has(&w->taken, e->d_name)) continue;
        int known = 0;
        for (int i = 0; i < w->n_pend && !known; i++) known = !strcmp(w->pend[i].name, e->d_name);
        if (known) continue;
        if (w->n_pend == w->cap_pend) {
            int cap = w->cap_pend ? 2 * w->cap_pend : 64;
            void *p = realloc(w->pend, sizeof *w->pend * (size_t)cap);
            if (!p) break;
            w->pend = p, w->cap_pend = cap;
        }
        struct pending *p = &w->pend[w->n_pend];
        memset(p, 0, sizeof *p);
        if (!(p->name = strdup(e->d_name))) break;
        p->size = -1;
        w->n_pend++;
    }
    closedir(d);
    return 0;
}

/* Takes the pending files that have settled, in name order of arrival; drops vanished ones. */
static int take_settled(watcher *w) {
    const double t = now_s();
    for (int i = 0; i < w->n_pend; i++) {
        struct pending *p = &w->pend[i];
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", w->o->dir, p->name);
        struct stat st;
        int drop = uf_strset_has(&w->taken, p->name) || stat(path, &st) != 0 || !S_ISREG(st.st_mode);
        if (!drop && (st.st_size != p->size || st.st_mtim.tv_sec != p->mtime.tv_sec ||
                      st.st_mtim.tv_nsec != p->mtime.tv_nsec)) { /* changed: look again later */
            p->size = st.st_size, p->mtime = st.st_mtim, p->since = t;
            continue;
        }
        if (!drop) {
            /* an empty file is one being created: its close will be reported (with once, nothing
             * more will come: it is taken, and gets predict's error row) */
            if ((t - p->since) * 1000.0 < w->o->settle_ms || (st.st_size == 0 && !w->o->once) ||
                !not_being_written(path))
                continue;
            if (take(w, p->name)) return 1;
        }
        free(p->name);
        w->pend[i--] = w->pend[--w->n_pend];
    }
    return 0;
}

int uf_watch_run(const uf_watch_options *o) {
    watcher w;
    memset(&w, 0, sizeof w);
    w.o = o;
    w.journal = -1;
    struct stat st;
    if (stat(o->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return fail("'%s' is not a folder%s", o->dir, errno == ENOENT ? " (it does not exist)" : "");
    if (mkdir(o->out, 0755) != 0 && errno != EEXIST) return fail("cannot make '%s': %s", o->out, strerror(errno));
    if (o->threads > 0) uflow_set_threads(o->threads);
    if (!(w.m = uflow_model_load(o->model, o->weights))) return fail("%s", uflow_last_error());
    int rc = 0;
    if (o->precision && uflow_model_set_precision(w.m, o->precision) != UFLOW_OK) rc = fail("%s", uflow_last_error());
    /* the watch first, then the scan: a file closed in between is in both, taken once */
    int in = rc ? -1 : inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (!rc && (in < 0 || inotify_add_watch(in, o->dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF) < 0))
        rc = fail("cannot watch '%s': %s", o->dir, strerror(errno));
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    int sfd = rc ? -1 : signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (!rc && sfd < 0) rc = fail("signalfd: %s", strerror(errno));
    if (!rc) rc = open_journal(&w);
    if (!rc) rc = scan(&w);
    if (!rc && !o->once) {
        printf("watching %s: %zu images already done; outputs in %s\n", o->dir, w.taken.n, o->out);
        fflush(stdout);
    }
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    while (!rc) {
        if (take_settled(&w)) {
            rc = 1;
            break;
        }
        if (o->once && !w.n_pend) break;
        struct pollfd pf[2] = {{in, POLLIN, 0}, {sfd, POLLIN, 0}};
        const int timeout = w.n_pend ? (o->settle_ms < 50 ? 50 : o->settle_ms / 2) : -1;
        if (poll(pf, 2, timeout) < 0 && errno != EINTR) {
            rc = fail("poll: %s", strerror(errno));
            break;
        }
        if (pf[1].revents & POLLIN) break; /* SIGINT / SIGTERM: the image in progress was finished */
        if (!(pf[0].revents & POLLIN)) continue;
        ssize_t len;
        while (!rc && (len = read(in, buf, sizeof buf)) > 0) {
            for (char *p = buf; p < buf + len && !rc;) {
                const struct inotify_event *ev = (const struct inotify_event *)p;
                p += sizeof *ev + ev->len;
                if (ev->mask & IN_Q_OVERFLOW) {
                    rc = scan(&w); /* events were lost: look at the folder itself */
                } else if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
                    rc = fail("the folder '%s' was removed or moved away", o->dir);
                } else if (ev->len && is_image_name(ev->name) && !uf_strset_has(&w.taken, ev->name)) {
                    /* its writer closed it, or it was renamed in whole: take it now */
                    char path[4200];
                    snprintf(path, sizeof path, "%s/%s", o->dir, ev->name);
                    struct stat fs;
                    if (stat(path, &fs) == 0 && S_ISREG(fs.st_mode) && fs.st_size > 0) rc = take(&w, ev->name);
                }
            }
        }
    }
    if (!rc || w.n_done || w.n_failed)
        fprintf(stderr, "uflow watch: %d images predicted, %d unreadable (rows with their error)\n", w.n_done, w.n_failed);
    if (in >= 0) close(in);
    if (sfd >= 0) close(sfd);
    if (w.journal >= 0) close(w.journal);
    if (w.csv) fclose(w.csv);
    for (int i = 0; i < w.n_pend; i++) free(w.pend[i].name);
    free(w.pend);
    uf_strset_free(&w.taken), uf_strset_free(&w.stems);
    uflow_model_free(w.m);
    return rc;
}
