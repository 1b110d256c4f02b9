/* result_rows.c - see result_rows.h. */
#include "io/result_rows.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

/* v rounded to `decimals` places, so JSON shows 0.993405 rather than every float digit. */
static double rounded(double v, int decimals) {
    double scale = pow(10.0, decimals);
    return isfinite(v) ? round(v * scale) / scale : v;
}

/* CSV field: quoted, with doubled quotes. */
static void csv_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void uf_result_row_csv(FILE *f, const uf_result_row *r) {
    csv_string(f, r->image ? r->image : "");
    if (r->error) {
        fputs(",,,,,,,,", f);
        csv_string(f, r->error);
        fputc('\n', f);
        return;
    }
    fprintf(f, ",%.6f,%d,%d,%.3f,%d,%d,", r->score, r->anomalous, r->detected_pixels, r->max_neg_log10_nfa, r->width,
            r->height);
    csv_string(f, r->outputs ? r->outputs : "");
    fputs(",\n", f);
}

cJSON *uf_result_row_json(const uf_result_row *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int ok = !r->image || cJSON_AddStringToObject(o, "image", r->image);
    if (r->error) {
        ok = ok && cJSON_AddStringToObject(o, "error", r->error);
    } else {
        ok = ok && cJSON_AddNumberToObject(o, "score", rounded(r->score, 6)) &&
             cJSON_AddBoolToObject(o, "anomalous", r->anomalous) &&
             cJSON_AddNumberToObject(o, "detected_pixels", r->detected_pixels) &&
             cJSON_AddNumberToObject(o, "max_neg_log10_nfa", rounded(r->max_neg_log10_nfa, 3)) &&
             cJSON_AddNumberToObject(o, "width", r->width) && cJSON_AddNumberToObject(o, "height", r->height) &&
             (!r->outputs || cJSON_AddStringToObject(o, "outputs", r->outputs));
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int uf_result_row_jsonl(FILE *f, const uf_result_row *r) {
    cJSON *o = uf_result_row_json(r);
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text) return uf_error("out of memory");
    fprintf(f, "%s\n", text);
    cJSON_free(text);
    return UF_OK;
}

static double number(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static const char *string(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int uf_result_row_from_json(const cJSON *o, uf_result_row *r) {
    memset(r, 0, sizeof *r);
    if (!(r->image = string(o, "image"))) return -1;
    r->error = string(o, "error");
    r->score = (float)number(o, "score");
    r->anomalous = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "anomalous"));
    r->detected_pixels = (int)number(o, "detected_pixels");
    r->max_neg_log10_nfa = (float)number(o, "max_neg_log10_nfa");
    r->width = (int)number(o, "width");
    r->height = (int)number(o, "height");
    r->outputs = string(o, "outputs");
    return 0;
}
