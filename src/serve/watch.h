/* watch.h - `uflow watch`: predicts every image that appears in a folder, crash-safe, over the
 * public C API (uflow.h).
 *
 * What is taken: regular files of DIR itself (not its sub-folders) named *.png, *.jpg, *.jpeg,
 * *.bmp, *.tif, *.tiff (any case), not hidden. A file is read once its writer is done with it:
 * when inotify reports it closed after writing (IN_CLOSE_WRITE) or renamed into DIR
 * (IN_MOVED_TO); files found by a scan (at start: those that arrived while the watcher was
 * down; after an inotify queue overflow) when their size and mtime have not changed for
 * settle_ms and no process holds them open for writing (a read lease is granted: checked where
 * the kernel allows it, i.e. for the files' owner or root).
 *
 * Outputs: predict's files in OUT (<stem>_map.png, _mask.png, _overlay.png; stem = the file name
 * without its extension, or with '.' -> '_' when another image already has that stem) and one
 * row per image in OUT/results.jsonl and OUT/results.csv, predict's columns (an unreadable image
 * gets a row with its error, like predict's, and is not retried).
 *
 * Exactly once: OUT/results.jsonl is the journal. An image's outputs are written (atomically)
 * first, then its row is appended to results.jsonl and fsync'ed: that is the commit. At start a
 * torn last line (a kill in the middle of the append) is cut off, results.csv is rewritten from
 * results.jsonl, and the images it lists are never taken again; so after a kill -9 and a restart
 * every image has exactly one row. Writing an image's outputs failing (disk full) stops the
 * watcher with status 1 without committing that image: it is taken again at the next start.
 */
#ifndef UF_SERVE_WATCH_H
#define UF_SERVE_WATCH_H

typedef struct uf_watch_options {
    const char *model, *weights, *precision; /* as uflow predict's */
    const char *dir, *out;                   /* the watched folder; the output folder (made) */
    int settle_ms;                           /* how long a scanned file must stay unchanged */
    int once;                                /* take what is there (settled), then return */
    int threads;                             /* 0: all cores */
} uf_watch_options;

/* Runs until SIGINT / SIGTERM (blocked here and taken in the loop: the image in progress is
 * finished) or, with once, until the folder has nothing left to take. 0, or 1 after printing
 * one line (model, folders, a failed output write). */
int uf_watch_run(const uf_watch_options *o);

#endif
