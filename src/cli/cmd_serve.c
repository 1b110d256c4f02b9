/* uflow serve: the HTTP inference service (src/serve/service.h). */
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "serve/service.h"

int cmd_serve(int argc, char **argv) {
    uf_service_options o = {.bind = "127.0.0.1", .port = 8080, .workers = 1, .queue = 16, .timeout_s = 10};
    int max_body_mib = 64;
    const cli_opt opts[] = {
        {"model", OPT_STRING, &o.model, 0, 0, "model file written by 'uflow train'"},
        {"weights", OPT_STRING, &o.weights, 0, 0, "backbone weights (default: the paths recorded in the model)"},
        {"precision", OPT_STRING, &o.precision, 0, 0, "fp32 | bf16 | auto (default fp32)"},
        {"bind", OPT_STRING, &o.bind, 0, 0, "IPv4 address to listen on (loopback unless given)"},
        {"port", OPT_INT, &o.port, 0, 65535, "TCP port (0: any free one, printed)"},
        {"workers", OPT_INT, &o.workers, 1, 64, "models in memory = predictions at once"},
        {"queue", OPT_INT, &o.queue, 0, 4096, "images waiting for a worker before answering 503"},
        {"max-body", OPT_INT, &max_body_mib, 1, 1024, "largest request body in MiB (413 beyond)"},
        {"token-file", OPT_STRING, &o.token_file, 0, 0,
         "file holding a bearer token (16+ printable characters): every endpoint but /health then needs "
         "'Authorization: Bearer <token>'"},
        {"timeout", OPT_INT, &o.timeout_s, 1, 3600, "seconds a connection may stay idle (slow clients are dropped)"},
        {"threads", OPT_INT, &o.threads, 0, 1024, "threads per worker (0: cores / workers)"},
    };
    char *pos[1];
    int npos = 0;
    const int r = cli_parse(argc, argv,
                            "--model MODEL [--bind 127.0.0.1] [--port 8080] [--workers N] [--token-file F]\n\n"
                            "POST /predict (body: one PNG, JPEG, BMP or TIFF file; ?outputs=mask,map,overlay adds\n"
                            "those images as base64 PNG fields) answers results.jsonl's fields as JSON; GET /health,\n"
                            "/model, /metrics (Prometheus). SIGINT / SIGTERM: stop accepting, finish the requests in\n"
                            "flight, exit 0.",
                            opts, (int)(sizeof opts / sizeof *opts), pos, &npos, 0);
    if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
    if (!o.model) return cli_fail("serve", "--model is required");
    o.max_body = (size_t)max_body_mib << 20;
    return uf_service_run(&o);
}
