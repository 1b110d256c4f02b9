/* bench.h - `uflow bench <what>` implementations (one file each under bench/). */
#ifndef UF_BENCH_H
#define UF_BENCH_H

/* Measures SGEMM GFLOP/s at 1024^3 and U-Flow-shaped sizes; returns the 1024^3 rate (0 on error). */
double bench_gemm(int verbose);

/* Trains the flow at resnet18@256 shapes with this batch; prints images/s and conv GFLOP/s
 * against SGEMM; returns the training step's conv rate as a fraction of SGEMM's (0 on error). */
double bench_flow(int verbose, int batch);
/* backbone NULL or "resnet": ResNet-18 and Wide-ResNet-50-2 (up to layer3)
 * images/s at 256x256, batch 8, and their convolutions' GFLOP/s next to
 * SGEMM's. "mcait": MS-CaiT seconds per image, GFLOP/s next to SGEMM, peak
 * memory; weights "M48,S24" or NULL (random weights). UF_OK / UF_ERR. */
int bench_backbone(int verbose, const char *backbone, const char *weights);

/* The real training pipeline at resnet18@256 on generated images: images/s and
 * the share of time in SGEMM. weights NULL: the shipped ResNet-18. UF_OK / UF_ERR. */
int bench_train(int verbose, const char *weights);

/* The uflow side of make bench-compare (bench/compare/README.md): prints "<row>\t<value>\t<unit>"
 * lines, medians of `reps` repeats. images: a folder of images for the loading row (NULL: no
 * row); predict_images: a folder of large images for the end-to-end predict row (NULL: none);
 * weights: the ResNet-18 file; with_mcait: also MS-CaiT at 448 (slow). UF_OK / UF_ERR. */
int bench_rows(const char *images, const char *predict_images, const char *weights, int reps, int with_mcait);

/* `uflow bench predict`: end-to-end images/s of uf_predict with options po (out_dir is the
 * bench's) next to the model-only images/s (uf_batch_run on decoded batches), same run, best
 * of reps. model_path NULL: an untrained ResNet-18 U-Flow at 256; images NULL: n_images
 * generated size x size PNGs; precision: a uf_precision for the backbone. UF_OK / UF_ERR. */
struct uf_predict_options;
struct uf_model;
int bench_predict(const char *model_path, const char *images, int n_images, int size, int reps, int precision,
                  const struct uf_predict_options *po);
/* reps timed runs of uf_predict(m, dir) with po (out_dir: a temporary folder, removed after),
 * after one untimed warm-up run when warmup is 1: seconds per image into t[0..reps). UF_OK / UF_ERR. */
int bench_predict_runs(struct uf_model *m, const char *dir, const struct uf_predict_options *po, int warmup, int reps,
                       double *t);
/* `uflow bench serve`: `uflow serve` (a child process, `workers` x `threads`) on loopback, at 1,
 * 4 and 8 concurrent clients sending about per_level generated size x size PNGs each: prints
 * requests/s and p50 / p99 latency. model_path NULL: an untrained ResNet-18 U-Flow at 256.
 * UF_OK / UF_ERR. */
int bench_serve(const char *model_path, int size, int per_level, int workers, int threads);
/* The benches' generated images: image i of a set of size x size synthetic fabric renders,
 * every fourth with a defect (io/synth.h). UF_OK / UF_ERR. */
struct uf_image;
int bench_synth_image(int i, int size, struct uf_image **img);
/* An untrained ResNet-18 U-Flow at 256 x 256 that can be saved (the benches' default model:
 * the cost does not depend on the flow's values); NULL + error. */
struct uf_model *bench_untrained_model(void);
/* rm -rf dir (a warning on stderr when it cannot). */
void bench_remove_tree(const char *dir);

/* A square n x n x n SGEMM, the reference rate other benchmarks compare with. */
typedef struct bench_square {
    float *a, *b, *c;
    int n;
} bench_square;

int bench_square_init(bench_square *s, int n); /* UF_OK or UF_ERR (memory) */
void bench_square_free(bench_square *s);
void bench_square_run(void *s);                /* one multiply; fits bench_best_time */
double bench_square_gflops(const bench_square *s, double seconds);
/* Best-of SGEMM 1024^3 GFLOP/s, measured over about a second (0 on error). */
double bench_square_rate(void);

/* Repeats fn until at least min_seconds have passed (and at least min_reps),
 * returns the best (smallest) seconds per call. */
double bench_best_time(void (*fn)(void *), void *ctx, double min_seconds, int min_reps);

#endif
