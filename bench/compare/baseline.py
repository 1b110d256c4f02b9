#!/usr/bin/python3
"""The PyTorch side of `make bench-compare`: the rows of `uflow bench rows`, measured on
Debian's torch (CPU) with the same thread count, weights and inputs, each printed as
"<row>\\t<value>\\t<unit>" (the median of --reps repeats after one warm-up).

Models (tools/uflow_torch.py, written from the spec): the ResNet-18 extractor with the shipped
BatchNorm-folded weights (convs with bias, so PyTorch does the same work as uflow, no BatchNorm
pass), Wide-ResNet-50-2 folded the same way with random weights, the MS-CaiT pair
(tools/make_cait_refs.Cait, random weights, only the blocks that run), the U-flow (4 steps per
scale), LayerNorms, the loss of spec 5.1 with Adam, the anomaly map, and the tree NFA in NumPy
(bench/compare/nfa_tree_numpy.py). Images: Pillow open + RGB + bilinear resize + normalise.

    /usr/bin/python3 bench/compare/baseline.py --threads 2 --images DIR --weights FILE [--mcait]
    /usr/bin/python3 bench/compare/baseline.py --self-check    # NumPy tree NFA vs the literal reference
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, HERE)
import nfa_tree_numpy  # noqa: E402
import uflow_torch as U  # noqa: E402
from st_write import read_safetensors  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def row(name, value, unit):
    print("%s\t%.6g\t%s" % (name, value, unit), flush=True)


def median_time(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def fold(net):
    """BatchNorm -> identity, with a bias on every conv (the shipped file's layout)."""
    for name, mod in list(net.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(mod, cname, nn.Identity())
            elif isinstance(child, nn.Conv2d) and child.bias is None:
                child.bias = nn.Parameter(torch.zeros(child.out_channels))
    return net


def resnet18(weights):
    net = fold(U.ResNetFeatures(U.BasicBlock, [2, 2, 2], 64, [64, 128, 256]))
    if weights:
        w, _ = read_safetensors(weights)
        sd = {k: torch.from_numpy(v) for k, v in w.items()}
        missing, unexpected = net.load_state_dict(sd, strict=False)
        if missing:
            raise SystemExit("baseline: %s lacks %s" % (weights, missing[:3]))
    return net.eval()


def wide_resnet50_2():
    return fold(U.ResNetFeatures(U.Bottleneck, [3, 4, 6], 64, [64, 128, 256], base_width=128)).eval()


def mcait():
    from make_cait_refs import Cait
    fine, coarse = Cait(768, 16, 41, 448), Cait(384, 8, 21, 224)  # the blocks that run
    return U.MCaitExtractor(fine.eval(), coarse.eval()).eval()


def load_image(path, size):
    from PIL import Image
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - MEAN) / STD


def jet_overlay(rgb, amap, alpha=0.5):
    """The image with the map as a jet heat map (as uflow predict draws it)."""
    v = np.clip(amap, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)
    heat = np.clip(1.5 - np.abs(4.0 * v - 4.0 * centres), 0.0, 1.0) * 255.0
    return np.rint((1.0 - alpha) * rgb + alpha * heat).astype(np.uint8)


def predict_files(files, out_dir, ext, flow, batch=8):
    """What a user writes around the official model to get uflow predict's default outputs: Pillow
    decodes and resizes, the model and the tree NFA at 256, the map and the -log10 NFA field upsampled
    to the image's size, and three PNGs per image saved with Pillow (its default compression)."""
    from PIL import Image
    for i0 in range(0, len(files), batch):
        imgs = [Image.open(f).convert("RGB") for f in files[i0:i0 + batch]]
        x = torch.stack([(torch.from_numpy(np.asarray(im.resize((256, 256), Image.BILINEAR), dtype=np.float32)
                                           / 255.0).permute(2, 0, 1) - MEAN) / STD for im in imgs])
        z, _ = flow(ext(x))
        amaps = U.anomaly_map(z, 256)
        for j, im in enumerate(imgs):
            w, h = im.size
            nfa = nfa_tree_numpy.score([zl[j].numpy().astype(np.float64) for zl in z], 256)
            up = F.interpolate(amaps[j][None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
            nfa_up = F.interpolate(torch.from_numpy(nfa).float()[None, None], size=(h, w), mode="bilinear",
                                   align_corners=False)[0, 0].numpy()
            stem = os.path.join(out_dir, os.path.splitext(os.path.basename(files[i0 + j]))[0])
            Image.fromarray(np.rint(np.clip(up, 0, 1) * 65535).astype(np.uint16)).save(stem + "_map.png")
            Image.fromarray(jet_overlay(np.asarray(im, dtype=np.float32), up)).save(stem + "_overlay.png")
            Image.fromarray((nfa_up > 0).astype(np.uint8) * 255).save(stem + "_mask.png")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images")
    ap.add_argument("--weights")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mcait", action="store_true")
    ap.add_argument("--predict-images", help="folder of large images for the end-to-end predict row")
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--info", action="store_true", help="print torch's build and thread settings")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.info:
        cfg = torch.__config__.show().splitlines()
        dnn = [ln.strip(" -") for ln in cfg if "MKL-DNN" in ln or "oneDNN" in ln]
        cap = [ln.strip(" -") for ln in cfg if "CPU capability" in ln]
        blas = [kv for ln in cfg for kv in ln.split(", ") if kv.strip().startswith("BLAS_INFO")]
        print("torch %s, %d threads; %s; %s; %s; mkldnn %s" % (
            torch.__version__, torch.get_num_threads(), dnn[0] if dnn else "no oneDNN", cap[0] if cap else "?",
            blas[0].strip() if blas else "BLAS ?", "on" if torch.backends.mkldnn.is_available() else "off"))
        return 0
    if a.self_check:
        return self_check()
    with torch.no_grad():
        A = torch.randn(1024, 1024)
        B = torch.randn(1024, 1024)
        t = median_time(lambda: torch.mm(A, B), 5)
        sgemm = 2 * 1024 ** 3 / t * 1e-9
        row("SGEMM 1024^3", sgemm, "GFLOP/s")
        if a.images:
            files = sorted(os.path.join(a.images, f) for f in os.listdir(a.images)
                           if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")))
            t = median_time(lambda: [load_image(f, 256) for f in files], a.reps)
            row("load + resize to 256 + normalise", 1e3 * t / len(files), "ms/image")
        r18 = resnet18(a.weights)
        flops18 = conv_flops(r18, 256)
        for name, net, reps, flops in (("resnet18", r18, a.reps, flops18),
                                       ("wide_resnet50_2", wide_resnet50_2(), a.reps, None)):
            if flops is None:
                flops = conv_flops(net, 256)
            for b in (1, 8):
                x = torch.randn(b, 3, 256, 256)
                t = median_time(lambda: net(x), reps if b == 1 else max(1, (reps + 1) // 2))
                row("backbone %s@256 batch %d" % (name, b), 1e3 * t / b, "ms/image")
                if b > 1:
                    row("backbone %s@256 GFLOP/s" % name, flops * b / t * 1e-9, "GFLOP/s")
        if a.mcait:
            mc = mcait()
            x = torch.randn(1, 3, 448, 448)
            row("backbone mcait@448 batch 1", 1e3 * median_time(lambda: mc(x), 1), "ms/image")
            del mc
        # full inference and flow + map, resnet18@256
        gen = torch.Generator().manual_seed(1)
        ext = U.ResNetExtractor(r18, [64, 128, 256], 256, "extractor").eval()
        flow = U.Flow([64, 128, 256], 4, gen).eval()
        for b in (1, 8):
            x = torch.randn(b, 3, 256, 256)

            def infer():
                z, _ = flow(ext(x))
                return U.anomaly_map(z, 256)
            row("full inference resnet18@256 batch %d" % b, 1e3 * median_time(infer, a.reps) / b, "ms/image")
        feats = [torch.randn(8, c, 64 >> l, 64 >> l) for l, c in enumerate((64, 128, 256))]

        def flow_map():
            z, _ = flow(feats)
            return U.anomaly_map(z, 256)
        t_flow = median_time(flow_map, a.reps)
        row("flow + map resnet18@256 batch 8", 1e3 * t_flow / 8, "ms/image")
        row("flow + map GFLOP/s (convolutions)", flow_conv_flops(flow, 64) * 8 / t_flow * 1e-9, "GFLOP/s")
        z, _ = flow([f[:1] for f in feats])
        zs = [zl[0].numpy().astype(np.float64) for zl in z]
        row("tree NFA resnet18@256", 1e3 * median_time(lambda: nfa_tree_numpy.score(zs, 256), a.reps), "ms/image")
        if a.predict_images:
            import tempfile
            files = sorted(os.path.join(a.predict_images, f) for f in os.listdir(a.predict_images)
                           if f.lower().endswith(".png"))
            with tempfile.TemporaryDirectory() as out:
                t = median_time(lambda: predict_files(files, out, ext, flow), max(1, (a.reps + 1) // 2))
            row("predict end to end, default outputs, 900x900 PNG", 1e3 * t / len(files), "ms/image")
    # training on cached features, batch 16: loss of spec 5.1, Adam with L2 weight decay
    flow.train()
    opt = torch.optim.Adam([p for p in flow.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-5)
    feats16 = [torch.randn(16, c, 64 >> l, 64 >> l) for l, c in enumerate((64, 128, 256))]

    def step():
        z, logdet = flow(feats16)
        loss = torch.mean(sum(0.5 * torch.sum(zl ** 2, dim=(1, 2, 3)) for zl in z) - logdet)
        opt.zero_grad()
        loss.backward()
        opt.step()
    row("training resnet18@256 batch 16", 16 / median_time(step, a.reps), "images/s")
    return 0


def conv_flops(net, size):
    """2 x multiply-adds of the convolutions for one size x size image (hooks on a dry run)."""
    total = [0]

    def hook(m, inp, out):
        total[0] += 2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total[0]


def flow_conv_flops(flow, h0):
    """2 x multiply-adds of the flow's subnet convolutions for one image: per block
    2 h w k^2 c1 (c1 + 2 c2) on its scale's grid (h0 at the finest scale)."""
    sizes = []
    for l in range(len(flow.channels) - 1, -1, -1):
        sizes += [h0 >> l] * flow.steps + ([None] * 3 if l > 0 else [])  # split, up, concat
    total = 0
    for m, side in zip(flow.module_list, sizes):
        if isinstance(m, U.AllInOneBlock):
            k = m.subnet[0].kernel_size[0]
            total += 2 * side * side * k * k * m.c1 * (m.c1 + 2 * m.c2)
    return total


def self_check():
    """The NumPy tree NFA against the literal reference of tools/make_detect_refs.py."""
    import make_detect_refs as R
    rng = np.random.default_rng(1)
    for case in range(8):
        C, h = [816, 192, 84, 64][case % 4], [8, 10, 12, 14][case % 4]
        z = rng.normal(0, [0.8, 1.0, 1.2][case % 3], (C, h, h))
        if case % 2:
            z[:, 2:6, 3:7] *= 1.8
        ref, _ = R.ref_tree_log10p((z ** 2).sum(0), C, h, h)
        ours = nfa_tree_numpy.scale_log10p(z)
        m = ~np.isnan(ref)
        if not np.array_equal(m, ~np.isnan(ours)) or (m.any() and np.max(np.abs(ref[m] - ours[m]) /
                                                                       np.abs(ref[m])) > 1e-9):
            print("baseline: the NumPy tree NFA differs from the reference on case %d" % case)
            return 1
    print("NumPy tree NFA = the literal spec 7.1 reference on 8 random cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
