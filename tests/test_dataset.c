/* Data set scanning (MVTec-AD, MVTec 3D-AD, plain folder), error cases, mask
 * loading, and the synthetic category generator. Trees are built in a temp dir
 * from synth output and hand-made files; expected lists are written out here by
 * hand from the layout rules, not taken from the implementation. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "harness.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/synth.h"

/* ---- helpers ---------------------------------------------------------------- */

static char *tpath(const char *rel) { /* caller frees */
    const char *p = uf_test_path(rel);
    char *s = malloc(strlen(p) + 1);
    strcpy(s, p);
    return s;
}

static void mkdirs(const char *rel) {
    char buf[600];
    snprintf(buf, sizeof buf, "%s/%s", uf_test_tmpdir(), rel);
    for (char *p = buf + strlen(uf_test_tmpdir()) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0777);
            *p = '/';
        }
    mkdir(buf, 0777);
}

/* An empty file (scanning never opens images). */
static void touch(const char *rel) {
    FILE *f = fopen(uf_test_path(rel), "wb");
    CHECK(f != NULL, "cannot create %s", rel);
    if (f) fclose(f);
}

/* A small gray or RGB PNG whose pixel i has value vals[i % nvals]. */
static void write_png(const char *rel, int w, int h, int c, const uint8_t *vals, int nvals) {
    uf_image *im = uf_image_new(w, h, c);
    if (!im) return;
    for (int i = 0; i < w * h * c; i++) im->pixels[i] = vals[(i / c) % nvals];
    CHECK(uf_image_write_png(uf_test_path(rel), im) == UF_OK, "%s", uf_last_error());
    uf_image_free(im);
}

/* Ends with suffix? */
static int ends_with(const char *s, const char *suffix) {
    size_t a = s ? strlen(s) : 0, b = strlen(suffix);
    return s && a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Opening must fail with a one-line error containing each of needles. */
static void expect_error(const char *root, const char *split, const char *n1, const char *n2) {
    uf_error_clear();
    uf_dataset *ds = uf_dataset_open(root, split);
    CHECK(ds == NULL, "opening %s (%s) should fail", root, split);
    uf_dataset_free(ds);
    const char *e = uf_last_error();
    CHECK(strchr(e, '\n') == NULL && e[0], "one-line error expected: '%s'", e);
    CHECK(strstr(e, n1) != NULL, "error '%s' should contain '%s'", e, n1);
    if (n2) CHECK(strstr(e, n2) != NULL, "error '%s' should contain '%s'", e, n2);
}

/* Collects the library's log messages, "warning: " before each warning. */
typedef struct log_buffer {
    char *buf;
    size_t cap, len;
} log_buffer;

static void collect_log(int level, const char *message, void *user) {
    log_buffer *b = user;
    int n = snprintf(b->buf + b->len, b->cap - b->len, "%s%s\n", level == UF_LOG_WARNING ? "warning: " : "", message);
    if (n > 0) b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap - 1;
}

/* Runs uf_dataset_open with the library's messages captured into buf (none on stderr:
 * the library is silent without a callback). */
static uf_dataset *open_capturing(const char *root, const char *split, char *buf, size_t cap) {
    log_buffer b = {buf, cap, 0};
    buf[0] = '\0';
    uf_set_log_callback(collect_log, &b);
    uf_dataset *ds = uf_dataset_open(root, split);
    uf_set_log_callback(NULL, NULL);
    return ds;
}

/* ---- MVTec-AD from the synthetic generator ---------------------------------- */

static void test_mvtec_from_synth(void) {
    char *root = tpath("synth_small");
    /* 5 train, 3 good test, 6 defective: color 2, hole 2, scratch 1, stain 1. */
    CHECK(uf_synth_write_category_size(root, 3, 5, 3, 6, 64) == UF_OK, "%s", uf_last_error());

    uf_dataset *tr = uf_dataset_open(root, "train");
    CHECK(tr != NULL, "%s", uf_last_error());
    if (tr) {
        CHECK(tr->layout == UF_LAYOUT_MVTEC, "layout %s", uf_dataset_layout_name(tr->layout));
        CHECK(tr->count == 5 && tr->n_good == 5 && tr->n_anomalous == 0, "train count %d", tr->count);
        for (int i = 0; i < tr->count; i++) {
            char want[32];
            snprintf(want, sizeof want, "/train/good/%03d.png", i);
            CHECK(ends_with(tr->samples[i].image_path, want), "%s vs %s", tr->samples[i].image_path, want);
            CHECK(tr->samples[i].label == 0 && tr->samples[i].mask_path == NULL, "train sample %d", i);
            CHECK(strcmp(tr->samples[i].defect, "good") == 0, "%s", tr->samples[i].defect);
        }
        uf_dataset_free(tr);
    }

    static const struct { const char *img, *defect; int label; } want[] = {
        {"test/color/000.png", "color", 1}, {"test/color/001.png", "color", 1},
        {"test/good/000.png", "good", 0},   {"test/good/001.png", "good", 0},
        {"test/good/002.png", "good", 0},   {"test/hole/000.png", "hole", 1},
        {"test/hole/001.png", "hole", 1},   {"test/scratch/000.png", "scratch", 1},
        {"test/stain/000.png", "stain", 1},
    };
    uf_dataset *te = uf_dataset_open(root, "test");
    CHECK(te != NULL, "%s", uf_last_error());
    if (te) {
        CHECK(te->count == 9 && te->n_good == 3 && te->n_anomalous == 6 && te->n_missing_masks == 0,
              "test count %d good %d anomalous %d missing %d", te->count, te->n_good, te->n_anomalous,
              te->n_missing_masks);
        for (int i = 0; i < te->count && i < 9; i++) {
            const uf_sample *s = &te->samples[i];
            CHECK(ends_with(s->image_path, want[i].img), "sample %d: %s vs %s", i, s->image_path, want[i].img);
            CHECK(strcmp(s->defect, want[i].defect) == 0 && s->label == want[i].label, "sample %d: %s %d", i,
                  s->defect, s->label);
            CHECK(uf_sample_has_pixel_gt(s), "sample %d has pixel gt", i);
            if (want[i].label) {
                char m[64];
                snprintf(m, sizeof m, "ground_truth/%s/%.3s_mask.png", want[i].defect, want[i].img + strlen(want[i].img) - 7);
                CHECK(ends_with(s->mask_path, m), "sample %d mask %s vs %s", i, s->mask_path, m);
                /* The mask loads at the image's size and is binary. */
                uf_image *img = uf_image_load(s->image_path, 3);
                uf_image *gt = img ? uf_mask_load(s->mask_path, s->image_path, img->width, img->height) : NULL;
                CHECK(gt != NULL, "%s", uf_last_error());
                if (gt) {
                    int ones = 0, other = 0;
                    for (int k = 0; k < gt->width * gt->height; k++) {
                        ones += gt->pixels[k] == 255;
                        other += gt->pixels[k] != 0 && gt->pixels[k] != 255;
                    }
                    CHECK(ones > 0 && other == 0, "mask %s: %d set, %d non-binary", s->mask_path, ones, other);
                }
                uf_image_free(img);
                uf_image_free(gt);
            } else {
                CHECK(s->mask_path == NULL, "good sample %d has mask %s", i, s->mask_path);
            }
            if (i > 0) CHECK(strcmp(te->samples[i - 1].image_path, s->image_path) < 0, "sorted at %d", i);
        }
        uf_dataset_free(te);
    }
    /* A trailing slash on the root gives the same paths. */
    char slashed[600];
    snprintf(slashed, sizeof slashed, "%s/", root);
    uf_dataset *tr2 = uf_dataset_open(slashed, "train");
    CHECK(tr2 && ends_with(tr2->samples[0].image_path, "synth_small/train/good/000.png") &&
              strstr(tr2->samples[0].image_path, "//") == NULL,
          "%s", tr2 ? tr2->samples[0].image_path : uf_last_error());
    uf_dataset_free(tr2);
    free(root);
}

/* ---- hand-made MVTec-AD tree: extensions, hidden files, sorting, missing mask */

static void test_mvtec_handmade(void) {
    mkdirs("hand/train/good/subdir.png"); /* a folder named like an image is not an image */
    touch("hand/train/good/10.png");
    touch("hand/train/good/2.PNG");
    touch("hand/train/good/1.jpeg");
    touch("hand/train/good/b.JPG");
    touch("hand/train/good/a.bmp");
    touch("hand/train/good/notes.txt");
    touch("hand/train/good/noext");
    touch("hand/train/good/.hidden.png");
    touch("hand/train/good/._1.jpeg");
    touch("hand/train/good/x.png.bak");
    uf_dataset *tr = uf_dataset_open(uf_test_path("hand"), "train");
    CHECK(tr != NULL, "%s", uf_last_error());
    /* byte order: digits < upper case < lower case */
    static const char *want[] = {"/1.jpeg", "/10.png", "/2.PNG", "/a.bmp", "/b.JPG"};
    if (tr) {
        CHECK(tr->count == 5, "count %d", tr->count);
        for (int i = 0; i < tr->count && i < 5; i++)
            CHECK(ends_with(tr->samples[i].image_path, want[i]), "%d: %s vs %s", i, tr->samples[i].image_path,
                  want[i]);
        uf_dataset_free(tr);
    }

    mkdirs("hand/test/good");
    mkdirs("hand/test/crack");
    mkdirs("hand/test/empty_defect");
    mkdirs("hand/ground_truth/crack");
    touch("hand/test/good/000.png");
    touch("hand/test/crack/000.png");
    touch("hand/test/crack/001.jpg");
    touch("hand/test/crack/002.png");
    touch("hand/ground_truth/crack/000_mask.png");
    touch("hand/ground_truth/crack/001_mask.png");
    touch("hand/test/readme.txt"); /* a stray file next to the defect folders */
    char err[2048];
    char *hand = tpath("hand");
    uf_dataset *te = open_capturing(hand, "test", err, sizeof err);
    free(hand);
    CHECK(te != NULL, "%s", uf_last_error());
    if (te) {
        CHECK(te->count == 4 && te->n_good == 1 && te->n_anomalous == 3, "count %d", te->count);
        CHECK(te->n_missing_masks == 1, "missing %d", te->n_missing_masks);
        if (te->count == 4) {
            CHECK(ends_with(te->samples[0].image_path, "test/crack/000.png"), "%s", te->samples[0].image_path);
            CHECK(ends_with(te->samples[1].mask_path, "ground_truth/crack/001_mask.png"), "%s",
                  te->samples[1].mask_path);
            /* 002 has no mask: kept as anomalous, excluded from pixel metrics */
            const uf_sample *s = &te->samples[2];
            CHECK(ends_with(s->image_path, "test/crack/002.png") && s->label == 1 && s->mask_path == NULL &&
                      !uf_sample_has_pixel_gt(s),
                  "%s label %d", s->image_path, s->label);
            CHECK(ends_with(te->samples[3].image_path, "test/good/000.png") && te->samples[3].label == 0,
                  "%s", te->samples[3].image_path);
        }
        uf_dataset_free(te);
    }
    CHECK(strstr(err, "warning") && strstr(err, "ground_truth/crack/002_mask.png") &&
              strstr(err, "test/crack/002.png"),
          "warning should name the missing mask and its image: '%s'", err);
}

/* ---- MVTec 3D-AD ------------------------------------------------------------ */

static void test_mvtec3d(void) {
    mkdirs("m3d/train/good/rgb");
    mkdirs("m3d/train/good/xyz");
    mkdirs("m3d/validation/good/rgb");
    mkdirs("m3d/test/good/rgb");
    mkdirs("m3d/test/good/gt");
    mkdirs("m3d/test/crack/rgb");
    mkdirs("m3d/test/crack/gt");
    mkdirs("m3d/test/crack/xyz");
    touch("m3d/train/good/rgb/001.png");
    touch("m3d/train/good/rgb/000.png");
    touch("m3d/train/good/xyz/000.tiff");
    touch("m3d/validation/good/rgb/000.png");
    touch("m3d/test/good/rgb/000.png");
    touch("m3d/test/good/gt/000.png");
    touch("m3d/test/crack/rgb/000.png");
    touch("m3d/test/crack/rgb/001.png");
    touch("m3d/test/crack/gt/000.png");
    touch("m3d/test/crack/gt/001.png");
    touch("m3d/test/crack/xyz/000.tiff");
    uf_dataset *tr = uf_dataset_open(uf_test_path("m3d"), "train");
    CHECK(tr != NULL, "%s", uf_last_error());
    if (tr) {
        CHECK(tr->layout == UF_LAYOUT_MVTEC3D, "layout %d", tr->layout);
        CHECK(tr->count == 2 && ends_with(tr->samples[0].image_path, "train/good/rgb/000.png") &&
                  ends_with(tr->samples[1].image_path, "train/good/rgb/001.png"),
              "count %d", tr->count);
        uf_dataset_free(tr);
    }
    uf_dataset *te = uf_dataset_open(uf_test_path("m3d"), "test");
    CHECK(te != NULL, "%s", uf_last_error());
    if (te) {
        CHECK(te->layout == UF_LAYOUT_MVTEC3D && te->count == 3 && te->n_anomalous == 2, "count %d", te->count);
        if (te->count == 3) {
            CHECK(ends_with(te->samples[0].image_path, "test/crack/rgb/000.png") &&
                      ends_with(te->samples[0].mask_path, "test/crack/gt/000.png") && te->samples[0].label == 1,
                  "%s %s", te->samples[0].image_path, te->samples[0].mask_path);
            CHECK(ends_with(te->samples[1].mask_path, "test/crack/gt/001.png"), "%s", te->samples[1].mask_path);
            CHECK(ends_with(te->samples[2].image_path, "test/good/rgb/000.png") && te->samples[2].label == 0 &&
                      te->samples[2].mask_path == NULL,
                  "%s", te->samples[2].image_path);
            CHECK(strcmp(te->samples[0].defect, "crack") == 0, "%s", te->samples[0].defect);
        }
        uf_dataset_free(te);
    }
}

/* ---- BTAD ------------------------------------------------------------------- */

/* A BTAD product folder: train/ok, test/ok (normal), test/ko with masks
 * ground_truth/ko/<stem>.png (BMP images, PNG masks, as product 01 ships). */
static void test_btad(void) {
    mkdirs("btad/01/train/ok");
    mkdirs("btad/01/test/ok");
    mkdirs("btad/01/test/ko");
    mkdirs("btad/01/ground_truth/ko");
    touch("btad/01/train/ok/0000.bmp");
    touch("btad/01/train/ok/0001.png");
    touch("btad/01/test/ok/0002.bmp");
    touch("btad/01/test/ko/0003.bmp");
    touch("btad/01/test/ko/0004.png");
    touch("btad/01/ground_truth/ko/0003.png");
    uf_dataset *tr = uf_dataset_open(uf_test_path("btad/01"), "train");
    CHECK(tr != NULL, "%s", uf_last_error());
    if (tr) {
        CHECK(tr->layout == UF_LAYOUT_BTAD && tr->count == 2 && tr->n_good == 2 &&
                  ends_with(tr->samples[0].image_path, "train/ok/0000.bmp"),
              "layout %s count %d", uf_dataset_layout_name(tr->layout), tr->count);
        uf_dataset_free(tr);
    }
    uf_dataset *te = uf_dataset_open(uf_test_path("btad/01"), "test");
    CHECK(te != NULL, "%s", uf_last_error());
    if (te) {
        CHECK(te->layout == UF_LAYOUT_BTAD && te->count == 3 && te->n_anomalous == 2 && te->n_good == 1 &&
                  te->n_missing_masks == 1,
              "count %d anomalous %d good %d missing masks %d", te->count, te->n_anomalous, te->n_good,
              te->n_missing_masks);
        if (te->count == 3) {
            CHECK(ends_with(te->samples[0].image_path, "test/ko/0003.bmp") && te->samples[0].label == 1 &&
                      te->samples[0].mask_path && ends_with(te->samples[0].mask_path, "ground_truth/ko/0003.png"),
                  "%s %s", te->samples[0].image_path, te->samples[0].mask_path ? te->samples[0].mask_path : "-");
            CHECK(te->samples[1].label == 1 && te->samples[1].mask_path == NULL, "%s", te->samples[1].image_path);
            CHECK(ends_with(te->samples[2].image_path, "test/ok/0002.bmp") && te->samples[2].label == 0 &&
                      !strcmp(te->samples[2].defect, "good"),
                  "%s %s", te->samples[2].image_path, te->samples[2].defect);
        }
        uf_dataset_free(te);
    }
}

/* ---- VisA -------------------------------------------------------------------- */

/* A VisA category folder, split by <root>/split_csv/1cls.csv: other objects' rows are
 * ignored, paths are relative to the root, a quoted field is read. */
static void test_visa(void) {
    mkdirs("visa/candle/Data/Images/Normal");
    mkdirs("visa/candle/Data/Images/Anomaly");
    mkdirs("visa/candle/Data/Masks/Anomaly");
    mkdirs("visa/split_csv");
    touch("visa/candle/Data/Images/Normal/0000.JPG");
    touch("visa/candle/Data/Images/Normal/0001.JPG");
    touch("visa/candle/Data/Images/Normal/0002.JPG");
    touch("visa/candle/Data/Images/Anomaly/000.JPG");
    touch("visa/candle/Data/Masks/Anomaly/000.png");
    const char *csv = "object,split,label,image,mask\r\n"
                      "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\r\n"
                      "candle,train,normal,\"candle/Data/Images/Normal/0001.JPG\",\r\n"
                      "pcb1,train,normal,pcb1/Data/Images/Normal/0000.JPG,\r\n"
                      "candle,test,normal,candle/Data/Images/Normal/0002.JPG,\r\n"
                      "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\r\n";
    uf_test_write_file(uf_test_path("visa/split_csv/1cls.csv"), csv, strlen(csv));
    uf_dataset *tr = uf_dataset_open(uf_test_path("visa/candle"), "train");
    CHECK(tr != NULL, "%s", uf_last_error());
    if (tr) {
        CHECK(tr->layout == UF_LAYOUT_VISA && tr->count == 2 && tr->n_good == 2 &&
                  ends_with(tr->samples[1].image_path, "visa/candle/Data/Images/Normal/0001.JPG"),
              "layout %s count %d: %s", uf_dataset_layout_name(tr->layout), tr->count,
              tr->count > 1 ? tr->samples[1].image_path : "");
        uf_dataset_free(tr);
    }
    uf_dataset *te = uf_dataset_open(uf_test_path("visa/candle"), "test");
    CHECK(te != NULL, "%s", uf_last_error());
    if (te) {
        CHECK(te->layout == UF_LAYOUT_VISA && te->count == 2 && te->n_anomalous == 1, "count %d", te->count);
        if (te->count == 2) {
            CHECK(te->samples[0].label == 1 && te->samples[0].mask_path &&
                      ends_with(te->samples[0].mask_path, "visa/candle/Data/Masks/Anomaly/000.png"),
                  "%s", te->samples[0].image_path);
            CHECK(te->samples[1].label == 0 && te->samples[1].mask_path == NULL, "%s", te->samples[1].image_path);
        }
        uf_dataset_free(te);
    }
}

/* ---- plain folder ------------------------------------------------------------ */

static void test_plain_folder(void) {
    mkdirs("plain/sub");
    touch("plain/b.png");
    touch("plain/a.JPG");
    touch("plain/c.txt");
    touch("plain/.d.png");
    touch("plain/sub/e.png"); /* sub-folders are not scanned */
    uf_dataset *ds = uf_dataset_open(uf_test_path("plain"), "train");
    CHECK(ds != NULL, "%s", uf_last_error());
    if (ds) {
        CHECK(ds->layout == UF_LAYOUT_FOLDER && ds->count == 2, "layout %d count %d", ds->layout, ds->count);
        if (ds->count == 2)
            CHECK(ends_with(ds->samples[0].image_path, "plain/a.JPG") &&
                      ends_with(ds->samples[1].image_path, "plain/b.png") && ds->samples[0].label == 0,
                  "%s %s", ds->samples[0].image_path, ds->samples[1].image_path);
        uf_dataset_free(ds);
    }
    expect_error(uf_test_path("plain"), "test", uf_test_path("plain"), "test");
}

/* ---- error cases ------------------------------------------------------------- */

static void test_errors(void) {
    char *p;
    p = tpath("does_not_exist");
    expect_error(p, "train", p, "does not exist");
    free(p);

    touch("a_file");
    p = tpath("a_file");
    expect_error(p, "train", p, "not a folder");
    free(p);

    mkdirs("empty");
    p = tpath("empty");
    expect_error(p, "train", p, "empty");
    free(p);

    mkdirs("no_images");
    touch("no_images/readme.txt");
    p = tpath("no_images");
    expect_error(p, "train", p, "no images");
    free(p);

    /* A folder of categories: the hint names one of them. */
    mkdirs("cats/bottle/train/good");
    p = tpath("cats");
    expect_error(p, "train", "no images", "cats/bottle");
    free(p);

    /* MVTec-AD with train/ but no train/good/ */
    mkdirs("mv1/train");
    mkdirs("mv1/test");
    p = tpath("mv1/train/good");
    expect_error(uf_test_path("mv1"), "train", p, "missing folder");
    free(p);
    /* train/good is a file */
    touch("mv1/train/good");
    p = tpath("mv1/train/good");
    expect_error(uf_test_path("mv1"), "train", p, "not a folder");
    free(p);
    /* empty test/ */
    p = tpath("mv1/test");
    expect_error(uf_test_path("mv1"), "test", p, "empty");
    free(p);
    /* test/ without defect folders */
    touch("mv1/test/000.png");
    p = tpath("mv1/test");
    expect_error(uf_test_path("mv1"), "test", p, "defect folders");
    free(p);
    /* train/good folder that is empty, then with only non-images */
    mkdirs("mv2/train/good");
    p = tpath("mv2/train/good");
    expect_error(uf_test_path("mv2"), "train", p, "empty");
    touch("mv2/train/good/Thumbs.db");
    expect_error(uf_test_path("mv2"), "train", p, "no images");
    free(p);
    /* test split missing */
    p = tpath("mv2/test");
    expect_error(uf_test_path("mv2"), "test", p, "missing folder");
    free(p);
    /* defect folders without any image */
    mkdirs("mv2/test/good");
    mkdirs("mv2/test/crack");
    p = tpath("mv2/test");
    expect_error(uf_test_path("mv2"), "test", p, "no images");
    free(p);
    /* unknown split */
    expect_error(uf_test_path("mv2"), "val", "val", uf_test_path("mv2"));
}

/* ---- mask loader -------------------------------------------------------------- */

static void test_mask_load(void) {
    mkdirs("masks");
    static const uint8_t img_vals[] = {90};
    static const uint8_t mask_vals[] = {0, 100, 127, 128, 200, 255};
    write_png("masks/img.png", 8, 6, 3, img_vals, 1);
    write_png("masks/ok_mask.png", 8, 6, 1, mask_vals, 6);
    write_png("masks/rgb_mask.png", 8, 6, 3, mask_vals, 6);
    write_png("masks/small_mask.png", 7, 6, 1, mask_vals, 6);
    char *img = tpath("masks/img.png"), *ok = tpath("masks/ok_mask.png"), *rgb = tpath("masks/rgb_mask.png"),
         *small = tpath("masks/small_mask.png");
    for (int pass = 0; pass < 2; pass++) {
        uf_image *m = uf_mask_load(pass ? rgb : ok, img, 8, 6);
        CHECK(m != NULL, "%s", uf_last_error());
        if (!m) continue;
        CHECK(m->channels == 1 && m->width == 8 && m->height == 6, "shape %dx%dx%d", m->width, m->height,
              m->channels);
        for (int i = 0; i < 48; i++) {
            int want = mask_vals[i % 6] > 127 ? 255 : 0;
            CHECK(m->pixels[i] == want, "pass %d pixel %d: %d vs %d", pass, i, m->pixels[i], want);
        }
        uf_image_free(m);
    }
    uf_error_clear();
    uf_image *m = uf_mask_load(small, img, 8, 6);
    CHECK(m == NULL, "size mismatch must fail");
    uf_image_free(m);
    const char *e = uf_last_error();
    CHECK(strstr(e, small) && strstr(e, img) && strstr(e, "7x6") && strstr(e, "8x6"),
          "message should name both files and sizes: '%s'", e);
    /* No mask: all zero. */
    m = uf_mask_load(NULL, img, 5, 4);
    CHECK(m && m->width == 5 && m->height == 4 && m->channels == 1, "zero mask");
    if (m)
        for (int i = 0; i < 20; i++) CHECK(m->pixels[i] == 0, "pixel %d", i);
    uf_image_free(m);
    /* A corrupt mask file: error names it. */
    FILE *f = fopen(uf_test_path("masks/bad_mask.png"), "wb");
    if (f) {
        fputs("\x89PNG\r\n\x1a\n garbage", f);
        fclose(f);
    }
    char *bad = tpath("masks/bad_mask.png");
    m = uf_mask_load(bad, img, 8, 6);
    CHECK(m == NULL && strstr(uf_last_error(), bad), "corrupt mask: '%s'", uf_last_error());
    uf_image_free(m);
    free(img), free(ok), free(rgb), free(small), free(bad);
}

/* ---- synth: determinism -------------------------------------------------------- */

static int read_all(const char *path, unsigned char **data, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)*n + 1);
    int ok = fread(*data, 1, (size_t)*n, f) == (size_t)*n;
    fclose(f);
    return ok;
}

/* 1 same bytes, 0 different, -1 unreadable. */
static int same_file(const char *a, const char *b) {
    unsigned char *da = NULL, *db = NULL;
    long na = 0, nb = 0;
    int r = -1;
    if (read_all(a, &da, &na) && read_all(b, &db, &nb)) r = na == nb && memcmp(da, db, (size_t)na) == 0;
    free(da), free(db);
    return r;
}

static void test_synth_deterministic(void) {
    char *a = tpath("det_a"), *b = tpath("det_b"), *c = tpath("det_c");
    CHECK(uf_synth_write_category_size(a, 42, 2, 1, 4, 64) == UF_OK, "%s", uf_last_error());
    CHECK(uf_synth_write_category_size(b, 42, 2, 1, 4, 64) == UF_OK, "%s", uf_last_error());
    CHECK(uf_synth_write_category_size(c, 43, 2, 1, 4, 64) == UF_OK, "%s", uf_last_error());
    static const char *files[] = {
        "train/good/000.png",  "train/good/001.png",          "test/good/000.png",
        "test/color/000.png",  "ground_truth/color/000_mask.png", "test/hole/000.png",
        "test/scratch/000.png", "ground_truth/scratch/000_mask.png", "test/stain/000.png",
        "ground_truth/stain/000_mask.png",
    };
    int n_diff = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char pa[700], pb[700], pc[700];
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        snprintf(pc, sizeof pc, "%s/%s", c, files[i]);
        CHECK(same_file(pa, pb) == 1, "%s differs between two runs with seed 42", files[i]);
        int d = same_file(pa, pc);
        CHECK(d >= 0, "missing %s", files[i]);
        n_diff += d == 0;
    }
    CHECK(n_diff == (int)(sizeof files / sizeof files[0]), "seed 43 should change every file (%d differ)", n_diff);
    /* Train and test-good images differ from each other (independent streams). */
    char p1[700], p2[700];
    snprintf(p1, sizeof p1, "%s/train/good/000.png", a);
    snprintf(p2, sizeof p2, "%s/test/good/000.png", a);
    CHECK(same_file(p1, p2) == 0, "train and test images should differ");
    free(a), free(b), free(c);

    /* The default size. */
    char *d = tpath("det_default");
    CHECK(uf_synth_write_category(d, 1, 1, 0, 0) == UF_OK, "%s", uf_last_error());
    char pd[700];
    snprintf(pd, sizeof pd, "%s/train/good/000.png", d);
    uf_image *im = uf_image_load(pd, 0);
    CHECK(im && im->width == UF_SYNTH_DEFAULT_SIZE && im->height == UF_SYNTH_DEFAULT_SIZE && im->channels == 3,
          "default image %s", uf_last_error());
    uf_image_free(im);
    free(d);

    /* Bad arguments. */
    uf_image *x = NULL, *y = NULL;
    CHECK(uf_synth_render(1, 0, 0, UF_SYNTH_N_DEFECTS, 64, &x, &y) == UF_ERR && !x && !y, "bad defect");
    CHECK(uf_synth_render(1, 0, 0, UF_SYNTH_NONE, 8, &x, &y) == UF_ERR, "bad size");
    /* An output path under a file fails and names it. */
    touch("blocker");
    char *bl = tpath("blocker/cat");
    CHECK(uf_synth_write_category_size(bl, 1, 1, 0, 0, 64) == UF_ERR && strstr(uf_last_error(), "blocker"),
          "'%s'", uf_last_error());
    free(bl);
}

/* ---- synth: masks match the defects --------------------------------------------- */

static void test_synth_masks_match(void) {
    const int size = UF_SYNTH_DEFAULT_SIZE, npix = size * size;
    for (int d = UF_SYNTH_NONE; d < UF_SYNTH_N_DEFECTS; d++)
        for (int idx = 0; idx < 3; idx++) {
            int stream = d < 0 ? UF_SYNTH_STREAM_TEST_GOOD : UF_SYNTH_STREAM_TEST_DEFECT + d;
            uf_image *img = NULL, *mask = NULL, *clean = NULL;
            CHECK(uf_synth_render(11, stream, idx, d, size, &img, &mask) == UF_OK, "%s", uf_last_error());
            CHECK(uf_synth_render(11, stream, idx, UF_SYNTH_NONE, size, &clean, NULL) == UF_OK, "%s",
                  uf_last_error());
            if (!img || !mask || !clean) {
                uf_image_free(img), uf_image_free(mask), uf_image_free(clean);
                continue;
            }
            int area = 0, changed_in = 0, changed_far = 0, changed_out = 0;
            double worst_ratio = 0;
            for (int i = 0; i < npix; i++) area += mask->pixels[i] != 0;
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++) {
                    int i = y * size + x, diff = 0;
                    for (int ch = 0; ch < 3; ch++)
                        diff = abs(img->pixels[3 * i + ch] - clean->pixels[3 * i + ch]) > diff
                                   ? abs(img->pixels[3 * i + ch] - clean->pixels[3 * i + ch])
                                   : diff;
                    if (mask->pixels[i]) {
                        changed_in += diff >= 15;
                        continue;
                    }
                    if (!diff) continue;
                    changed_out++;
                    /* Any change outside the mask must be at its soft edge (within 3 px), and,
                     * the mask being coverage > 50%, at most about half the change of the
                     * mask pixels around it. */
                    int near = 0, near_diff = 0;
                    for (int dy = -3; dy <= 3; dy++)
                        for (int dx = -3; dx <= 3; dx++) {
                            int yy = y + dy, xx = x + dx, j = yy * size + xx;
                            if (yy < 0 || yy >= size || xx < 0 || xx >= size || !mask->pixels[j]) continue;
                            near = 1;
                            for (int ch = 0; ch < 3; ch++) {
                                int dd = abs(img->pixels[3 * j + ch] - clean->pixels[3 * j + ch]);
                                near_diff = dd > near_diff ? dd : near_diff;
                            }
                        }
                    changed_far += !near;
                    if (near && diff > 4) {
                        double ratio = (double)diff / near_diff;
                        if (ratio > worst_ratio) worst_ratio = ratio;
                    }
                }
            double frac = (double)area / npix;
            const char *name = d < 0 ? "good" : uf_synth_defect_name(d);
            if (d < 0) {
                CHECK(area == 0 && changed_out == 0, "good image %d: mask area %d, %d pixels changed", idx, area,
                      changed_out);
            } else {
                CHECK(frac >= 0.005 && frac <= 0.08, "%s %d: mask area %.2f%%", name, idx, 100 * frac);
                CHECK(changed_in >= 0.9 * area, "%s %d: only %d of %d mask pixels visibly changed", name, idx,
                      changed_in, area);
                CHECK(changed_far == 0, "%s %d: %d changed pixels far from the mask", name, idx, changed_far);
                CHECK(changed_out <= area, "%s %d: %d changed pixels outside a mask of %d", name, idx,
                      changed_out, area);
                CHECK(worst_ratio <= 0.7, "%s %d: a pixel outside the mask changed %.2f times as much as the "
                      "mask pixels near it", name, idx, worst_ratio);
                if (getenv("UF_TEST_VERBOSE"))
                    printf("  %s %d: area %.2f%%, worst outside/inside change ratio %.2f\n", name, idx,
                           100 * frac, worst_ratio);
            }
            uf_image_free(img), uf_image_free(mask), uf_image_free(clean);
        }
}

int main(void) {
    UF_TEST(test_mvtec_from_synth);
    UF_TEST(test_mvtec_handmade);
    UF_TEST(test_mvtec3d);
    UF_TEST(test_btad);
    UF_TEST(test_visa);
    UF_TEST(test_plain_folder);
    UF_TEST(test_errors);
    UF_TEST(test_mask_load);
    UF_TEST(test_synth_deterministic);
    UF_TEST(test_synth_masks_match);
    return uf_test_summary();
}
