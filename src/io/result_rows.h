/* result_rows.h - the rows of results.csv and results.jsonl: written by uflow predict, by
 * uflow watch (whose results.jsonl is its journal) and, without image and outputs, as the
 * answer of uflow serve's POST /predict. One format, written here. */
#ifndef UF_IO_RESULT_ROWS_H
#define UF_IO_RESULT_ROWS_H

#include <stdio.h>

#include <cjson/cJSON.h>

typedef struct uf_result_row {
    const char *image;   /* the image's path; NULL: no "image" field (JSON only) */
    const char *error;   /* not NULL: the image failed, and this says why (the fields below unused) */
    float score;         /* max of the anomaly map */
    int anomalous;       /* some pixel has NFA < 1 */
    int detected_pixels;
    float max_neg_log10_nfa;
    int width, height;
    const char *outputs; /* the output files' stem; NULL: no "outputs" field (JSON only) */
} uf_result_row;

#define UF_RESULTS_CSV_HEADER "image,score,anomalous,detected_pixels,max_neg_log10_nfa,width,height,outputs,error\n"

/* r's results.csv line (strings quoted, quotes doubled). */
void uf_result_row_csv(FILE *f, const uf_result_row *r);
/* r's results.jsonl object (score to 6 decimals, max -log10 NFA to 3; a failed image has only
 * "image" and "error"); NULL when out of memory. The caller cJSON_Deletes it. */
cJSON *uf_result_row_json(const uf_result_row *r);
/* r as one results.jsonl line on f. UF_OK, or UF_ERR when out of memory. */
int uf_result_row_jsonl(FILE *f, const uf_result_row *r);
/* r from a results.jsonl object o (r's strings point into o). 0, or -1 when o has no "image". */
int uf_result_row_from_json(const cJSON *o, uf_result_row *r);

#endif
