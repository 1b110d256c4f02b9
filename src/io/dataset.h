/* dataset.h - data set layouts: scanning a folder into a sorted sample list.
 *
 * Three layouts are recognised from the root folder a user gives:
 *
 *   MVTec-AD category       root/train/good/<img>
 *                           root/test/good/<img>, root/test/<defect>/<img>
 *                           root/ground_truth/<defect>/<stem>_mask.png
 *   MVTec 3D-AD (RGB only)  root/train/good/rgb/<img>
 *                           root/test/<defect>/rgb/<img>
 *                           root/test/<defect>/gt/<stem>.png
 *                           (xyz/, validation/ and the good gt/ are ignored)
 *   plain folder            root/<img>: normal images, "train" split only
 *
 * <img> is a .png, .jpg, .jpeg or .bmp file (extension case-insensitive);
 * hidden files (".DS_Store", macOS "._000.png") are skipped. Detection: a
 * root/train/good/rgb or root/test/<x>/rgb folder means MVTec 3D-AD; else a
 * root/train or root/test folder means MVTec-AD; else the root must hold images
 * itself.
 *
 * What an image-folder scan leaves out (other extensions such as .tif or
 * .webp, sub-folders, dangling or looping symbolic links, other special
 * files) is counted in n_ignored and said in one warning line per folder on
 * stderr, with the count for each reason; hidden files are only counted.
 *
 * Samples are sorted by image path in byte order (strcmp), i.e. by defect folder
 * then file name, so the order never depends on the file system or locale.
 *
 * Labels: 0 for samples under a "good" folder, 1 for every other defect folder.
 * A missing ground-truth mask for an anomalous image is not an error: a warning
 * goes to stderr, the sample is kept with label 1 and mask_path NULL, and it is
 * counted in n_missing_masks. Rationale: its image-level label is still known,
 * so image AUROC can use it; calling it all-normal would turn every correct
 * detection into a false positive, so pixel-level metrics must skip it (use
 * uf_sample_has_pixel_gt). Good samples always have mask_path NULL and mean an
 * all-zero mask.
 *
 * Usage:
 *     uf_dataset *ds = uf_dataset_open("mvtec/bottle", "test");
 *     if (!ds) { fprintf(stderr, "%s\n", uf_last_error()); ... }
 *     for (int i = 0; i < ds->count; i++) {
 *         const uf_sample *s = &ds->samples[i];
 *         uf_image *img = uf_image_load(s->image_path, 3);
 *         uf_image *gt = uf_mask_load(s->mask_path, s->image_path, img->width, img->height);
 *         ...
 *     }
 *     uf_dataset_free(ds);
 */
#ifndef UF_IO_DATASET_H
#define UF_IO_DATASET_H

#include "io/image.h"

typedef enum uf_dataset_layout {
    UF_LAYOUT_MVTEC = 0, /* MVTec-AD category */
    UF_LAYOUT_MVTEC3D,   /* MVTec 3D-AD category, RGB images */
    UF_LAYOUT_FOLDER,    /* plain folder of normal images */
    UF_LAYOUT_BTAD,      /* BTAD product folder: train/ok, test/ok, test/ko, ground_truth/ko/<stem>.png */
    UF_LAYOUT_VISA,      /* VisA category folder (<root>/<object>/Data/...) split by <root>/split_csv/1cls.csv */
} uf_dataset_layout;

typedef struct uf_sample {
    char *image_path; /* root-joined path of the image */
    char *mask_path;  /* ground-truth mask; NULL for good samples and missing masks */
    int label;        /* 0 good, 1 anomalous */
    char *defect;     /* defect folder name: "good" for normal samples */
    char *rel_dir;    /* uf_dataset_from_paths: the image's folder relative to the folder argument it
                       * was found under ("" at its top and for files given directly); NULL otherwise */
} uf_sample;

typedef struct uf_dataset {
    uf_dataset_layout layout;
    char *root;          /* as given */
    char *split;         /* "train" or "test" */
    int count;           /* number of samples */
    uf_sample *samples;  /* (count), sorted by image_path */
    int n_good, n_anomalous;
    int n_missing_masks; /* anomalous samples kept without a mask */
    int n_ignored;       /* entries of image folders that were not taken (see below) */
} uf_dataset;

/* Scans root for the given split ("train" or "test"). Returns a data set with
 * count >= 1, or NULL with a one-line error naming the path concerned: a
 * missing folder, a path that is not a folder, an empty folder, a folder with
 * no images, an unknown split, or "test" asked of a plain folder. */
uf_dataset *uf_dataset_open(const char *root, const char *split);
void uf_dataset_free(uf_dataset *ds);

/* Inputs given on a command line: each path is an image file (taken whatever
 * its extension; loading decides) or a folder walked recursively: each folder's images
 * sorted, then its sub-folders in name order (a sub-folder that leads back to a folder
 * being walked, through a symbolic link, is left out with a warning; so is anything
 * deeper than 64 levels). Order: as given, folders expanded in place. Labels 0, no
 * masks; rel_dir set. NULL + error for a missing path, a folder with no image at any
 * depth, or no input. */
uf_dataset *uf_dataset_from_paths(const char *const *paths, int n);

/* A test split from explicit folders, like anomalib's Folder data set: the images of
 * normal_dir (label 0) and of abnormal_dir (label 1; may be NULL), each folder sorted and
 * not recursive; masks (optional, mask_dir may be NULL) are mask_dir/<image file name>,
 * else mask_dir/<stem>.png. layout UF_LAYOUT_FOLDER, split "test". NULL + error for a
 * missing folder or one without images. */
uf_dataset *uf_dataset_from_folders(const char *normal_dir, const char *abnormal_dir, const char *mask_dir);

/* "MVTec-AD", "MVTec 3D-AD (RGB)" or "image folder". */
const char *uf_dataset_layout_name(uf_dataset_layout layout);

/* 1 when the sample has pixel-level ground truth (good samples: all zero;
 * anomalous samples: their mask file); 0 for an anomalous sample whose mask is
 * missing, which pixel metrics must skip. */
int uf_sample_has_pixel_gt(const uf_sample *s);
/* 1 when a file name has an extension the folder scans take: .png .jpg .jpeg .bmp .tif .tiff,
 * any case (a name that is only an extension, ".png", has none). */
int uf_has_image_ext(const char *name);

/* Loads the ground-truth mask of an image of size width x height as a 1-channel
 * image with values 0 or 255 (binarised: > 127 is anomalous). The values stay
 * 0/255 so the mask can go through the same resize as the image and be
 * thresholded at 0.5 afterwards, as the reference pipeline does.
 * mask_path NULL gives an all-zero mask (a good sample). A colour mask is
 * converted to gray first. A mask whose size differs from the image's is an
 * error naming both files and both sizes; image_path is used for messages only
 * (may be NULL). */
uf_image *uf_mask_load(const char *mask_path, const char *image_path, int width, int height);

#endif
