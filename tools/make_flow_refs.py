#!/usr/bin/env python3
"""PyTorch references for tests/test_flow_torch.c (writes tests/data/flow/*.safetensors).

An independent torch implementation of the U-Flow flow from the spec (uflow-spec.md 4.1, 4.4,
3.3, 5.1, 5.2), written for this project; FrEIA is not needed. Each file holds, for tiny
shapes and float64 maths on float32-representable inputs:
  feat.{l}           input features (B, C_l, H_l, W_l)
  <state_dict name>  every parameter and frozen buffer under its FrEIA/official name
  z.{l}, logdet, loss   outputs of one forward (loss = mean_b(0.5 sum z^2 - logdet), spec 5.1)
  grad.<name>        gradient of the loss for every trainable parameter after one backward
  grad.feat.{l}      gradient of the loss with respect to the input features
  adam3.<name>       parameters after 3 steps of torch.optim.Adam(lr, weight_decay=1e-5),
                     each step on the same batch
Metadata: the configuration (scales, channels, sizes, steps, LayerNorm mode, lr, batch).

Run: /usr/bin/python3 tools/make_flow_refs.py   (torch 1.13, numpy)
"""
import os

import numpy as np
import torch
import torch.nn as nn
import uflow_torch
from st_write import write_safetensors

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "flow")


def f32(t):
    """Round to float32-representable values (the C side stores float32)."""
    return t.detach().float().double()


Block = uflow_torch.AllInOneBlock  # AllInOneBlock as U-Flow configures it (spec 4.4)
Upsample = uflow_torch.IRevNetUpsampling  # IRevNet upsampling, a transposed conv with a fixed 0/1 kernel


class UFlow(nn.Module):
    def __init__(self, channels, sizes, steps, ln_mode, rng):
        super().__init__()
        L = len(channels)
        self.L, self.steps, self.ln_mode = L, steps, ln_mode
        self.module_list = nn.ModuleList()
        self.stage_mods = {}  # scale -> (first module index, upsample index or None)
        v = channels[L - 1]
        for l in range(L - 1, -1, -1):
            if l < L - 1:
                v = channels[l] + (4 * (vprev // 8)) // 4
            first = len(self.module_list)
            for t in range(steps):
                self.module_list.append(Block(v, 3 if t % 2 == 0 else 1, rng.permutation(v)))
            up = None
            if l > 0:
                self.module_list.append(nn.Identity())  # split
                up = len(self.module_list)
                self.module_list.append(Upsample(4 * (v // 8)))
                self.module_list.append(nn.Identity())  # concat
            self.stage_mods[l] = (first, up)
            vprev = v
        self.norms = nn.ModuleList()
        if ln_mode != "none":
            for c, (h, w) in zip(channels, sizes):
                self.norms.append(nn.LayerNorm([c, h, w], elementwise_affine=True, eps=1e-5))

    def named_tensors(self):
        out = {}
        for name, p in self.module_list.named_parameters():
            out["flow.module_list." + name] = p
        for name, p in self.norms.named_parameters():
            out["feature_extractor.feature_normalizations." + name] = p
        return out

    def forward(self, feats):
        B = feats[0].shape[0]
        ld = torch.zeros(B)
        zs = [None] * self.L

        def norm(l):
            if self.ln_mode == "none":
                return feats[l]
            return self.norms[l](feats[l])

        cur = norm(self.L - 1)
        for l in range(self.L - 1, -1, -1):
            if self.ln_mode == "logdet":
                ld = ld + torch.log(self.norms[l].weight.abs()).sum()
            first, up = self.stage_mods[l]
            for t in range(self.steps):
                cur, d = self.module_list[first + t](cur)
                ld = ld + d
            if l == 0:
                zs[0] = cur
                break
            n0 = 4 * (cur.shape[1] // 8)
            zs[l] = cur[:, n0:]
            cur = torch.cat([norm(l - 1), self.module_list[up](cur[:, :n0])], 1)
        return zs, ld


def nll(zs, ld):
    B = ld.shape[0]
    sq = sum(0.5 * (z ** 2).sum(dim=(1, 2, 3)) for z in zs)
    return (sq - ld).sum() / B


def make(name, channels, h0, steps, ln_mode, batch, lr, seed, w0=None):
    w0 = h0 if w0 is None else w0
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    sizes = [(h0 >> l, w0 >> l) for l in range(len(channels))]
    model = UFlow(channels, sizes, steps, ln_mode, rng)
    # Move away from the init so every term matters (as the C tests do): subnet x4, spread
    # global scales over the softplus curve (one block in the linear, >40, branch), random
    # offsets and LayerNorm affines.
    with torch.no_grad():
        for i, m in enumerate(model.module_list):
            if isinstance(m, Block):
                for conv in (m.subnet[0], m.subnet[2]):
                    conv.weight.mul_(4.0)
                    conv.bias.uniform_(-0.3, 0.3)
                if i == 1:
                    m.global_scale.uniform_(42.0, 48.0)
                else:
                    m.global_scale.uniform_(-3.0, 3.0)
                m.global_offset.uniform_(-0.3, 0.3)
        for n in model.norms:
            n.weight.uniform_(0.6, 1.1)
            n.bias.uniform_(-0.2, 0.2)
        for p in model.parameters():
            p.copy_(f32(p))
    feats = [f32(1.5 * torch.randn(batch, c, h, w) + 0.3).requires_grad_(True) for c, (h, w) in zip(channels, sizes)]
    named = model.named_tensors()
    out = {}
    for l, f in enumerate(feats):
        out["feat.%d" % l] = (f.detach().numpy(), "F32")
    for n, p in named.items():
        out[n] = (p.detach().numpy().copy(), "F32")
    zs, ld = model(feats)
    loss = nll(zs, ld)
    loss.backward()
    for l, z in enumerate(zs):
        out["z.%d" % l] = (z.detach().numpy(), "F32")
    out["logdet"] = (ld.detach().numpy(), "F64")
    out["loss"] = (np.array([loss.item()]), "F64")
    for l, f in enumerate(feats):
        out["grad.feat.%d" % l] = (f.grad.numpy(), "F32")
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    for n, p in trainable.items():
        out["grad." + n] = (p.grad.numpy().copy(), "F32")
    opt = torch.optim.Adam(list(trainable.values()), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-5)
    for _ in range(3):
        opt.zero_grad()
        zs, ld = model([f.detach() for f in feats])
        nll(zs, ld).backward()
        opt.step()
    for n, p in trainable.items():
        out["adam3." + n] = (p.detach().numpy().copy(), "F32")
    meta = {"n_scales": len(channels), "channels": ",".join(map(str, channels)), "height0": h0, "width0": w0,
            "steps": steps, "ln_mode": ln_mode, "batch": batch, "lr": repr(lr), "seed": seed,
            "torch": torch.__version__}
    path = os.path.join(OUT, name + ".safetensors")
    write_safetensors(path, {k: np.asarray(a, dtype=np.float32 if dt == "F32" else np.float64)
                             for k, (a, dt) in out.items()}, meta)
    print("%s: %d tensors, %d bytes, loss %.6f" % (path, len(out), os.path.getsize(path), loss.item()))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make("block", [6], 5, 1, "none", 2, 1e-3, 1)
    # 34 channels: the subnets' 3x3 convolutions get 17 inputs, enough for oneDNN's
    # channel-blocked kernels (core/conv_blocked.h) with 8 lanes (AVX2) and with 16
    # (AVX-512: these need at least 16 inputs); steps k = 3 and k = 1
    make("block_wide", [34], 6, 2, "none", 2, 1e-3, 4)
    make("graph_reference", [4, 10, 16], 8, 4, "reference", 2, 1e-3, 2)
    make("graph_logdet", [4, 10, 16], 8, 4, "logdet", 2, 1e-3, 3)
    # non-square: a wide model's grids (12x20 -> 6x10 -> 3x5: LayerNorm (C, h, w) with h != w,
    # odd coarsest sides), and the blocked kernels on a 5x9 grid
    make("graph_rect", [4, 10, 16], 12, 4, "logdet", 2, 1e-3, 5, w0=20)
    make("block_wide_rect", [34], 5, 2, "none", 2, 1e-3, 6, w0=9)
