/* strset.c - see strset.h. */
#include "core/strset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int uf_strset_has(const uf_strset *set, const char *s) {
    if (!set->cap) return 0;
    for (size_t j = fnv1a(s) & (set->cap - 1); set->slot[j]; j = (j + 1) & (set->cap - 1))
        if (!strcmp(set->slot[j], s)) return 1;
    return 0;
}

int uf_strset_add(uf_strset *set, const char *s) {
    if (2 * (set->n + 1) > set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 1024;
        char **slot = calloc(cap, sizeof(char *));
        if (!slot) return -1;
        for (size_t i = 0; i < set->cap; i++)
            if (set->slot[i]) {
                size_t j = fnv1a(set->slot[i]) & (cap - 1);
                while (slot[j]) j = (j + 1) & (cap - 1);
                slot[j] = set->slot[i];
            }
        free(set->slot);
        set->slot = slot;
        set->cap = cap;
    }
    size_t j = fnv1a(s) & (set->cap - 1);
    for (; set->slot[j]; j = (j + 1) & (set->cap - 1))
        if (!strcmp(set->slot[j], s)) return 0;
    if (!(set->slot[j] = strdup(s))) return -1;
    set->n++;
    return 1;
}

void uf_strset_free(uf_strset *set) {
    for (size_t i = 0; i < set->cap; i++) free(set->slot[i]);
    free(set->slot);
    memset(set, 0, sizeof *set);
}
