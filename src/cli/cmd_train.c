/* uflow train: fit the U-shaped flow on normal images and write a model file. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backbone/shipped.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/blas.h"
#include "core/error.h"
#include "model/presets.h"
#include "model/train.h"

/* The bad-input policy, for --help (also in the README). */
#define TRAIN_POLICY                                                                                      \
    "Bad images: an image that cannot be read (corrupt, truncated, unsupported, too large) stops training\n" \
    "with one line naming it, and nothing is written (an existing model file is left as it was), unless\n"   \
    "--skip-bad-images, which leaves such images out and counts them. --resume checks that the training\n"  \
    "images are the ones the checkpoint was trained on.\n\n"                                                 \
    "Validation: --val-split of the normal images (0.1; at least 2 images, chosen by --seed) is held out;\n" \
    "after each epoch their mean loss and per-scale mean z^2 are printed and logged in <model>.train.csv.\n" \
    "The NFA threshold is trustworthy while that z^2 is in [0.8, 1.25]. --early-stop on (default) ends\n"    \
    "training when it has been inside and then stays above 1.25 for 2 epochs, or when the validation loss\n" \
    "has not improved for --patience epochs (10); the model file keeps the best epoch.\n\n"                 \
    "Tiling (--tile auto, the default at the default input size): when the training images' median\n"     \
    "shorter side is at least 1.5x the model input's, each image is looked at near its own resolution\n"   \
    "(shorter side at most 2x the input's) and cut into input-sized tiles overlapping by 1/8 of a tile,\n" \
    "instead of being resized: small defects keep their pixels. Each epoch takes one random tile of each\n"\
    "image. The tiles' maps are stitched over the whole image and the NFA counts the tests of all of\n"    \
    "them. --tile on|off forces it; the model file records it.\n\n"                                       \
    "Calibrated threshold: after training, the held-out normal images (or --val DIR, or the data set's\n"  \
    "own validation/good folder) set the NFA's null hypothesis: a per-scale latent variance and an\n"      \
    "offset on the number of tests such that at most --calib-rate (0.05) of such normal images get a\n"   \
    "detection (a conformal bound; --calib-rate 0: the spec's test).\n\n"                                 \
    "Anomaly map: smoothed by a Gaussian of --map-sigma (4) model-input pixels, one cell of the finest\n" \
    "latent grid (as PatchCore and anomalib smooth theirs; on the stitched map when tiled); the image\n" \
    "score is the smoothed map's maximum. The NFA and the mask do not change. 0: the spec's map."

/* The --help paragraph listing the presets (spec 5.3). */
static const char *preset_help(void) {
    static char buf[4096];
    size_t used = (size_t)snprintf(buf, sizeof buf,
                                   "\n\nPresets (--preset NAME): the paper's settings per MVTec-AD category, backbone mcait at "
                                   "448\n(needs --weights M48,S24); options given explicitly override them.\n");
    for (int i = 0; i < uf_preset_count() && used < sizeof buf; i++) {
        const uf_preset *p = uf_preset_at(i);
        used += (size_t)snprintf(buf + used, sizeof buf - used, "  %-17s %3d epochs, batch %2d, lr %.4g%s", p->name,
                                 p->epochs, p->batch, p->lr, i + 1 < uf_preset_count() ? "\n" : "");
    }
    return buf;
}

int cmd_train(int argc, char **argv) {
    uf_train_options o = uf_train_default_options();
    const char *backbone = NULL, *ln = NULL, *loss = "official", *preset = NULL;
    const char *data = NULL, *out = NULL, *weights = NULL;
    const char *size = NULL;
    int threads = 0, resume = 0, keep_aspect = 0;
    const char *early_stop = "on", *tile = "auto";
    double seed = 0;
    const cli_opt opts[] = {
        {"data", OPT_STRING, &data, 0, 0, "MVTec-AD category (train/good) or a folder of normal images"},
        {"output", OPT_STRING, &out, 0, 0,
         "model file to write (-o); with early stopping it keeps the best epoch and the checkpoint is "
         "<model>.checkpoint.safetensors, else it is the checkpoint too"},
        {"preset", OPT_STRING, &preset, 0, 0, "the paper's settings for a category, e.g. mvtec/bottle (see below)"},
        {"backbone", OPT_STRING, &backbone, 0, 0, "resnet18 | wide_resnet50_2 | mcait (default resnet18)"},
        {"weights", OPT_STRING, &weights, 0, 0,
         "backbone .safetensors (default: the shipped ResNet-18; on --resume the checkpoint's); mcait: M48,S24"},
        {"size", OPT_STRING, &size, 0, 0,
         "input size N or WxH, e.g. 512x128 (sides multiples of 16; default 256, or 448 for mcait)"},
        {"keep-aspect", OPT_FLAG, &keep_aspect, 0, 0,
         "resize so the image covers the input and centre-crop (torchvision Resize + CenterCrop) instead of stretching"},
        {"epochs", OPT_INT, &o.epochs, 1, 1000000, "epochs"},
        {"batch", OPT_INT, &o.batch, 1, 4096, "batch size"},
        {"lr", OPT_DOUBLE, &o.lr, 1e-12, 10, "Adam learning rate"},
        {"weight-decay", OPT_DOUBLE, &o.weight_decay, 0, 1, "L2 weight decay added to the gradient"},
        {"seed", OPT_DOUBLE, &seed, 0, 9007199254740992.0, "seed of the initialisation and shuffling"},
        {"steps", OPT_INT, &o.n_steps, 1, 64, "flow steps per scale"},
        {"ln-affine", OPT_STRING, &ln, 0, 0, "ResNet LayerNorm affine: logdet | reference | frozen (default logdet)"},
        {"loss", OPT_STRING, &loss, 0, 0, "official | anomalib (batch-summed z term)"},
        {"checkpoint-every", OPT_INT, &o.checkpoint_every, 0, 1000000, "epochs between checkpoints (0: end only)"},
        {"val-split", OPT_DOUBLE, &o.val_split, 0, 0.9,
         "fraction of the normal images held out to check calibration each epoch (0: none; chosen by --seed)"},
        {"val", OPT_STRING, &o.val_dir, 0, 0, "instead of --val-split: a folder of normal validation images"},
        {"early-stop", OPT_STRING, &early_stop, 0, 0,
         "on | off: with validation, stop when the held-out z^2 leaves [0.8, 1.25] upwards or the validation "
         "loss stalls, and keep the best epoch in the model file (default on)"},
        {"patience", OPT_INT, &o.patience, 1, 1000000, "epochs without a better validation loss before an early stop"},
        {"max-images", OPT_INT, &o.max_images, -1, 1 << 30,
         "use the first N training images (0 or -1: all; on --resume -1 means the checkpoint's)"},
        {"skip-bad-images", OPT_FLAG, &o.skip_bad_images, 0, 0, "leave unreadable images out instead of stopping"},
        {"feature-cache", OPT_STRING, &o.feature_cache, 0, 0,
         "DIR | auto (MODEL.features for mcait) | off: backbone features kept on disk for reruns and --resume"},
        {"tile", OPT_STRING, &tile, 0, 0, "auto | on | off: cut large images into input-sized tiles (see below)"},
        {"tile-overlap", OPT_INT, &o.tile_overlap, 0, 8192, "pixels shared by neighbouring tiles (default 1/8 tile)"},
        {"calib-rate", OPT_DOUBLE, &o.calib_rate, 0, 0.5,
         "share of normal images allowed a detection by the calibrated NFA (0.05; 0: uncalibrated)"},
        {"map-sigma", OPT_DOUBLE, &o.map_sigma, 0, UF_MAP_SIGMA_MAX,
         "Gaussian smoothing of the anomaly map, in input pixels (default 4; 0: the spec's map)"},
        {"resume", OPT_FLAG, &resume, 0, 0, "continue the training saved in the output file"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (0: all cores)"},
    };
    const int n_opts = (int)(sizeof opts / sizeof *opts);
    char synopsis[8192];
    snprintf(synopsis, sizeof synopsis, "--data DIR -o MODEL.safetensors [options]\n\n%s%s", TRAIN_POLICY,
             preset_help());
    char *pos[1];
    int npos;
    int r = cli_parse(argc, argv, synopsis, opts, n_opts, pos, &npos, 0);
    if (r != CLI_PARSED) return r == CLI_HELP ? 0 : 2;
    if (preset) {
        /* The preset overwrites its settings; parsing again restores the ones given explicitly. */
        const uf_preset *p = uf_preset_find(preset);
        if (!p) return cli_fail("train", "unknown --preset (see 'uflow train --help' for the list)");
        backbone = p->backbone, o.input.width = o.input.height = p->input_size, o.epochs = p->epochs;
        o.batch = p->batch;
        o.lr = p->lr, o.weight_decay = p->weight_decay, o.n_steps = p->flow_steps;
        cli_parse(argc, argv, synopsis, opts, n_opts, pos, &npos, 0);
    }
    if (!data || !out) {
        fprintf(stderr, "uflow train: error: --data and -o are required (see 'uflow train --help')\n");
        return 2;
    }
    if (!backbone) backbone = "resnet18";
    if (uf_backbone_kind_of(backbone, &o.backbone) != UF_OK || (strcmp(backbone, "resnet18") &&
                                                               strcmp(backbone, "wide_resnet50_2") &&
                                                               strcmp(backbone, "mcait")))
        return cli_fail("train", "--backbone must be resnet18, wide_resnet50_2 or mcait");
    if (!weights && !resume) {
        if (!strcmp(backbone, "mcait"))
            return cli_fail("train", "mcait needs --weights M48.safetensors,S24.safetensors (timm's "
                                     "cait_m48_448.fb_dist_in1k and cait_s24_224.fb_dist_in1k files)");
        if (strcmp(backbone, "resnet18"))
            return cli_fail("train", "no weights are shipped for wide_resnet50_2: pass --weights FILE");
        weights = uf_shipped_weights();
    }
    if (o.backbone == UF_BACKBONE_MCAIT && ln)
        return cli_fail("train", "--ln-affine does not apply to mcait (no LayerNorm in front of the flow)");
    if (uf_ln_mode_parse(ln ? ln : "logdet", &o.ln_mode) != UF_OK || o.ln_mode == UF_LN_NONE)
        return cli_fail("train", "--ln-affine must be logdet, reference or frozen");
    if (strcmp(loss, "official") && strcmp(loss, "anomalib")) return cli_fail("train", "--loss must be official or anomalib");
    o.anomalib_loss = !strcmp(loss, "anomalib");
    if (size && uf_parse_size(size, &o.input.width, &o.input.height) != UF_OK) {
        fprintf(stderr, "uflow train: error: --size: %s\n", uf_last_error());
        return 2;
    }
    if (keep_aspect) {
        o.input.fit = UF_FIT_KEEP_ASPECT;
        if (!o.input.width) o.input.width = o.input.height = o.backbone == UF_BACKBONE_MCAIT ? 448 : 256;
    }
    if (strcmp(early_stop, "on") && strcmp(early_stop, "off")) return cli_fail("train", "--early-stop must be on or off");
    o.early_stop = !strcmp(early_stop, "on");
    if (!strcmp(tile, "auto"))
        o.tile = -1;
    else if (!strcmp(tile, "on") || !strcmp(tile, "off"))
        o.tile = !strcmp(tile, "on");
    else
        return cli_fail("train", "--tile must be auto, on or off");
    o.data_dir = data;
    o.out_path = out;
    o.weights = weights;
    o.seed = (uint64_t)seed;
    o.resume = resume;
    if (uf_blas_init() != UF_OK) return cli_fail("train", NULL);
    uf_set_num_threads(threads);
    uf_train_report rep;
    if (uf_train(&o, &rep) != UF_OK) return cli_fail("train", NULL);
    if (rep.n_skipped) fprintf(stderr, "uflow train: warning: %d unreadable images were left out\n", rep.n_skipped);
    if (rep.n_val) {
        printf("validation on %d held-out images: loss %.2f, mean z^2 per scale", rep.n_val, rep.val_nll);
        int in_band = 1;
        for (int l = 0; l < UF_FLOW_MAX_SCALES && !isnan(rep.val_z2[l]); l++) {
            printf(" %.3f", rep.val_z2[l]);
            in_band &= rep.val_z2[l] >= UF_VAL_Z2_LOW && rep.val_z2[l] <= UF_VAL_Z2_HIGH;
        }
        printf(" at the last epoch (%s [%.2f, %.2f])\n", in_band ? "inside" : "outside", UF_VAL_Z2_LOW, UF_VAL_Z2_HIGH);
        if (rep.best_epoch != rep.epochs_done)
            printf("the model keeps epoch %d (the best on the held-out images)\n", rep.best_epoch);
    }
    if (rep.calib.n_images) {
        printf("NFA calibrated on %d normal images (%s): images with a detection %.1f%% with the spec's test, %.1f%% "
               "calibrated (target <= %.0f%%)\n",
               rep.calib.n_images, rep.calib.source, 100 * rep.calib.flagged_spec, 100 * rep.calib.flagged,
               100 * rep.calib.rate);
    }
    if (rep.n_tiled_images)
        printf("tiled: %d tiles of %d training images (each epoch, one tile of each image, drawn at random)\n",
               rep.n_images, rep.n_tiled_images);
    printf("trained %d %s, %d epochs done: loss %.2f -> %.2f; features %.1f s (%d from the cache), training "
           "%.1f s (%.1f img/s, %.0f%% in GEMM); model written to %s\n",
           rep.n_images, rep.n_tiled_images ? "tiles" : "images", rep.epochs_done, rep.first_loss, rep.last_loss,
           rep.feature_seconds, rep.features_from_cache, rep.train_seconds, rep.images_per_second,
           rep.train_seconds > 0 ? 100.0 * rep.gemm_seconds / rep.train_seconds : 0.0, out);
    return 0;
}
