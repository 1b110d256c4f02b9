/* uflow export: rewrite a model file for deployment or for PyTorch. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/error.h"
#include "model/model.h"

#define EXPORT_HELP                                                                                           \
    "Writes MODEL again as OUT. --with-backbone puts the backbone's weights inside (every tensor of\n"       \
    "its weights file(s), as feature_extractor.extractor.* for a ResNet, feature_extractor.extractor1.*\n"  \
    "and .extractor2.* for mcait), so OUT needs no other file. --no-optimizer leaves out the Adam\n"        \
    "moments of a training checkpoint (OUT can no longer be resumed; for resnet18 they are two thirds of\n" \
    "the file). --pytorch is both: OUT then holds exactly the official U-Flow state_dict (loadable with\n"   \
    "strict=True; tools/convert_checkpoint.py --to-pytorch makes the .pt file), and uflow still reads it."

int cmd_export(int argc, char **argv) {
    const char *weights = NULL;
    int with_backbone = 0, no_optimizer = 0, pytorch = 0;
    const cli_opt opts[] = {
        {"with-backbone", OPT_FLAG, &with_backbone, 0, 0, "embed the backbone's weights"},
        {"no-optimizer", OPT_FLAG, &no_optimizer, 0, 0, "leave out the optimizer state"},
        {"pytorch", OPT_FLAG, &pytorch, 0, 0, "--with-backbone --no-optimizer: the official state_dict"},
        {"weights", OPT_STRING, &weights, 0, 0, "backbone weights (default: the paths recorded in MODEL)"},
    };
    char *pos[2];
    int npos;
    int r = cli_parse(argc, argv, "MODEL OUT [options]\n\n" EXPORT_HELP, opts, (int)(sizeof opts / sizeof *opts), pos,
                      &npos, 2);
    if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
    if (npos != 2) {
        fprintf(stderr, "uflow export: error: give the model file and the output file (see 'uflow export --help')\n");
        return 2;
    }
    if (!strcmp(pos[0], pos[1])) return cli_fail("export", "OUT must differ from MODEL");
    if (uf_blas_init() != UF_OK) return cli_fail("export", NULL);
    uf_adam opt;
    memset(&opt, 0, sizeof opt);
    int has_opt = 0;
    uf_model *m = uf_model_load(pos[0], weights, &opt, &has_opt);
    if (!m) return cli_fail("export", NULL);
    const int embed = with_backbone || pytorch || m->backbone_embedded;
    const int keep_opt = has_opt && !no_optimizer && !pytorch;
    int rc = uf_model_save_as(m, pos[1], keep_opt ? &opt : NULL, embed);
    if (rc == UF_OK) {
        struct stat a, b;
        double mb_in = stat(pos[0], &a) == 0 ? a.st_size / 1e6 : 0, mb_out = stat(pos[1], &b) == 0 ? b.st_size / 1e6 : 0;
        printf("%s (%.1f MB) -> %s (%.1f MB): backbone %s, optimizer state %s\n", pos[0], mb_in, pos[1], mb_out,
               embed ? "embedded" : "by path and sha256", keep_opt ? "kept" : "none");
    }
    if (has_opt) uf_adam_free(&opt);
    uf_model_free(m);
    return rc == UF_OK ? 0 : cli_fail("export", NULL);
}
