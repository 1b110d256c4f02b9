/* fuzz_safetensors.c - libFuzzer target: the safetensors reader.
 *
 * Input: a whole .safetensors file. Opens it with uf_st_open and, when it is
 * accepted, walks every accessor: tensors in offset order and by name, float
 * reads (with and without the shape check, and into a buffer of the wrong
 * size), integer reads, metadata by index and by key. Checks the invariants
 * the header promises (offsets inside the data buffer, sorted, no overlap,
 * unique names) and that every failure leaves a one-line error.
 */
#include "fuzz_util.h"

#include "io/safetensors.h"

#define MAX_READ_ELEMS (1 << 22) /* integer reads allocate numel int64s */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("in.safetensors", data, size);
    uf_error_clear();
    uf_safetensors *st = uf_st_open(path);
    if (!st) {
        fuzz_check_error();
        return 0;
    }
    size_t data_size = uf_st_data_size(st);
    FUZZ_CHECK(data_size + 8 <= size);
    int n = uf_st_count(st);
    FUZZ_CHECK(n >= 0 && uf_st_at(st, -1) == NULL && uf_st_at(st, n) == NULL);
    size_t prev_end = 0;
    for (int i = 0; i < n; i++) {
        const uf_st_tensor *t = uf_st_at(st, i);
        FUZZ_CHECK(t && t->name);
        FUZZ_CHECK(uf_st_find(st, t->name) == t);
        FUZZ_CHECK(t->offset <= data_size && t->nbytes <= data_size - t->offset);
        FUZZ_CHECK(t->nbytes == (size_t)t->numel * uf_dtype_size(t->dtype));
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= UF_MAX_DIMS);
        if (t->nbytes) {
            FUZZ_CHECK(t->offset >= prev_end);
            prev_end = t->offset + t->nbytes;
        }
        /* touch every byte so ASan sees any read outside the mapping */
        const volatile unsigned char *p = t->data;
        unsigned sum = 0;
        for (size_t k = 0; k < t->nbytes; k++) sum += p[k];
        (void)sum;

        uf_error_clear();
        uf_tensor *v = uf_st_read_f32(st, t->name, t->ndim, t->shape);
        if (!v) fuzz_check_error();
        uf_tensor_free(v);
        v = uf_st_read_f32(st, t->name, -1, NULL);
        if (!v) fuzz_check_error();
        uf_tensor_free(v);
        int64_t one = 1;
        v = uf_st_read_f32(st, t->name, 1, &one); /* usually a shape mismatch */
        if (!v) fuzz_check_error();
        uf_tensor_free(v);
        float f[2];
        if (uf_st_read_f32_into(st, t->name, -1, NULL, f, 2) != UF_OK) fuzz_check_error();
        if (t->numel <= MAX_READ_ELEMS) {
            int64_t *iv = malloc(((size_t)t->numel + 1) * sizeof *iv);
            FUZZ_CHECK(iv);
            if (uf_st_read_i64(st, t->name, iv, t->numel) != UF_OK) fuzz_check_error();
            free(iv);
        }
    }
    FUZZ_CHECK(prev_end <= data_size);
    if (uf_st_find(st, "") == NULL && uf_st_read_f32(st, "", -1, NULL) == NULL) fuzz_check_error();
    int nm = uf_st_metadata_count(st);
    FUZZ_CHECK(nm >= 0 && uf_st_metadata_key(st, nm) == NULL && uf_st_metadata_value(st, -1) == NULL);
    for (int i = 0; i < nm; i++) {
        const char *k = uf_st_metadata_key(st, i), *val = uf_st_metadata_value(st, i);
        FUZZ_CHECK(k && val);
        FUZZ_CHECK(uf_st_metadata_get(st, k) == val); /* keys are unique */
    }
    uf_st_close(st);
    return 0;
}
