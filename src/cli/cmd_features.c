/* cmd_features.c - `uflow features`: the backbone's feature maps of images
 * (ResNet layer1..3, or the two MS-CaiT maps), written to one .safetensors
 * file (for inspection and comparison with PyTorch). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/shipped.h"
#include "backbone/backbone.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "io/image.h"
#include "io/safetensors.h"

#define GROUP 8 /* images per forward */

int cmd_features(int argc, char **argv) {
    const char *backbone = "resnet18", *weights = NULL, *output = NULL;
    const char *size_arg = NULL;
    int threads = 0;
    const cli_opt opts[] = {
        {"backbone", OPT_STRING, &backbone, 0, 0, "resnet18 | wide_resnet50_2 | mcait (must match the weights)"},
        {"weights", OPT_STRING, &weights, 0, 0,
         "backbone .safetensors (default for resnet18: the shipped one); mcait: M48,S24"},
        {"size", OPT_STRING, &size_arg, 0, 0, "input size N or WxH (default 256, or the backbone's fixed size, 448 for mcait)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
        {"output", OPT_STRING, &output, 0, 0, "the output file (-o)"},
    };
    const char *synopsis =
        "[options] IMAGE... -o OUT.safetensors\n"
        "  Runs each image through the reference pipeline (load as RGB, Pillow bilinear resize to\n"
        "  W x H, ImageNet normalisation) and the backbone, and writes per image i the tensors\n"
        "  '<i>.input' (3,H,W) and, float32 (C,H,W): '<i>.layer1', '<i>.layer2', '<i>.layer3' (ResNet)\n"
        "  or '<i>.extractor1' (CaiT-M48, blocks 0..40 + norm), '<i>.extractor2' (CaiT-S24 on the\n"
        "  bicubic 224 resize, blocks 0..20 + norm) for mcait; metadata 'backbone', 'size', 'weights',\n"
        "  'count' and 'image.<i>' (the paths).";
    char **images = calloc((size_t)argc, sizeof *images);
    int n_images = 0;
    if (!images) return cli_fail("features", "out of memory");
    int r = cli_parse(argc, argv, synopsis, opts, (int)(sizeof opts / sizeof *opts), images, &n_images, argc);
    if (r != CLI_PARSED) {
        free(images);
        return r == CLI_HELP ? 0 : 2;
    }
    if (!output || n_images == 0) {
        fprintf(stderr, "uflow features: error: %s (see 'uflow features --help')\n",
                !output ? "no output file (-o OUT.safetensors)" : "no input images");
        free(images);
        return 2;
    }
    uf_backbone_kind kind;
    if ((strcmp(backbone, "resnet18") && strcmp(backbone, "wide_resnet50_2") && strcmp(backbone, "mcait")) ||
        uf_backbone_kind_of(backbone, &kind) != UF_OK)
        return free(images), cli_fail("features", "--backbone must be resnet18, wide_resnet50_2 or mcait");
    if (!weights) {
        if (strcmp(backbone, "resnet18")) {
            free(images);
            return cli_fail("features", kind == UF_BACKBONE_MCAIT ? "mcait needs --weights M48.safetensors,S24.safetensors"
                                                                  : "no weights are shipped for wide_resnet50_2: give --weights FILE");
        }
        weights = uf_shipped_weights();
    }

    int rc = 1;
    uf_backbone *m = NULL;
    uf_st_writer *w = NULL;
    float *x = NULL, *out[UF_BACKBONE_MAX_LEVELS] = {0};
    size_t feat[UF_BACKBONE_MAX_LEVELS];
    int64_t shapes[UF_BACKBONE_MAX_LEVELS][3];
    int L = 0;
    size_t img_floats = 0;
    if (uf_blas_init() != UF_OK) goto done;
    if (threads) uf_set_num_threads(threads);
    if (!(m = uf_backbone_load(kind, weights))) goto done;
    if (kind == UF_BACKBONE_RESNET && strcmp(uf_backbone_arch(m), backbone)) {
        uf_error("%s holds a %s, not a %s (see --backbone)", weights, uf_backbone_arch(m), backbone);
        goto done;
    }
    int W = uf_backbone_fixed_size(m) ? uf_backbone_fixed_size(m) : 256, H = W;
    if (size_arg && uf_parse_size(size_arg, &W, &H) != UF_OK) goto done;
    if (uf_backbone_fixed_size(m) && uf_backbone_check_size(m, H, W) != UF_OK) goto done;
    const uf_input_geometry geom = {W, H, UF_FIT_STRETCH};
    img_floats = (size_t)3 * W * H;
    L = uf_backbone_levels(m);
    for (int l = 0; l < L; l++) {
        int c, fh, fw;
        uf_backbone_feature_shape(m, l, H, W, &c, &fh, &fw);
        shapes[l][0] = c, shapes[l][1] = fh, shapes[l][2] = fw;
        feat[l] = (size_t)c * fh * fw;
        if (!(out[l] = uf_alloc(sizeof(float) * GROUP * feat[l]))) goto done;
    }
    if (!(x = uf_alloc(sizeof(float) * GROUP * img_floats)) || !(w = uf_st_writer_new())) goto done;
    char key[64], val[32];
    double t_load = 0.0, t_fwd = 0.0;
    for (int i0 = 0; i0 < n_images; i0 += GROUP) {
        int g = n_images - i0 < GROUP ? n_images - i0 : GROUP;
        double t0 = uf_now();
        for (int i = 0; i < g; i++)
            if (uf_image_load_fitted(images[i0 + i], &geom, x + (size_t)i * img_floats) != UF_OK) goto done;
        double t1 = uf_now();
        if (uf_backbone_forward(m, x, g, H, W, out) != UF_OK) goto done;
        t_load += t1 - t0, t_fwd += uf_now() - t1;
        for (int i = 0; i < g; i++) {
            const int64_t in_shape[3] = {3, H, W};
            snprintf(key, sizeof key, "%d.input", i0 + i);
            if (uf_st_writer_add_f32(w, key, UF_DT_F32, 3, in_shape, x + (size_t)i * img_floats) != UF_OK)
                goto done;
            for (int l = 0; l < L; l++) {
                snprintf(key, sizeof key, "%d.%s", i0 + i, uf_backbone_level_name(m, l));
                if (uf_st_writer_add_f32(w, key, UF_DT_F32, 3, shapes[l], out[l] + (size_t)i * feat[l]) != UF_OK)
                    goto done;
            }
            snprintf(key, sizeof key, "image.%d", i0 + i);
            if (uf_st_writer_set_metadata(w, key, images[i0 + i]) != UF_OK) goto done;
        }
    }
    if (W == H)
        snprintf(val, sizeof val, "%d", W);
    else
        snprintf(val, sizeof val, "%dx%d", W, H);
    if (uf_st_writer_set_metadata(w, "backbone", uf_backbone_arch(m)) != UF_OK ||
        uf_st_writer_set_metadata(w, "weights", weights) != UF_OK ||
        uf_st_writer_set_metadata(w, "size", val) != UF_OK)
        goto done;
    snprintf(val, sizeof val, "%d", n_images);
    if (uf_st_writer_set_metadata(w, "count", val) != UF_OK || uf_st_writer_save(w, output) != UF_OK) goto done;
    printf("%d image%s -> %s (%s, %dx%d): load+resize %.1f ms/image, backbone %.1f ms/image\n", n_images,
           n_images == 1 ? "" : "s", output, uf_backbone_arch(m), W, H, 1e3 * t_load / n_images,
           1e3 * t_fwd / n_images);
    rc = 0;
done:
    if (rc) cli_fail("features", NULL);
    for (int l = 0; l < UF_BACKBONE_MAX_LEVELS; l++) uf_free(out[l]);
    uf_free(x);
    uf_st_writer_free(w);
    uf_backbone_free(m);
    free(images);
    return rc;
}
