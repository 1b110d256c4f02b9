#include "model/pipeline.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/log.h"

typedef struct job {
    int index;
    uf_pending_result p;
} job;

typedef struct pipeline {
    uf_model *m;
    uf_pipeline_consume_fn consume;
    uf_pipeline_row_fn row;
    void *user;
    int n;

    pthread_mutex_t mu;
    pthread_cond_t job_ready, space_free, image_done;
    job *queue; /* ring of queue_cap jobs waiting for a worker */
    int queue_cap, queue_head, queue_count, closing;

    uf_image_summary *summary; /* (n) */
    char **error;              /* (n) the image's failure (malloc'ed), or NULL */
    uint8_t *done;             /* (n) 1 once summary / error is final */
    int stopped;               /* a consume failed: no more rows */
    char stop_message[UF_BATCH_ERROR_LEN];
} pipeline;

/* Records the first failure (message from this thread's last error); the run stops. */
static void stop_locked(pipeline *pl) {
    if (pl->stopped) return;
    pl->stopped = 1;
    snprintf(pl->stop_message, sizeof pl->stop_message, "%s", uf_last_error());
    pthread_cond_broadcast(&pl->space_free);
    pthread_cond_broadcast(&pl->image_done);
}

static void *worker_main(void *arg) {
    pipeline *pl = arg;
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        while (!pl->queue_count && !pl->closing) pthread_cond_wait(&pl->job_ready, &pl->mu);
        if (!pl->queue_count) {
            pthread_mutex_unlock(&pl->mu);
            return NULL;
        }
        job j = pl->queue[pl->queue_head];
        pl->queue_head = (pl->queue_head + 1) % pl->queue_cap;
        pl->queue_count--;
        const int skip = pl->stopped;
        pthread_cond_signal(&pl->space_free);
        pthread_mutex_unlock(&pl->mu);
        if (skip) { /* the run stops: drop the image */
            uf_pending_free(&j.p);
            continue;
        }
        uf_image_result r;
        uf_image_summary s = {0};
        int rc = uf_pending_finish(&j.p, &pl->m->cfg.input, &r);
        if (rc == UF_OK) {
            s = (uf_image_summary){r.score, r.max_neg_log10_nfa, r.anomalous, r.detected_pixels, r.width, r.height};
            if (pl->consume)
                rc = pl->consume(pl->user, j.index, &r);
            else
                uf_image_result_free(&r);
        }
        pthread_mutex_lock(&pl->mu);
        if (rc != UF_OK) stop_locked(pl);
        pl->summary[j.index] = s;
        pl->done[j.index] = 1;
        pthread_cond_broadcast(&pl->image_done);
        pthread_mutex_unlock(&pl->mu);
    }
}

/* Hands image `index` to the workers, waiting for room. UF_ERR when the run stopped. */
static int enqueue(pipeline *pl, int index, uf_pending_result *p) {
    pthread_mutex_lock(&pl->mu);
    while (pl->queue_count == pl->queue_cap && !pl->stopped) pthread_cond_wait(&pl->space_free, &pl->mu);
    if (pl->stopped) {
        pthread_mutex_unlock(&pl->mu);
        uf_pending_free(p);
        return UF_ERR;
    }
    pl->queue[(pl->queue_head + pl->queue_count) % pl->queue_cap] = (job){index, *p};
    pl->queue_count++;
    pthread_cond_signal(&pl->job_ready);
    pthread_mutex_unlock(&pl->mu);
    return UF_OK;
}

/* Gives the rows of the images done, from *next on, in order; with wait_all, waits for all n.
 * UF_ERR when the run stopped (or a row failed). */
static int flush_rows(pipeline *pl, int *next, int wait_all) {
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        while (*next < pl->n && pl->done[*next] && !pl->stopped) {
            const int i = (*next)++;
            const uf_image_summary s = pl->summary[i];
            const char *err = pl->error[i];
            pthread_mutex_unlock(&pl->mu);
            int rc = pl->row ? pl->row(pl->user, i, err ? NULL : &s, err) : UF_OK;
            pthread_mutex_lock(&pl->mu);
            if (rc != UF_OK) stop_locked(pl);
        }
        if (pl->stopped || !wait_all || *next == pl->n) break;
        pthread_cond_wait(&pl->image_done, &pl->mu);
    }
    const int stopped = pl->stopped;
    pthread_mutex_unlock(&pl->mu);
    return stopped ? UF_ERR : UF_OK;
}

/* Marks image `index` failed with the batch's message. */
static int fail_image(pipeline *pl, int index, const char *message) {
    char *e = strdup(message);
    pthread_mutex_lock(&pl->mu);
    if (!e) {
        uf_error("out of memory");
        stop_locked(pl);
    }
    pl->error[index] = e;
    pl->done[index] = 1;
    pthread_mutex_unlock(&pl->mu);
    return e ? UF_OK : UF_ERR;
}

typedef struct load_task {
    uf_batch *b;
    const uf_model *m;
    const char *const *paths;
    int n;
} load_task;

static void *load_main(void *arg) {
    load_task *t = arg;
    uf_batch_load(t->b, t->m, t->paths, t->n);
    return NULL;
}

static int batch_setup(uf_batch *b, const uf_model *m, const uf_pipeline_options *o) {
    if (uf_batch_init(b, m, o->batch, m->cfg.input.width, m->cfg.input.height) != UF_OK) return UF_ERR;
    b->nfa_block = o->nfa_block;
    if (!o->model_size_outputs && !b->original && !(b->original = calloc((size_t)o->batch, sizeof *b->original))) {
        uf_batch_free(b);
        return uf_error("out of memory");
    }
    return UF_OK;
}

int uf_pipeline_run(uf_model *m, const char *const *paths, int n, const uf_pipeline_options *o,
                    uf_pipeline_consume_fn consume, uf_pipeline_row_fn row, void *user) {
    if (o->batch < 1 || n < 0) return uf_error("pipeline: batch %d, %d images", o->batch, n);
    if (n == 0) return UF_OK;
    pipeline pl = {.m = m, .consume = consume, .row = row, .user = user, .n = n};
    const int B = o->batch, n_batches = (n + B - 1) / B;
    int n_workers = o->workers > 0 ? o->workers : uf_get_num_threads();
    if (n_workers < 1) n_workers = 1;
    pl.queue_cap = 2 * B;
    pl.queue = malloc(sizeof(job) * (size_t)pl.queue_cap);
    pl.summary = calloc((size_t)n, sizeof *pl.summary);
    pl.error = calloc((size_t)n, sizeof *pl.error);
    pl.done = calloc((size_t)n, 1);
    pthread_t *workers = calloc((size_t)n_workers, sizeof *workers);
    uf_batch b[2];
    int n_ready = 0, started = 0, rc = UF_ERR, next_row = 0;
    pthread_mutex_init(&pl.mu, NULL);
    pthread_cond_init(&pl.job_ready, NULL);
    pthread_cond_init(&pl.space_free, NULL);
    pthread_cond_init(&pl.image_done, NULL);
    if (!pl.queue || !pl.summary || !pl.error || !pl.done || !workers) {
        uf_error("out of memory");
        goto out;
    }
    for (; n_ready < (n_batches > 1 ? 2 : 1); n_ready++)
        if (batch_setup(&b[n_ready], m, o) != UF_OK) goto out;
    for (; started < n_workers; started++)
        if (pthread_create(&workers[started], NULL, worker_main, &pl) != 0) {
            uf_error("pipeline: cannot start a worker thread");
            goto out;
        }
    uf_batch_load(&b[0], m, paths, n < B ? n : B);
    for (int k = 0; k < n_batches; k++) {
        uf_batch *cur = &b[k % 2];
        const int i0 = k * B, nk = n - i0 < B ? n - i0 : B;
        load_task next = {0};
        pthread_t loader;
        int loading = 0;
        if (k + 1 < n_batches) { /* decode the next batch while the model runs on this one */
            const int i1 = i0 + B;
            next = (load_task){&b[(k + 1) % 2], m, paths + i1, n - i1 < B ? n - i1 : B};
            loading = pthread_create(&loader, NULL, load_main, &next) == 0;
        }
        int run_rc = uf_batch_run(cur, m, NULL, NULL);
        for (int i = 0; run_rc == UF_OK && i < nk; i++) {
            if (cur->error[i][0]) {
                if (fail_image(&pl, i0 + i, cur->error[i]) != UF_OK) run_rc = UF_ERR;
                continue;
            }
            uf_pending_result p;
            if (uf_pending_take(cur, i, &p) != UF_OK || enqueue(&pl, i0 + i, &p) != UF_OK) run_rc = UF_ERR;
        }
        if (loading)
            pthread_join(loader, NULL);
        else if (next.b) /* no thread to be had: load here */
            uf_batch_load(next.b, next.m, next.paths, next.n);
        if (run_rc != UF_OK) {
            pthread_mutex_lock(&pl.mu);
            stop_locked(&pl);
            pthread_mutex_unlock(&pl.mu);
            break;
        }
        if (flush_rows(&pl, &next_row, 0) != UF_OK) break;
        if (o->verbose) uf_log(UF_LOG_PROGRESS, "predicted %d/%d images", i0 + nk, n);
    }
    rc = flush_rows(&pl, &next_row, 1);
out:
    pthread_mutex_lock(&pl.mu);
    pl.closing = 1;
    pthread_cond_broadcast(&pl.job_ready);
    pthread_mutex_unlock(&pl.mu);
    for (int w = 0; w < started; w++) pthread_join(workers[w], NULL);
    if (pl.stopped) rc = uf_error("%s", pl.stop_message);
    for (int i = 0; i < n_ready; i++) uf_batch_free(&b[i]);
    for (int i = 0; pl.error && i < n; i++) free(pl.error[i]);
    free(pl.queue), free(pl.summary), free(pl.error), free(pl.done), free(workers);
    pthread_mutex_destroy(&pl.mu);
    pthread_cond_destroy(&pl.job_ready);
    pthread_cond_destroy(&pl.space_free);
    pthread_cond_destroy(&pl.image_done);
    return rc;
}
