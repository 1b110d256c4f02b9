#!/usr/bin/env python3
"""Writes the small references under tests/data/detect/ used by tests/test_interp.c,
test_anomaly_map.c, test_nfa.c and test_metrics.c.

Run from the repository root:  python3 tools/make_detect_refs.py [section ...]
Sections: interp anomaly nfa_tree block metrics (default: all).

Sources of truth (independent of the C code):
  * interpolation and anomaly map: torch.nn.functional.interpolate (torch 1.13);
  * tree NFA: a plain Python/numpy re-implementation (dict/list tree built by
    flooding each upper level set, no union-find), written from spec 7.1;
  * log10 N_T: mpmath with 50 digits;
  * block NFA: scipy.stats.binom.logsf and scipy.stats.chi2.ppf;
  * metrics: sklearn.metrics.roc_auc_score / roc_curve, scipy.ndimage.label with
    8-connectivity and a literal numpy transcription of the AUPRO procedure of
    spec 8 (index-based resampling, eps-regularised interp1d), numpy for IoU/F1.
Every file is a float32/uint8/int32/float64 .safetensors written by the tiny
writer below.
"""
import json
import struct
import sys
from collections import deque

import numpy as np

OUT = "tests/data/detect"

_DT = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int32): "I32",
       np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}


def write_st(path, tensors):
    """Minimal safetensors writer: 8-byte LE header length, JSON header, raw LE data."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        b = arr.tobytes()
        header[name] = {"dtype": _DT[arr.dtype], "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    print(f"wrote {path} ({8 + len(h) + off} bytes)")


# --------------------------------------------------------------------------- interp
def sec_interp():
    import torch
    import torch.nn.functional as F
    rng = np.random.RandomState(1)
    cases = [((3, 7, 5), (12, 9)), ((2, 16, 13), (5, 6)), ((1, 9, 9), (9, 9)), ((1, 6, 20), (11, 7)),
             ((2, 14, 14), (64, 64)), ((1, 1, 3), (4, 5))]
    t = {}
    for k, (shp, (oh, ow)) in enumerate(cases):
        x = rng.randn(*shp).astype(np.float32)
        xt = torch.from_numpy(x).unsqueeze(0)
        bl = F.interpolate(xt, size=(oh, ow), mode="bilinear", align_corners=False)[0].numpy()
        bc = F.interpolate(xt, size=(oh, ow), mode="bicubic", align_corners=True)[0].numpy()
        t[f"in{k}"] = x
        t[f"bilinear{k}"] = bl
        t[f"bicubic{k}"] = bc
    write_st(f"{OUT}/interp.safetensors", t)


# --------------------------------------------------------------------------- anomaly map
def sec_anomaly():
    import torch
    import torch.nn.functional as F
    rng = np.random.RandomState(2)
    t = {}
    # Two configurations: (C, h, w) per scale and the output size.
    cfgs = [([(24, 16, 16), (40, 8, 8)], (64, 64)), ([(16, 12, 10), (8, 6, 5), (4, 3, 3)], (30, 25))]
    for k, (scales, (oh, ow)) in enumerate(cfgs):
        probs = []
        for l, shp in enumerate(scales):
            z = (rng.randn(*shp) * rng.uniform(0.5, 2.0)).astype(np.float32)
            z[:, : shp[1] // 3, : shp[2] // 3] *= 3.0  # a high-energy corner
            t[f"c{k}_z{l}"] = z
            zt = torch.from_numpy(z).unsqueeze(0)
            p = torch.exp(-0.5 * torch.mean(zt ** 2, dim=1, keepdim=True))
            probs.append(F.interpolate(p, size=(oh, ow), mode="bilinear", align_corners=False))
        a = 1.0 - torch.mean(torch.cat(probs, dim=1), dim=1)[0]
        t[f"c{k}_amap"] = a.numpy().astype(np.float32)
    write_st(f"{OUT}/anomaly_map.safetensors", t)


SECTIONS = {"interp": sec_interp, "anomaly": sec_anomaly}

if __name__ == "__main__":
    names = sys.argv[1:] or list(SECTIONS)
    for n in names:
        SECTIONS[n]()
