#!/usr/bin/python3
"""Generates the PyTorch references of tests/test_resnet.c under tests/data/resnet/.

Run from the repository root (developers only; needs torch 1.13 + torchvision 0.14,
Pillow, numpy, and /work/shared/data/mtd for the two test crops):

    /usr/bin/python3 tools/make_resnet_refs.py

Outputs (all float32 little-endian safetensors, written by the tiny writer below):
  r18_small.safetensors         reduced-width ResNet-18 (BasicBlock [2,2,2,+layer4], widths 8/8/16/32/8)
                                with random weights and non-trivial BatchNorm statistics, as torchvision
                                ships a state_dict (incl. layer4, fc, num_batches_tracked)
  r18_small_folded.safetensors  the same network with BatchNorm folded (conv weight + bias), folded here
                                in float64
  r18_small_io.safetensors      x (2,3,61,61) and layer1..3 from torch
  wrn_small.safetensors         reduced-width Wide-ResNet-50-2 (Bottleneck [3,4,6], base_width 128,
                                stem 8, planes 2/4/8 -> widths 4/8/16, outputs 8/16/32), BatchNorm tensors
  wrn_small_io.safetensors      x (2,3,64,64) and layer1..3 from torch
  maxpool.safetensors           x<i> and y<i> = F.max_pool2d(x<i>, 3, 2, 1) for three shapes (negative values)
  real64_io.safetensors         crop0.png resized to 64x64 (Pillow bilinear), normalised, and torch's
                                layer1..3 with the shipped folded weights (full tensors)
  real256_ref.safetensors       for crop0.png and crop1.png at 256x256: strided subsets (offset 0,
                                stride STRIDE) of the input and of layer1..3, plus full-tensor statistics
                                [mean, std, min, max, mean of squares] of each
  crop0.png, crop1.png          gray crops of two MTD images (loaded as RGB)

The reduced networks are assembled from torchvision's own BasicBlock / Bottleneck
modules; the script first checks that the same assembly at full width has exactly
torchvision resnet18's / wide_resnet50_2's key names and shapes and reproduces their
layer1..3 outputs, so the small models are faithful stand-ins.
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image
from torchvision.models.resnet import BasicBlock, Bottleneck
from st_write import read_safetensors, write_safetensors

OUT = "tests/data/resnet"
MTD = "/work/shared/data/mtd"
STRIDE = 61
EPS = 1e-5
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)




class Net(nn.Module):
    """torchvision ResNet layout (conv1, bn1, relu, maxpool, layer1..4, fc) with free widths."""

    def __init__(self, block, layers, stem, planes, base_width=64, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for i, (nb, p) in enumerate(zip(layers, planes)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != p * block.expansion:
                down = nn.Sequential(nn.Conv2d(inplanes, p * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(p * block.expansion))
            kw = {"base_width": base_width} if block is Bottleneck else {}
            blocks = [block(inplanes, p, stride, down, **kw)]
            inplanes = p * block.expansion
            blocks += [block(inplanes, p, **kw) for _ in range(1, nb)]
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, classes)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return f1, f2, self.layer3(f2)


def tv_features(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    f1 = model.layer1(x)
    f2 = model.layer2(f1)
    return f1, f2, model.layer3(f2)


def randomize(model, gen):
    """Random conv weights (He scale) and non-trivial BatchNorm statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.3 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.5 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.zero_()
    model.eval()
    return model


def check_assembly(mine, ref, x):
    ks, kr = mine.state_dict(), ref.state_dict()
    assert list(ks.keys()) == list(kr.keys()), "key names differ from torchvision"
    for k in ks:
        assert ks[k].shape == kr[k].shape, k
    ref.load_state_dict(ks)
    ref.eval()
    with torch.no_grad():
        for a, b in zip(mine.features(x), tv_features(ref, x)):
            assert torch.equal(a, b)


def state_np(model):
    return {k: v.detach().numpy().astype(np.int64 if v.dtype == torch.int64 else np.float32)
            for k, v in model.state_dict().items()}


def fold(model):
    """conv weight + bias with BatchNorm folded (float64), for the convs up to layer3."""
    out = {}

    def put(prefix_conv, conv, bn):
        w = conv.weight.detach().double()
        s = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + EPS)
        out[prefix_conv + ".weight"] = (w * s[:, None, None, None]).float().numpy()
        out[prefix_conv + ".bias"] = ((-bn.running_mean.detach().double()) * s + bn.bias.detach().double()).float().numpy()

    put("conv1", model.conv1, model.bn1)
    for li in (1, 2, 3):
        for j, blk in enumerate(getattr(model, "layer%d" % li)):
            p = "layer%d.%d" % (li, j)
            for c in (1, 2, 3):
                if hasattr(blk, "conv%d" % c):
                    put("%s.conv%d" % (p, c), getattr(blk, "conv%d" % c), getattr(blk, "bn%d" % c))
            if blk.downsample is not None:
                put(p + ".downsample.0", blk.downsample[0], blk.downsample[1])
    return out


def np32(t):
    return t.detach().numpy().astype(np.float32)


def shipped_resnet18():
    """torchvision resnet18 with the shipped folded weights and identity BatchNorm."""
    w, _ = read_safetensors("models/resnet18-in1k-l3-bnfolded.safetensors")
    model = torchvision.models.resnet18()
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in w.items():
            if k.endswith(".weight"):
                sd[k].copy_(torch.from_numpy(v))
            else:  # conv bias -> the following BatchNorm's bias
                conv = k[: -len(".bias")]
                if conv.endswith("downsample.0"):
                    bn = conv[:-1] + "1"
                else:
                    head, _, last = conv.rpartition(".")
                    bn = (head + "." if head else "") + last.replace("conv", "bn")
                sd[bn + ".weight"].fill_(1.0)
                sd[bn + ".bias"].copy_(torch.from_numpy(v))
                sd[bn + ".running_mean"].zero_()
                sd[bn + ".running_var"].fill_(1.0 - EPS)
    model.load_state_dict(sd)
    return model.eval()


def load_pipeline(path, size):
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = (a - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1).copy()).float()


def main():
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20240611)

    # Assemblies at full width == torchvision's networks.
    xchk = torch.randn(1, 3, 64, 64, generator=gen)
    check_assembly(randomize(Net(BasicBlock, [2, 2, 2, 2], 64, [64, 128, 256, 512], classes=1000), gen),
                   torchvision.models.resnet18(), xchk)
    check_assembly(randomize(Net(Bottleneck, [3, 4, 6, 3], 64, [64, 128, 256, 512], 128, 1000), gen),
                   torchvision.models.wide_resnet50_2(), xchk)

    # Max pooling with negative values (the -inf padding matters), odd and even sizes.
    pool = {}
    for i, shape in enumerate([(2, 3, 7, 9), (1, 2, 8, 6), (1, 1, 1, 2)]):
        x = torch.randn(*shape, generator=gen) - 1.0
        pool["x%d" % i] = np32(x)
        pool["y%d" % i] = np32(torch.nn.functional.max_pool2d(x, 3, 2, 1))
    write_safetensors(os.path.join(OUT, "maxpool.safetensors"), pool)

    # Small ResNet-18.
    r18 = randomize(Net(BasicBlock, [2, 2, 2, 1], 8, [8, 16, 32, 8]), gen)
    x = torch.randn(2, 3, 61, 61, generator=gen)
    with torch.no_grad():
        f = r18.features(x)
    write_safetensors(os.path.join(OUT, "r18_small.safetensors"), state_np(r18))
    write_safetensors(os.path.join(OUT, "r18_small_folded.safetensors"), fold(r18), {"arch": "resnet18"})
    write_safetensors(os.path.join(OUT, "r18_small_io.safetensors"),
                      {"x": np32(x), "layer1": np32(f[0]), "layer2": np32(f[1]), "layer3": np32(f[2])})

    # Small Wide-ResNet-50-2 (no layer4: not needed by the extractor).
    wrn = randomize(Net(Bottleneck, [3, 4, 6], 8, [2, 4, 8], 128), gen)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        f = wrn.features(x)
    sd = state_np(wrn)
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    write_safetensors(os.path.join(OUT, "wrn_small.safetensors"), sd)
    write_safetensors(os.path.join(OUT, "wrn_small_io.safetensors"),
                      {"x": np32(x), "layer1": np32(f[0]), "layer2": np32(f[1]), "layer3": np32(f[2])})

    # Real images: two gray crops of MTD images, stored as PNG.
    crops = [("train/good/exp1_num_10181.jpg", (100, 40, 400, 320)),
             ("test/blowhole/exp1_num_265077.jpg", (10, 60, 250, 300))]
    for i, (src, box) in enumerate(crops):
        Image.open(os.path.join(MTD, src)).convert("L").crop(box).save(os.path.join(OUT, "crop%d.png" % i),
                                                                      optimize=True)
    model = shipped_resnet18()

    x = load_pipeline(os.path.join(OUT, "crop0.png"), 64)[None]
    with torch.no_grad():
        f = tv_features(model, x)
    write_safetensors(os.path.join(OUT, "real64_io.safetensors"),
                      {"x": np32(x), "layer1": np32(f[0]), "layer2": np32(f[1]), "layer3": np32(f[2])})

    ref = {}
    for i in range(2):
        x = load_pipeline(os.path.join(OUT, "crop%d.png" % i), 256)[None]
        with torch.no_grad():
            f = tv_features(model, x)
        for name, t in (("input", x[0]), ("layer1", f[0][0]), ("layer2", f[1][0]), ("layer3", f[2][0])):
            a = t.detach().double().numpy().ravel()
            ref["%d.%s.sub" % (i, name)] = a[0::STRIDE].astype(np.float32)
            ref["%d.%s.stats" % (i, name)] = np.array([a.mean(), a.std(), a.min(), a.max(), (a * a).mean()],
                                                      dtype=np.float32)
            print("crop%d %-6s %-16s mean %.4f std %.4f" % (i, name, tuple(t.shape), a.mean(), a.std()))
    write_safetensors(os.path.join(OUT, "real256_ref.safetensors"), ref,
                      {"stride": str(STRIDE), "offset": "0", "images": "crop0.png,crop1.png",
                       "weights": "models/resnet18-in1k-l3-bnfolded.safetensors"})


if __name__ == "__main__":
    main()
