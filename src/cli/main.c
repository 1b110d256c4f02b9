/* main.c - `uflow` command-line entry: dispatches to the subcommands. */
#include <errno.h>
#include <stdlib.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backbone/backbone.h"
#include "cli/commands.h"
#include "model/model.h"
#include "model/predict.h"
#include "core/error.h"
#include "core/log.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"demo", cmd_demo, "the whole method on a built-in synthetic data set (no input needed)"},
    {"version", cmd_version, "print the version, the BLAS library and its kernel family"},
    {"inspect", cmd_inspect, "tensors, dtypes, shapes and metadata of a .safetensors file"},
    {"features", cmd_features, "the backbone's feature maps of images into a .safetensors file"},
    {"train", cmd_train, "train a model on normal images: uflow train --data DIR -o MODEL"},
    {"test", cmd_test, "evaluate a model on a test split: uflow test --model M --data DIR"},
    {"predict", cmd_predict, "maps, scores and NFA masks: uflow predict --model M -o OUT IMAGE|DIR..."},
    {"watch", cmd_watch, "predict every image that appears in a folder: uflow watch --model M -o OUT DIR"},
    {"serve", cmd_serve, "HTTP inference service: uflow serve --model M [--port 8080]"},
    {"export", cmd_export, "rewrite a model: backbone inside, no optimizer state, PyTorch names"},
    {"bench", cmd_bench, "measure speed: uflow bench gemm | backbone"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof *COMMANDS)

static void print_usage(FILE *f) {
    fprintf(f,
            "uflow - U-Flow image anomaly detection and segmentation on the CPU\n\n"
            "usage: uflow <command> [options]   (uflow <command> --help for its options)\n\n"
            "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
}

void cli_keep_freed_memory(void) {
    /* Large buffers (decoded images, full-size maps) are allocated and freed for every image;
     * from glibc's default mmap threshold up, each comes as fresh pages whose first touch
     * faults (on the VMs we measured, a fifth of predict's time). Kept on the heap instead,
     * freed memory is reused: peak memory is unchanged, page faults go. */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

int cli_output_options(const char *cmd, const char *outputs, const char *overlay_format, uf_predict_options *o) {
    if (uf_outputs_parse(outputs, &o->outputs) != UF_OK) return cli_fail(cmd, NULL);
    if (strcmp(overlay_format, "png") && strcmp(overlay_format, "jpeg"))
        return cli_fail(cmd, "--overlay-format must be png or jpeg");
    o->overlay_jpeg = !strcmp(overlay_format, "jpeg");
    return 0;
}

int cli_fail(const char *cmd, const char *msg) {
    fprintf(stderr, "uflow %s: error: %s\n", cmd, msg ? msg : uf_last_error());
    return 1;
}

uf_model *cli_load_model(const char *cmd, const char *path, const char *weights, const char *backbone,
                         const char *precision) {
    uf_model *m = uf_model_load(path, weights, NULL, NULL);
    if (!m) {
        cli_fail(cmd, NULL);
        return NULL;
    }
    uf_backbone_kind want, have;
    if (backbone && uf_backbone_kind_of(backbone, &want) != UF_OK) {
        cli_fail(cmd, NULL);
        uf_model_free(m);
        return NULL;
    }
    if (backbone && (uf_backbone_kind_of(m->cfg.backbone, &have) != UF_OK || have != want ||
                     (want == UF_BACKBONE_RESNET && strcmp(backbone, m->cfg.backbone)))) {
        char msg[1400];
        snprintf(msg, sizeof msg, "%s: the model was trained with backbone '%s', not '%s' (--backbone)", path,
                 m->cfg.backbone, backbone);
        cli_fail(cmd, msg);
        uf_model_free(m);
        return NULL;
    }
    uf_precision prec;
    if (precision &&
        (uf_precision_parse(precision, &prec) != UF_OK || uf_backbone_set_precision(m->backbone, prec) != UF_OK)) {
        cli_fail(cmd, NULL);
        uf_model_free(m);
        return NULL;
    }
    return m;
}

int cli_make_dir(const char *cmd, const char *dir) {
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    }
    char msg[1200];
    snprintf(msg, sizeof msg, "%s: cannot create the output folder: %s", dir, strerror(errno ? errno : ENOTDIR));
    return cli_fail(cmd, msg);
}

/* The library's messages on stderr: progress lines overwrite each other in place on a
 * terminal ("\r", no newline until the next other message); warnings and per-item errors
 * are named "uflow <command>: warning|error: ...". */
static int g_progress_open;

static void print_log(int level, const char *message, void *user) {
    const char *cmd = user;
    if (level == UF_LOG_PROGRESS) {
        if (!isatty(STDERR_FILENO)) return; /* a log file gets the summary line only */
        fprintf(stderr, "\r%s", message);
        g_progress_open = 1;
        fflush(stderr);
        return;
    }
    if (g_progress_open) fputc('\n', stderr);
    g_progress_open = 0;
    if (level == UF_LOG_WARNING)
        fprintf(stderr, "uflow %s: warning: %s\n", cmd, message);
    else if (level == UF_LOG_ERROR)
        fprintf(stderr, "uflow %s: error: %s\n", cmd, message);
    else
        fprintf(stderr, "%s\n", message);
}

/* predict runs the model's OpenMP threads beside the pipeline's writer threads, and libgomp's
 * default wait (spinning at every barrier) then burns the cores the writers need: end to end
 * 56 -> 45 ms per 900x900 image on 2 cores (docs/results.md), the model alone unchanged.
 * libgomp reads OMP_WAIT_POLICY once, when it is loaded, so predict re-executes itself with
 * it set to passive, unless the user set it (then theirs is kept). */
static void passive_openmp_for_pipelines(int argc, char **argv) {
    const int pipelined = argc >= 2 && (!strcmp(argv[1], "predict") ||
                                        (argc >= 3 && !strcmp(argv[1], "bench") && !strcmp(argv[2], "predict")));
    if (!pipelined || getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("OMP_WAIT_POLICY"); /* no re-execution to be had: run as we are */
}

int main(int argc, char **argv) {
    passive_openmp_for_pipelines(argc, argv);
    /* A file-size limit (ulimit -f) must fail a write with EFBIG, which the
     * writers report and clean up after, not kill the process mid-file. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) return cmd_version(1, argv + 1);
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) {
            uf_set_log_callback(print_log, (void *)COMMANDS[i].name);
            return COMMANDS[i].run(argc - 1, argv + 1);
        }
    fprintf(stderr, "uflow: error: unknown command '%s' (see 'uflow --help')\n", argv[1]);
    return 2;
}
