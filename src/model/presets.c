#include "model/presets.h"

#include <string.h>

#define MVTEC(cat, ep, b, rate) {"mvtec/" cat, "mcait", 448, ep, b, 4, rate, 1e-5}

/* Learning rates as the official yaml files write them (a hyper-parameter search's output). */
static const uf_preset presets[] = {
    MVTEC("bottle", 200, 23, 1.1289990475381853e-4),    MVTEC("cable", 200, 14, 1.616039111268198e-3),
    MVTEC("capsule", 200, 14, 1.2118892498142058e-3),   MVTEC("carpet", 200, 13, 3.163419554150971e-5),
    MVTEC("grid", 500, 12, 3.6224837438852e-5),         MVTEC("hazelnut", 500, 21, 1.3268898640895934e-3),
    MVTEC("leather", 500, 15, 6.124723659154866e-4),    MVTEC("metal_nut", 200, 11, 8.148858311570219e-4),
    MVTEC("pill", 200, 11, 1.0756100354690954e-3),      MVTEC("screw", 500, 11, 4.155987052838602e-4),
    MVTEC("tile", 200, 30, 6.045754779719109e-3),       MVTEC("toothbrush", 200, 21, 1.287312814913699e-4),
    MVTEC("transistor", 400, 20, 1.12129043027424e-3),  MVTEC("wood", 500, 22, 2.466546120460351e-4),
    MVTEC("zipper", 200, 24, 4.55246818236177e-5),      MVTEC("default", 200, 8, 1e-4),
};

int uf_preset_count(void) { return (int)(sizeof presets / sizeof *presets); }

const uf_preset *uf_preset_at(int i) { return i >= 0 && i < uf_preset_count() ? &presets[i] : 0; }

const uf_preset *uf_preset_find(const char *name) {
    for (int i = 0; i < uf_preset_count(); i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return 0;
}
