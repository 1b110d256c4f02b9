/* embed.c - uflow embedded in a C program, through the installed library only:
 *
 *     cc embed.c $(pkg-config --cflags --libs uflow) -o embed
 *     ./embed MODEL OUT_DIR IMAGE|FOLDER...
 *
 * Predicts every image (folders walked as `uflow predict` walks them), writes each
 * image's map, overlay and mask under OUT_DIR with the names `uflow predict` gives
 * them, and prints one line per image:
 *     image,score,anomalous,detected_pixels,width,height,outputs
 * (score with 6 decimals, as in `uflow predict`'s results.csv). Exit status 1 with one
 * line on stderr when something fails; a bad image is reported and the others go on.
 */
#include <stdio.h>
#include <stdlib.h>

#include <uflow.h>

static void print_log(int level, const char *message, void *user) {
    (void)user;
    if (level >= UFLOW_LOG_WARNING) fprintf(stderr, "embed: %s\n", message);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL OUT_DIR IMAGE|FOLDER...\n", argv[0]);
        return 2;
    }
    uflow_set_log(print_log, NULL);
    uflow_model *model = uflow_model_load(argv[1], NULL);
    if (!model) {
        fprintf(stderr, "embed: %s\n", uflow_last_error());
        return 1;
    }
    uflow_image_list *list = uflow_list_images((const char *const *)argv + 3, argc - 3);
    if (!list) {
        fprintf(stderr, "embed: %s\n", uflow_last_error());
        uflow_model_free(model);
        return 1;
    }
    const int n = uflow_image_list_count(list);
    const char **paths = malloc(sizeof(char *) * (size_t)n);
    uflow_result **results = malloc(sizeof(uflow_result *) * (size_t)n);
    char **errors = malloc(sizeof(char *) * (size_t)n);
    int status = paths && results && errors ? 0 : 1;
    for (int i = 0; status == 0 && i < n; i++) paths[i] = uflow_image_list_path(list, i);
    uflow_predict_options options = uflow_predict_default_options();
    if (status == 0 && uflow_predict_files(model, paths, n, &options, results, errors) < 0) {
        fprintf(stderr, "embed: %s\n", uflow_last_error());
        status = 1;
    }
    for (int i = 0; status == 0 && i < n; i++) {
        const uflow_result *r = results[i];
        if (!r) {
            fprintf(stderr, "embed: %s\n", errors[i]);
            free(errors[i]);
            continue;
        }
        const char *stem = uflow_image_list_stem(list, i);
        if (uflow_result_write(r, argv[2], stem, 0) != UFLOW_OK) {
            fprintf(stderr, "embed: %s\n", uflow_last_error());
            status = 1;
        }
        printf("%s,%.6f,%d,%d,%d,%d,%s\n", paths[i], uflow_result_score(r), uflow_result_anomalous(r),
               uflow_result_detected_pixels(r), uflow_result_width(r), uflow_result_height(r), stem);
    }
    for (int i = 0; results && i < n; i++) uflow_result_free(results[i]);
    free(paths), free(results), free(errors);
    uflow_image_list_free(list);
    uflow_model_free(model);
    return status;
}
