/* demo_data - writes the data set of `uflow demo` (io/synth.h: seed 0, 256x256, UF_SYNTH_DEMO_*
 * images) to a folder and nothing else, for make bench-quality (which trains on it itself).
 *     demo_data OUT_DIR */
#include <stdio.h>

#include "core/error.h"
#include "io/synth.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT_DIR   (writes uflow demo's synthetic data set)\n", argv[0]);
        return 2;
    }
    if (uf_synth_write_category_wh(argv[1], 0, UF_SYNTH_DEMO_TRAIN, UF_SYNTH_DEMO_TEST_GOOD, UF_SYNTH_DEMO_TEST_DEFECT,
                                   UF_SYNTH_DEFAULT_SIZE, UF_SYNTH_DEFAULT_SIZE) != UF_OK) {
        fprintf(stderr, "demo_data: error: %s\n", uf_last_error());
        return 1;
    }
    return 0;
}
