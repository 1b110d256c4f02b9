/* dataset.c - data set layouts (see dataset.h). */
#include "io/dataset.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/log.h"
#include "core/tensor.h"

/* At most this many "mask missing" lines per uf_dataset_open; then a count. */
#define MAX_MASK_WARNINGS 5

/* ---- small string / path helpers ------------------------------------------ */

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = uf_alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* a + "/" + b (+ "/" + c when c is not NULL), newly allocated. */
static char *path_join3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = c ? strlen(c) : 0;
    while (la > 1 && a[la - 1] == '/') la--; /* "root/" and "root" give the same paths */
    char *p = uf_alloc(la + lb + lc + 3);
    if (!p) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb);
    size_t n = la + 1 + lb;
    if (c) {
        p[n++] = '/';
        memcpy(p + n, c, lc);
        n += lc;
    }
    p[n] = '\0';
    return p;
}

static char *path_join(const char *a, const char *b) { return path_join3(a, b, NULL); }

enum { KIND_MISSING, KIND_FILE, KIND_DIR, KIND_OTHER };

/* What a path is, following symbolic links (a link to a folder is a folder). */
static int path_kind(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return KIND_MISSING;
    if (S_ISDIR(st.st_mode)) return KIND_DIR;
    if (S_ISREG(st.st_mode)) return KIND_FILE;
    return KIND_OTHER;
}

static int is_dir(const char *path) { return path_kind(path) == KIND_DIR; }

int uf_has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    static const char *exts[] = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        const char *e = exts[i];
        size_t k = 0;
        while (e[k] && dot[k] && tolower((unsigned char)dot[k]) == e[k]) k++;
        if (!e[k] && !dot[k]) return 1;
    }
    return 0;
}

/* File name without its last extension, newly allocated. */
static char *stem_of(const char *name) {
    const char *dot = strrchr(name, '.');
    size_t n = dot && dot != name ? (size_t)(dot - name) : strlen(name);
    char *s = uf_alloc(n + 1);
    if (!s) return NULL;
    memcpy(s, name, n);
    s[n] = '\0';
    return s;
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...) {
    char line[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    uf_log(UF_LOG_WARNING, "%s", line);
}

/* ---- directory listing ---------------------------------------------------- */

typedef struct strlist {
    char **v; /* (n) names, owned */
    int n, cap;
} strlist;

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) uf_free(l->v[i]);
    uf_free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int strlist_push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        char **v = uf_alloc(sizeof(char *) * (size_t)cap);
        if (!v) return UF_ERR;
        if (l->n) memcpy(v, l->v, sizeof(char *) * (size_t)l->n);
        uf_free(l->v);
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = str_dup(s))) return UF_ERR;
    l->n++;
    return UF_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

enum { LIST_IMAGES, LIST_DIRS };

/* What an image-folder listing left out, by reason. */
typedef struct skipped {
    int hidden, other_ext, dirs, bad_links, other;
    char exts[48]; /* the first few distinct extensions of other_ext, e.g. ".tif .webp" */
} skipped;

/* Entries left out that a user should hear about: all but the hidden ones. */
static int skipped_reportable(const skipped *k) { return k->other_ext + k->dirs + k->bad_links + k->other; }

static void note_ext(skipped *k, const char *name) {
    k->other_ext++;
    const char *dot = strrchr(name, '.');
    char ext[16];
    if (!dot || dot == name || strlen(dot) >= sizeof ext - 1) snprintf(ext, sizeof ext, "%s", "(none)");
    else {
        size_t i = 0;
        for (; dot[i]; i++) ext[i] = (char)tolower((unsigned char)dot[i]);
        ext[i] = '\0';
    }
    for (const char *p = k->exts; (p = strstr(p, ext)) != NULL; p += strlen(ext)) /* already listed? */
        if ((p == k->exts || p[-1] == ' ') && (p[strlen(ext)] == ' ' || !p[strlen(ext)])) return;
    size_t used = strlen(k->exts);
    if (used + strlen(ext) + 2 < sizeof k->exts)
        snprintf(k->exts + used, sizeof k->exts - used, "%s%s", used ? " " : "", ext);
}

/* One warning line saying what a scan of dir ignored (hidden files included);
 * nothing when all it ignored was hidden files. */
static void warn_skipped(const char *dir, const skipped *k) {
    if (!skipped_reportable(k)) return;
    int total = k->hidden + skipped_reportable(k);
    char why[256] = "";
    size_t u = 0;
#define WHY(count, ...)                                                                       \
    if ((count) && u < sizeof why) {                                                          \
        u += (size_t)snprintf(why + u, sizeof why - u, "%s", u ? ", " : "");                  \
        if (u < sizeof why) u += (size_t)snprintf(why + u, sizeof why - u, __VA_ARGS__);      \
    }
    WHY(k->other_ext, "%d not a .png/.jpg/.jpeg/.bmp/.tif file (%s)", k->other_ext, k->exts)
    WHY(k->hidden, "%d hidden", k->hidden)
    WHY(k->dirs, "%d sub-folder%s (not scanned)", k->dirs, k->dirs > 1 ? "s" : "")
    WHY(k->bad_links, "%d dangling or looping symbolic link%s", k->bad_links, k->bad_links > 1 ? "s" : "")
    WHY(k->other, "%d neither file nor folder", k->other)
#undef WHY
    warn("folder '%s': ignored %d entr%s: %s", dir, total, total > 1 ? "ies" : "y", why);
}

/* Lists the image files (LIST_IMAGES) or sub-folders (LIST_DIRS) of dir,
 * sorted, skipping hidden entries. *n_entries (optional) receives the number of
 * visible entries of any kind, so callers can tell "empty" from "no images".
 * With LIST_IMAGES, *left_out (optional) receives what was not listed and why. */
static int list_dir(const char *dir, int what, strlist *out, int *n_entries, skipped *left_out) {
    DIR *d = opendir(dir);
    if (!d) return uf_error("cannot open folder '%s': %s", dir, strerror(errno));
    skipped k;
    memset(&k, 0, sizeof k);
    int entries = 0, rc = UF_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (e->d_name[0] == '.') { /* hidden and AppleDouble files */
            k.hidden++;
            continue;
        }
        entries++;
        char *full = path_join(dir, e->d_name);
        if (!full) { rc = UF_ERR; break; }
        int kind = path_kind(full);
        struct stat lst; /* what a path that stat cannot follow is: a dangling or looping link? */
        int bad_link = kind == KIND_MISSING && lstat(full, &lst) == 0 && S_ISLNK(lst.st_mode);
        uf_free(full);
        if (what == LIST_DIRS) {
            if (kind == KIND_DIR && (rc = strlist_push(out, e->d_name)) != UF_OK) break;
            continue;
        }
        if (kind == KIND_DIR) k.dirs++;
        else if (bad_link) k.bad_links++;
        else if (kind != KIND_FILE) k.other++;
        else if (!uf_has_image_ext(e->d_name)) note_ext(&k, e->d_name);
        else if ((rc = strlist_push(out, e->d_name)) != UF_OK) break;
    }
    closedir(d);
    if (rc != UF_OK) return rc;
    if (out->n > 1) qsort(out->v, (size_t)out->n, sizeof(char *), cmp_str);
    if (n_entries) *n_entries = entries;
    if (left_out) *left_out = k;
    return UF_OK;
}

/* Error for a folder that must exist: missing or not a folder. */
static int require_dir(const char *path) {
    switch (path_kind(path)) {
    case KIND_DIR: return UF_OK;
    case KIND_MISSING: return uf_error("missing folder '%s'", path);
    default: return uf_error("'%s' is not a folder", path);
    }
}

/* Sorted image names of a folder that must hold at least one image. */
static int list_images_required(const char *dir, strlist *names, skipped *left_out) {
    if (require_dir(dir) != UF_OK) return UF_ERR;
    int entries = 0;
    if (list_dir(dir, LIST_IMAGES, names, &entries, left_out) != UF_OK) return UF_ERR;
    if (names->n > 0) return UF_OK;
    if (entries == 0) return uf_error("folder '%s' is empty", dir);
    return uf_error("no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff) in folder '%s'", dir);
}

/* ---- sample list ---------------------------------------------------------- */

typedef struct builder {
    uf_dataset *ds;
    int cap;
    int warned; /* missing-mask warnings printed so far */
} builder;

/* Appends a sample; takes ownership of image_path and mask_path (even on error). */
static int add_sample(builder *b, char *image_path, char *mask_path, const char *defect) {
    uf_dataset *ds = b->ds;
    if (ds->count == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        uf_sample *v = uf_calloc((size_t)cap, sizeof(uf_sample));
        if (!v) {
            uf_free(image_path), uf_free(mask_path);
            return UF_ERR;
        }
        if (ds->count) memcpy(v, ds->samples, sizeof(uf_sample) * (size_t)ds->count);
        uf_free(ds->samples);
        ds->samples = v;
        b->cap = cap;
    }
    uf_sample *s = &ds->samples[ds->count];
    s->image_path = image_path;
    s->mask_path = mask_path;
    s->label = strcmp(defect, "good") != 0;
    s->defect = str_dup(defect);
    ds->count++;
    if (!s->defect) return UF_ERR;
    if (s->label) ds->n_anomalous++;
    else ds->n_good++;
    return UF_OK;
}

/* For an anomalous sample: returns mask_path when that file exists, else frees
 * it, warns (rate-limited) and returns NULL. */
static char *existing_mask(builder *b, char *mask_path, const char *image_path) {
    if (path_kind(mask_path) == KIND_FILE) return mask_path;
    if (b->warned < MAX_MASK_WARNINGS)
        warn("no ground-truth mask '%s' for anomalous image '%s': kept for image-level metrics, "
             "skipped by pixel-level ones",
             mask_path, image_path);
    b->warned++;
    b->ds->n_missing_masks++;
    uf_free(mask_path);
    return NULL;
}

enum {
    FOLDER_REQUIRED = 1,       /* img_dir must hold at least one image */
    FOLDER_SUBDIRS_WALKED = 2, /* the caller walks its sub-folders: not reported as ignored */
};

/* Adds every image of img_dir with the given defect name. Mask path for an
 * anomalous image: mask_dir/<stem><mask_suffix>. flags: FOLDER_*. */
static int add_folder(builder *b, const char *img_dir, const char *defect, const char *mask_dir,
                      const char *mask_suffix, int flags) {
    strlist names = {0};
    skipped left_out;
    memset(&left_out, 0, sizeof left_out);
    int rc = flags & FOLDER_REQUIRED ? list_images_required(img_dir, &names, &left_out)
                                     : list_dir(img_dir, LIST_IMAGES, &names, NULL, &left_out);
    if (flags & FOLDER_SUBDIRS_WALKED) left_out.dirs = 0;
    if (rc == UF_OK) {
        /* Hidden files (.DS_Store, ._x.png) are everyday noise: counted, not reported alone. */
        b->ds->n_ignored += left_out.hidden + skipped_reportable(&left_out);
        warn_skipped(img_dir, &left_out);
    }
    int anomalous = strcmp(defect, "good") != 0;
    for (int i = 0; rc == UF_OK && i < names.n; i++) {
        char *img = path_join(img_dir, names.v[i]);
        char *mask = NULL;
        if (!img) { rc = UF_ERR; break; }
        if (anomalous && mask_dir) {
            char *stem = stem_of(names.v[i]);
            size_t ls = stem ? strlen(stem) : 0, lx = strlen(mask_suffix);
            char *file = stem ? uf_alloc(ls + lx + 1) : NULL;
            if (file) {
                memcpy(file, stem, ls);
                memcpy(file + ls, mask_suffix, lx + 1);
                mask = path_join(mask_dir, file);
            }
            uf_free(stem), uf_free(file);
            if (!mask) {
                uf_free(img);
                rc = UF_ERR;
                break;
            }
            mask = existing_mask(b, mask, img);
        }
        rc = add_sample(b, img, mask, defect);
    }
    strlist_free(&names);
    return rc;
}

/* ---- layouts -------------------------------------------------------------- */

/* Test split of MVTec-AD, MVTec 3D-AD (images in <defect>/rgb, masks in <defect>/gt) or
 * BTAD (normal images in ok/, masks ground_truth/<defect>/<stem>.png). */
static int scan_test(builder *b, const char *root, uf_dataset_layout layout) {
    const int mvtec3d = layout == UF_LAYOUT_MVTEC3D, btad = layout == UF_LAYOUT_BTAD;
    char *test = path_join(root, "test");
    strlist defects = {0};
    int entries = 0, rc = UF_ERR;
    if (!test) goto done;
    if (require_dir(test) != UF_OK) goto done;
    if (list_dir(test, LIST_DIRS, &defects, &entries, NULL) != UF_OK) goto done;
    if (entries == 0) {
        uf_error("folder '%s' is empty", test);
        goto done;
    }
    if (defects.n == 0) {
        uf_error(btad ? "no folders in '%s' (expected test/ok/ and test/ko/)"
                      : "no defect folders in '%s' (expected test/good/ and test/<defect>/ folders)",
                 test);
        goto done;
    }
    rc = UF_OK;
    for (int i = 0; rc == UF_OK && i < defects.n; i++) {
        const char *defect = defects.v[i];
        char *img_dir = NULL, *mask_dir = NULL;
        if (mvtec3d) {
            img_dir = path_join3(test, defect, "rgb");
            mask_dir = path_join3(test, defect, "gt");
            if (img_dir && !is_dir(img_dir)) warn("no rgb/ folder in '%s/%s': skipped", test, defect);
        } else {
            img_dir = path_join(test, defect);
            mask_dir = path_join3(root, "ground_truth", defect);
        }
        const char *label = btad && !strcmp(defect, "ok") ? "good" : defect; /* BTAD's normal folder */
        if (!img_dir || !mask_dir) rc = UF_ERR;
        else if (is_dir(img_dir))
            rc = add_folder(b, img_dir, label, mask_dir, mvtec3d || btad ? ".png" : "_mask.png", 0);
        uf_free(img_dir), uf_free(mask_dir);
    }
    if (rc == UF_OK && b->ds->count == 0)
        rc = uf_error(mvtec3d ? "no images in any '%s/<defect>/rgb/' folder"
                              : "no images in any '%s/<defect>/' folder",
                      test);
    if (b->warned > MAX_MASK_WARNINGS)
        warn("... and %d more anomalous images of '%s' without a mask", b->warned - MAX_MASK_WARNINGS,
             test);
done:
    strlist_free(&defects);
    uf_free(test);
    return rc;
}

static int scan_train(builder *b, const char *root, uf_dataset_layout layout) {
    char *dir = layout == UF_LAYOUT_MVTEC3D ? path_join3(root, "train", "good/rgb")
                : layout == UF_LAYOUT_BTAD  ? path_join3(root, "train", "ok")
                                            : path_join3(root, "train", "good");
    if (!dir) return UF_ERR;
    int rc = add_folder(b, dir, "good", NULL, NULL, FOLDER_REQUIRED);
    uf_free(dir);
    return rc;
}

/* 1 when root looks like a BTAD product folder: train/ok/ or test/ok/ (and no train/good/). */
static int looks_btad(const char *root) {
    char *a = path_join3(root, "train", "ok"), *t = path_join3(root, "test", "ok"), *g = path_join3(root, "train", "good");
    int yes = a && t && g && (is_dir(a) || is_dir(t)) && !is_dir(g);
    uf_free(a), uf_free(t), uf_free(g);
    return yes;
}

/* 1 when root looks like an MVTec 3D-AD category: train/good/rgb/ or some test/<x>/rgb/. */
static int looks_mvtec3d(const char *root) {
    char *p = path_join3(root, "train", "good/rgb");
    int yes = p && is_dir(p);
    uf_free(p);
    if (yes) return 1;
    char *test = path_join(root, "test");
    strlist defects = {0};
    if (test && is_dir(test) && list_dir(test, LIST_DIRS, &defects, NULL, NULL) == UF_OK)
        for (int i = 0; !yes && i < defects.n; i++) {
            char *rgb = path_join3(test, defects.v[i], "rgb");
            yes = rgb && is_dir(rgb);
            uf_free(rgb);
        }
    strlist_free(&defects);
    uf_free(test);
    uf_error_clear();
    return yes;
}

static int scan_folder(builder *b, const char *root, int is_train) {
    if (!is_train)
        return uf_error("'%s' is a plain image folder (no train/ or test/ folders): it has no test split",
                        root);
    strlist names = {0}, dirs = {0};
    int entries = 0, rc = list_dir(root, LIST_IMAGES, &names, &entries, NULL);
    if (rc == UF_OK && names.n == 0) {
        if (entries == 0) rc = uf_error("folder '%s' is empty", root);
        else if (list_dir(root, LIST_DIRS, &dirs, NULL, NULL) == UF_OK && dirs.n > 0)
            /* A folder of categories (e.g. the MVTec-AD root) is a common mistake. */
            rc = uf_error("no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff) in folder '%s' and no train/ or test/ "
                          "folder; give one category folder, e.g. '%s/%s'",
                          root, root, dirs.v[0]);
        else rc = uf_error("no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff) in folder '%s'", root);
    }
    strlist_free(&names);
    strlist_free(&dirs);
    if (rc != UF_OK) return rc;
    /* Plain folder: its images are the training samples. */
    return add_folder(b, root, "good", NULL, NULL, FOLDER_REQUIRED);
}

/* ---- VisA: <root>/split_csv/1cls.csv, rows "object,split,label,image,mask" with paths
 * relative to <root>; the data set folder is <root>/<object>. ---- */

/* The parent of dir (a new string), and dir's last component in *name. */
static char *parent_of(const char *dir, const char **name) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t k = n;
    while (k > 0 && dir[k - 1] != '/') k--;
    *name = dir + k;
    char *p = uf_alloc(k ? k + 1 : 2);
    if (!p) return NULL;
    if (k == 0) memcpy(p, ".", 2);
    else memcpy(p, dir, k), p[k > 1 ? k - 1 : k] = '\0';
    return p;
}

/* The VisA split file for category folder root, or NULL (not VisA). */
static char *visa_csv(const char *root) {
    const char *name;
    char *parent = parent_of(root, &name);
    char *data = path_join3(root, "Data", "Images");
    char *csv = parent ? path_join3(parent, "split_csv", "1cls.csv") : NULL;
    int yes = data && csv && is_dir(data) && path_kind(csv) == KIND_FILE;
    uf_free(parent), uf_free(data);
    if (!yes) uf_free(csv);
    return yes ? csv : NULL;
}

/* Splits one CSV line (quotes allowed, "" inside quotes) into at most max fields, in place. */
static int csv_fields(char *line, char **field, int max) {
    int n = 0;
    char *r = line, *w = line;
    while (n < max) {
        field[n++] = w;
        int quoted = *r == '"';
        if (quoted) r++;
        for (; *r; r++) {
            if (quoted && *r == '"' && r[1] == '"') *w++ = '"', r++;
            else if (quoted && *r == '"') quoted = 0;
            else if (!quoted && (*r == ',' || *r == '\r' || *r == '\n')) break;
            else *w++ = *r;
        }
        int more = *r == ',';
        *w++ = '\0';
        if (!more) break;
        r++;
    }
    return n;
}

static int scan_visa(builder *b, const char *root, const char *csv_path, int is_train) {
    const char *object;
    char *base = parent_of(root, &object);
    FILE *f = base ? fopen(csv_path, "r") : NULL;
    if (!f) {
        uf_free(base);
        return base ? uf_error("cannot open '%s': %s", csv_path, strerror(errno)) : UF_ERR;
    }
    size_t olen = strlen(object);
    while (olen > 0 && object[olen - 1] == '/') olen--;
    char line[8192];
    int rc = UF_OK, lineno = 0, rows = 0;
    while (rc == UF_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *fl[6];
        int nf = csv_fields(line, fl, 6);
        if (lineno == 1 && nf >= 4 && !strcmp(fl[0], "object")) continue; /* header */
        if (nf < 4 || strlen(fl[0]) != olen || strncmp(fl[0], object, olen)) continue;
        if (strcmp(fl[1], is_train ? "train" : "test")) continue;
        int anomalous = !strcmp(fl[2], "anomaly");
        if (!anomalous && strcmp(fl[2], "normal")) {
            rc = uf_error("'%s' line %d: label '%s' is neither normal nor anomaly", csv_path, lineno, fl[2]);
            break;
        }
        if (is_train && anomalous) continue; /* 1cls has none; never train on them */
        char *img = path_join(base, fl[3]);
        char *mask = anomalous && nf >= 5 && fl[4][0] ? path_join(base, fl[4]) : NULL;
        if (!img || (anomalous && nf >= 5 && fl[4][0] && !mask)) {
            uf_free(img), uf_free(mask);
            rc = UF_ERR;
            break;
        }
        if (anomalous) mask = mask ? existing_mask(b, mask, img) : NULL;
        if (anomalous && !mask && !(nf >= 5 && fl[4][0])) b->ds->n_missing_masks++;
        rc = add_sample(b, img, mask, anomalous ? "anomaly" : "good");
        rows++;
    }
    fclose(f);
    uf_free(base);
    if (rc == UF_OK && rows == 0)
        rc = uf_error("'%s' has no %s rows for object '%.*s'", csv_path, is_train ? "train" : "test", (int)olen, object);
    return rc;
}

static int cmp_sample(const void *a, const void *b) {
    return strcmp(((const uf_sample *)a)->image_path, ((const uf_sample *)b)->image_path);
}

uf_dataset *uf_dataset_open(const char *root, const char *split) {
    if (!root || !split) {
        uf_error("uf_dataset_open: root and split are required");
        return NULL;
    }
    int is_train = strcmp(split, "train") == 0;
    if (!is_train && strcmp(split, "test") != 0) {
        uf_error("unknown data set split '%s' for '%s' (expected \"train\" or \"test\")", split, root);
        return NULL;
    }
    switch (path_kind(root)) {
    case KIND_DIR: break;
    case KIND_MISSING: uf_error("data set folder '%s' does not exist", root); return NULL;
    default: uf_error("data set path '%s' is not a folder", root); return NULL;
    }
    uf_dataset *ds = uf_calloc(1, sizeof(uf_dataset));
    if (!ds) return NULL;
    builder b = {ds, 0, 0};
    int rc = UF_ERR;
    if (!(ds->root = str_dup(root)) || !(ds->split = str_dup(split))) goto fail;

    char *train = path_join(root, "train"), *test = path_join(root, "test");
    int mvtec = train && test && (path_kind(train) != KIND_MISSING || path_kind(test) != KIND_MISSING);
    uf_free(train), uf_free(test);
    char *visa = mvtec ? NULL : visa_csv(root);
    if (visa) {
        ds->layout = UF_LAYOUT_VISA;
        rc = scan_visa(&b, root, visa, is_train);
        uf_free(visa);
    } else if (mvtec) {
        ds->layout = looks_btad(root) ? UF_LAYOUT_BTAD : looks_mvtec3d(root) ? UF_LAYOUT_MVTEC3D : UF_LAYOUT_MVTEC;
        rc = is_train ? scan_train(&b, root, ds->layout) : scan_test(&b, root, ds->layout);
    } else {
        ds->layout = UF_LAYOUT_FOLDER;
        rc = scan_folder(&b, root, is_train);
    }
    if (rc != UF_OK) goto fail;
    UF_ASSERT(ds->count > 0);
    qsort(ds->samples, (size_t)ds->count, sizeof(uf_sample), cmp_sample);
    return ds;
fail:
    uf_dataset_free(ds);
    return NULL;
}

/* ---- recursive folder walk (uf_dataset_from_paths) ------------------------- */

#define WALK_MAX_DEPTH 64

typedef struct {
    dev_t dev[WALK_MAX_DEPTH + 1];
    ino_t ino[WALK_MAX_DEPTH + 1];
    int n;
} walk_stack; /* the folders from the argument down to the one being walked */

/* Adds dir's images (rel_dir = rel), then walks its sub-folders. */
static int add_tree(builder *b, const char *dir, const char *rel, walk_stack *anc) {
    strlist subs = {0};
    const int first = b->ds->count;
    int rc = add_folder(b, dir, "good", NULL, NULL, FOLDER_SUBDIRS_WALKED);
    for (int i = first; rc == UF_OK && i < b->ds->count; i++)
        if (!(b->ds->samples[i].rel_dir = str_dup(rel))) rc = UF_ERR;
    if (rc == UF_OK) rc = list_dir(dir, LIST_DIRS, &subs, NULL, NULL);
    for (int i = 0; rc == UF_OK && i < subs.n; i++) {
        char *full = path_join(dir, subs.v[i]);
        char *sub_rel = rel[0] ? path_join(rel, subs.v[i]) : str_dup(subs.v[i]);
        struct stat st;
        if (!full || !sub_rel) {
            rc = UF_ERR;
        } else if (stat(full, &st) != 0) {
            warn("folder '%s': cannot read it (%s): skipped", full, strerror(errno));
            b->ds->n_ignored++;
        } else {
            int loop = 0;
            for (int k = 0; k < anc->n && !loop; k++) loop = anc->dev[k] == st.st_dev && anc->ino[k] == st.st_ino;
            if (loop) {
                warn("folder '%s' leads back to a folder being scanned (a symbolic link loop): not followed", full);
                b->ds->n_ignored++;
            } else if (anc->n > WALK_MAX_DEPTH) {
                warn("folder '%s' is more than %d levels deep: not scanned", full, WALK_MAX_DEPTH);
                b->ds->n_ignored++;
            } else {
                anc->dev[anc->n] = st.st_dev, anc->ino[anc->n] = st.st_ino, anc->n++;
                rc = add_tree(b, full, sub_rel, anc);
                anc->n--;
            }
        }
        uf_free(full), uf_free(sub_rel);
    }
    strlist_free(&subs);
    return rc;
}

/* A folder argument: its tree; an error when no image is found at any depth. */
static int add_folder_tree(builder *b, const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) return uf_error("cannot open folder '%s': %s", dir, strerror(errno));
    walk_stack anc = {.dev = {st.st_dev}, .ino = {st.st_ino}, .n = 1};
    const int before = b->ds->count;
    if (add_tree(b, dir, "", &anc) != UF_OK) return UF_ERR;
    if (b->ds->count > before) return UF_OK;
    strlist any = {0};
    int entries = 0;
    int rc = list_dir(dir, LIST_IMAGES, &any, &entries, NULL);
    strlist_free(&any);
    if (rc != UF_OK) return rc;
    if (entries == 0) return uf_error("folder '%s' is empty", dir);
    return uf_error("no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff) in folder '%s' or its sub-folders", dir);
}

uf_dataset *uf_dataset_from_paths(const char *const *paths, int n) {
    uf_dataset *ds = uf_calloc(1, sizeof(uf_dataset));
    if (!ds) return NULL;
    builder b = {ds, 0, 0};
    ds->layout = UF_LAYOUT_FOLDER;
    if (!(ds->root = str_dup(n > 0 ? paths[0] : "")) || !(ds->split = str_dup("predict"))) goto fail;
    for (int i = 0; i < n; i++) {
        int kind = path_kind(paths[i]);
        if (kind == KIND_DIR) {
            if (add_folder_tree(&b, paths[i]) != UF_OK) goto fail;
        } else if (kind == KIND_FILE) {
            char *p = str_dup(paths[i]);
            if (!p || add_sample(&b, p, NULL, "good") != UF_OK) goto fail;
            if (!(ds->samples[ds->count - 1].rel_dir = str_dup(""))) goto fail;
        } else {
            uf_error("input '%s' does not exist", paths[i]);
            goto fail;
        }
    }
    if (ds->count == 0) {
        uf_error("no input images");
        goto fail;
    }
    return ds;
fail:
    uf_dataset_free(ds);
    return NULL;
}

uf_dataset *uf_dataset_from_folders(const char *normal_dir, const char *abnormal_dir, const char *mask_dir) {
    if (!normal_dir) {
        uf_error("a folder of normal test images is required");
        return NULL;
    }
    uf_dataset *ds = uf_calloc(1, sizeof(uf_dataset));
    if (!ds) return NULL;
    builder b = {ds, 0, 0};
    ds->layout = UF_LAYOUT_FOLDER;
    if (!(ds->root = str_dup(normal_dir)) || !(ds->split = str_dup("test"))) goto fail;
    if (add_folder(&b, normal_dir, "good", NULL, NULL, FOLDER_REQUIRED) != UF_OK) goto fail;
    if (abnormal_dir) {
        if (mask_dir && require_dir(mask_dir) != UF_OK) goto fail;
        const int first = ds->count;
        if (add_folder(&b, abnormal_dir, "abnormal", NULL, NULL, FOLDER_REQUIRED) != UF_OK) goto fail;
        for (int i = first; mask_dir && i < ds->count; i++) {
            uf_sample *s = &ds->samples[i];
            const char *name = strrchr(s->image_path, '/');
            name = name ? name + 1 : s->image_path;
            char *same = path_join(mask_dir, name), *stem = stem_of(name);
            char *png = NULL;
            if (stem) {
                size_t n = strlen(stem);
                char *file = uf_alloc(n + 5);
                if (file) memcpy(file, stem, n), memcpy(file + n, ".png", 5), png = path_join(mask_dir, file);
                uf_free(file);
            }
            uf_free(stem);
            if (!same || !png) {
                uf_free(same), uf_free(png);
                goto fail;
            }
            /* the mask under the image's own name (anomalib), else <stem>.png */
            if (path_kind(same) == KIND_FILE) {
                s->mask_path = same;
                uf_free(png);
            } else {
                uf_free(same);
                s->mask_path = existing_mask(&b, png, s->image_path);
            }
        }
        if (!mask_dir) ds->n_missing_masks += ds->count - first;
    }
    return ds;
fail:
    uf_dataset_free(ds);
    return NULL;
}

void uf_dataset_free(uf_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->count; i++) {
        uf_free(ds->samples[i].image_path);
        uf_free(ds->samples[i].mask_path);
        uf_free(ds->samples[i].defect);
        uf_free(ds->samples[i].rel_dir);
    }
    uf_free(ds->samples);
    uf_free(ds->root);
    uf_free(ds->split);
    uf_free(ds);
}

const char *uf_dataset_layout_name(uf_dataset_layout layout) {
    switch (layout) {
    case UF_LAYOUT_MVTEC: return "MVTec-AD";
    case UF_LAYOUT_MVTEC3D: return "MVTec 3D-AD (RGB)";
    case UF_LAYOUT_FOLDER: return "image folder";
    case UF_LAYOUT_BTAD: return "BTAD";
    case UF_LAYOUT_VISA: return "VisA";
    }
    return "unknown";
}

int uf_sample_has_pixel_gt(const uf_sample *s) { return s->label == 0 || s->mask_path != NULL; }

uf_image *uf_mask_load(const char *mask_path, const char *image_path, int width, int height) {
    if (width <= 0 || height <= 0) {
        uf_error("mask for '%s': bad image size %dx%d", image_path ? image_path : "(image)", width,
                 height);
        return NULL;
    }
    if (!mask_path) return uf_image_new(width, height, 1);
    uf_image *m = uf_image_load(mask_path, 1);
    if (!m) return NULL;
    if (m->width != width || m->height != height) {
        uf_error("mask '%s' is %dx%d but its image '%s' is %dx%d", mask_path, m->width, m->height,
                 image_path ? image_path : "(image)", width, height);
        uf_image_free(m);
        return NULL;
    }
    size_t n = (size_t)width * (size_t)height;
    for (size_t i = 0; i < n; i++) m->pixels[i] = m->pixels[i] > 127 ? 255 : 0;
    return m;
}
