/* service.h - `uflow serve`: an HTTP inference service over the public C API (uflow.h), on
 * libmicrohttpd.
 *
 * Endpoints:
 *   POST /predict[?outputs=mask,map,overlay]  body: one image file (PNG, JPEG, BMP, TIFF).
 *        200: a JSON object with results.jsonl's fields (score, anomalous, detected_pixels,
 *        max_neg_log10_nfa, width, height) and, for each output asked for, "<name>_png": the
 *        PNG file (uflow_result_png) in standard base64 (RFC 4648, padded).
 *        400 unreadable image (the library's one-line message), 413 body over max_body,
 *        503 + Retry-After when the queue is full or the bodies held at once would pass
 *        max_body x (workers + queue + 4) (at most 1 GiB unless max_body is over 256 MiB),
 *        500 when the model fails.
 *   GET /  a self-contained page (page.h) to try an image in a browser: static, so it needs no
 *        token; it asks for one and sends it with its POST /predict.
 *   GET /health  200 "ok" (needs no token);  GET /model  the model's description (no paths);
 *   GET /metrics  Prometheus text: requests by code, errors by kind, /predict latency
 *        histogram, queue depth, images and images/s over the last 10 s.
 *   Anything else: 404 (unknown path) or 405 (known path, other method). Every error answer
 *   is JSON {"error": "..."}.
 * Threads: libmicrohttpd's polling thread reads requests; `workers` threads each hold their
 * own model (the library's rule: one model per thread) and take jobs from a bounded queue;
 * a connection waiting for its job is suspended (it costs no thread).
 * A client that sends too slowly is dropped after timeout_s without activity.
 * No request names a file: the service reads only the model (and its backbone) at start.
 */
#ifndef UF_SERVE_SERVICE_H
#define UF_SERVE_SERVICE_H

#include <stddef.h>

typedef struct uf_service_options {
    const char *model, *weights; /* model file; backbone weights (NULL: recorded in the model) */
    const char *precision;       /* fp32 | bf16 | auto (NULL: fp32) */
    const char *bind;            /* IPv4 address to listen on (NULL: 127.0.0.1) */
    int port;                    /* 0: any free port (printed) */
    int workers;                 /* models / concurrent predictions (>= 1) */
    int queue;                   /* jobs waiting beyond the running ones before 503 */
    size_t max_body;             /* bytes */
    const char *token_file;      /* NULL: no authentication */
    int timeout_s;               /* idle connection timeout */
    int threads;                 /* OpenMP threads per worker (0: cores / workers) */
} uf_service_options;

/* Runs the service until SIGINT or SIGTERM (blocked in every thread but taken here): then it
 * stops accepting connections, finishes the requests in flight (at most 60 s), and returns 0.
 * Prints "listening on http://ADDR:PORT" to stdout once ready. Returns 1 after printing a
 * one-line error when it cannot start (model, port, token file). */
int uf_service_run(const uf_service_options *o);

#endif
