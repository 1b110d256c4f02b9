/* bench_serve.c - `uflow bench serve`: requests/s and p50 / p99 latency of `uflow serve` on
 * loopback at 1, 4 and 8 concurrent clients. The service is this program (`/proc/self/exe
 * serve`) in a child process; the clients are threads here, each sending generated size x size
 * PNGs (io/synth.h, a quarter with a defect) as POST /predict, one connection per request,
 * and reading the whole answer. The model is the given one or, as bench predict's, an untrained
 * ResNet-18 U-Flow at 256 x 256 (the cost does not depend on the training). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "core/error.h"
#include "core/timer.h"
#include "io/image.h"
#include "model/model.h"

#define N_BODIES 8

typedef struct {
    unsigned char *data[N_BODIES];
    size_t len[N_BODIES];
    int port;
    int per_client;      /* requests each client sends */
    double *lat;         /* seconds, per request (client k's at k * per_client) */
    int failures;        /* answers other than 200, or socket errors */
    pthread_mutex_t lock;
} serve_run;

typedef struct {
    serve_run *run;
    int k;
} client_arg;

/* One POST /predict on a new connection; 1 when the answer is complete and 200. */
static int one_request(int port, const unsigned char *body, size_t len) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    char head[160];
    int hn = snprintf(head, sizeof head, "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n"
                                         "Connection: close\r\n\r\n", len);
    if (ok) ok = send(s, head, (size_t)hn, MSG_NOSIGNAL) == hn;
    for (size_t off = 0; ok && off < len;) {
        ssize_t w = send(s, body + off, len - off, MSG_NOSIGNAL);
        ok = w > 0;
        if (ok) off += (size_t)w;
    }
    char buf[16384], first[16] = {0};
    size_t got = 0;
    ssize_t r;
    while (ok && (r = recv(s, buf, sizeof buf, 0)) > 0) { /* to the end: Connection: close */
        if (got < sizeof first - 1) memcpy(first + got, buf, (size_t)r < sizeof first - 1 - got ? (size_t)r : sizeof first - 1 - got);
        got += (size_t)r;
    }
    close(s);
    return ok && strncmp(first, "HTTP/1.1 200", 12) == 0;
}

static void *client_main(void *p) {
    client_arg *a = p;
    serve_run *run = a->run;
    for (int i = 0; i < run->per_client; i++) {
        const int b = (a->k + i) % N_BODIES;
        double t0 = uf_now();
        int ok = one_request(run->port, run->data[b], run->len[b]);
        run->lat[a->k * run->per_client + i] = uf_now() - t0;
        if (!ok) {
            pthread_mutex_lock(&run->lock);
            run->failures++;
            pthread_mutex_unlock(&run->lock);
        }
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The service as a child: its pid, and its port read from its first line; -1 on failure. */
static pid_t start_service(const char *model, int workers, int threads, int *port) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]), close(fd[1]);
        char w[16], t[16];
        snprintf(w, sizeof w, "%d", workers), snprintf(t, sizeof t, "%d", threads);
        execl("/proc/self/exe", "uflow", "serve", "--model", model, "--port", "0", "--workers", w, "--threads", t,
              "--queue", "64", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    if (pid < 0) {
        close(fd[0]);
        return -1;
    }
    char line[256] = {0};
    size_t n = 0;
    while (n < sizeof line - 1 && read(fd[0], line + n, 1) == 1 && line[n] != '\n') n++;
    close(fd[0]);
    const char *c = strstr(line, "127.0.0.1:");
    if (!c || (*port = atoi(c + 10)) <= 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

int bench_serve(const char *model_path, int size, int per_level, int workers, int threads) {
    char tmp[] = "/tmp/uflow-bench-serve-XXXXXX";
    if (!mkdtemp(tmp)) return uf_error("cannot create a temporary folder");
    serve_run run;
    memset(&run, 0, sizeof run);
    pthread_mutex_init(&run.lock, NULL);
    int rc = UF_OK;
    size_t total_bytes = 0;
    for (int i = 0; i < N_BODIES && rc == UF_OK; i++) {
        uf_image *img = NULL;
        rc = bench_synth_image(i, size, &img);
        if (rc == UF_OK) rc = uf_image_encode_png(img, &run.data[i], &run.len[i]);
        total_bytes += run.len[i];
        uf_image_free(img);
    }
    char model_file[4200];
    snprintf(model_file, sizeof model_file, "%s/model.safetensors", tmp);
    if (rc == UF_OK && !model_path) {
        uf_model *m = bench_untrained_model();
        rc = m ? uf_model_save(m, model_file, NULL) : UF_ERR;
        uf_model_free(m);
        model_path = model_file;
    }
    pid_t pid = -1;
    if (rc == UF_OK && (pid = start_service(model_path, workers, threads, &run.port)) < 0)
        rc = uf_error("bench serve: the service did not start (uflow serve --model %s)", model_path);
    if (rc == UF_OK) {
        printf("serve on loopback, %d generated %dx%d PNG bodies (%.0f KiB on average), %d worker%s x %d threads, "
               "one connection per request\n",
               N_BODIES, size, size, total_bytes / 1024.0 / N_BODIES, workers, workers == 1 ? "" : "s", threads);
        printf("  clients  requests/s   p50 ms   p99 ms\n");
        run.per_client = 2; /* warm-up: the first requests build the model's plans */
        double warm[16];
        run.lat = warm;
        client_arg a0 = {&run, 0};
        client_main(&a0);
    }
    const int levels[3] = {1, 4, 8};
    for (int l = 0; l < 3 && rc == UF_OK; l++) {
        const int c = levels[l];
        run.per_client = (per_level + c - 1) / c;
        run.failures = 0;
        const int n = run.per_client * c;
        run.lat = calloc((size_t)n, sizeof(double));
        pthread_t th[8];
        client_arg args[8];
        if (!run.lat) {
            rc = uf_error("out of memory");
            break;
        }
        double t0 = uf_now();
        int started = 0;
        for (; started < c; started++) {
            args[started] = (client_arg){&run, started};
            if (pthread_create(&th[started], NULL, client_main, &args[started]) != 0) break;
        }
        for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
        const double wall = uf_now() - t0;
        if (started < c) rc = uf_error("cannot start client threads");
        else if (run.failures) rc = uf_error("bench serve: %d of %d requests failed", run.failures, n);
        if (rc == UF_OK) {
            qsort(run.lat, (size_t)n, sizeof(double), cmp_double);
            const double p50 = run.lat[n / 2], p99 = run.lat[(int)(0.99 * (n - 1) + 0.5)];
            printf("  %7d  %10.2f  %7.1f  %7.1f\n", c, n / wall, 1e3 * p50, 1e3 * p99);
        }
        free(run.lat);
        run.lat = NULL;
    }
    if (pid > 0) {
        kill(pid, SIGTERM);
        int st = 0;
        waitpid(pid, &st, 0);
        if (rc == UF_OK && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) rc = uf_error("bench serve: the service did not exit cleanly");
    }
    for (int i = 0; i < N_BODIES; i++) free(run.data[i]);
    bench_remove_tree(tmp);
    return rc;
}
