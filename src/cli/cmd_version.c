#include <stdio.h>

#include "backbone/resnet.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/conv_blocked.h"
#include "core/error.h"
#include "uflow.h"

int cmd_version(int argc, char **argv) {
    (void)argc, (void)argv;
    printf("uflow %s\n", uf_version());
    if (uf_blas_init() != UF_OK) return cli_fail("version", NULL);
    const char *chosen = uf_blas_coretype_chosen();
    printf("blas: %s\n", uf_blas_library());
    printf("blas kernels: %s (%s)\n", uf_blas_corename(),
           chosen[0] ? "OPENBLAS_CORETYPE chosen by uflow for this CPU" : "OPENBLAS_CORETYPE from the environment");
    printf("convolutions: %s\n", uf_resnet_dnnl_info());
    const int lanes = uf_cblk_lanes();
    if (lanes)
        printf("flow subnets: oneDNN direct kernels, channel-blocked layout (%d lanes)\n", lanes);
    else
        printf("flow subnets: plain layout (no oneDNN blocked kernels for this CPU)\n");
    printf("threads: %d\n", uf_get_num_threads());
    return 0;
}
