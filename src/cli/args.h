/* args.h - long-option parsing shared by the subcommands.
 *
 * Each option is "--name VALUE" (or "--name=VALUE"), or "--name" for flags.
 * Values are checked: integers and numbers must parse completely and lie in
 * [min, max]. Arguments not starting with "--" are positional. "-o X" is
 * short for "--output X".
 */
#ifndef UF_CLI_ARGS_H
#define UF_CLI_ARGS_H

#include <stdio.h>

typedef enum { OPT_FLAG, OPT_STRING, OPT_INT, OPT_DOUBLE } cli_opt_kind;

typedef struct cli_opt {
    const char *name; /* without the leading "--" */
    cli_opt_kind kind;
    void *dest;       /* int* (FLAG, INT), const char** (STRING), double* (DOUBLE) */
    double min, max;  /* range for INT / DOUBLE */
    const char *help; /* one line; the default is printed from *dest */
} cli_opt;

enum { CLI_PARSED = 0, CLI_HELP = 1, CLI_BAD = 2 };

/* Parses argv[1..] (argv[0] is the subcommand name). Positional arguments are
 * stored in positional[0..*n_positional) (at most max_positional). Returns
 * CLI_PARSED, CLI_HELP (usage printed to stdout) or CLI_BAD (message and usage
 * printed to stderr). */
/* synopsis: what follows "usage: uflow CMD"; it may go on, after a blank line,
 * with a paragraph printed before the options. */
int cli_parse(int argc, char **argv, const char *synopsis, const cli_opt *opts, int n_opts, char **positional,
              int *n_positional, int max_positional);

void cli_print_usage(FILE *f, const char *cmd, const char *synopsis, const cli_opt *opts, int n_opts);

#endif
