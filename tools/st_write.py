"""Minimal safetensors writer (and float32 reader) shared by the reference generators in tools/.

write_safetensors(path, tensors, metadata=None): tensors maps name -> numpy
array (float32, float64, int32, int64 or uint8), written in insertion order as
an 8-byte little-endian header length, the compact JSON header padded with
spaces to a multiple of 8, then the raw little-endian data. Written to a
temporary file and renamed into place.

read_safetensors(path) -> (tensors, metadata): every tensor of an all-F32 file
as a numpy array, and the __metadata__ dict ({} when absent).
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


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert info["dtype"] == "F32", (path, name, info["dtype"])
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"]).copy()
    return out, header.get("__metadata__", {})
