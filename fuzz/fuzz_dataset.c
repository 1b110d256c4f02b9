/* fuzz_dataset.c - libFuzzer target: the data-set folder scanner.
 *
 * Input: a little program that builds a directory tree under a fresh folder.
 * Each op is 4 bytes (kind, parent, name, link target):
 *     kind % 8: 0-2 mkdir, 3-4 empty file, 5-6 symbolic link, 7 FIFO;
 *     parent:   index (mod count) among the folders made so far (0 = root);
 *     name:     index into NAMES (data-set words, image and mask names,
 *               hidden files, other extensions);
 *     target:   for links, one of: another entry, ".", "..", "../..", the
 *               link itself, its parent, a missing name, /dev/null.
 * At most MAX_NODES entries, MAX_DEPTH levels. The tree is scanned with
 * uf_dataset_open (train and test, at the root and at one sub-folder) and
 * uf_dataset_from_paths, every result is checked against the invariants of
 * dataset.h, and the tree is removed.
 */
#include "fuzz_util.h"

#include <errno.h>

#include "io/dataset.h"

#define MAX_NODES 48
#define MAX_DEPTH 6

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const NAMES[] = {
    "train", "test", "good", "ground_truth", "rgb", "gt", "crack", "validation", "xyz",
    "000.png", "001.png", "000_mask.png", "001_mask.png", "002.PNG", "003.jpeg", "004.JpG", "005.bmp",
    "x.tif", ".hidden", "._000.png", ".png", "a.png.png", "noext", "000", "0.png",
};
#define N_NAMES ((int)(sizeof NAMES / sizeof *NAMES))

typedef struct {
    char path[512]; /* relative to the root; "" for the root */
    int depth, is_dir;
} node;

static void full_path(char *out, size_t cap, const char *root, const char *rel) {
    snprintf(out, cap, rel[0] ? "%s/%s" : "%s", root, rel);
}

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Checks a data set against the contracts of dataset.h. */
static void check_dataset(const uf_dataset *ds, int sorted) {
    FUZZ_CHECK(ds->count >= 1 && ds->samples);
    FUZZ_CHECK(ds->n_good + ds->n_anomalous == ds->count);
    FUZZ_CHECK(ds->n_missing_masks >= 0 && ds->n_missing_masks <= ds->n_anomalous);
    int missing = 0;
    for (int i = 0; i < ds->count; i++) {
        const uf_sample *s = &ds->samples[i];
        FUZZ_CHECK(s->image_path && s->defect);
        FUZZ_CHECK(s->label == (strcmp(s->defect, "good") != 0));
        FUZZ_CHECK(!s->mask_path || s->label);
        FUZZ_CHECK(!s->mask_path || is_file(s->mask_path));
        FUZZ_CHECK(is_file(s->image_path));
        missing += s->label && !s->mask_path;
        if (sorted && i) FUZZ_CHECK(strcmp(ds->samples[i - 1].image_path, s->image_path) <= 0);
    }
    FUZZ_CHECK(!sorted || missing == ds->n_missing_masks);
}

static void scan(const char *dir) {
    static const char *const splits[] = {"train", "test", "validation"};
    for (int i = 0; i < 3; i++) {
        uf_error_clear();
        uf_dataset *ds = uf_dataset_open(dir, splits[i]);
        if (ds) {
            FUZZ_CHECK(i < 2);
            check_dataset(ds, 1);
            uf_dataset_free(ds);
        } else {
            fuzz_check_error();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static node nodes[MAX_NODES];
    char root[600], p[1200], q[1200];
    snprintf(root, sizeof root, "%s/root", fuzz_tmpdir());
    fuzz_rm_tree(root);
    FUZZ_CHECK(mkdir(root, 0755) == 0);
    int n = 1;
    nodes[0].path[0] = '\0', nodes[0].depth = 0, nodes[0].is_dir = 1;
    for (size_t at = 0; at + 4 <= size && n < MAX_NODES; at += 4) {
        int kind = data[at] % 8, target = data[at + 3];
        int dirs[MAX_NODES], nd = 0;
        for (int i = 0; i < n; i++)
            if (nodes[i].is_dir && nodes[i].depth < MAX_DEPTH) dirs[nd++] = i;
        if (!nd) break;
        const node *parent = &nodes[dirs[data[at + 1] % nd]];
        node *nn = &nodes[n];
        snprintf(nn->path, sizeof nn->path, parent->path[0] ? "%s/%s" : "%s%s", parent->path,
                 NAMES[data[at + 2] % N_NAMES]);
        nn->depth = parent->depth + 1;
        nn->is_dir = 0;
        full_path(p, sizeof p, root, nn->path);
        int ok;
        if (kind <= 2) {
            ok = mkdir(p, 0755) == 0;
            nn->is_dir = 1;
        } else if (kind <= 4) {
            int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
            ok = fd >= 0;
            if (ok) close(fd);
        } else if (kind <= 6) {
            const char *t;
            switch (target % 8) {
            case 0: full_path(q, sizeof q, root, nodes[(target / 8) % n].path), t = q; break;
            case 1: t = "."; break;
            case 2: t = ".."; break;
            case 3: t = "../.."; break;
            case 4: t = strrchr(p, '/') + 1; break; /* itself: a loop */
            case 5: full_path(q, sizeof q, root, parent->path), t = q; break;
            case 6: t = "missing"; break;
            default: t = "/dev/null"; break;
            }
            ok = symlink(t, p) == 0;
            /* a link to a folder may be used as a parent (loops included: making entries in it fails) */
            struct stat sb;
            nn->is_dir = ok && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
        } else {
            ok = mkfifo(p, 0644) == 0;
        }
        if (ok) n++;
    }

    scan(root);
    /* one sub-folder as the root too (a link into the tree, a category folder...) */
    int pick = size ? data[size - 1] % n : 0;
    if (pick && nodes[pick].is_dir) {
        full_path(p, sizeof p, root, nodes[pick].path);
        scan(p);
    }
    /* command-line inputs: the root, up to three entries, and sometimes a missing path */
    const char *paths[5];
    static char bufs[4][1200];
    int np = 0;
    paths[np++] = root;
    for (int i = 1; i < n && np < 4; i += 1 + (size ? data[i % size] % 5 : 0)) {
        full_path(bufs[np], sizeof bufs[np], root, nodes[i].path);
        paths[np] = bufs[np];
        np++;
    }
    if (size && data[0] & 0x80) paths[np++] = "/nonexistent/uflow-fuzz";
    for (int k = 1; k <= np; k++) {
        uf_error_clear();
        uf_dataset *ds = uf_dataset_from_paths(paths + np - k, k);
        if (ds) {
            check_dataset(ds, 0);
            uf_dataset_free(ds);
        } else {
            fuzz_check_error();
        }
    }
    fuzz_rm_tree(root);
    return 0;
}
