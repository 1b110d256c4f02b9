/* commands.h - the `uflow` subcommands. Each takes the arguments after its
 * name (argv[0] is the subcommand name) and returns the process exit status.
 * Errors are printed by the command itself as one line: "uflow: error: ...". */
#ifndef UF_CLI_COMMANDS_H
#define UF_CLI_COMMANDS_H

int cmd_version(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_test(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_watch(int argc, char **argv);

/* Prints "uflow <cmd>: error: <msg>" (the library's last error when msg is NULL); returns 1. */
/* For commands that process many large images (predict): glibc keeps freed blocks for reuse
 * instead of unmapping them (see main.c). */
void cli_keep_freed_memory(void);
int cli_fail(const char *cmd, const char *msg);

/* Creates dir (one level) unless it exists as a folder; 0, or prints the error and returns 1. */
int cli_make_dir(const char *cmd, const char *dir);

struct uf_model;
/* Loads a model file (weights NULL: the ones it records; see uf_model_load). When
 * backbone is not NULL the model's backbone must be that one; precision (NULL: fp32) is
 * --precision's value, applied to the backbone. NULL after printing the one-line error. */
struct uf_model *cli_load_model(const char *cmd, const char *path, const char *weights, const char *backbone,
                                const char *precision);
struct uf_predict_options;
/* --outputs and --overlay-format into o; 0, or 1 after printing the one-line error. */
int cli_output_options(const char *cmd, const char *outputs, const char *overlay_format, struct uf_predict_options *o);
struct uf_evaluate_report;
/* Prints the metrics table of `uflow test` / `uflow demo`. */
void cli_print_metrics(const struct uf_model *m, const struct uf_evaluate_report *rep);

#endif
