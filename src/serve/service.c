/* service.c - `uflow serve` (see service.h). Only the public API (uflow.h) reaches the model. */
#include "serve/service.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <nettle/base64.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/result_rows.h" /* the row format; the model is reached through uflow.h only */
#include "serve/page.h"
#include "uflow.h"

#define RATE_WINDOW_S 10.0
#define RATE_RING 4096
#define DRAIN_S 60

static const double latency_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BOUNDS (sizeof latency_bounds / sizeof *latency_bounds)

/* One request's state, from its first header call to MHD's completion callback. */
typedef struct request {
    struct MHD_Connection *conn;
    int route;            /* ROUTE_* */
    unsigned char *body;  /* POST /predict: the bytes read so far */
    size_t len, cap;
    int too_large;        /* over max_body: the rest is read and dropped, then 413 */
    int no_room;          /* the bodies held by all requests would pass the budget: dropped, then 503 */
    int queued;           /* handed to a worker (the connection is suspended) */
    int done;             /* the worker filled code / reply */
    int code;
    char *reply;          /* malloc'ed JSON */
    unsigned outputs;     /* OUT_* asked for */
    double t0;
    struct request *next; /* queue link */
} request;

enum { ROUTE_PREDICT = 1, ROUTE_HEALTH, ROUTE_MODEL, ROUTE_METRICS, ROUTE_PAGE, ROUTE_NOT_FOUND, ROUTE_BAD_METHOD };
enum { OUT_MAP = 1, OUT_MASK = 2, OUT_OVERLAY = 4 };

typedef struct service {
    const uf_service_options *o;
    char token[512];
    size_t token_len;
    char *model_json; /* GET /model */
    struct MHD_Daemon *d;
    pthread_t *workers;
    uflow_model **models;
    int n_workers;
    /* the job queue and the counters, under lock */
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;
    request *head, *tail;
    int waiting, running, active, stopping;
    size_t body_bytes, body_budget; /* bytes of request bodies held now; their bound */
    unsigned long by_code[600], errors_decode, errors_model, errors_auth, images;
    unsigned long lat_count[N_BOUNDS + 1];
    double lat_sum;
    double done_at[RATE_RING];
    unsigned long n_done;
} service;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* {"error": msg} (malloc'ed), or NULL when out of memory. */
static char *error_json(const char *msg) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "error", msg);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Queues `text` (taken: freed here) with the code and content type; counts the code. */
static enum MHD_Result answer(service *s, struct MHD_Connection *c, int code, char *text, const char *type) {
    if (!text) {
        code = MHD_HTTP_INTERNAL_SERVER_ERROR;
        text = strdup("{\"error\":\"out of memory\"}");
        type = "application/json";
        if (!text) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (!strncmp(type, "text/html", 9)) /* the page: its own script and style, pictures from data: URIs */
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "img-src data:; connect-src 'self'");
    if (code == MHD_HTTP_SERVICE_UNAVAILABLE) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (code == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)code, r);
    MHD_destroy_response(r);
    pthread_mutex_lock(&s->lock);
    if (code >= 0 && code < 600) s->by_code[code]++;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static enum MHD_Result answer_error(service *s, struct MHD_Connection *c, int code, const char *msg) {
    return answer(s, c, code, error_json(msg), "application/json");
}

/* Whether the request carries the token: "Bearer <token>", compared in constant time (the
 * time depends on the token's length only). */
static int authorized(const service *s, struct MHD_Connection *c) {
    if (!s->token_len) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7) != 0) return 0;
    const char *t = h + 7;
    const size_t n = strlen(t);
    unsigned diff = n != s->token_len;
    for (size_t i = 0; i < s->token_len; i++) diff |= (unsigned)(unsigned char)s->token[i] ^ (unsigned char)(i < n ? t[i] : 0);
    return diff == 0;
}

/* ---- the work: one image ------------------------------------------------------------ */

/* Adds "<name>_png": base64 of the PNG to o; 0, or -1 with the library's message. */
static int add_png(cJSON *o, const uflow_result *r, const char *name) {
    unsigned char *png = NULL;
    size_t len = 0;
    if (uflow_result_png(r, name, &png, &len) != UFLOW_OK) return -1;
    char *b64 = malloc(BASE64_ENCODE_RAW_LENGTH(len) + 1);
    if (!b64) {
        free(png);
        return -1;
    }
    base64_encode_raw(b64, len, png);
    b64[BASE64_ENCODE_RAW_LENGTH(len)] = '\0';
    free(png);
    char key[32];
    snprintf(key, sizeof key, "%s_png", name);
    cJSON *v = cJSON_CreateString(b64);
    free(b64);
    if (!v) return -1;
    cJSON_AddItemToObject(o, key, v);
    return 0;
}

/* Runs q's image on model m: fills q->code and q->reply. */
static void predict(service *s, uflow_model *m, request *q) {
    uflow_result *r = uflow_predict_encoded(m, q->body, q->len, "request body", NULL);
    if (!r) {
        /* an unreadable image is the client's (400); anything else (non-finite latents, out of
         * memory) the service's (500) */
        const char *e = uflow_last_error();
        const int bad_input = strstr(e, "request body") != NULL;
        q->code = bad_input ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_INTERNAL_SERVER_ERROR;
        q->reply = error_json(e);
        pthread_mutex_lock(&s->lock);
        if (bad_input) s->errors_decode++; else s->errors_model++;
        pthread_mutex_unlock(&s->lock);
        return;
    }
    /* a results.jsonl row without image and outputs, then the images asked for */
    const uf_result_row row = {.score = uflow_result_score(r), .anomalous = uflow_result_anomalous(r),
                               .detected_pixels = uflow_result_detected_pixels(r),
                               .max_neg_log10_nfa = uflow_result_max_neg_log10_nfa(r),
                               .width = uflow_result_width(r), .height = uflow_result_height(r)};
    cJSON *o = uf_result_row_json(&row);
    int ok = o != NULL;
    if (ok) {
        const char *names[3] = {"map", "mask", "overlay"};
        for (int k = 0; k < 3 && ok; k++)
            if (q->outputs & (1u << k)) ok = add_png(o, r, names[k]) == 0;
    }
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    uflow_result_free(r);
    q->code = text ? MHD_HTTP_OK : MHD_HTTP_INTERNAL_SERVER_ERROR;
    q->reply = text ? text : error_json("out of memory");
    pthread_mutex_lock(&s->lock);
    if (text) {
        s->images++;
        s->done_at[s->n_done++ % RATE_RING] = now_s();
    } else {
        s->errors_model++;
    }
    pthread_mutex_unlock(&s->lock);
}

typedef struct {
    service *s;
    int index;
} worker_arg;

static void *worker_main(void *p) {
    worker_arg *a = p;
    service *s = a->s;
    uflow_model *m = s->models[a->index];
    uflow_set_threads(s->o->threads);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->head && !s->stopping) pthread_cond_wait(&s->wake, &s->lock);
        request *q = s->head;
        if (!q) { /* stopping, nothing left */
            pthread_mutex_unlock(&s->lock);
            break;
        }
        s->head = q->next;
        if (!s->head) s->tail = NULL;
        s->waiting--, s->running++;
        pthread_mutex_unlock(&s->lock);
        predict(s, m, q);
        pthread_mutex_lock(&s->lock);
        s->running--;
        q->done = 1;
        pthread_mutex_unlock(&s->lock);
        MHD_resume_connection(q->conn);
    }
    return NULL;
}

/* ---- HTTP ------------------------------------------------------------------------ */

static unsigned parse_outputs(const char *v, int *bad) {
    unsigned out = 0;
    *bad = 0;
    if (!v || !*v) return 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "map")) out |= OUT_MAP;
        else if (!strcmp(t, "mask")) out |= OUT_MASK;
        else if (!strcmp(t, "overlay")) out |= OUT_OVERLAY;
        else *bad = 1;
    }
    return out;
}

static char *metrics_text(service *s) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return NULL;
    pthread_mutex_lock(&s->lock);
    fprintf(f, "# HELP uflow_requests_total HTTP requests answered, by status code.\n"
               "# TYPE uflow_requests_total counter\n");
    for (int c = 100; c < 600; c++)
        if (s->by_code[c]) fprintf(f, "uflow_requests_total{code=\"%d\"} %lu\n", c, s->by_code[c]);
    fprintf(f, "# HELP uflow_errors_total Failed requests, by kind.\n# TYPE uflow_errors_total counter\n");
    fprintf(f, "uflow_errors_total{kind=\"bad_image\"} %lu\n", s->errors_decode);
    fprintf(f, "uflow_errors_total{kind=\"model\"} %lu\n", s->errors_model);
    fprintf(f, "uflow_errors_total{kind=\"unauthorized\"} %lu\n", s->errors_auth);
    fprintf(f, "uflow_errors_total{kind=\"too_large\"} %lu\n", s->by_code[413]);
    fprintf(f, "uflow_errors_total{kind=\"queue_full\"} %lu\n", s->by_code[503]);
    fprintf(f, "# HELP uflow_predict_latency_seconds POST /predict, from its first byte to the answer.\n"
               "# TYPE uflow_predict_latency_seconds histogram\n");
    unsigned long cum = 0;
    for (size_t i = 0; i < N_BOUNDS; i++) {
        cum += s->lat_count[i];
        fprintf(f, "uflow_predict_latency_seconds_bucket{le=\"%g\"} %lu\n", latency_bounds[i], cum);
    }
    cum += s->lat_count[N_BOUNDS];
    fprintf(f, "uflow_predict_latency_seconds_bucket{le=\"+Inf\"} %lu\n", cum);
    fprintf(f, "uflow_predict_latency_seconds_sum %.6f\nuflow_predict_latency_seconds_count %lu\n", s->lat_sum, cum);
    fprintf(f, "# HELP uflow_queue_depth Images waiting for a worker.\n# TYPE uflow_queue_depth gauge\n"
               "uflow_queue_depth %d\n", s->waiting);
    fprintf(f, "# HELP uflow_images_total Images predicted.\n# TYPE uflow_images_total counter\n"
               "uflow_images_total %lu\n", s->images);
    const double t = now_s();
    unsigned long recent = 0;
    for (unsigned long i = 0; i < s->n_done && i < RATE_RING; i++)
        recent += t - s->done_at[i] <= RATE_WINDOW_S;
    fprintf(f, "# HELP uflow_images_per_second Images predicted per second over the last %.0f s.\n"
               "# TYPE uflow_images_per_second gauge\nuflow_images_per_second %.3f\n",
            RATE_WINDOW_S, (double)recent / RATE_WINDOW_S);
    pthread_mutex_unlock(&s->lock);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int route_of(const char *url, const char *method) {
    struct {
        const char *path, *method;
        int route;
    } const table[] = {{"/predict", "POST", ROUTE_PREDICT},
                       {"/health", "GET", ROUTE_HEALTH},
                       {"/model", "GET", ROUTE_MODEL},
                       {"/metrics", "GET", ROUTE_METRICS},
                       {"/", "GET", ROUTE_PAGE}};
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (!strcmp(url, table[i].path)) return strcmp(method, table[i].method) ? ROUTE_BAD_METHOD : table[i].route;
    return ROUTE_NOT_FOUND;
}

/* Frees q's body and returns its bytes to the budget. */
static void release_body(service *s, request *q) {
    pthread_mutex_lock(&s->lock);
    s->body_bytes -= q->cap;
    pthread_mutex_unlock(&s->lock);
    free(q->body);
    q->body = NULL, q->len = q->cap = 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **state) {
    (void)version;
    service *s = cls;
    request *q = *state;
    if (!q) { /* headers complete: route, authorise, check the announced size */
        if (!(q = calloc(1, sizeof *q))) return MHD_NO;
        q->conn = c, q->t0 = now_s(), q->route = route_of(url, method);
        *state = q;
        pthread_mutex_lock(&s->lock);
        s->active++;
        pthread_mutex_unlock(&s->lock);
        if (q->route == ROUTE_NOT_FOUND) return answer_error(s, c, MHD_HTTP_NOT_FOUND, "no such path");
        if (q->route == ROUTE_BAD_METHOD) return answer_error(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed here");
        /* /health, and the page (static, no data: it sends the token typed into it with its requests) */
        if (q->route != ROUTE_HEALTH && q->route != ROUTE_PAGE && !authorized(s, c)) {
            pthread_mutex_lock(&s->lock);
            s->errors_auth++;
            pthread_mutex_unlock(&s->lock);
            return answer_error(s, c, MHD_HTTP_UNAUTHORIZED, "missing or wrong bearer token");
        }
        if (q->route == ROUTE_HEALTH) return answer(s, c, MHD_HTTP_OK, strdup("ok\n"), "text/plain");
        if (q->route == ROUTE_PAGE) return answer(s, c, MHD_HTTP_OK, strdup(uf_service_page), "text/html; charset=utf-8");
        if (q->route == ROUTE_MODEL) return answer(s, c, MHD_HTTP_OK, strdup(s->model_json), "application/json");
        if (q->route == ROUTE_METRICS) return answer(s, c, MHD_HTTP_OK, metrics_text(s), "text/plain; version=0.0.4");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o->max_body)
            return answer_error(s, c, 413, "request body over the service's --max-body");
        int bad = 0;
        q->outputs = parse_outputs(MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "outputs"), &bad);
        if (bad) return answer_error(s, c, MHD_HTTP_BAD_REQUEST, "outputs: a comma-separated list of map, mask, overlay");
        return MHD_YES;
    }
    if (q->route != ROUTE_PREDICT) { /* a body on a GET: dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) { /* more of the body */
        const size_t n = *upload_size;
        *upload_size = 0;
        if (q->too_large || q->no_room || q->len + n > s->o->max_body) {
            q->too_large |= !q->no_room;
            release_body(s, q);
            return MHD_YES;
        }
        if (q->len + n > q->cap) {
            size_t cap = q->cap ? q->cap : 65536;
            while (cap < q->len + n) cap *= 2;
            if (cap > s->o->max_body) cap = s->o->max_body;
            /* memory: all requests' bodies together stay within the budget (else 503) */
            pthread_mutex_lock(&s->lock);
            const int room = s->body_bytes - q->cap + cap <= s->body_budget;
            if (room) s->body_bytes += cap - q->cap;
            pthread_mutex_unlock(&s->lock);
            if (!room) {
                q->no_room = 1;
                release_body(s, q);
                return MHD_YES;
            }
            unsigned char *b = realloc(q->body, cap);
            if (!b) return MHD_NO; /* completed() returns the budget */
            q->body = b, q->cap = cap;
        }
        memcpy(q->body + q->len, upload, n);
        q->len += n;
        return MHD_YES;
    }
    if (q->too_large) return answer_error(s, c, 413, "request body over the service's --max-body");
    if (q->no_room) return answer_error(s, c, MHD_HTTP_SERVICE_UNAVAILABLE, "busy: too many large uploads at once, retry later");
    if (q->done) { /* resumed: the worker's answer */
        char *reply = q->reply;
        q->reply = NULL;
        const double dt = now_s() - q->t0;
        pthread_mutex_lock(&s->lock);
        size_t b = 0;
        while (b < N_BOUNDS && dt > latency_bounds[b]) b++;
        s->lat_count[b]++, s->lat_sum += dt;
        pthread_mutex_unlock(&s->lock);
        return answer(s, c, q->code, reply, "application/json");
    }
    if (q->queued) return MHD_YES; /* should not happen: suspended until done */
    if (!q->len) return answer_error(s, c, MHD_HTTP_BAD_REQUEST, "empty request body: send one image file");
    pthread_mutex_lock(&s->lock);
    /* room: a worker free, or a place among the `queue` waiting beyond the running ones */
    const int full = s->waiting + s->running >= s->n_workers + s->o->queue || s->stopping;
    if (!full) {
        q->queued = 1;
        q->next = NULL;
        if (s->tail) s->tail->next = q; else s->head = q;
        s->tail = q;
        s->waiting++;
        MHD_suspend_connection(c);
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
    if (full) return answer_error(s, c, MHD_HTTP_SERVICE_UNAVAILABLE, "busy: the queue is full, retry later");
    return MHD_YES;
}

static void completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode why) {
    (void)c, (void)why;
    service *s = cls;
    request *q = *state;
    if (!q) return;
    release_body(s, q);
    free(q->reply), free(q);
    *state = NULL;
    pthread_mutex_lock(&s->lock);
    s->active--;
    if (!s->active) pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls, (void)fmt, (void)ap; /* connection-level noise (resets, timeouts): counted, not printed */
}

/* ---- start and stop ----------------------------------------------------------------- */

static int fail(const char *what) {
    fprintf(stderr, "uflow serve: error: %s\n", what);
    return 1;
}

static int read_token(service *s, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        char m[700];
        snprintf(m, sizeof m, "token file '%s': %s", path, strerror(errno));
        return fail(m);
    }
    size_t n = fread(s->token, 1, sizeof s->token - 1, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    while (n && (s->token[n - 1] == '\n' || s->token[n - 1] == '\r' || s->token[n - 1] == ' ')) n--;
    s->token[n] = '\0';
    s->token_len = n;
    if (more) return fail("token file: longer than 500 bytes");
    if (n < 16) return fail("token file: the token is shorter than 16 characters");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s->token[i] <= ' ' || s->token[i] == 0x7f) return fail("token file: the token has spaces or control characters");
    return 0;
}

/* GET /model: the service's view (version, backbone, input size, precision) and what the
 * model file records, without paths (uflow_model_info_json). NULL + message on failure. */
static char *describe_model(uflow_model *m, const char *path, const char *precision) {
    char *info = NULL;
    if (uflow_model_info_json(path, &info) != UFLOW_OK) return NULL;
    cJSON *o = cJSON_CreateObject(), *file = cJSON_Parse(info);
    free(info);
    char *s = NULL;
    if (o && file) {
        cJSON_AddStringToObject(o, "uflow_version", uflow_version());
        cJSON_AddStringToObject(o, "backbone", uflow_model_backbone(m));
        cJSON_AddNumberToObject(o, "input_width", uflow_model_input_width(m));
        cJSON_AddNumberToObject(o, "input_height", uflow_model_input_height(m));
        cJSON_AddNumberToObject(o, "epochs", uflow_model_epochs(m));
        cJSON_AddStringToObject(o, "precision", precision ? precision : "fp32");
        cJSON_AddItemToObject(o, "model_file", file);
        file = NULL;
        s = cJSON_PrintUnformatted(o);
    }
    cJSON_Delete(o), cJSON_Delete(file);
    return s;
}

int uf_service_run(const uf_service_options *o) {
    static service sv; /* one service per process */
    service *s = &sv;
    memset(s, 0, sizeof *s);
    s->o = o;
    /* bodies held at once: what the workers and the queue can use, and a few more being read */
    s->body_budget = o->max_body * (size_t)(o->workers + o->queue + 4);
    if (s->body_budget > ((size_t)1 << 30) && o->max_body <= ((size_t)1 << 28)) s->body_budget = (size_t)1 << 30;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->idle, NULL);
    if (o->token_file && read_token(s, o->token_file)) return 1;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->bind ? o->bind : "127.0.0.1", &addr.sin_addr) != 1)
        return fail("--bind: not an IPv4 address");
    /* the models first (each worker its own): a bad model file fails before listening */
    s->n_workers = o->workers;
    s->models = calloc((size_t)o->workers, sizeof *s->models);
    s->workers = calloc((size_t)o->workers, sizeof *s->workers);
    worker_arg *args = calloc((size_t)o->workers, sizeof *args);
    if (!s->models || !s->workers || !args) return fail("out of memory");
    int rc = 0;
    for (int i = 0; i < o->workers && !rc; i++) {
        s->models[i] = uflow_model_load(o->model, o->weights);
        if (!s->models[i] || (o->precision && uflow_model_set_precision(s->models[i], o->precision) != UFLOW_OK))
            rc = fail(uflow_last_error());
    }
    if (!rc && !(s->model_json = describe_model(s->models[0], o->model, o->precision))) rc = fail(uflow_last_error());
    /* SIGINT / SIGTERM: blocked in every thread started from here, taken by sigwait below */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int started = 0;
    for (; !rc && started < o->workers; started++) {
        args[started] = (worker_arg){s, started};
        if (pthread_create(&s->workers[started], NULL, worker_main, &args[started]) != 0) rc = fail("cannot start a worker thread");
    }
    if (!rc) {
        s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
                                (uint16_t)o->port, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s, MHD_OPTION_CONNECTION_LIMIT,
                                (unsigned)(o->workers + o->queue + 64), MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                (size_t)(64 * 1024), MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                                MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
        if (!s->d) {
            char m[160];
            snprintf(m, sizeof m, "cannot listen on %s:%d (in use, or not an address of this machine)",
                     o->bind ? o->bind : "127.0.0.1", o->port);
            rc = fail(m);
        }
    }
    if (!rc) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
        printf("listening on http://%s:%u (%d worker%s)\n", o->bind ? o->bind : "127.0.0.1",
               info ? info->port : (unsigned)o->port, o->workers, o->workers == 1 ? "" : "s");
        fflush(stdout);
        int sig = 0;
        sigwait(&sigs, &sig);
        /* stop accepting, let the requests in flight finish (bounded), then stop */
        MHD_socket ls = MHD_quiesce_daemon(s->d);
        if (ls != MHD_INVALID_SOCKET) close(ls);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += DRAIN_S;
        pthread_mutex_lock(&s->lock);
        while (s->active > 0 && pthread_cond_timedwait(&s->idle, &s->lock, &until) == 0) {
        }
        pthread_mutex_unlock(&s->lock);
        MHD_stop_daemon(s->d);
        fprintf(stderr, "uflow serve: stopped by %s\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    }
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < started; i++) pthread_join(s->workers[i], NULL);
    for (int i = 0; i < o->workers; i++) uflow_model_free(s->models[i]);
    free(s->models), free(s->workers), free(args), free(s->model_json);
    return rc;
}
