/* safetensors.h - strict reader and atomic writer of .safetensors files.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * then the data buffer; offsets are relative to the buffer's start.
 *
 * The reader mmaps the file and validates everything before returning: header
 * size against the file size, JSON syntax, every dtype, shape and offset pair
 * (in range, matching dtype size x element count, no overlaps). A bad file
 * gives NULL and an error message naming the file and the offending tensor.
 *
 * Views returned by uf_st_at/uf_st_find point into the mapping and stay valid
 * until uf_st_close. Values are read as float32 (F32/F16/BF16/F64 converted) or
 * int64 (integer dtypes) with shape checks, into freshly allocated tensors.
 */
#ifndef UF_IO_SAFETENSORS_H
#define UF_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

typedef enum {
    UF_DT_F32,
    UF_DT_F16,
    UF_DT_BF16,
    UF_DT_F64,
    UF_DT_I64,
    UF_DT_I32,
    UF_DT_I16,
    UF_DT_I8,
    UF_DT_U8,
    UF_DT_BOOL,
} uf_dtype;

const char *uf_dtype_name(uf_dtype dt);
size_t uf_dtype_size(uf_dtype dt);

typedef struct uf_st_tensor {
    const char *name;
    uf_dtype dtype;
    int ndim;
    int64_t shape[UF_MAX_DIMS];
    int64_t numel;
    const void *data; /* into the mapping; little-endian; may be unaligned */
    size_t nbytes;
} uf_st_tensor;

typedef struct uf_safetensors uf_safetensors;

uf_safetensors *uf_st_open(const char *path);
void uf_st_close(uf_safetensors *st);

int uf_st_count(const uf_safetensors *st);
const uf_st_tensor *uf_st_at(const uf_safetensors *st, int i); /* in file order of offsets */
const uf_st_tensor *uf_st_find(const uf_safetensors *st, const char *name); /* NULL if absent (no error set) */

/* __metadata__ entries (string values only, as the format requires). */
int uf_st_metadata_count(const uf_safetensors *st);
const char *uf_st_metadata_key(const uf_safetensors *st, int i);
const char *uf_st_metadata_get(const uf_safetensors *st, const char *key); /* NULL if absent */

/* Reads tensor `name` as float32. With ndim >= 0 the shape must equal
 * expect_shape (ndim entries). Errors name the tensor: missing, wrong dtype
 * kind, wrong shape, or non-finite values. */
uf_tensor *uf_st_read_f32(const uf_safetensors *st, const char *name, int ndim, const int64_t *expect_shape);
/* Reads an integer tensor into out[0..numel); numel must equal `count`. */
int uf_st_read_i64(const uf_safetensors *st, const char *name, int64_t *out, int64_t count);

/* Writer: collects tensors (data is copied, converted from float32 to the
 * requested float dtype) and metadata, then writes the file atomically
 * (temp file in the same directory + fsync + rename). */
typedef struct uf_st_writer uf_st_writer;

uf_st_writer *uf_st_writer_new(void);
void uf_st_writer_free(uf_st_writer *w);
int uf_st_writer_add_f32(uf_st_writer *w, const char *name, uf_dtype dtype, int ndim, const int64_t *shape,
                         const float *data);
int uf_st_writer_add_i64(uf_st_writer *w, const char *name, int ndim, const int64_t *shape, const int64_t *data);
int uf_st_writer_set_metadata(uf_st_writer *w, const char *key, const char *value);
int uf_st_writer_save(const uf_st_writer *w, const char *path);

#endif
