#!/usr/bin/python3
"""Writes random-weight stand-ins for timm's cait_m48_448 and cait_s24_224
.safetensors files: every key and shape of timm's state_dict (spec 3.1.3,
356,460,520 and 46,916,200 values), float32, random values of timm-like scale.

For benchmarks and for trying `--backbone mcait` end to end where the real
files (cait_m48_448.fb_dist_in1k, cait_s24_224.fb_dist_in1k from timm / the
Hugging Face hub) are not at hand: the features are meaningless, the cost is
the real one.

    /usr/bin/python3 tools/make_random_cait.py M48.safetensors S24.safetensors

Needs numpy only. Streams each tensor, so memory stays small.
"""
import json
import os
import struct
import sys

import numpy as np


def timm_keys(D, depth, H, N, classes=1000):
    """(name, shape, mean, spread) in timm's state_dict order."""
    w = 0.03
    keys = [("cls_token", (1, 1, D), 0, w), ("pos_embed", (1, N, D), 0, w),
            ("patch_embed.proj.weight", (D, 3, 16, 16), 0, w), ("patch_embed.proj.bias", (D,), 0, 0.01)]
    block = [("gamma_1", (D,), 0.1, 0.05), ("gamma_2", (D,), 0.1, 0.05),
             ("norm1.weight", (D,), 1, 0.1), ("norm1.bias", (D,), 0, 0.1),
             ("attn.qkv.weight", (3 * D, D), 0, w), ("attn.qkv.bias", (3 * D,), 0, 0.01),
             ("attn.proj.weight", (D, D), 0, w), ("attn.proj.bias", (D,), 0, 0.01),
             ("attn.proj_l.weight", (H, H), 0, 0.3), ("attn.proj_l.bias", (H,), 0, 0.1),
             ("attn.proj_w.weight", (H, H), 0, 0.3), ("attn.proj_w.bias", (H,), 0, 0.1),
             ("norm2.weight", (D,), 1, 0.1), ("norm2.bias", (D,), 0, 0.1),
             ("mlp.fc1.weight", (4 * D, D), 0, w), ("mlp.fc1.bias", (4 * D,), 0, 0.01),
             ("mlp.fc2.weight", (D, 4 * D), 0, w), ("mlp.fc2.bias", (D,), 0, 0.01)]
    for i in range(depth):
        keys += [(f"blocks.{i}.{n}", s, m, sp) for n, s, m, sp in block]
    token = [("gamma_1", (D,), 0.1, 0.05), ("gamma_2", (D,), 0.1, 0.05),
             ("norm1.weight", (D,), 1, 0.1), ("norm1.bias", (D,), 0, 0.1)]
    for lin in ("q", "k", "v", "proj"):
        token += [(f"attn.{lin}.weight", (D, D), 0, w), (f"attn.{lin}.bias", (D,), 0, 0.01)]
    token += [("norm2.weight", (D,), 1, 0.1), ("norm2.bias", (D,), 0, 0.1),
              ("mlp.fc1.weight", (4 * D, D), 0, w), ("mlp.fc1.bias", (4 * D,), 0, 0.01),
              ("mlp.fc2.weight", (D, 4 * D), 0, w), ("mlp.fc2.bias", (D,), 0, 0.01)]
    for i in range(2):
        keys += [(f"blocks_token_only.{i}.{n}", s, m, sp) for n, s, m, sp in token]
    keys += [("norm.weight", (D,), 1, 0.1), ("norm.bias", (D,), 0, 0.1),
             ("head.weight", (classes, D), 0, w), ("head.bias", (classes,), 0, 0.01)]
    return keys


def write(path, keys, seed):
    header, off = {"__metadata__": {"format": "pt", "note": "random weights (tools/make_random_cait.py)"}}, 0
    for name, shape, _, _ in keys:
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    rng = np.random.default_rng(seed)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, shape, mean, spread in keys:
            v = mean + spread * rng.uniform(-1.0, 1.0, size=shape)
            f.write(v.astype("<f4").tobytes())
    os.replace(tmp, path)
    print(f"{path}: {len(keys)} tensors, {off // 4:,} values")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    write(sys.argv[1], timm_keys(768, 48, 16, 784), 1)
    write(sys.argv[2], timm_keys(384, 24, 8, 196), 2)
