/* safetensors.h - strict reader and atomic writer of .safetensors files.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * then the data buffer; offsets are relative to the buffer's start. Values are
 * little-endian, row-major; a shape [] is a scalar (one element).
 *
 * The reader mmaps the file and validates everything before returning: header
 * length against the file size (and at most 100 MB), JSON syntax (trailing
 * whitespace allowed, nothing else), every dtype, shape (at most UF_MAX_DIMS
 * non-negative integer dims, element count without overflow) and offset pair
 * (2 integers, begin <= end <= data size, end - begin == numel x dtype size),
 * no two tensors overlapping, no duplicate names, __metadata__ an object of
 * strings. Gaps between tensors and bytes after the last one are tolerated. A
 * bad file gives NULL and one line naming the file and the offending tensor,
 * e.g. "m.safetensors: tensor 'conv1.weight': data_offsets [0, 100] exceed the
 * data buffer (64 bytes)".
 *
 * Views returned by uf_st_at/uf_st_find point into the mapping and stay valid
 * until uf_st_close (the file must not be truncated meanwhile: the writer
 * below replaces files by rename, which is safe). Values are read as float32
 * (F32/F16/BF16/F64 converted, non-finite values rejected) or int64 (integer
 * dtypes) with shape checks.
 *
 * Usage:
 *     uf_safetensors *st = uf_st_open("model.safetensors");
 *     if (!st) return UF_ERR;                       // uf_last_error() says why
 *     int64_t shape[4] = {64, 3, 7, 7};
 *     uf_tensor *w = uf_st_read_f32(st, "conv1.weight", 4, shape);
 *     uf_st_close(st);
 */
#ifndef UF_IO_SAFETENSORS_H
#define UF_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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

/* "F32", "F16", ... as written in files; "?" for an invalid value. */
const char *uf_dtype_name(uf_dtype dt);
/* Bytes per element (0 for an invalid value). */
size_t uf_dtype_size(uf_dtype dt);

/* IEEE half and bfloat16 conversions. To float32: exact (subnormals, inf, nan
 * included). From float32: round to nearest, ties to even; overflow gives inf,
 * nan stays nan. */
float uf_f16_to_f32(uint16_t h);
uint16_t uf_f32_to_f16(float f);
float uf_bf16_to_f32(uint16_t b);
uint16_t uf_f32_to_bf16(float f);

typedef struct uf_st_tensor {
    const char *name;
    uf_dtype dtype;
    int ndim;
    int64_t shape[UF_MAX_DIMS];
    int64_t numel;
    const void *data; /* into the mapping; little-endian; may be unaligned */
    size_t nbytes;
    size_t offset; /* data_offsets[0]: start of data relative to the data buffer */
} uf_st_tensor;

typedef struct uf_safetensors uf_safetensors;

/* Maps and validates a file; NULL + error (naming path and tensor) when bad. */
uf_safetensors *uf_st_open(const char *path);
void uf_st_close(uf_safetensors *st);

/* A view of the tensors of st whose names start with prefix, under their
 * names without it (e.g. a backbone embedded in a model file), sharing st's
 * mapping; it has no metadata. Views and the file may be closed in any order:
 * the mapping goes with the last of them. Its path reads "FILE (PREFIX*)".
 * NULL + error (out of memory). */
uf_safetensors *uf_st_view(uf_safetensors *st, const char *prefix);

int uf_st_count(const uf_safetensors *st);
const uf_st_tensor *uf_st_at(const uf_safetensors *st, int i); /* in file order of offsets */
const uf_st_tensor *uf_st_find(const uf_safetensors *st, const char *name); /* NULL if absent (no error set) */
/* Size in bytes of the data buffer (file size - 8 - header length). */
size_t uf_st_data_size(const uf_safetensors *st);
/* The path given to uf_st_open. */
const char *uf_st_path(const uf_safetensors *st);

/* __metadata__ entries (string values only, as the format requires), in header order. */
int uf_st_metadata_count(const uf_safetensors *st);
const char *uf_st_metadata_key(const uf_safetensors *st, int i);
const char *uf_st_metadata_value(const uf_safetensors *st, int i);
const char *uf_st_metadata_get(const uf_safetensors *st, const char *key); /* NULL if absent */

/* Reads tensor `name` as float32. With ndim >= 0 the shape must equal
 * expect_shape (ndim entries). Errors name the tensor: missing, wrong dtype
 * kind, wrong shape, or non-finite values. */
uf_tensor *uf_st_read_f32(const uf_safetensors *st, const char *name, int ndim, const int64_t *expect_shape);
/* Same checks, into a caller's buffer of exactly `count` floats (count must
 * equal the tensor's element count): for parameters living in one block. */
int uf_st_read_f32_into(const uf_safetensors *st, const char *name, int ndim, const int64_t *expect_shape,
                        float *out, int64_t count);
/* The values of float tensor `name` (same checks as uf_st_read_f32) without
 * a copy where possible: a pointer into the mapping when the tensor is F32
 * and aligned for float (valid until uf_st_close; *owned = NULL), else a
 * float32 conversion that the caller frees with uf_free(*owned). */
const float *uf_st_view_f32(const uf_safetensors *st, const char *name, int ndim, const int64_t *expect_shape,
                           float **owned);
/* Reads an integer tensor (I64/I32/I16/I8/U8/BOOL) into out[0..numel); numel
 * must equal `count`. Float dtypes are an error. */
int uf_st_read_i64(const uf_safetensors *st, const char *name, int64_t *out, int64_t count);

/* Writer: collects tensors (data is copied, converted from float32 to the
 * requested float dtype F32/F16/BF16/F64) and metadata, then writes the file
 * atomically with io/atomic_file (temp file "<path>.tmp.XXXXXX" in the same
 * directory, every write checked, fsync, rename; on failure the temp file is
 * removed and an existing file at `path` is left untouched). Tensors are laid out in insertion order;
 * the header is padded with spaces so the data buffer starts 8-byte aligned.
 * Names must be unique (and not "__metadata__"); non-finite values, and values
 * that overflow the chosen dtype, are rejected with the tensor's name. */
typedef struct uf_st_writer uf_st_writer;

uf_st_writer *uf_st_writer_new(void);
void uf_st_writer_free(uf_st_writer *w);
int uf_st_writer_add_f32(uf_st_writer *w, const char *name, uf_dtype dtype, int ndim, const int64_t *shape,
                         const float *data);
int uf_st_writer_add_i64(uf_st_writer *w, const char *name, int ndim, const int64_t *shape, const int64_t *data);
/* Sets (or replaces) a __metadata__ entry; both strings are copied. */
int uf_st_writer_set_metadata(uf_st_writer *w, const char *key, const char *value);
int uf_st_writer_save(const uf_st_writer *w, const char *path);
/* The same, durable 0: without the fsync (uf_atomic_commit_as). */
int uf_st_writer_save_as(const uf_st_writer *w, const char *path, int durable);
/* Writes the whole file image to a stream and flushes it (no fsync, no
 * close); `what` names the destination in error messages. Used by save. */
int uf_st_writer_write_stream(const uf_st_writer *w, FILE *f, const char *what);

#endif
