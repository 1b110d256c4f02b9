#!/usr/bin/python3
"""Generates the PyTorch checkpoints and references of tests/test_convert.c under tests/data/convert/.

Run from the repository root (developers only; torch 1.13 and numpy):

    /usr/bin/python3 tools/make_convert_refs.py

Small U-Flow models built with tools/uflow_torch.py (the spec's modules with the official and
anomalib state_dict names), every parameter random (flow subnets, global affine, LayerNorm affine,
BatchNorm statistics, random permutations), saved as the two projects save them:

  official_resnet.ckpt   Lightning checkpoint of the official UFlow: state_dict "model.*" (ResNet
                         BasicBlock [2,2,2], widths 8/16/32, features_only layout under
                         feature_extractor.extractor.*, LayerNorms feature_normalizations.{0,1,2}),
                         plus a metric entry "aupro.fpr_limit" outside the model, hyper_parameters
                         {input_size 64, flow_steps 2, backbone resnet18, learning_rate, batch_train}
  anomalib_resnet.ckpt   the same architecture with anomalib's names (feature_extractor.feature_extractor.*),
                         non-model entries image_threshold.value / pixel_threshold.value,
                         hyper_parameters {backbone, flow_steps, affine_clamp, ...}
  official_mcait.ckpt    MS-CaiT with the tiny random CaiT pair of tests/data/cait (D 48 / 32, 4 heads,
                         depth 3, 64 / 32 px) under feature_extractor.extractor1/2.*, flow_steps 2
  anomalib_mcait.ckpt    the same pair, anomalib's checkpoint layout
  <name>_io.safetensors  x (2,3,64,64) ~ N(0,1) (a normalised input) and, computed in float64 from
                         the float32 weights: z.{l} (finest first), logdet (2), amap (2,64,64)
                         (spec 6 at the input size)
  bad_key.ckpt           official_resnet with an extra model entry (model.extra_head.weight)
  bad_perm.ckpt          official_resnet whose flow.module_list.5.w_perm is not a permutation

tests/test_convert.c runs tools/convert_checkpoint.py on the .ckpt files, and

    /usr/bin/python3 tools/make_convert_refs.py --check FILE.pt CASE

which loads a state_dict or checkpoint into CASE's module (official_resnet, anomalib_resnet,
official_mcait, anomalib_mcait) with strict=True and recomputes CASE's references from it
(exit status 0 when they agree to 1e-6); --check-load only loads it (for models trained by uflow).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import uflow_torch as U  # noqa: E402
from make_cait_refs import Cait, randomize  # noqa: E402
from st_write import read_safetensors, write_safetensors  # noqa: E402

OUT = "tests/data/convert"
SIZE = 64


def randomize_uflow(model, gen):
    """Random flow, LayerNorm affine and BatchNorm state; ResNet convs keep torch's random init and
    CaiT parts are randomised by make_cait_refs.randomize."""
    def rn(shape, std, mean=0.0):
        return mean + std * torch.randn(shape, generator=gen)

    with torch.no_grad():
        for m in model.flow.module_list:
            if isinstance(m, U.AllInOneBlock):
                m.global_scale.copy_(rn(m.global_scale.shape, 0.5, U.GAMMA_INIT))
                m.global_offset.copy_(rn(m.global_offset.shape, 0.1))
                for conv in (m.subnet[0], m.subnet[2]):
                    fan = conv.weight[0].numel()
                    conv.weight.copy_(rn(conv.weight.shape, 2.0 / fan ** 0.5))
                    conv.bias.copy_(rn(conv.bias.shape, 0.1))
        for m in model.feature_extractor.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(rn(m.weight.shape, 0.2, 1.0))
                m.bias.copy_(rn(m.bias.shape, 0.1))
                m.running_mean.copy_(rn(m.running_mean.shape, 0.1))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            elif isinstance(m, nn.LayerNorm) and m.weight.dim() == 3:
                m.weight.copy_(rn(m.weight.shape, 0.2, 1.0))
                m.bias.copy_(rn(m.bias.shape, 0.1))
    return model.eval()


def resnet_uflow(attr, gen):
    bb = U.ResNetFeatures(U.BasicBlock, [2, 2, 2], 8, [8, 16, 32])
    model = U.UFlow(U.ResNetExtractor(bb, [8, 16, 32], SIZE, attr), [8, 16, 32], 2, gen)
    return randomize_uflow(model, gen)


def mcait_uflow(gen):
    fine = randomize(Cait(48, 4, 3, 64), gen)
    coarse = randomize(Cait(32, 4, 3, 32), gen)
    model = U.UFlow(U.MCaitExtractor(fine, coarse), [48, 32], 2, gen)
    return randomize_uflow(model, gen)


def references(model, x):
    """Float64 forward of the float32 weights: z (finest first), logdet, anomaly map."""
    import copy
    m64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        z, logdet = m64(x.double())
        amap = U.anomaly_map(z, SIZE)
    io = {"x": x.numpy().astype(np.float32), "logdet": logdet.numpy(), "amap": amap.numpy()}
    for l, zl in enumerate(z):
        io["z.%d" % l] = zl.numpy()
    return io


def build(name, gen):
    """The module of case `name` (random weights; its architecture is what matters for loading)."""
    if name.endswith("resnet"):
        return resnet_uflow("extractor" if name.startswith("official") else "feature_extractor", gen)
    return mcait_uflow(gen)


def check(pt, name, load_only=False):
    """Loads the state_dict or Lightning checkpoint `pt` into case `name`'s module with strict=True
    and (unless load_only) recomputes the committed references from it. Exit status 0 when they
    agree (load_only: when it loads)."""
    torch.manual_seed(0)
    model = build(name, torch.Generator().manual_seed(0))
    obj = torch.load(pt, map_location="cpu")
    if "state_dict" in obj:
        obj = {k[len("model."):]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(obj, strict=True)
    if load_only:
        with torch.no_grad():
            z, logdet = model.eval()(torch.zeros(1, 3, SIZE, SIZE))
        print("%s loads into the %s module with strict=True (logdet of a zero image %.4g)" % (pt, name,
                                                                                          float(logdet[0])))
        return 0
    want, _ = read_safetensors(os.path.join(OUT, name + "_io.safetensors"))
    io = references(model.eval(), torch.from_numpy(want["x"].copy()))
    worst = max(float(np.max(np.abs(io[k] - want[k])) / max(1e-30, float(np.max(np.abs(want[k]))))) for k in want)
    print("%s loads into the %s module with strict=True; references reproduced to %.3g" % (pt, name, worst))
    return 0 if worst <= 1e-6 else 1


def main():
    if len(sys.argv) == 4 and sys.argv[1] in ("--check", "--check-load"):
        return check(sys.argv[2], sys.argv[3], sys.argv[1] == "--check-load")
    torch.set_num_threads(1)
    torch.manual_seed(20241202)  # the ResNet convs keep torch's init, from the global generator
    gen = torch.Generator().manual_seed(20241202)
    os.makedirs(OUT, exist_ok=True)
    x = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    cases = [
        ("official_resnet", resnet_uflow("extractor", gen),
         lambda sd: {"state_dict": dict({"model." + k: v for k, v in sd.items()},
                                        **{"aupro.fpr_limit": torch.tensor(0.3)}),
                     "hyper_parameters": {"input_size": SIZE, "flow_steps": 2, "backbone": "resnet18",
                                          "learning_rate": 1e-3, "batch_train": 4},
                     "epoch": 7, "global_step": 56, "pytorch-lightning_version": "2.2.4"}),
        ("anomalib_resnet", resnet_uflow("feature_extractor", gen),
         lambda sd: {"state_dict": dict({"model." + k: v for k, v in sd.items()},
                                        **{"image_threshold.value": torch.tensor(0.5),
                                           "pixel_threshold.value": torch.tensor(0.5)}),
                     "hyper_parameters": {"backbone": "resnet18", "flow_steps": 2, "affine_clamp": 2.0,
                                          "affine_subnet_channels_ratio": 1.0, "permute_soft": False},
                     "epoch": 3, "pytorch-lightning_version": "2.2.4"}),
        ("official_mcait", mcait_uflow(gen),
         lambda sd: {"state_dict": {"model." + k: v for k, v in sd.items()},
                     "hyper_parameters": {"input_size": SIZE, "flow_steps": 2, "backbone": "mcait",
                                          "learning_rate": 1.1289990475381853e-4, "batch_train": 23},
                     "epoch": 199}),
        ("anomalib_mcait", mcait_uflow(gen),
         lambda sd: {"state_dict": {"model." + k: v for k, v in sd.items()},
                     "hyper_parameters": {"backbone": "mcait", "flow_steps": 2, "affine_clamp": 2.0,
                                          "affine_subnet_channels_ratio": 1.0, "permute_soft": False},
                     "epoch": 0}),
    ]
    for name, model, wrap in cases:
        sd = model.state_dict()
        torch.save(wrap(sd), os.path.join(OUT, name + ".ckpt"))
        io = references(model, x)
        # The models must not be trivial: latents far from the features, non-zero log-det.
        print("%-16s %d tensors; logdet %s; amap range [%.3f, %.3f]; z std %s" % (
            name, len(sd), np.round(io["logdet"], 3), io["amap"].min(), io["amap"].max(),
            [round(float(io["z.%d" % l].std()), 3) for l in range(len(model.flow.channels))]))
        write_safetensors(os.path.join(OUT, name + "_io.safetensors"), io,
                          {"generator": "tools/make_convert_refs.py", "torch": torch.__version__})
    # checkpoints the converter must refuse: a model entry with no place in U-Flow, a w_perm that
    # is not a permutation
    obj = torch.load(os.path.join(OUT, "official_resnet.ckpt"), map_location="cpu")
    obj["state_dict"]["model.extra_head.weight"] = torch.zeros(3)
    torch.save(obj, os.path.join(OUT, "bad_key.ckpt"))
    obj = torch.load(os.path.join(OUT, "official_resnet.ckpt"), map_location="cpu")
    w = obj["state_dict"]["model.flow.module_list.5.w_perm"]
    w[0, :, 0, 0] = 0.0
    w[0, 0, 0, 0] = w[0, 1, 0, 0] = 1.0
    torch.save(obj, os.path.join(OUT, "bad_perm.ckpt"))
    # self-check: each checkpoint loads back strictly into a freshly built module
    for name, model, wrap in cases:
        assert check(os.path.join(OUT, name + ".ckpt"), name) == 0
    for f in sorted(os.listdir(OUT)):
        print("  %-28s %8d bytes" % (f, os.path.getsize(os.path.join(OUT, f))))


if __name__ == "__main__":
    sys.exit(main())
