#!/usr/bin/env python3
"""Reference data for tests/test_image.c (run by developers only).

Writes into tests/data/image/:
  * small test images in several formats and modes, saved by Pillow, with the
    pixels Pillow decodes from them: <file>.rgb (convert('RGB'), H*W*3 bytes)
    and <file>.l (convert('L'), H*W bytes); manifest.txt lists
    "file width height native_channels" (native: 1 for L/LA, 3 otherwise);
  * resize references: Image.resize((w, h), Image.BILINEAR) of procedural
    images (the same integer formula is coded in the C test), saved as PNG;
    resize.txt lists "name channels in_w in_h out_w out_h noise_bits";
  * keep-aspect references: torchvision Resize(S) + CenterCrop(S) of procedural
    images (square targets), or the cover resize + CenterCrop((h, w)) for
    non-square ones, saved as PNG; fit.txt lists "name channels in_w in_h out_w
    out_h noise_bits";
  * imagenet.f32: torchvision ToTensor + Normalize of a procedural 256x8 RGB
    image, float32 little-endian (3, 8, 256);
  * backbone48.f32: the spec 2.1 pipeline on rgb.png (open, convert('RGB'),
    resize (48, 48) bilinear, ToTensor, Normalize), float32 (3, 48, 48).

Usage: /usr/bin/python3 tools/make_image_refs.py   (Pillow 9.4, torchvision 0.14)
"""
import os

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision import transforms

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "image")
M32 = np.uint64(0xFFFFFFFF)
U = np.uint64


def hash3(x, y, c):
    """32-bit integer hash of (x, y, c); mirrored by pattern_hash() in tests/test_image.c."""
    x = x.astype(np.uint64)
    y = y.astype(np.uint64)
    c = np.uint64(c)
    h = (x * U(0x9E3779B1) + y * U(0x85EBCA77) + c * U(0xC2B2AE3D) + U(0x27D4EB2F)) & M32
    h ^= h >> np.uint64(15)
    h = (h * U(0x2C1B3C6D)) & M32
    h ^= h >> np.uint64(12)
    h = (h * U(0x297A2D39)) & M32
    h ^= h >> np.uint64(15)
    return h


def pattern(w, h, channels, nb):
    """Procedural 8-bit image (h, w, channels): top half a sawtooth gradient XOR
    nb bits of noise, bottom half an 8-pixel 0/255 checkerboard with noise."""
    y, x = np.meshgrid(np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64), indexing="ij")
    out = np.zeros((h, w, channels), np.uint8)
    nbb = min(nb, 5)
    for c in range(channels):
        hs = hash3(x, y, c)
        noise = (hs >> np.uint64(32 - nb)).astype(np.int64) if nb > 0 else np.zeros_like(x)
        noise_b = (hs >> np.uint64(32 - nbb)).astype(np.int64) if nbb > 0 else np.zeros_like(x)
        top = ((x * 7 + y * 5 + c * 85) & 255) ^ noise
        checker = ((x >> 3) + (y >> 3)) & 1
        bottom = np.where(checker == 1, 255 - noise_b, noise_b)
        out[:, :, c] = np.where(2 * y < h, top, bottom).astype(np.uint8)
    return out


def to_pil(a):
    return Image.fromarray(a[:, :, 0], "L") if a.shape[2] == 1 else Image.fromarray(a, "RGB")


def save_decoded(name, manifest):
    im = Image.open(os.path.join(OUT, name))
    im.load()
    native = 1 if im.mode in ("L", "LA") else 3
    rgb = np.asarray(im.convert("RGB"), np.uint8)
    lum = np.asarray(im.convert("L"), np.uint8)
    rgb.tofile(os.path.join(OUT, name + ".rgb"))
    lum.tofile(os.path.join(OUT, name + ".l"))
    manifest.append(f"{name} {im.size[0]} {im.size[1]} {native}")


def make_images():
    manifest = []
    rng = np.random.default_rng(20240611)
    rgb = pattern(96, 64, 3, 8)
    gray = pattern(64, 48, 1, 6)
    small = pattern(40, 30, 3, 7)
    alpha = rng.integers(0, 256, (30, 40), dtype=np.uint8)

    to_pil(gray).save(os.path.join(OUT, "gray.png"))
    to_pil(rgb).save(os.path.join(OUT, "rgb.png"))
    Image.fromarray(np.dstack([small, alpha]), "RGBA").save(os.path.join(OUT, "rgba.png"))
    Image.fromarray(np.dstack([small[:, :, 0], alpha]), "LA").save(os.path.join(OUT, "la.png"))
    to_pil(small).quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(os.path.join(OUT, "pal.png"))
    to_pil(gray).save(os.path.join(OUT, "gray.jpg"), quality=90)
    to_pil(rgb).save(os.path.join(OUT, "rgb.jpg"), quality=90)  # 4:2:0 chroma subsampling
    to_pil(rgb).save(os.path.join(OUT, "rgb444.jpg"), quality=95, subsampling=0)
    to_pil(pattern(37, 29, 3, 8)).save(os.path.join(OUT, "rgb.bmp"))  # odd width: padded rows
    to_pil(pattern(35, 21, 1, 8)).save(os.path.join(OUT, "gray.bmp"))  # 8-bit palette BMP
    for name in ("gray.png", "rgb.png", "rgba.png", "la.png", "pal.png", "gray.jpg", "rgb.jpg",
                 "rgb444.jpg", "rgb.bmp", "gray.bmp"):
        save_decoded(name, manifest)
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")


RESIZE_CASES = [
    # name, channels, in_w, in_h, out_w, out_h, noise_bits
    ("down_rgb", 3, 494, 361, 256, 256, 8),
    ("down_gray", 1, 494, 361, 256, 256, 8),
    ("down2_rgb", 3, 300, 200, 97, 61, 8),
    ("down2_gray", 1, 300, 200, 97, 61, 8),
    ("up_rgb", 3, 31, 23, 64, 64, 8),
    ("up_gray", 1, 31, 23, 64, 64, 8),
    ("mixed_rgb", 3, 40, 300, 120, 50, 8),
    ("hskip_gray", 1, 200, 100, 200, 37, 8),
    ("vskip_gray", 1, 100, 200, 37, 200, 8),
    ("mvtec_gray", 1, 900, 900, 448, 448, 0),
    ("tiny_gray", 1, 3, 1, 1, 1, 8),
    ("tiny_up_rgb", 3, 1, 2, 5, 3, 8),
]


def make_resize():
    lines = []
    for name, ch, iw, ih, ow, oh, nb in RESIZE_CASES:
        src = to_pil(pattern(iw, ih, ch, nb))
        out = src.resize((ow, oh), Image.BILINEAR)
        out.save(os.path.join(OUT, f"resize_{name}.png"), optimize=True)
        lines.append(f"{name} {ch} {iw} {ih} {ow} {oh} {nb}")
    with open(os.path.join(OUT, "resize.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


FIT_CASES = [
    # name, channels, in_w, in_h, target_w, target_h, noise_bits
    ("sq_wide", 3, 100, 60, 64, 64, 8),
    ("sq_tall", 3, 45, 90, 64, 64, 8),
    ("sq_half_even", 3, 65, 64, 64, 64, 8),   # crop offset 0.5 -> 0 (round half to even)
    ("sq_half_odd", 3, 67, 64, 64, 64, 8),    # crop offset 1.5 -> 2
    ("sq_gray", 1, 77, 50, 64, 64, 8),
    ("sq_same", 3, 64, 64, 64, 64, 8),
    ("strip_wider", 3, 200, 50, 96, 32, 8),   # image wider than the target: height fits, width cropped
    ("strip_narrower", 3, 120, 100, 96, 32, 8),  # image narrower: width fits, height cropped
    ("tall_target", 3, 50, 50, 32, 64, 8),
]


def fit_keep_aspect(img, tw, th):
    """uflow's --keep-aspect: for a square target exactly torchvision Resize(S) + CenterCrop(S);
    for a non-square one, resize so that the image covers tw x th (the side that fits gets the
    target's size, the other int(size * long / short), as Resize(int) computes it), then
    CenterCrop((th, tw))."""
    import torchvision.transforms.functional as TF
    w, h = img.size
    if tw == th:
        return transforms.CenterCrop(tw)(transforms.Resize(tw)(img))
    if w * th >= tw * h:
        nh, nw = th, int(th * w / h)
    else:
        nw, nh = tw, int(tw * h / w)
    r = TF.resize(img, [nh, nw], interpolation=transforms.InterpolationMode.BILINEAR)
    return TF.center_crop(r, [th, tw])


def make_fit():
    lines = []
    for name, ch, iw, ih, tw, th, nb in FIT_CASES:
        out = fit_keep_aspect(to_pil(pattern(iw, ih, ch, nb)), tw, th)
        assert out.size == (tw, th)
        out.save(os.path.join(OUT, f"fit_{name}.png"), optimize=True)
        lines.append(f"{name} {ch} {iw} {ih} {tw} {th} {nb}")
    with open(os.path.join(OUT, "fit.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


NORM = transforms.Compose([
    transforms.ToTensor(),
    transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
])


def make_imagenet():
    a = pattern(256, 8, 3, 8)
    ramp = np.arange(256)
    a[0, :, 0] = ramp
    a[0, :, 1] = 255 - ramp
    a[0, :, 2] = (ramp * 7) & 255  # row 0 covers every value in every channel
    t = NORM(Image.fromarray(a, "RGB"))
    assert t.dtype == torch.float32 and tuple(t.shape) == (3, 8, 256)
    t.numpy().astype("<f4").tofile(os.path.join(OUT, "imagenet.f32"))
    # the spec 2.1 pipeline: open, convert('RGB'), Resize, ToTensor, Normalize
    im = Image.open(os.path.join(OUT, "rgb.png")).convert("RGB")
    t = NORM(im.resize((48, 48), Image.BILINEAR))
    t.numpy().astype("<f4").tofile(os.path.join(OUT, "backbone48.f32"))


if __name__ == "__main__":
    print("Pillow", PIL.__version__, "torchvision", torchvision.__version__)
    os.makedirs(OUT, exist_ok=True)
    make_images()
    make_resize()
    make_fit()
    make_imagenet()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, into {os.path.normpath(OUT)}")
