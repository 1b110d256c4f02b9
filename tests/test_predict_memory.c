/* `uflow predict` keeps its memory flat in the number of images: its peak
 * resident memory over 1,000 images is within a small margin of that over 100
 * (the images are hard links to a few small synthetic ones, so the test is
 * quick). A per-image leak of one resized image (12 KiB at 64 x 64) would add
 * about 10 MiB. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "harness.h"
#include "io/synth.h"

#define MARGIN_KB 4096 /* allocator and page-cache noise between two runs */

static long predict_peak_kb(const char *model, const char *dir, int n_images, const char *src_dir) {
    mkdir(dir, 0755);
    char src[800], dst[800];
    for (int i = 0; i < n_images; i++) {
        snprintf(src, sizeof src, "%s/%03d.png", src_dir, i % 4);
        snprintf(dst, sizeof dst, "%s/%04d.png", dir, i);
        if (link(src, dst) != 0) {
            CHECK(0, "cannot link %s", dst);
            return -1;
        }
    }
    char out[800], log_out[800], log_err[800];
    snprintf(out, sizeof out, "%s_out", dir);
    snprintf(log_out, sizeof log_out, "%s.out", dir);
    snprintf(log_err, sizeof log_err, "%s.err", dir);
    const char *args[] = {"predict", "--model", model, "-o", out, "--threads", "1", dir, NULL};
    /* Under AddressSanitizer, freed blocks wait in a quarantine (256 MB by default)
     * before reuse, which grows the peak by itself: keep it small. */
    const char *env[] = {"ASAN_OPTIONS=quarantine_size_mb=4", NULL};
    uf_test_run_opts o = {.env = env};
    int rc = uf_test_run_uflow_opts(args, log_out, log_err, &o);
    CHECK(rc == 0, "predict over %d images exited %d", n_images, rc);
    return o.max_rss_kb;
}

static void test_peak_memory_flat(void) {
    char data[600], model[600], train_dir[700], small[600], large[600];
    snprintf(data, sizeof data, "%s/data", uf_test_tmpdir());
    snprintf(model, sizeof model, "%s/model.safetensors", uf_test_tmpdir());
    snprintf(train_dir, sizeof train_dir, "%s/train/good", data);
    CHECK(uf_synth_write_category_size(data, 5, 4, 1, 1, 64) == UF_OK, "%s", uf_last_error());
    const char *tr[] = {"train", "--data", train_dir, "-o", model, "--size", "64", "--epochs", "1", "--steps", "1",
                        NULL};
    CHECK(uf_test_run_uflow(tr, uf_test_path("train.out"), uf_test_path("train.err")) == 0, "training failed");
    snprintf(small, sizeof small, "%s/in100", uf_test_tmpdir());
    snprintf(large, sizeof large, "%s/in1000", uf_test_tmpdir());
    long kb100 = predict_peak_kb(model, small, 100, train_dir);
    long kb1000 = predict_peak_kb(model, large, 1000, train_dir);
    printf("peak RSS: %ld KiB at 100 images, %ld KiB at 1000 images\n", kb100, kb1000);
    CHECK(kb100 > 0 && kb1000 > 0 && kb1000 - kb100 <= MARGIN_KB, "peak RSS grows from %ld KiB to %ld KiB", kb100,
          kb1000);
}

int main(void) {
    UF_TEST(test_peak_memory_flat);
    return uf_test_summary();
}
