/* cmd_inspect.c - `uflow inspect FILE.safetensors`: tensors, dtypes, shapes,
 * offsets and metadata of a weights/model file, after full validation. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "core/error.h"
#include "io/safetensors.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: uflow inspect FILE.safetensors\n"
            "  Validates the file (header, dtypes, shapes, offsets, overlaps) and prints\n"
            "  its tensor count, total parameters, one line per tensor in file order\n"
            "  (name, dtype, shape, data_offsets [begin, end) in the data buffer, bytes),\n"
            "  then the __metadata__ entries as 'key: value'.\n"
            "options:\n"
            "  -h, --help   show this help\n");
}

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

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "uflow inspect: error: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
        if (path) {
            fprintf(stderr, "uflow inspect: error: one file at a time ('%s' and '%s' given)\n", path, argv[i]);
            usage(stderr);
            return 2;
        }
        path = argv[i];
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
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
    uf_st_close(st);
    if (fflush(stdout) != 0) return cli_fail("inspect", "cannot write to standard output");
    return 0;
}
