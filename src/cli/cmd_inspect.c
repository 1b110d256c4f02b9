/* cmd_inspect.c - `uflow inspect FILE.safetensors`: tensors, dtypes, shapes,
 * offsets and metadata of a weights/model file, after full validation. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/model.h"
#include "core/error.h"
#include "io/safetensors.h"

#define SYNOPSIS                                                                          \
    "FILE.safetensors\n\n"                                                              \
    "Validates the file (header, dtypes, shapes, offsets, overlaps) and prints its\n"     \
    "tensor count, total parameters, one line per tensor in file order (name, dtype,\n"   \
    "shape, data_offsets [begin, end] in the data buffer, bytes), then the\n"            \
    "__metadata__ entries as 'key: value'."

/* Prints s with control characters escaped, so that each entry stays on one line. */
static void put_escaped(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
}

/* 12345678 -> "12,345,678" */
static const char *grouped(uint64_t v, char *buf, size_t cap) {
    char raw[32];
    int n = snprintf(raw, sizeof raw, "%" PRIu64, v), j = 0;
    for (int i = 0; i < n && (size_t)j + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) buf[j++] = ',';
        buf[j++] = raw[i];
    }
    buf[j] = '\0';
    return buf;
}

/* A uflow model's tiling, map smoothing and the null hypothesis of its NFA test (model/calibration.h). */
static void put_tiling_and_test(const uf_safetensors *st) {
    const char *tile = uf_st_metadata_get(st, "uflow.tile");
    if (tile) {
        const char *ov = uf_st_metadata_get(st, "uflow.tile_overlap"), *ms = uf_st_metadata_get(st, "uflow.tile_max_short");
        printf("tiling: on, tiles of the input size overlapping by ");
        put_escaped(ov ? ov : "?");
        printf(" px, working shorter side <= ");
        put_escaped(ms ? ms : "?");
        printf(" (0: the image's own)\n");
    } else {
        printf("tiling: off (images resized to the model input)\n");
    }
    const char *sigma = uf_st_metadata_get(st, "uflow.map_sigma");
    if (sigma) {
        printf("anomaly map: smoothed, Gaussian sigma ");
        put_escaped(sigma);
        printf(" input px\n");
    } else {
        printf("anomaly map: the spec's (not smoothed)\n");
    }
    const char *cn = uf_st_metadata_get(st, "uflow.calib_images");
    if (!cn) {
        printf("NFA null hypothesis: the spec's (N(0, 1) latents; not calibrated)\n");
        return;
    }
    const char *cz = uf_st_metadata_get(st, "uflow.calib_z2"), *co = uf_st_metadata_get(st, "uflow.calib_log10_offset");
    const char *fs = uf_st_metadata_get(st, "uflow.calib_flagged_spec"), *fc = uf_st_metadata_get(st, "uflow.calib_flagged");
    const char *cr = uf_st_metadata_get(st, "uflow.calib_rate");
    printf("NFA null hypothesis: calibrated on %d normal images: latent variance per scale ", atoi(cn));
    put_escaped(cz ? cz : "?");
    printf(", log10 N_T + %.3f; images with a detection %.1f%% under the spec's test, %.1f%% calibrated "
           "(target <= %.0f%%)\n",
           co ? atof(co) : NAN, fs ? 100 * atof(fs) : NAN, fc ? 100 * atof(fc) : NAN, cr ? 100 * atof(cr) : NAN);
}

int cmd_inspect(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h")) {
            cli_print_usage(stdout, "inspect", SYNOPSIS, NULL, 0);
            return 0;
        }
    char *pos[1];
    int npos = 0;
    int rc = cli_parse(argc, argv, SYNOPSIS, NULL, 0, pos, &npos, 1);
    if (rc != CLI_PARSED) return rc == CLI_HELP ? 0 : 2;
    if (npos != 1) {
        fprintf(stderr, "uflow inspect: error: no file given\n");
        cli_print_usage(stderr, "inspect", SYNOPSIS, NULL, 0);
        return 2;
    }
    const char *path = pos[0];
    uf_safetensors *st = uf_st_open(path);
    if (!st) return cli_fail("inspect", NULL);

    int n = uf_st_count(st);
    uint64_t params = 0;
    int wname = 4;
    for (int i = 0; i < n; i++) {
        const uf_st_tensor *t = uf_st_at(st, i);
        params += (uint64_t)t->numel;
        int len = (int)strlen(t->name);
        if (len > wname) wname = len < 60 ? len : 60;
    }
    char b1[40], b2[40];
    printf("file: %s\n", path);
    printf("tensors: %d\n", n);
    printf("parameters: %s\n", grouped(params, b1, sizeof b1));
    printf("data: %s bytes\n", grouped(uf_st_data_size(st), b2, sizeof b2));
    for (int i = 0; i < n; i++) {
        const uf_st_tensor *t = uf_st_at(st, i);
        char shape[200], offs[64];
        uf_shape_str(t->ndim, t->shape, shape, sizeof shape);
        snprintf(offs, sizeof offs, "[%zu, %zu]", t->offset, t->offset + t->nbytes);
        printf("  ");
        put_escaped(t->name);
        int len = (int)strlen(t->name);
        printf("%*s  %-4s  %-20s  %-24s  %zu bytes\n", len < wname ? wname - len : 0, "", uf_dtype_name(t->dtype),
               shape, offs, t->nbytes);
    }
    int nm = uf_st_metadata_count(st);
    printf("metadata: %d %s\n", nm, nm == 1 ? "entry" : "entries");
    for (int i = 0; i < nm; i++) {
        printf("  ");
        put_escaped(uf_st_metadata_key(st, i));
        printf(": ");
        put_escaped(uf_st_metadata_value(st, i));
        putchar('\n');
    }
    /* A model trained with validation: say what its held-out z^2 means (model/model.h's band). */
    const char *z2 = uf_st_metadata_get(st, "uflow.val_z2"), *nv = uf_st_metadata_get(st, "uflow.val_images");
    if (z2 && nv) {
        int inside = 1, k = 0;
        for (const char *p = z2; *p; k++) {
            char *end;
            double v = strtod(p, &end);
            if (end == p) {
                inside = -1;
                break;
            }
            if (!(v >= UF_VAL_Z2_LOW && v <= UF_VAL_Z2_HIGH)) inside = 0;
            p = *end == ',' ? end + 1 : end;
            if (*end && *end != ',') {
                inside = -1;
                break;
            }
        }
        if (inside >= 0 && k > 0)
            printf("validation: %s held-out normal images, mean z^2 per scale %s: %s the band [%.2f, %.2f]%s\n", nv,
                   z2, inside ? "inside" : "outside", UF_VAL_Z2_LOW, UF_VAL_Z2_HIGH,
                   inside ? " (the automatic NFA threshold can be trusted)"
                          : " (the automatic NFA threshold is not trustworthy)");
    }
    if (uf_st_metadata_get(st, "uflow.format")) put_tiling_and_test(st);
    uf_st_close(st);
    if (fflush(stdout) != 0) return cli_fail("inspect", "cannot write to standard output");
    return 0;
}
