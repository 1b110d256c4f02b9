/* fuzz_model.c - libFuzzer target: the model-file loader (metadata against tensors).
 *
 * Input: a whole model file. Loads it with uf_model_load twice: with the
 * backbone weights given explicitly (the tiny test ResNet, so that an
 * iteration stays fast; override with $UF_FUZZ_BACKBONE) and an optimizer to
 * restore, and with no weights, so that the path recorded in the file is
 * resolved. Seeds (make fuzz-seeds) are models of that backbone saved by
 * uf_model_save, recording its sha256. A loaded model must be consistent with
 * its configuration.
 */
#include "fuzz_util.h"

#include "model/model.h"

#define DEFAULT_BACKBONE "tests/data/resnet/r18_small_folded.safetensors"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_model(const uf_model *m) {
    const uf_model_config *c = &m->cfg;
    FUZZ_CHECK(m->backbone && m->flow);
    FUZZ_CHECK(c->input_size >= 32 && c->flow.n_scales >= 1 && c->flow.n_steps >= 1);
    FUZZ_CHECK(m->flow->n_blocks == c->flow.n_scales * c->flow.n_steps);
    for (int l = 0; l < c->flow.n_scales; l++) {
        int ch, h, w;
        uf_model_latent_shape(m, l, &ch, &h, &w);
        FUZZ_CHECK(ch >= 1 && h == c->flow.height[l] && w == c->flow.width[l]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *bb = getenv("UF_FUZZ_BACKBONE");
    if (!bb || !*bb) bb = DEFAULT_BACKBONE;
    const char *path = fuzz_write_file("model.safetensors", data, size);
    for (int pass = 0; pass < 2; pass++) {
        uf_adam opt;
        memset(&opt, 0, sizeof opt);
        int has_opt = -1;
        uf_error_clear();
        uf_model *m = uf_model_load(path, pass == 0 ? bb : NULL, pass == 0 ? &opt : NULL, &has_opt);
        FUZZ_CHECK(has_opt == 0 || has_opt == 1);
        if (!m) {
            FUZZ_CHECK(has_opt == 0);
            fuzz_check_error();
            continue;
        }
        check_model(m);
        if (has_opt) {
            FUZZ_CHECK(pass == 0 && opt.n == m->flow->n_trainable && opt.m && opt.v && opt.step >= 0);
            uf_adam_free(&opt);
        }
        uf_model_free(m);
    }
    return 0;
}
