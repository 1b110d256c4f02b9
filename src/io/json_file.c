#include "io/json_file.h"

#include <math.h>
#include <string.h>

#include "core/error.h"
#include "io/atomic_file.h"

void uf_json_add_number(cJSON *o, const char *key, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

int uf_json_write_file(cJSON *root, const char *path) {
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return uf_error("out of memory");
    int rc = uf_write_file_atomic(path, text, strlen(text));
    cJSON_free(text);
    return rc;
}
