"""Minimal safetensors writer (and reader) shared by the reference generators in tools/.

write_safetensors(path, tensors, metadata=None): tensors maps name -> numpy
array (float32, float64, int32, int64 or uint8), written in insertion order as
an 8-byte little-endian header length, the compact JSON header padded with
spaces to a multiple of 8, then the raw little-endian data. Written to a
temporary file and renamed into place.

read_safetensors(path) -> (tensors, metadata): every tensor as a numpy array
of its dtype, and the __metadata__ dict ({} when absent).
"""
import json
import os
import struct

import numpy as np

_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int32): "I32",
           np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _DTYPES[arr.dtype], "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    return 8 + len(h) + off


_READ = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
         "U8": "u1", "BOOL": "?"}


def read_safetensors(path):
    """(tensors, metadata) of a safetensors file: every tensor as a numpy array of its dtype
    (BF16, which numpy lacks, widened to float32); ValueError for another dtype."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _READ:
            arr = np.frombuffer(data[a:b], dtype=_READ[info["dtype"]])
        else:
            raise ValueError("%s: tensor '%s' has dtype %s" % (path, name, info["dtype"]))
        out[name] = arr.reshape(info["shape"]).copy()
    return out, header.get("__metadata__", {})
