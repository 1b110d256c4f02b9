#!/usr/bin/env python3
"""Mosaic of a synthetic category for eyeballing: 2 good images, then per defect
type one image with its mask outlined in a column beside it.
Usage: synth_preview.py CATEGORY_DIR OUT.png"""
import os, sys
from PIL import Image, ImageChops, ImageFilter

root, out = sys.argv[1], sys.argv[2]
tiles = []
for name in sorted(os.listdir(os.path.join(root, "train/good")))[:2]:
    im = Image.open(os.path.join(root, "train/good", name)).convert("RGB")
    tiles.append((im, Image.new("L", im.size, 0)))
for d in sorted(os.listdir(os.path.join(root, "test"))):
    if d == "good":
        continue
    for name in sorted(os.listdir(os.path.join(root, "test", d)))[:2]:
        im = Image.open(os.path.join(root, "test", d, name)).convert("RGB")
        m = Image.open(os.path.join(root, "ground_truth", d, name[:-4] + "_mask.png")).convert("L")
        tiles.append((im, m))
w, h = tiles[0][0].size
cols = 5
rows = (len(tiles) + cols - 1) // cols
canvas = Image.new("RGB", (cols * w, rows * 2 * h), (255, 255, 255))
for k, (im, m) in enumerate(tiles):
    x, y = (k % cols) * w, (k // cols) * 2 * h
    canvas.paste(im, (x, y))
    edge = ImageChops.subtract(m.filter(ImageFilter.MaxFilter(3)), m)  # mask outline
    outlined = im.copy()
    outlined.paste((255, 0, 0), mask=edge)
    canvas.paste(outlined, (x, y + h))
canvas.save(out)
