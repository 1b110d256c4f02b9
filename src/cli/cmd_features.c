/* cmd_features.c - `uflow features`: ResNet layer1..3 feature maps of images,
 * written to one .safetensors file (for inspection and comparison with PyTorch). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/resnet.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "io/image.h"
#include "io/safetensors.h"

#define GROUP 8 /* images per forward */

static void usage(FILE *f) {
    fprintf(f,
            "usage: uflow features [options] IMAGE... -o OUT.safetensors\n"
            "  Runs each image through the reference pipeline (load as RGB, Pillow bilinear resize to\n"
            "  SIZE x SIZE, ImageNet normalisation) and the ResNet up to layer3, and writes per image i\n"
            "  the tensors '<i>.input' (3,S,S), '<i>.layer1', '<i>.layer2', '<i>.layer3' (C,H,W), float32,\n"
            "  with metadata 'backbone', 'size', 'weights', 'count' and 'image.<i>' (the paths).\n"
            "options:\n"
            "  --backbone NAME   resnet18 | wide_resnet50_2 (default resnet18); must match the weights\n"
            "  --weights FILE    .safetensors with timm/torchvision names, BatchNorm or folded\n"
            "                    (default for resnet18: the shipped models/resnet18-in1k-l3-bnfolded.safetensors;\n"
            "                    required otherwise)\n"
            "  --size S          input size (default 256)\n"
            "  --threads N       threads (default: all cores)\n"
            "  -o, --output FILE the output file (required)\n"
            "  -h, --help        show this help\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    fprintf(stderr, "uflow features: error: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    return 2;
}

/* Parses a positive int in [1, max]; 0 on failure. */
static int parse_pos(const char *s, int max) {
    char *end;
    long v = strtol(s, &end, 10);
    return (*s && !*end && v >= 1 && v <= max) ? (int)v : 0;
}

int cmd_features(int argc, char **argv) {
    const char *backbone = "resnet18", *weights = NULL, *output = NULL;
    int size = 256, threads = 0;
    const char **images = calloc((size_t)argc, sizeof *images);
    int n_images = 0;
    if (!images) return cli_fail("features", "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(images);
            return 0;
        } else if (!strcmp(a, "--backbone") && has_val) {
            backbone = argv[++i];
        } else if (!strcmp(a, "--weights") && has_val) {
            weights = argv[++i];
        } else if (!strcmp(a, "--size") && has_val) {
            if (!(size = parse_pos(argv[++i], 4096))) return free(images), bad_usage("bad --size '%s'", argv[i]);
        } else if (!strcmp(a, "--threads") && has_val) {
            if (!(threads = parse_pos(argv[++i], 1024)))
                return free(images), bad_usage("bad --threads '%s'", argv[i]);
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has_val) {
            output = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            return free(images), bad_usage("unknown option or missing value: '%s'", a);
        } else {
            images[n_images++] = a;
        }
    }
    if (!output) return free(images), bad_usage("%s", "no output file (-o OUT.safetensors)");
    if (n_images == 0) return free(images), bad_usage("%s", "no input images");
    if (strcmp(backbone, "resnet18") && strcmp(backbone, "wide_resnet50_2"))
        return free(images), bad_usage("unknown backbone '%s' (resnet18 | wide_resnet50_2)", backbone);
    if (!weights) {
        if (strcmp(backbone, "resnet18")) {
            free(images);
            return cli_fail("features", "no weights are shipped for wide_resnet50_2: give --weights FILE");
        }
        weights = cli_default_weights();
    }

    int rc = 1;
    uf_resnet *m = NULL;
    uf_st_writer *w = NULL;
    float *x = NULL, *out[UF_RESNET_LEVELS] = {0};
    size_t feat[UF_RESNET_LEVELS];
    int64_t shapes[UF_RESNET_LEVELS][3];
    const size_t img_floats = (size_t)3 * size * size;
    if (uf_blas_init() != UF_OK) goto done;
    if (threads) uf_set_num_threads(threads);
    if (!(m = uf_resnet_load(weights))) goto done;
    if (strcmp(uf_resnet_arch(m), backbone)) {
        uf_error("%s holds a %s, not a %s (see --backbone)", weights, uf_resnet_arch(m), backbone);
        goto done;
    }
    for (int l = 0; l < UF_RESNET_LEVELS; l++) {
        int c, fh, fw;
        uf_resnet_feature_shape(m, l, size, size, &c, &fh, &fw);
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
            if (uf_image_load_for_backbone(images[i0 + i], size, x + (size_t)i * img_floats) != UF_OK) goto done;
        double t1 = uf_now();
        if (uf_resnet_forward(m, x, g, size, size, out) != UF_OK) goto done;
        t_load += t1 - t0, t_fwd += uf_now() - t1;
        for (int i = 0; i < g; i++) {
            const int64_t in_shape[3] = {3, size, size};
            snprintf(key, sizeof key, "%d.input", i0 + i);
            if (uf_st_writer_add_f32(w, key, UF_DT_F32, 3, in_shape, x + (size_t)i * img_floats) != UF_OK)
                goto done;
            for (int l = 0; l < UF_RESNET_LEVELS; l++) {
                snprintf(key, sizeof key, "%d.layer%d", i0 + i, l + 1);
                if (uf_st_writer_add_f32(w, key, UF_DT_F32, 3, shapes[l], out[l] + (size_t)i * feat[l]) != UF_OK)
                    goto done;
            }
            snprintf(key, sizeof key, "image.%d", i0 + i);
            if (uf_st_writer_set_metadata(w, key, images[i0 + i]) != UF_OK) goto done;
        }
    }
    snprintf(val, sizeof val, "%d", size);
    if (uf_st_writer_set_metadata(w, "backbone", uf_resnet_arch(m)) != UF_OK ||
        uf_st_writer_set_metadata(w, "weights", weights) != UF_OK ||
        uf_st_writer_set_metadata(w, "size", val) != UF_OK)
        goto done;
    snprintf(val, sizeof val, "%d", n_images);
    if (uf_st_writer_set_metadata(w, "count", val) != UF_OK || uf_st_writer_save(w, output) != UF_OK) goto done;
    printf("%d image%s -> %s (%s, %dx%d): load+resize %.1f ms/image, backbone %.1f ms/image\n", n_images,
           n_images == 1 ? "" : "s", output, uf_resnet_arch(m), size, size, 1e3 * t_load / n_images,
           1e3 * t_fwd / n_images);
    rc = 0;
done:
    if (rc) cli_fail("features", NULL);
    for (int l = 0; l < UF_RESNET_LEVELS; l++) uf_free(out[l]);
    uf_free(x);
    uf_st_writer_free(w);
    uf_resnet_free(m);
    free(images);
    return rc;
}
