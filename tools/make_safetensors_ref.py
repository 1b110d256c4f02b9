#!/usr/bin/env python3
"""Writes tests/data/safetensors/ref.safetensors and ref_values.txt: a reference
.safetensors file made WITHOUT the uflow code (struct + json + numpy only), and
the values a correct reader must return, for tests/test_safetensors.c.

  ref.safetensors   F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL tensors with
                    odd shapes, a scalar [], a zero-size tensor, metadata. The
                    header keys are sorted by name while the data is laid out in
                    another order, and the data buffer starts at an odd file
                    offset (tensor data is unaligned on purpose).
  ref_values.txt    one line per tensor: name dtype ndim dims... numel values...
                    Float values are the exact float32 a reader must produce,
                    printed as Python floats (repr, round-trips exactly); ints as
                    decimal. Tensors that a reader must reject (non-finite) are
                    listed as "name REJECT".

F16 bits come from numpy's float32 -> float16 cast (round to nearest even);
BF16 bits are computed here with integer arithmetic (round to nearest even) and
cross-checked against torch.bfloat16 when torch is installed. "f16.src" and
"bf16.src" hold the float32 inputs, so a writer can be checked bit for bit.

Run from the repository root: /usr/bin/python3 tools/make_safetensors_ref.py
"""
import json
import os
import struct

import numpy as np

OUT = "tests/data/safetensors"


def bf16_bits(x):
    """float32 array -> uint16 bfloat16 bits, round to nearest, ties to even."""
    u = np.asarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    lsb = (u >> 16) & 1
    r = ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)
    return r


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view("<f4")


def main():
    rng = np.random.default_rng(20240611)
    tensors = []  # (name, dtype, shape, raw bytes, expected values or None for REJECT)

    def add(name, dtype, shape, raw, expect):
        tensors.append((name, dtype, list(shape), raw, expect))

    # F32, odd shape, includes a float32 subnormal and signed zero
    a = (rng.standard_normal((3, 5, 7)) * 10).astype("<f4")
    a.flat[0] = np.float32(1e-40)
    a.flat[1] = np.float32(-0.0)
    a.flat[2] = np.float32(3.4028235e38)
    add("f32.odd", "F32", a.shape, a.tobytes(), a.astype(np.float64).ravel())

    # F16 from float32 sources: ties, subnormals, limits, random
    t = 2.0 ** -24
    special = [0.0, -0.0, 1.0, -2.5, 0.1, 1 / 3, np.pi, 65504.0, 65519.0, -65519.0,
               t, -t, t / 2, 1.5 * t, 2.5 * t, 3 * t / 2 + t / 4, 2.0 ** -14, 2.0 ** -14 - t / 2, 1e-8,
               1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2049.0, 2051.0, -2051.0, 1e-5, 123.456]
    src = np.concatenate([np.array(special, dtype="<f4"),
                          (rng.standard_normal(22) * np.exp(rng.uniform(-12, 9, 22))).astype("<f4")])
    h = src.astype("<f2")
    assert np.all(np.isfinite(h))
    add("f16.src", "F32", (6, 8), src.tobytes(), src.astype(np.float64))
    add("f16.vals", "F16", (6, 8), h.tobytes(), h.astype(np.float32).astype(np.float64))

    # BF16
    bspecial = [0.0, -0.0, 1.0, -2.5, 0.1, 1 / 3, np.pi, 3.0e38, -3.0e38, 1e-40, -1e-39, 1e-30,
                1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 257.0, 259.0, -259.0, 65504.0, 1e10]
    bsrc = np.concatenate([np.array(bspecial, dtype="<f4"),
                           (rng.standard_normal(21) * np.exp(rng.uniform(-20, 20, 21))).astype("<f4")])
    bb = bf16_bits(bsrc)
    try:
        import torch
        tb = torch.from_numpy(bsrc.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        assert np.array_equal(tb, bb), "bf16 rounding disagrees with torch"
        print("bf16 bits cross-checked against torch", torch.__version__)
    except ImportError:
        print("torch not installed: bf16 bits not cross-checked")
    bvals = bf16_to_f32(bb)
    assert np.all(np.isfinite(bvals))
    add("bf16.src", "F32", (5, 2, 4), bsrc.tobytes(), bsrc.astype(np.float64))
    add("bf16.vals", "BF16", (5, 2, 4), bb.astype("<u2").tobytes(), bvals.astype(np.float64))

    # F64 -> float32 (numpy rounds to nearest even)
    d = np.array([[1 / 3, -np.pi, 1e-300], [2.0 ** 60 + 1, -0.1, 1e38], [5e-324, 0.5, -7.0], [1e-45, 3e-45, 1.0]],
                 dtype="<f8")
    add("f64.vals", "F64", d.shape, d.tobytes(), d.astype(np.float32).astype(np.float64).ravel())

    # integers
    i64 = np.array([0, -1, 2 ** 62, -(2 ** 63), 2 ** 63 - 1, 123456789012345], dtype="<i8")
    add("i64.vals", "I64", (2, 3), i64.tobytes(), i64)
    i32 = np.array([[0, -1, 2 ** 31 - 1], [-(2 ** 31), 7, -123456]], dtype="<i4")
    add("i32.vals", "I32", i32.shape, i32.tobytes(), i32.ravel())
    i16 = np.array([-32768, 32767, -2], dtype="<i2")
    add("i16.vals", "I16", i16.shape, i16.tobytes(), i16)
    i8 = np.array([-128, 127, -1, 0, 5], dtype="i1")
    add("i8.vals", "I8", i8.shape, i8.tobytes(), i8)
    u8 = np.array([0, 1, 128, 255], dtype="u1")
    add("u8.vals", "U8", (1, 4, 1), u8.tobytes(), u8)
    bo = np.array([1, 0, 0, 1, 1], dtype="u1")
    add("bool.vals", "BOOL", (5,), bo.tobytes(), bo)

    # scalar and zero-size
    s = np.array(42.5, dtype="<f4")
    add("scalar", "F32", (), s.tobytes(), np.array([42.5]))
    add("empty", "F32", (0, 3), b"", np.array([]))
    add("empty.i64", "I64", (4, 0, 2), b"", np.array([], dtype=np.int64))

    # non-finite values a float reader must reject
    bad = np.array([1.0, np.inf, np.nan], dtype="<f2")
    add("f16.nonfinite", "F16", (3,), bad.tobytes(), None)
    bad64 = np.array([1.0, 1e300], dtype="<f8")  # finite double, overflows float32
    add("f64.overflow", "F64", (2,), bad64.tobytes(), None)

    # data order: reversed insertion order; header keys sorted by name
    header, data, off = {}, b"", 0
    for name, dtype, shape, raw, _ in reversed(tensors):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    header["__metadata__"] = {"format": "pt", "note": "r\u00e9f\u00e9rence \u2713 \"quoted\"", "empty": ""}
    text = json.dumps(header, sort_keys=True).encode("utf-8")
    text += b" " * ((3 - 8 - len(text)) % 8)  # data starts at file offset = 3 (mod 8)
    assert (8 + len(text)) % 8 == 3

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ref.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
    with open(os.path.join(OUT, "ref_values.txt"), "w") as f:
        for name, dtype, shape, raw, expect in tensors:
            if expect is None:
                f.write(f"{name} REJECT\n")
                continue
            vals = [repr(int(v)) if dtype in ("I64", "I32", "I16", "I8", "U8", "BOOL") else repr(float(v)) for v in np.asarray(expect).ravel()]
            numel = int(np.prod(shape)) if shape else 1
            assert numel == len(vals), name
            f.write(" ".join([name, dtype, str(len(shape))] + [str(x) for x in shape] + [str(numel)] + vals) + "\n")
        for k, v in header["__metadata__"].items():
            f.write(f"__metadata__ {json.dumps(k)} {json.dumps(v)}\n")
    print(f"wrote {len(tensors)} tensors, header {len(text)} bytes, data {len(data)} bytes")


if __name__ == "__main__":
    main()
