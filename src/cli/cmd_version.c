#include <stdio.h>

#include "backbone/resnet.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/conv_blocked.h"
#include "core/error.h"
#include "core/version.h"

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
    /* the flow's stage-0 subnet convolution at batch 8, as a probe for the kernel family */
    const uf_conv_geom probe = {.n = 8, .c_in = 42, .h = 64, .w = 64, .c_out = 84, .k = 3, .stride = 1, .pad = 1};
    if (lanes && uf_cblk_supported(&probe, 1) && uf_cblk_winograd(&probe, 1))
        printf("flow subnets: channel-blocked layout (%d lanes); 3x3 by Winograd (%s), 1x1 oneDNN direct "
               "(the backbone's 3x3 stride-1 convolutions by Winograd too)\n", lanes,
               lanes == 8 ? "uflow's AVX2 kernels" : "oneDNN's kernels");
    else if (lanes && !uf_cblk_get_winograd())
        printf("flow subnets: oneDNN direct kernels, channel-blocked layout (%d lanes); Winograd off "
               "(UFLOW_WINOGRAD=0)\n", lanes);
    else if (lanes)
        printf("flow subnets: oneDNN direct kernels, channel-blocked layout (%d lanes); no Winograd kernels for "
               "this CPU (oneDNN's need AVX-512, uflow's AVX2 and FMA)\n", lanes);
    else
        printf("flow subnets: plain layout (no oneDNN blocked kernels for this CPU)\n");
    printf("threads: %d\n", uf_get_num_threads());
    return 0;
}
