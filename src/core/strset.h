/* strset.h - a set of strings (open addressing, FNV-1a), for names seen: output stems, images
 * taken. Zero-initialise (uf_strset s = {0}); free with uf_strset_free. */
#ifndef UF_CORE_STRSET_H
#define UF_CORE_STRSET_H

#include <stddef.h>

typedef struct uf_strset {
    char **slot; /* cap slots, NULL when empty; cap a power of two, at most half full */
    size_t cap, n;
} uf_strset;

/* Inserts a copy of s: 1 if it was new, 0 if present, -1 when out of memory. */
int uf_strset_add(uf_strset *set, const char *s);
/* 1 when s is in the set. */
int uf_strset_has(const uf_strset *set, const char *s);
void uf_strset_free(uf_strset *set);

#endif
