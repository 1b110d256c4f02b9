/* gen_seeds.c - writes the generated part of the seed corpora (make fuzz-seeds).
 *
 * Run from the repository root: build/fuzz/gen_seeds fuzz/corpus
 *   model/        small model files made by uf_model_save (tiny test ResNet,
 *                 input 32): F32 without, F16 with an optimizer state
 *   safetensors/  files with every dtype, metadata, scalars and empty tensors
 *   image/        tiny PNGs (8-bit gray/RGB, 16-bit gray) and PGM/PPM/TGA/GIF
 *                 (formats uf_image_load refuses)
 *   dataset/      op programs for fuzz_dataset.c: MVTec-AD, MVTec 3D-AD and
 *                 plain-folder layouts, links and loops
 * The other seeds (real JPEG/BMP/PNG files from tests/data) are plain copies.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "model/model.h"

#define BACKBONE "tests/data/resnet/r18_small_folded.safetensors"

static const char *g_out;

static void die(const char *what) {
    fprintf(stderr, "gen_seeds: %s: %s\n", what, uf_last_error());
    exit(1);
}

static const char *out_path(const char *sub, const char *name) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s/%s", g_out, sub, name);
    return p;
}

static void write_bytes(const char *sub, const char *name, const void *data, size_t n) {
    const char *p = out_path(sub, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        perror(p);
        exit(1);
    }
}

static void model_seed(const char *name, int size, int steps, uf_ln_mode ln, int with_opt, int with_backbone) {
    uf_model *m = uf_model_create(UF_BACKBONE_RESNET, BACKBONE, size, steps, ln, 7);
    if (!m) die(name);
    m->cfg.train = (uf_train_settings){2, 4, 1e-3, 1e-5, 7, 0};
    m->cfg.epochs_done = 1;
    snprintf(m->cfg.train_data, sizeof m->cfg.train_data, "data/bottle");
    uf_adam opt;
    if (with_opt) {
        if (uf_adam_init(&opt, m->flow->n_trainable, 1e-3) != UF_OK) die(name);
        opt.step = 3;
        for (size_t i = 0; i < opt.n; i++) opt.m[i] = 1e-3f * (float)(i % 7), opt.v[i] = 1e-6f * (float)(i % 5);
    }
    if (uf_model_save_as(m, out_path("model", name), with_opt ? &opt : NULL, with_backbone) != UF_OK) die(name);
    if (with_opt) uf_adam_free(&opt);
    uf_model_free(m);
}

/* Rewrites a file with every tensor stored as F16 (half the size; the loader converts). */
static void to_f16(const char *sub, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s", out_path(sub, name));
    uf_safetensors *st = uf_st_open(path);
    uf_st_writer *w = uf_st_writer_new();
    if (!st || !w) die(name);
    for (int i = 0; i < uf_st_metadata_count(st); i++)
        uf_st_writer_set_metadata(w, uf_st_metadata_key(st, i), uf_st_metadata_value(st, i));
    for (int i = 0; i < uf_st_count(st); i++) {
        const uf_st_tensor *t = uf_st_at(st, i);
        uf_tensor *v = uf_st_read_f32(st, t->name, -1, NULL);
        if (!v || uf_st_writer_add_f32(w, t->name, UF_DT_F16, t->ndim, t->shape, v->data) != UF_OK) die(t->name);
        uf_tensor_free(v);
    }
    uf_st_close(st);
    if (uf_st_writer_save(w, path) != UF_OK) die(name);
    uf_st_writer_free(w);
}

/* A safetensors file from a header string and a data buffer. */
static void raw_st(const char *name, const char *header, const void *data, size_t n) {
    size_t h = strlen(header);
    unsigned char *buf = malloc(8 + h + n);
    uint64_t le = h;
    memcpy(buf, &le, 8);
    memcpy(buf + 8, header, h);
    if (n) memcpy(buf + 8 + h, data, n);
    write_bytes("safetensors", name, buf, 8 + h + n);
    free(buf);
}

static void safetensors_seeds(void) {
    uf_st_writer *w = uf_st_writer_new();
    float v[12];
    for (int i = 0; i < 12; i++) v[i] = 0.25f * (float)i - 1.0f;
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s0[2] = {0, 5}, iv[6] = {-1, 0, 1, 2, 1 << 20, INT64_MIN};
    uf_st_writer_add_f32(w, "a.f32", UF_DT_F32, 2, s23, v);
    uf_st_writer_add_f32(w, "b.f16", UF_DT_F16, 1, s4, v);
    uf_st_writer_add_f32(w, "c.bf16", UF_DT_BF16, 1, s4, v + 4);
    uf_st_writer_add_f32(w, "d.f64", UF_DT_F64, 2, s23, v + 6);
    uf_st_writer_add_f32(w, "e.scalar", UF_DT_F32, 0, NULL, v + 3);
    uf_st_writer_add_f32(w, "f.empty", UF_DT_F32, 2, s0, v);
    uf_st_writer_add_i64(w, "g.i64", 2, s23, iv);
    uf_st_writer_set_metadata(w, "format", "pt");
    uf_st_writer_set_metadata(w, "uflow.note", "x");
    if (uf_st_writer_save(w, out_path("safetensors", "writer.safetensors")) != UF_OK) die("writer");
    uf_st_writer_free(w);

    unsigned char d[32];
    for (int i = 0; i < 32; i++) d[i] = (unsigned char)(i < 8 ? i % 2 : i * 37);
    raw_st("ints.safetensors",
           "{\"bool\":{\"dtype\":\"BOOL\",\"shape\":[8],\"data_offsets\":[0,8]},"
           "\"u8\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[8,12]},"
           "\"i8\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[12,16]},"
           "\"i16\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[16,20]},"
           "\"i32\":{\"dtype\":\"I32\",\"shape\":[1,3],\"data_offsets\":[20,32]},"
           "\"__metadata__\":{\"k\":\"v\",\"empty\":\"\"}}  ",
           d, 32);
    raw_st("empty.safetensors", "{}", NULL, 0);
    raw_st("gap.safetensors",
           "{\"x\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]},"
           "\"y\":{\"dtype\":\"F16\",\"shape\":[0,9007199254740992],\"data_offsets\":[8,8]}}",
           d, 16);
}

static void image_seeds(void) {
    uf_image *g = uf_image_new(5, 4, 1), *c = uf_image_new(3, 2, 3);
    if (!g || !c) die("image");
    for (int i = 0; i < 20; i++) g->pixels[i] = (uint8_t)(i * 13);
    for (int i = 0; i < 18; i++) c->pixels[i] = (uint8_t)(i * 29);
    if (uf_image_write_png(out_path("image", "gray8.png"), g) != UF_OK) die("png");
    if (uf_image_write_png(out_path("image", "rgb8.png"), c) != UF_OK) die("png");
    uint16_t g16[6] = {0, 1000, 30000, 65535, 256, 255};
    if (uf_png_write_gray16(out_path("image", "gray16.png"), g16, 3, 2) != UF_OK) die("png16");
    uf_image_free(g);
    uf_image_free(c);

    unsigned char pgm[11 + 6] = "P5\n3 2\n255\n";
    for (int i = 0; i < 6; i++) pgm[11 + i] = (unsigned char)(i * 50);
    write_bytes("image", "gray.pgm", pgm, sizeof pgm);
    unsigned char ppm[11 + 12] = "P6\n2 2\n255\n";
    for (int i = 0; i < 12; i++) ppm[11 + i] = (unsigned char)(i * 20);
    write_bytes("image", "rgb.ppm", ppm, sizeof ppm);
    /* uncompressed true-colour TGA, 2x2, 24 bits, origin top-left */
    unsigned char tga[18 + 12] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 24, 0x20};
    for (int i = 0; i < 12; i++) tga[18 + i] = (unsigned char)(255 - i * 20);
    write_bytes("image", "rgb.tga", tga, sizeof tga);
    static const unsigned char gif[] = {0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80,
                                        0x00, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x21, 0xf9, 0x04,
                                        0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01,
                                        0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};
    write_bytes("image", "one.gif", gif, sizeof gif);
}

/* dataset op program: (kind, parent, name, target) per op; see fuzz_dataset.c */
enum { MKDIR = 0, FILE_ = 3, LINK = 5, FIFO = 7 };
enum { TRAIN, TEST, GOOD, GROUND_TRUTH, RGB, GT, CRACK, VALIDATION, XYZ, P000, P001, M000, M001 };

static void dataset_seeds(void) {
    /* MVTec-AD: nodes 1 train, 2 test, 3 ground_truth, 4 train/good, 5 test/good, 6 test/crack,
     * 7 ground_truth/crack (dirs 0..7 in creation order) */
    static const unsigned char mvtec[] = {
        MKDIR, 0, TRAIN, 0,  MKDIR, 0, TEST, 0,  MKDIR, 0, GROUND_TRUTH, 0,
        MKDIR, 1, GOOD, 0,   MKDIR, 2, GOOD, 0,  MKDIR, 2, CRACK, 0,
        MKDIR, 3, CRACK, 0,  FILE_, 4, P000, 0,  FILE_, 4, P001, 0,
        FILE_, 5, P000, 0,   FILE_, 6, P000, 0,  FILE_, 6, P001, 0,
        FILE_, 7, M000, 0,
    };
    write_bytes("dataset", "mvtec", mvtec, sizeof mvtec);
    /* MVTec 3D-AD: train/good/rgb, test/crack/{rgb,gt}, test/good/rgb */
    static const unsigned char mvtec3d[] = {
        MKDIR, 0, TRAIN, 0, MKDIR, 0, TEST, 0,  MKDIR, 1, GOOD, 0, MKDIR, 2, CRACK, 0,
        MKDIR, 2, GOOD, 0,  MKDIR, 3, RGB, 0,   MKDIR, 4, RGB, 0,  MKDIR, 4, GT, 0,
        MKDIR, 5, RGB, 0,   FILE_, 6, P000, 0,  FILE_, 7, P000, 0, FILE_, 7, P001, 0,
        FILE_, 8, P000, 0,  FILE_, 9, P000, 0,
    };
    write_bytes("dataset", "mvtec3d", mvtec3d, sizeof mvtec3d);
    /* plain folder with a hidden file, a FIFO, a dangling link and a link loop */
    static const unsigned char plain[] = {
        FILE_, 0, P000, 0, FILE_, 0, 18, 0, FIFO, 0, P001, 0, LINK, 0, 13, 6, LINK, 0, 14, 4, LINK, 0, 15, 7,
        MKDIR, 0, XYZ, 0,  LINK, 1, TEST, 2,
    };
    write_bytes("dataset", "plain", plain, sizeof plain);
    /* train -> test link, test/good links to the root (a loop), ground_truth missing */
    static const unsigned char loops[] = {
        MKDIR, 0, TEST, 0, LINK, 0, TRAIN, 0 + 8 * 1, MKDIR, 1, GOOD, 0, LINK, 1, CRACK, 5,
        FILE_, 2, P000, 0, LINK, 2, P001, 0 + 8 * 5,
    };
    write_bytes("dataset", "loops", loops, sizeof loops);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds CORPUS_DIR (run from the repository root)\n");
        return 2;
    }
    g_out = argv[1];
    model_seed("r18s_32_logdet.safetensors", 32, 1, UF_LN_LOGDET, 0, 0);
    model_seed("r18s_32_frozen_opt_f16.safetensors", 32, 1, UF_LN_FROZEN, 1, 0);
    model_seed("r18s_32_embedded.safetensors", 32, 1, UF_LN_REFERENCE, 0, 1); /* backbone inside */
    to_f16("model", "r18s_32_frozen_opt_f16.safetensors");
    safetensors_seeds();
    image_seeds();
    dataset_seeds();
    return 0;
}
