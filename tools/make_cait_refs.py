#!/usr/bin/python3
"""Generates the PyTorch references of the MS-CaiT extractor (src/backbone/cait.c) under tests/data/cait/.

Run from the repository root (developers only; needs torch 1.13 and numpy, no timm):

    /usr/bin/python3 tools/make_cait_refs.py

The CaiT modules are written here in plain torch after timm 0.9's Cait / LayerScaleBlock /
TalkingHeadAttn / LayerScaleBlockClassAttn / ClassAttn (spec 3.1), with the same module tree, so
state_dict() yields timm's key names, shapes and order. Every parameter is random and far from
timm's init (LayerScale gammas ~ N(0.3, 0.1) instead of 1e-5, talking-head mixes ~ N(0, 0.5), ...)
so that every term of a block matters. Plain float32 torch on one thread is the reference.

Outputs (all float32 little-endian safetensors, written by tools/st_write.py):
  tiny_m.safetensors      "model 1" (the cait_m48_448 role): D=48, H=4, depth 3, patch 16, img 64
                          (4x4 = 16 tokens), num_classes 10, the full timm key set (incl. the unused
                          cls_token, blocks_token_only.{0,1}.*, head.*)
  tiny_s.safetensors      "model 2" (the cait_s24_224 role): D=32, H=4, depth 3, img 32 (2x2 tokens)
  tiny_io.safetensors     x (2,3,64,64) ~ N(0,1); x2 (2,3,32,32) = bicubic align_corners resize of x;
                          m.embed (2,16,48) = patch_embed + pos_embed tokens, m.block{0,1,2} (2,16,48)
                          each block's output, m.feature (2,48,4,4) = norm(...) as a map; the same for
                          model 2 from x2 with prefix s. (s.embed, s.block{0,1,2} (2,4,32),
                          s.feature (2,32,2,2))
  deep_m.safetensors      D=16, H=2, depth 43, img 32 (2x2 tokens): tests the block cut-off 0..40
  deep_s.safetensors      D=16, H=2, depth 23, img 16 (1x1 token): tests the cut-off 0..20
  deep_io.safetensors     x (1,3,32,32), x2 (1,3,16,16), m.feature (1,16,2,2) from blocks 0..40,
                          s.feature (1,16,1,1) from blocks 0..20, and m.feature_all / s.feature_all
                          from all blocks (the cut-off blocks have larger gammas so that they differ)
  bicubic_io.safetensors  in<i> / out<i> = F.interpolate(in<i>, size, mode='bicubic',
                          align_corners=True): (1,2,20,20)->(1,2,10,10), (1,1,7,9)->(1,1,13,4),
                          (1,1,5,5)->(1,1,1,1), (1,1,64,64)->(1,1,32,32)
  heads16.safetensors     D=64, H=16 (head dim 4), depth 2, img 80 (5x5 = 25 tokens)
  heads12.safetensors     D=48, H=12, depth 2, img 64 (16 tokens)
  heads_io.safetensors    per model (tag h16 / h12): <tag>.x (1,3,S,S), <tag>.embed, <tag>.block{0,1}
                          (1,N,D), <tag>.feature (1,D,g,g): more heads than the tiny models, for the
                          8-head groups of the talking-heads kernel and their remainder

Each model file carries its configuration as metadata. The script re-reads every written file,
rebuilds the models from the weight files and checks that the io tensors reproduce bit for bit,
checks the key names against the list of spec 3.1.3, and checks one block against a direct
transcription of the spec's formulas.
"""
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from st_write import read_safetensors, write_safetensors

OUT = "tests/data/cait"
EPS = 1e-6
PATCH = 16




class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (timm Mlp without dropout / norm)."""

    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TalkingHeadAttn(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.scale = (d // heads) ** -0.5
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.proj_l = nn.Linear(heads, heads)
        self.proj_w = nn.Linear(heads, heads)
        self.max_logit = 0.0  # max |S'| seen, for the saturation check

    def forward(self, x):
        b, n, d = x.shape
        t = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = t[0] * self.scale, t[1], t[2]
        s = q @ k.transpose(-2, -1)                              # [B, H, N, N]
        s = self.proj_l(s.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # mix heads before softmax
        self.max_logit = max(self.max_logit, s.abs().max().item())
        p = s.softmax(dim=-1)
        p = self.proj_w(p.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # mix heads after softmax
        return self.proj((p @ v).transpose(1, 2).reshape(b, n, d))


class LayerScaleBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=EPS)
        self.attn = TalkingHeadAttn(d, heads)
        self.norm2 = nn.LayerNorm(d, eps=EPS)
        self.mlp = Mlp(d, 4 * d)
        self.gamma_1 = nn.Parameter(torch.ones(d))
        self.gamma_2 = nn.Parameter(torch.ones(d))

    def forward(self, x):
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class ClassAttn(nn.Module):
    """Only its parameters matter here (uflow never runs it)."""

    def __init__(self, d):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)


class LayerScaleBlockClassAttn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=EPS)
        self.attn = ClassAttn(d)
        self.norm2 = nn.LayerNorm(d, eps=EPS)
        self.mlp = Mlp(d, 4 * d)
        self.gamma_1 = nn.Parameter(torch.ones(d))
        self.gamma_2 = nn.Parameter(torch.ones(d))


class PatchEmbed(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj = nn.Conv2d(3, d, PATCH, PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # token n = gw*h + w


class Cait(nn.Module):
    def __init__(self, d, heads, depth, img, classes=10):
        super().__init__()
        self.cfg = {"embed_dim": d, "num_heads": heads, "depth": depth, "img_size": img,
                    "patch_size": PATCH, "num_classes": classes, "depth_token_only": 2}
        self.grid = img // PATCH
        self.patch_embed = PatchEmbed(d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, d))
        self.blocks = nn.Sequential(*[LayerScaleBlock(d, heads) for _ in range(depth)])
        self.blocks_token_only = nn.ModuleList([LayerScaleBlockClassAttn(d) for _ in range(2)])
        self.norm = nn.LayerNorm(d, eps=EPS)
        self.head = nn.Linear(d, classes)

    def extract(self, x, last):
        """uflow's use: embed, blocks[0..last], norm, map [B, D, gh, gw]. Returns (embed, blocks, map)."""
        x = self.patch_embed(x) + self.pos_embed
        embed, outs = x, []
        for blk in self.blocks[:last + 1]:
            x = blk(x)
            outs.append(x)
        f = self.norm(x).transpose(1, 2).reshape(x.shape[0], x.shape[2], self.grid, self.grid)
        return embed, outs, f


def expected_keys(d, heads, depth, n, classes):
    """timm Cait state_dict keys and shapes (spec 3.1.3), in timm's order."""
    ln = lambda p: [(p + ".weight", [d]), (p + ".bias", [d])]
    lin = lambda p, o, i: [(p + ".weight", [o, i]), (p + ".bias", [o])]
    keys = [("cls_token", [1, 1, d]), ("pos_embed", [1, n, d]),
            ("patch_embed.proj.weight", [d, 3, PATCH, PATCH]), ("patch_embed.proj.bias", [d])]
    for i in range(depth):
        p = "blocks.%d." % i
        keys += [(p + "gamma_1", [d]), (p + "gamma_2", [d])] + ln(p + "norm1")
        keys += lin(p + "attn.qkv", 3 * d, d) + lin(p + "attn.proj", d, d)
        keys += lin(p + "attn.proj_l", heads, heads) + lin(p + "attn.proj_w", heads, heads)
        keys += ln(p + "norm2") + lin(p + "mlp.fc1", 4 * d, d) + lin(p + "mlp.fc2", d, 4 * d)
    for i in range(2):
        p = "blocks_token_only.%d." % i
        keys += [(p + "gamma_1", [d]), (p + "gamma_2", [d])] + ln(p + "norm1")
        for m in ("q", "k", "v", "proj"):
            keys += lin(p + "attn." + m, d, d)
        keys += ln(p + "norm2") + lin(p + "mlp.fc1", 4 * d, d) + lin(p + "mlp.fc2", d, 4 * d)
    return keys + ln("norm") + lin("head", classes, d)


def randomize(model, gen, cut_gamma_from=None, cut_gamma_scale=1.0):
    """All parameters random (see the module docstring). Blocks from cut_gamma_from on get gammas
    multiplied by cut_gamma_scale (the deep models' cut-off blocks)."""
    def rn(shape, std, mean=0.0):
        return mean + std * torch.randn(shape, generator=gen)

    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                if name.endswith("proj_l") or name.endswith("proj_w"):
                    m.weight.copy_(rn(m.weight.shape, 0.5))
                else:
                    m.weight.copy_(rn(m.weight.shape, m.in_features ** -0.5))
                m.bias.copy_(rn(m.bias.shape, 0.1))
            elif isinstance(m, nn.Conv2d):
                m.weight.copy_(rn(m.weight.shape, m.weight[0].numel() ** -0.5))
                m.bias.copy_(rn(m.bias.shape, 0.1))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(rn(m.weight.shape, 0.1, 1.0))
                m.bias.copy_(rn(m.bias.shape, 0.1))
            if isinstance(m, (LayerScaleBlock, LayerScaleBlockClassAttn)):
                m.gamma_1.copy_(rn(m.gamma_1.shape, 0.1, 0.3))
                m.gamma_2.copy_(rn(m.gamma_2.shape, 0.1, 0.3))
        model.pos_embed.copy_(rn(model.pos_embed.shape, 0.5))
        model.cls_token.copy_(rn(model.cls_token.shape, 0.5))
        if cut_gamma_from is not None:
            for blk in model.blocks[cut_gamma_from:]:
                blk.gamma_1.mul_(cut_gamma_scale)
                blk.gamma_2.mul_(cut_gamma_scale)
    return model.eval()


def np32(t):
    return t.detach().numpy().astype(np.float32)


def state_np(model):
    return {k: np32(v) for k, v in model.state_dict().items()}


def last_block(depth, cap):
    return min(depth - 1, cap)


def check_keys(model):
    c = model.cfg
    exp = expected_keys(c["embed_dim"], c["num_heads"], c["depth"], model.grid ** 2, c["num_classes"])
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == exp, "state_dict keys differ from timm's"


def spec_block(blk, x):
    """One block, transcribed from spec 3.1.2 with explicit index sums (einsum), for a cross-check."""
    h = blk.attn.heads
    b, n, d = x.shape
    hd = d // h
    y = F.layer_norm(x, (d,), blk.norm1.weight, blk.norm1.bias, EPS)
    qkv = y @ blk.attn.qkv.weight.t() + blk.attn.qkv.bias
    q = qkv[..., :d].reshape(b, n, h, hd) * hd ** -0.5
    k = qkv[..., d:2 * d].reshape(b, n, h, hd)
    v = qkv[..., 2 * d:].reshape(b, n, h, hd)
    s = torch.einsum("bihk,bjhk->bhij", q, k)
    s2 = torch.einsum("gh,bhij->bgij", blk.attn.proj_l.weight, s) + blk.attn.proj_l.bias[None, :, None, None]
    p = torch.softmax(s2, dim=-1)
    p2 = torch.einsum("gh,bhij->bgij", blk.attn.proj_w.weight, p) + blk.attn.proj_w.bias[None, :, None, None]
    o = torch.einsum("bhij,bjhk->bihk", p2, v).reshape(b, n, d)
    a = o @ blk.attn.proj.weight.t() + blk.attn.proj.bias
    x = x + blk.gamma_1 * a
    y2 = F.layer_norm(x, (d,), blk.norm2.weight, blk.norm2.bias, EPS)
    hid = y2 @ blk.mlp.fc1.weight.t() + blk.mlp.fc1.bias
    hid = 0.5 * hid * (1.0 + torch.erf(hid * 0.5 ** 0.5))
    return x + blk.gamma_2 * (hid @ blk.mlp.fc2.weight.t() + blk.mlp.fc2.bias)


def report(tag, model, embed, outs):
    prev = embed
    for i, o in enumerate(outs):
        rel = ((o - prev).norm() / prev.norm()).item()
        print("  %s block %2d: relative change %.3f" % (tag, i, rel))
        prev = o
    mx = max(blk.attn.max_logit for blk in model.blocks)
    print("  %s max |S'| over all blocks run: %.3f" % (tag, mx))
    return mx


def rel_change_min(embed, outs):
    prev, low = embed, float("inf")
    for o in outs:
        low = min(low, ((o - prev).norm() / prev.norm()).item())
        prev = o
    return low


def bicubic(x, size):
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def rebuild(path):
    w, meta = read_safetensors(path)
    cfg = json.loads(meta["config"])
    model = Cait(cfg["embed_dim"], cfg["num_heads"], cfg["depth"], cfg["img_size"], cfg["num_classes"])
    sd = {k: torch.from_numpy(v) for k, v in w.items()}
    model.load_state_dict(sd, strict=True)
    assert list(w.keys()) == list(model.state_dict().keys())
    return model.eval()



def write_pair(name, fine, coarse, io, meta_io, what):
    """<name>_m / <name>_s weight files (with their config) and <name>_io."""
    for suffix, model in (("_m", fine), ("_s", coarse)):
        write_safetensors(os.path.join(OUT, name + suffix + ".safetensors"), state_np(model),
                          {"config": json.dumps(model.cfg, sort_keys=True)})
    write_safetensors(os.path.join(OUT, name + "_io.safetensors"), io, dict(meta_io, what=what))

def main():
    torch.set_num_threads(1)
    torch.manual_seed(20240612)
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20240612)
    meta_io = {"generator": "tools/make_cait_refs.py", "torch": torch.__version__}

    # ---- tiny pair ----
    print("tiny pair")
    tm = randomize(Cait(48, 4, 3, 64), gen)
    ts = randomize(Cait(32, 4, 3, 32), gen)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    io = {"x": np32(x)}
    with torch.no_grad():
        x2 = bicubic(x, (32, 32))
        io["x2"] = np32(x2)
        for tag, model, inp, cap in (("m", tm, x, 40), ("s", ts, x2, 20)):
            check_keys(model)
            embed, outs, f = model.extract(inp, last_block(model.cfg["depth"], cap))
            assert torch.allclose(spec_block(model.blocks[0], embed), outs[0], rtol=1e-4, atol=1e-5)
            mx = report(tag, model, embed, outs)
            assert rel_change_min(embed, outs) >= 0.1 and mx < 15.0
            io[tag + ".embed"] = np32(embed)
            for i, o in enumerate(outs):
                io["%s.block%d" % (tag, i)] = np32(o)
            io[tag + ".feature"] = np32(f)
    write_pair("tiny", tm, ts, io, meta_io, "tiny MS-CaiT pair: input, bicubic half-size input, per-stage "
                                           "outputs of tiny_m (m.) and tiny_s (s.)")

    # ---- deep pair (cut-off after block 40 / block 20) ----
    print("deep pair")
    dm = randomize(Cait(16, 2, 43, 32), gen, cut_gamma_from=41, cut_gamma_scale=4.0)
    ds = randomize(Cait(16, 2, 23, 16), gen, cut_gamma_from=21, cut_gamma_scale=4.0)
    x = torch.randn(1, 3, 32, 32, generator=gen)
    io = {"x": np32(x)}
    with torch.no_grad():
        x2 = bicubic(x, (16, 16))
        io["x2"] = np32(x2)
        for tag, model, inp, cap in (("m", dm, x, 40), ("s", ds, x2, 20)):
            check_keys(model)
            depth = model.cfg["depth"]
            _, outs, f = model.extract(inp, last_block(depth, cap))
            _, outs_all, f_all = model.extract(inp, depth - 1)
            assert len(outs) == cap + 1 and len(outs_all) == depth
            diff = (f - f_all).abs().max().item()
            rel = ((f - f_all).norm() / f.norm()).item()
            print("  %s: %d of %d blocks; feature vs feature_all: max |diff| %.4f, relative %.4f, "
                  "max |feature| %.4f" % (tag, len(outs), depth, diff, rel, f.abs().max().item()))
            assert rel > 0.1
            io[tag + ".feature"] = np32(f)
            io[tag + ".feature_all"] = np32(f_all)
    write_pair("deep", dm, ds, io, meta_io, "deep MS-CaiT pair: feature = blocks 0..40 (m) / 0..20 (s), "
                                           "feature_all = all blocks")

    # ---- standalone bicubic checks ----
    print("bicubic")
    bio = {}
    for i, (shape, size) in enumerate([((1, 2, 20, 20), (10, 10)), ((1, 1, 7, 9), (13, 4)),
                                       ((1, 1, 5, 5), (1, 1)), ((1, 1, 64, 64), (32, 32))]):
        a = torch.randn(*shape, generator=gen)
        b = bicubic(a, size)
        bio["in%d" % i], bio["out%d" % i] = np32(a), np32(b)
        print("  in%d %s -> out%d %s" % (i, tuple(shape), i, tuple(b.shape)))
        if size == (1, 1):
            print("    out size 1: out %r, in[0,0] %r, in[centre] %r" %
                  (b.item(), a[0, 0, 0, 0].item(), a[0, 0, shape[2] // 2, shape[3] // 2].item()))
    write_safetensors(os.path.join(OUT, "bicubic_io.safetensors"), bio,
                      dict(meta_io, what="F.interpolate(in<i>, size, mode='bicubic', align_corners=True)"))

    # ---- more heads: 16 and 12 (the talking-heads kernel's 8-head groups and its remainder), token
    # counts 25 (a 16-column tile and a tail) and 16 ----
    print("heads")
    hio = {}
    with torch.no_grad():
        for tag, D, H, img in (("h16", 64, 16, 80), ("h12", 48, 12, 64)):
            model = randomize(Cait(D, H, 2, img), gen)
            check_keys(model)
            x = torch.randn(1, 3, img, img, generator=gen)
            embed, outs, f = model.extract(x, last_block(model.cfg["depth"], 40))
            mx = report(tag, model, embed, outs)
            assert rel_change_min(embed, outs) >= 0.1 and mx < 15.0
            hio[tag + ".x"], hio[tag + ".embed"], hio[tag + ".feature"] = np32(x), np32(embed), np32(f)
            for i, o in enumerate(outs):
                hio["%s.block%d" % (tag, i)] = np32(o)
            write_safetensors(os.path.join(OUT, "heads%d.safetensors" % H), state_np(model),
                              {"config": json.dumps(model.cfg, sort_keys=True)})
    write_safetensors(os.path.join(OUT, "heads_io.safetensors"), hio,
                      dict(meta_io, what="CaiTs with 16 heads (25 tokens) and 12 heads (16 tokens): "
                                         "<tag>.x, .embed, .block<i>, .feature"))

    # ---- self-check: rebuild from the written files, reproduce bit for bit ----
    torch.manual_seed(0)
    with torch.no_grad():
        io, _ = read_safetensors(os.path.join(OUT, "tiny_io.safetensors"))
        x = torch.from_numpy(io["x"])
        x2 = bicubic(x, (32, 32))
        assert np.array_equal(np32(x2), io["x2"])
        for tag, name, inp, cap in (("m", "tiny_m", x, 40), ("s", "tiny_s", x2, 20)):
            model = rebuild(os.path.join(OUT, name + ".safetensors"))
            embed, outs, f = model.extract(inp, last_block(model.cfg["depth"], cap))
            assert np.array_equal(np32(embed), io[tag + ".embed"])
            for i, o in enumerate(outs):
                assert np.array_equal(np32(o), io["%s.block%d" % (tag, i)])
            assert np.array_equal(np32(f), io[tag + ".feature"])
        io, _ = read_safetensors(os.path.join(OUT, "deep_io.safetensors"))
        x = torch.from_numpy(io["x"])
        x2 = bicubic(x, (16, 16))
        assert np.array_equal(np32(x2), io["x2"])
        for tag, name, inp, cap in (("m", "deep_m", x, 40), ("s", "deep_s", x2, 20)):
            model = rebuild(os.path.join(OUT, name + ".safetensors"))
            depth = model.cfg["depth"]
            assert np.array_equal(np32(model.extract(inp, last_block(depth, cap))[2]), io[tag + ".feature"])
            assert np.array_equal(np32(model.extract(inp, depth - 1)[2]), io[tag + ".feature_all"])
        bio, _ = read_safetensors(os.path.join(OUT, "bicubic_io.safetensors"))
        for i in range(4):
            out = bio["out%d" % i]
            assert np.array_equal(np32(bicubic(torch.from_numpy(bio["in%d" % i]), out.shape[2:])), out)
    print("self-check: all files re-read, models rebuilt from the weight files, outputs bit-identical")
    for f in sorted(os.listdir(OUT)):
        print("  %-24s %8d bytes" % (f, os.path.getsize(os.path.join(OUT, f))))


if __name__ == "__main__":
    main()
