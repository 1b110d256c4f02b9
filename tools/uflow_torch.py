"""U-Flow in plain PyTorch, written from the spec (uflow-spec.md 3, 4, 6) for this project's
reference generators and checks; FrEIA, timm and anomalib are not needed.

The modules reproduce the state_dict names and shapes of the official code (mtailanian/uflow:
UFlow with a FrEIA GraphINN) and of anomalib's UflowModel, so that checkpoints saved from them
load with strict=True:
  flow.module_list.{i}.global_scale / global_offset / w_perm / w_perm_inv / subnet.{0,2}.*
  flow.module_list.{i}.downsample_kernel                                   (IRevNet upsampling)
  feature_extractor.extractor.*            official ResNet (a timm features_only ResNet up to layer3)
  feature_extractor.feature_extractor.*    anomalib ResNet (TimmFeatureExtractor's attribute)
  feature_extractor.feature_normalizations.{l}.weight / .bias   [C, H, W] (ResNet only)
  feature_extractor.extractor1.* / .extractor2.*   MS-CaiT, both projects (whole timm Cait models)

Used by tools/make_convert_refs.py and tools/convert_checkpoint.py (--check-strict).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

GAMMA_INIT = 2.0 * math.log(math.exp(5.0) - 1.0)  # global_scale giving g = 1 (spec 4.4)


class AllInOneBlock(nn.Module):
    """FrEIA AllInOneBlock as U-Flow configures it (spec 4.4): clamp 2 * tanh, 0.1 scaling,
    SOFTPLUS global affine, hard one-hot permutation stored as w_perm / w_perm_inv."""

    def __init__(self, c, k, perm):
        super().__init__()
        self.c1, self.c2 = c - c // 2, c // 2
        self.subnet = nn.Sequential(nn.Conv2d(self.c1, self.c1, k, padding=k // 2), nn.ReLU(),
                                    nn.Conv2d(self.c1, 2 * self.c2, k, padding=k // 2))
        self.global_scale = nn.Parameter(torch.full((1, c, 1, 1), GAMMA_INIT))
        self.global_offset = nn.Parameter(torch.zeros(1, c, 1, 1))
        w = torch.zeros(c, c, 1, 1)
        w[torch.arange(c), torch.as_tensor(perm), 0, 0] = 1.0
        self.w_perm = nn.Parameter(w, requires_grad=False)
        self.w_perm_inv = nn.Parameter(w.transpose(0, 1).contiguous(), requires_grad=False)

    def forward(self, x):
        x1, x2 = x[:, :self.c1], x[:, self.c1:]
        a = 0.1 * self.subnet(x1)
        s = 2.0 * torch.tanh(a[:, :self.c2])
        u = torch.cat([x1, x2 * torch.exp(s) + a[:, self.c2:]], 1)
        g = 0.1 * F.softplus(self.global_scale, beta=0.5, threshold=20.0)
        y = F.conv2d(u * g + self.global_offset, self.w_perm)
        hw = x.shape[2] * x.shape[3]
        logdet = s.sum(dim=(1, 2, 3)) + hw * torch.log(g).sum()
        return y, logdet


class IRevNetUpsampling(nn.Module):
    """out[g, 2i+p, 2j+q] = in[4g+2p+q, i, j] as FrEIA's transposed conv with a fixed 0/1 kernel."""

    def __init__(self, n):
        super().__init__()
        k = torch.zeros(n, 1, 2, 2)
        for ch in range(n):
            k[ch, 0, (ch % 4) // 2, ch % 2] = 1.0
        self.downsample_kernel = nn.Parameter(k, requires_grad=False)

    def forward(self, x):
        return F.conv_transpose2d(x, self.downsample_kernel, stride=2, groups=x.shape[1] // 4)


class Stateless(nn.Module):
    """Split / Concat nodes: they hold no state but keep their module_list index."""


class Flow(nn.Module):
    """The U-shaped graph of spec 4.1; module_list in FrEIA's order (spec 4.6)."""

    def __init__(self, channels, steps, gen):
        super().__init__()
        self.channels, self.steps = list(channels), steps
        L = len(channels)
        mods, v = [], channels[-1]
        self.n_up = {}
        for l in range(L - 1, -1, -1):
            for t in range(steps):
                perm = torch.randperm(v, generator=gen)
                mods.append(AllInOneBlock(v, 3 if t % 2 == 0 else 1, perm))
            if l > 0:
                n0 = 4 * (v // 8)
                self.n_up[l] = n0
                mods += [Stateless(), IRevNetUpsampling(n0), Stateless()]
                v = channels[l - 1] + n0 // 4
        self.module_list = nn.ModuleList(mods)

    def forward(self, feats):
        """feats[l] (B, C_l, H_l, W_l), l = 0 finest -> (z list finest first, logdet (B))."""
        L, T = len(feats), self.steps
        cur, logdet, z = feats[-1], 0.0, [None] * L
        i = 0
        for l in range(L - 1, -1, -1):
            for _ in range(T):
                cur, ld = self.module_list[i](cur)
                logdet = logdet + ld
                i += 1
            if l == 0:
                z[0] = cur
                break
            n0 = self.n_up[l]
            z[l] = cur[:, n0:]
            up = self.module_list[i + 1](cur[:, :n0])
            cur = torch.cat([feats[l - 1], up], 1)
            i += 3
        return z, logdet


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (same attribute names, hence state_dict keys)."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: stride in conv2), width = planes * base_width / 64."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, base_width=64):
        super().__init__()
        width = planes * base_width // 64
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetFeatures(nn.Module):
    """conv1, bn1, act1, maxpool, layer1..3: what timm's features_only ResNet keeps (spec 3.2);
    free widths so tests stay small. block: BasicBlock or Bottleneck (base width 2x for WRN)."""

    def __init__(self, block, layers, stem, planes, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for i, (nb, p) in enumerate(zip(layers, planes)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != p * block.expansion:
                down = nn.Sequential(nn.Conv2d(inplanes, p * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(p * block.expansion))
            blocks = [block(inplanes, p, stride, down, base_width)]
            inplanes = p * block.expansion
            blocks += [block(inplanes, p, base_width=base_width) for _ in range(nb - 1)]
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))

    def forward(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


class ResNetExtractor(nn.Module):
    """Official ResNetFeatureExtractor / anomalib LayerNormFeatureExtractor: backbone + one
    LayerNorm([C, H, W]) per scale. attr: 'extractor' (official) or 'feature_extractor' (anomalib)."""

    def __init__(self, backbone, channels, input_size, attr):
        super().__init__()
        self.attr = attr
        setattr(self, attr, backbone)
        self.feature_normalizations = nn.ModuleList(
            [nn.LayerNorm([c, input_size // s, input_size // s]) for c, s in zip(channels, (4, 8, 16))])

    def forward(self, x):
        feats = getattr(self, self.attr)(x)
        return [n(f) for n, f in zip(self.feature_normalizations, feats)]


class MCaitExtractor(nn.Module):
    """Both projects' MS-CaiT extractor around two Cait models (tools/make_cait_refs.Cait)."""

    def __init__(self, fine, coarse):
        super().__init__()
        self.extractor1, self.extractor2 = fine, coarse

    def forward(self, x):
        s2 = self.extractor2.cfg["img_size"]
        x2 = F.interpolate(x, size=(s2, s2), mode="bicubic", align_corners=True)
        _, _, f1 = self.extractor1.extract(x, min(self.extractor1.cfg["depth"] - 1, 40))
        _, _, f2 = self.extractor2.extract(x2, min(self.extractor2.cfg["depth"] - 1, 20))
        return [f1, f2]


class UFlow(nn.Module):
    """feature_extractor + flow: the official UFlow / anomalib UflowModel state_dict layout."""

    def __init__(self, feature_extractor, channels, steps, gen):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.flow = Flow(channels, steps, gen)

    def forward(self, x):
        return self.flow(self.feature_extractor(x))


def anomaly_map(z, size):
    """Spec 6: 1 - mean over scales of bilinear(exp(-0.5 mean_c z^2)) at size x size."""
    probs = [F.interpolate(torch.exp(-0.5 * torch.mean(zl ** 2, dim=1, keepdim=True)), size=[size, size],
                           mode="bilinear", align_corners=False) for zl in z]
    return 1.0 - torch.mean(torch.stack(probs, dim=-1), dim=-1)[:, 0]
