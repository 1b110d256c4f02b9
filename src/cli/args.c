#include "cli/args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void cli_print_usage(FILE *f, const char *cmd, const char *synopsis, const cli_opt *opts, int n_opts) {
    fprintf(f, "usage: uflow %s %s\n\noptions:\n", cmd, synopsis);
    for (int i = 0; i < n_opts; i++) {
        const cli_opt *o = &opts[i];
        char left[64], def[96] = "";
        snprintf(left, sizeof left, "--%s%s", o->name,
                 o->kind == OPT_FLAG ? "" : o->kind == OPT_STRING ? " S" : o->kind == OPT_INT ? " N" : " X");
        if (o->kind == OPT_INT) snprintf(def, sizeof def, " (default %d)", *(int *)o->dest);
        if (o->kind == OPT_DOUBLE) snprintf(def, sizeof def, " (default %g)", *(double *)o->dest);
        if (o->kind == OPT_STRING && *(const char **)o->dest)
            snprintf(def, sizeof def, " (default %s)", *(const char **)o->dest);
        fprintf(f, "  %-22s %s%s\n", left, o->help, def);
    }
    fprintf(f, "  %-22s %s\n", "--help", "show this help");
}

static int bad(const char *cmd, const char *synopsis, const cli_opt *opts, int n_opts, const char *msg,
               const char *arg) {
    fprintf(stderr, "uflow %s: error: %s '%s'\n", cmd, msg, arg);
    cli_print_usage(stderr, cmd, synopsis, opts, n_opts);
    return CLI_BAD;
}

int cli_parse(int argc, char **argv, const char *synopsis, const cli_opt *opts, int n_opts, char **positional,
              int *n_positional, int max_positional) {
    const char *cmd = argv[0];
    *n_positional = 0;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (!strcmp(arg, "-o")) arg = "--output"; /* the one short alias: -o FILE|DIR */
        if (strncmp(arg, "--", 2) != 0 || !strcmp(arg, "--")) {
            if (*n_positional >= max_positional)
                return bad(cmd, synopsis, opts, n_opts, "unexpected argument", arg);
            positional[(*n_positional)++] = arg;
            continue;
        }
        if (!strcmp(arg, "--help")) {
            cli_print_usage(stdout, cmd, synopsis, opts, n_opts);
            return CLI_HELP;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt *o = NULL;
        for (int j = 0; j < n_opts && !o; j++)
            if (strlen(opts[j].name) == name_len && !strncmp(opts[j].name, name, name_len)) o = &opts[j];
        if (!o) return bad(cmd, synopsis, opts, n_opts, "unknown option", arg);
        if (o->kind == OPT_FLAG) {
            if (eq) return bad(cmd, synopsis, opts, n_opts, "option takes no value", arg);
            *(int *)o->dest = 1;
            continue;
        }
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value) return bad(cmd, synopsis, opts, n_opts, "missing value for", arg);
        if (o->kind == OPT_STRING) {
            *(const char **)o->dest = value;
            continue;
        }
        char *end;
        errno = 0;
        double v = o->kind == OPT_INT ? (double)strtol(value, &end, 10) : strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v) || v < o->min || v > o->max) {
            char msg[160];
            snprintf(msg, sizeof msg, "--%.*s needs %s in [%g, %g], got", (int)name_len, name,
                     o->kind == OPT_INT ? "an integer" : "a number", o->min, o->max);
            return bad(cmd, synopsis, opts, n_opts, msg, value);
        }
        if (o->kind == OPT_INT)
            *(int *)o->dest = (int)v;
        else
            *(double *)o->dest = v;
    }
    return CLI_PARSED;
}
