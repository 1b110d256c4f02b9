/* presets.h - the paper's per-category training settings (spec 5.3, the
 * official configs/CATEGORY.yaml): MS-CaiT backbone, input 448, flow steps 4,
 * weight decay 1e-5, and per category the epochs, batch size and learning
 * rate. Names are "mvtec/<category>", and "mvtec/default" for
 * mvtec_default.yaml. Explicit command-line options override a preset.
 */
#ifndef UF_MODEL_PRESETS_H
#define UF_MODEL_PRESETS_H

typedef struct uf_preset {
    const char *name;
    const char *backbone;
    int input_size, epochs, batch, flow_steps;
    double lr, weight_decay;
} uf_preset;

/* The preset called name, or NULL. */
const uf_preset *uf_preset_find(const char *name);
/* All presets, in table order: i = 0 .. uf_preset_count() - 1. */
int uf_preset_count(void);
const uf_preset *uf_preset_at(int i);

#endif
