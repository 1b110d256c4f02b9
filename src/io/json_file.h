/* json_file.h - small cJSON helpers shared by the files uflow writes as JSON (metrics.json,
 * the kNN diagnostic's results). */
#ifndef UF_IO_JSON_FILE_H
#define UF_IO_JSON_FILE_H

#include <cjson/cJSON.h>

/* key: v, or null when v is not finite (JSON has no NaN). */
void uf_json_add_number(cJSON *o, const char *key, double v);

/* Writes root, pretty-printed, to path atomically and deletes root. UF_OK / UF_ERR + message. */
int uf_json_write_file(cJSON *root, const char *path);

#endif
