/* uflow watch: predict every image that appears in a folder (src/serve/watch.h). */
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "serve/watch.h"

int cmd_watch(int argc, char **argv) {
    uf_watch_options o = {.settle_ms = 1000};
    const cli_opt opts[] = {
        {"model", OPT_STRING, &o.model, 0, 0, "model file written by 'uflow train'"},
        {"output", OPT_STRING, &o.out, 0, 0, "output folder (-o), made if missing: predict's files, results.csv/.jsonl"},
        {"weights", OPT_STRING, &o.weights, 0, 0, "backbone weights (default: the paths recorded in the model)"},
        {"precision", OPT_STRING, &o.precision, 0, 0, "fp32 | bf16 | auto (default fp32)"},
        {"settle-ms", OPT_INT, &o.settle_ms, 0, 600000,
         "a file found by a scan (at start, or after missed events) is taken once unchanged this long"},
        {"once", OPT_FLAG, &o.once, 0, 0, "take what the folder holds now, then exit"},
        {"threads", OPT_INT, &o.threads, 0, 1024, "threads (0: all cores)"},
    };
    char *pos[2];
    int npos = 0;
    const int r = cli_parse(argc, argv,
                            "--model MODEL -o OUTDIR DIR [options]\n\n"
                            "Predicts every image (png, jpg, jpeg, bmp, tif, tiff) that appears in DIR, once its writer\n"
                            "has closed it (inotify) or, for files found by a scan, once it stopped changing. Crash-safe:\n"
                            "OUTDIR/results.jsonl is the journal; after a kill and a restart every image has exactly one\n"
                            "row, and images that arrived meanwhile are taken. SIGINT / SIGTERM: finish the image in\n"
                            "progress, exit 0.",
                            opts, (int)(sizeof opts / sizeof *opts), pos, &npos, 1);
    if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
    if (!o.model || !o.out || npos != 1) return cli_fail("watch", "--model, -o OUTDIR and one folder DIR are required");
    o.dir = pos[0];
    return uf_watch_run(&o);
}
