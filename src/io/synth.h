/* synth.h - a seeded procedural MVTec-style category for `uflow demo` and tests.
 *
 * The category is a woven fabric: a basket weave of shaded threads whose
 * colour, thread period and yarn twist are fixed by the seed, and whose phase,
 * small rotation, period, brightness, colour tint, per-thread shading and noise
 * vary per image. Test images carry one of four synthetic defects, each with
 * its 0/255 ground-truth mask (mask = defect coverage > 50%):
 *
 *   color    a smooth blob where the fabric takes the complementary hue
 *   hole     an irregular near-black hole with a bright frayed rim
 *   scratch  a long, thin, gently curved bright or dark line
 *   stain    an irregular darkened, browned blob with soft edges
 *
 * Defect areas are drawn between 0.8% and 5% of the image (about 1-3% typical).
 * Everything is a pure function of (seed, image stream, index): the generator
 * has its own RNG (splitmix64-seeded xoshiro256**), so the same seed gives the
 * same files byte for byte on a given platform (libm's sin/exp are the only
 * platform dependence).
 *
 * Usage:
 *     if (uf_synth_write_category("demo/fabric", 0, 60, 20, 32) != UF_OK) ...
 *     uf_dataset *train = uf_dataset_open("demo/fabric", "train");
 */
#ifndef UF_IO_SYNTH_H
#define UF_IO_SYNTH_H

#include <stdint.h>

#include "io/image.h"

#define UF_SYNTH_DEFAULT_SIZE 256
/* Counts for `uflow demo`: about 2.5 s to write on one core, 14 MB. */
#define UF_SYNTH_DEMO_TRAIN 60
#define UF_SYNTH_DEMO_TEST_GOOD 20
#define UF_SYNTH_DEMO_TEST_DEFECT 32 /* 8 per defect type */

enum {
    UF_SYNTH_NONE = -1, /* a defect-free image */
    UF_SYNTH_COLOR = 0,
    UF_SYNTH_HOLE,
    UF_SYNTH_SCRATCH,
    UF_SYNTH_STAIN,
    UF_SYNTH_N_DEFECTS
};

/* Image streams: each split draws its textures independently. */
enum { UF_SYNTH_STREAM_TRAIN = 0, UF_SYNTH_STREAM_TEST_GOOD = 1, UF_SYNTH_STREAM_TEST_DEFECT = 2 };

/* Folder name of a defect ("color", ...), NULL when out of range. */
const char *uf_synth_defect_name(int defect);

/* Renders image `index` of `stream` at size x size (>= 32) into *img (RGB) and,
 * when mask is not NULL, its mask into *mask (gray, 0/255; all zero for
 * UF_SYNTH_NONE). The texture depends only on (seed, stream, index), so calling
 * with UF_SYNTH_NONE gives the same image without its defect. The caller frees
 * both images. */
int uf_synth_render(uint64_t seed, int stream, int index, int defect, int size, uf_image **img,
                    uf_image **mask);

/* Writes an MVTec-AD category under out_dir (created when missing; existing
 * files are replaced atomically):
 *   train/good/NNN.png          n_train defect-free images
 *   test/good/NNN.png           n_test_good defect-free images
 *   test/<defect>/NNN.png       n_test_defect images, defects in turn (color, hole, scratch, stain)
 *   ground_truth/<defect>/NNN_mask.png
 * at UF_SYNTH_DEFAULT_SIZE. Returns UF_OK or UF_ERR with the failing path. */
int uf_synth_write_category(const char *out_dir, uint64_t seed, int n_train, int n_test_good,
                            int n_test_defect);
/* The same at size x size pixels. */
int uf_synth_write_category_size(const char *out_dir, uint64_t seed, int n_train, int n_test_good,
                                 int n_test_defect, int size);
/* The same at width x height pixels: a non-square set (e.g. 512x128 strips) is cut from
 * images rendered at max(width, height) square, the good ones centred, the defective
 * ones around their mask's centre (clamped to the image), so each strip holds its
 * defect (what is cut off the mask is cut off the image too). Square sizes give
 * exactly uf_synth_write_category_size's files. */
int uf_synth_write_category_wh(const char *out_dir, uint64_t seed, int n_train, int n_test_good, int n_test_defect,
                               int width, int height);

#endif
