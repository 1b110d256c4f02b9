/* knn.h - `uflow bench knn`: a nearest-neighbour diagnostic on the backbone features a U-Flow
 * model uses, scored with the metrics of `uflow test`.
 *
 * PatchCore-style, without the coreset: the feature of a location is the backbone's two finest
 * scales (scale 1 bilinearly upsampled to scale 0's grid), concatenated, then averaged over its
 * valid 3x3 neighbours. The memory bank holds the features of every training location, a
 * uniform random subset of at most max_train_features of them (reservoir sampling, seed 0).
 * A test location's score is its Euclidean distance to the nearest bank vector; the anomaly
 * map is that distance map bilinearly upsampled to the evaluation grid of `uflow test`
 * (uf_evaluate_grid), the image score its maximum. Tiled models (io/tiling.h): the bank takes
 * every tile of the training images; a test image's tiles are scored, upsampled to the tile's
 * pixels and stitched (mean) as `uflow test` does, and scored at the image's own size.
 *
 * Where it beats the flow on the same features, the flow is the limit; where it does not, the
 * features are.
 *
 * Usage:
 *     uf_model *m = uf_model_load("bottle.safetensors", NULL, NULL, NULL);
 *     bench_knn_options o = bench_knn_default_options();
 *     o.data_dir = "mvtec/bottle";
 *     bench_knn_result r;
 *     if (bench_knn(m, &o, &r) != UF_OK) fprintf(stderr, "%s\n", uf_last_error());
 */
#ifndef UF_BENCH_KNN_H
#define UF_BENCH_KNN_H

struct uf_model;

typedef struct bench_knn_options {
    const char *data_dir;   /* a category folder: its train split makes the bank, its test split is scored */
    int max_train_features; /* memory bank size limit, 50000 */
    int eval_size;          /* 256, as `uflow test --eval-size` */
    int verbose;            /* progress lines on the log */
} bench_knn_options;

typedef struct bench_knn_result {
    double image_auroc;      /* over every test image */
    double pixel_auroc;      /* over the images with pixel ground truth (NaN without anomalous masks) */
    double aupro;            /* official procedure, FPR limit 0.3 (NaN as pixel_auroc) */
    int n_train_features;    /* vectors in the bank */
    long long n_train_locations; /* training locations seen (the bank is a subset of these) */
    int n_train_images, n_test_images;
    double seconds;          /* the whole run: bank, scoring, metrics */
} bench_knn_result;

bench_knn_options bench_knn_default_options(void);

/* Builds the bank from the training split of o->data_dir with the backbone of m (m->backbone
 * must be loaded) and scores its test split. UF_OK, or UF_ERR with one line naming the file or
 * the folder concerned. */
int bench_knn(struct uf_model *m, const bench_knn_options *o, bench_knn_result *r);

/* {"image_auroc", "pixel_auroc", "aupro", "seconds", ...} (NaN as null), written atomically. */
int bench_knn_write_json(const bench_knn_result *r, const bench_knn_options *o, const char *path);

#endif
