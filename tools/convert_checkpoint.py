#!/usr/bin/python3
"""Converts U-Flow models between PyTorch checkpoints and uflow model files.

    python3 tools/convert_checkpoint.py CKPT OUT.safetensors
        An official U-Flow checkpoint (mtailanian/uflow: a Lightning .ckpt whose state_dict holds
        model.flow.*, model.feature_extractor.*; or a bare UFlow state_dict) or an anomalib U-Flow
        checkpoint -> a uflow model file with the extractor's weights inside, which
        `uflow predict` and `uflow test` take as it is.

    python3 tools/convert_checkpoint.py --to-pytorch MODEL OUT.pt [--naming official|anomalib]
                                        [--lightning]
        A uflow model file that carries its backbone (`uflow export --pytorch` makes one) -> a
        state_dict with the official (default) or anomalib names, loadable with strict=True into
        the official UFlow module or anomalib's UflowModel; --lightning wraps it as a checkpoint
        ({"state_dict": {"model." + name: tensor}, "hyper_parameters": ...}).

Mapping (spec 3.1.3, 4.6):
  flow.module_list.{i}.*                      -> the same names (FrEIA GraphINN)
  feature_extractor.extractor.*  (official ResNet, timm features_only)
  feature_extractor.feature_extractor.*  (anomalib ResNet)  -> feature_extractor.extractor.*
  feature_extractor.feature_normalizations.{l}.*           -> the same (the ResNet LayerNorms)
  feature_extractor.extractor1.* / extractor2.*  (MS-CaiT, both) -> the same
The w_perm / w_perm_inv one-hot matrices must be permutations and transposes of each other;
uflow turns them into permutation indices when it loads the file. Entries of the checkpoint
outside the model (Lightning metrics such as aupro.*, thresholds) are listed and left out;
anything inside the model that has no place in U-Flow is refused by name.

Needs Debian's python3-torch (only to unpickle) and python3-numpy. Checkpoints are pickles:
they are read with an unpickler that builds only tensors, containers and plain values, so no
code of the file's author runs; --trust allows full unpickling for checkpoints whose
hyper-parameters hold other objects (only for files you trust).
Exit status 0, or 1 with one line "convert_checkpoint: error: ..." on stderr.
"""
import argparse
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_write import read_safetensors, write_safetensors  # noqa: E402

BLOCK_FIELDS = ("global_scale", "global_offset", "w_perm", "w_perm_inv", "subnet.0.weight", "subnet.0.bias",
                "subnet.2.weight", "subnet.2.bias")


class ConvertError(Exception):
    pass


class _TensorsOnly:
    """A pickle module for torch.load that builds tensors, containers and plain values only: any
    other global (a class or function of some package) is refused, so reading a checkpoint runs no
    code of its author. (torch 1.13's weights_only=True also refuses plain floats.)"""
    import pickle as _pickle
    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
               ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
               ("torch", "Size"), ("torch", "float32"), ("torch", "float64"), ("torch", "int64")}

    class Unpickler(_pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _TensorsOnly.ALLOWED:
                return super().find_class(module, name)
            raise _TensorsOnly._pickle.UnpicklingError("global '%s.%s' is not a tensor or a plain value"
                                                       % (module, name))

    @staticmethod
    def load(f, **kw):
        return _TensorsOnly.Unpickler(f, **kw).load()


def load_checkpoint(path, trust):
    import torch
    try:
        if trust:
            return torch.load(path, map_location="cpu")
        return torch.load(path, map_location="cpu", pickle_module=_TensorsOnly)
    except Exception as e:  # torch raises various types for bad or unsafe files
        hint = "" if trust else " (a checkpoint holding other objects: --trust reads it, for files you trust only)"
        raise ConvertError("%s: cannot be read as a PyTorch checkpoint: %s%s" % (path, str(e).splitlines()[0], hint))


def model_state(obj, path):
    """(name -> numpy array) of the U-Flow module, and the list of left-out entries."""
    import torch
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd, lightning = obj["state_dict"], True
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, lightning = obj, False
    else:
        raise ConvertError("%s: neither a Lightning checkpoint (with 'state_dict') nor a state_dict" % path)
    out, left_out = {}, []
    for key, value in sd.items():
        if lightning:
            if not key.startswith("model."):
                left_out.append(key)
                continue
            key = key[len("model."):]
        if not isinstance(value, torch.Tensor):
            raise ConvertError("%s: entry '%s' is not a tensor" % (path, key))
        out[key] = value.detach().cpu().numpy()
    if not out:
        raise ConvertError("%s: no U-Flow model inside (no 'model.*' entries)" % path)
    return out, left_out


def map_names(sd, path):
    """Official/anomalib names -> uflow's (official) names; refuses what has no place."""
    out = {}
    for key, value in sd.items():
        if re.fullmatch(r"flow\.module_list\.\d+\.(%s|downsample_kernel)" % "|".join(map(re.escape, BLOCK_FIELDS)),
                        key):
            new = key
        elif key.startswith("feature_extractor.feature_extractor."):
            new = "feature_extractor.extractor." + key[len("feature_extractor.feature_extractor."):]
        elif re.match(r"feature_extractor\.(extractor|extractor1|extractor2)\.", key):
            new = key
        elif re.fullmatch(r"feature_extractor\.feature_normalizations\.\d+\.(weight|bias)", key):
            new = key
        else:
            raise ConvertError("%s: tensor '%s' has no place in a U-Flow model (official or anomalib names)"
                               % (path, key))
        if new in out:
            raise ConvertError("%s: tensor '%s' appears twice (official and anomalib names mixed)" % (path, new))
        out[new] = value
    return out


def check_permutations(sd, path):
    for key in sorted(k for k in sd if k.endswith(".w_perm")):
        w = sd[key]
        if w.ndim != 4 or w.shape[0] != w.shape[1] or w.shape[2:] != (1, 1):
            raise ConvertError("%s: tensor '%s' has shape %s, expected [C, C, 1, 1]" % (path, key, list(w.shape)))
        m = w[:, :, 0, 0]
        ok = np.all((m == 0) | (m == 1)) and np.all(m.sum(0) == 1) and np.all(m.sum(1) == 1)
        if not ok:
            raise ConvertError("%s: tensor '%s' is not a permutation matrix (soft or learned permutations "
                               "are not supported)" % (path, key))
        inv = sd.get(key + "_inv")
        if inv is None or inv.shape != w.shape or not np.array_equal(inv[:, :, 0, 0], m.T):
            raise ConvertError("%s: tensor '%s_inv' is missing or not the transpose of '%s'" % (path, key, key))


def infer_config(sd, path):
    blocks = sorted({int(m.group(1)) for k in sd for m in [re.fullmatch(r"flow\.module_list\.(\d+)\.global_scale", k)]
                     if m})
    if "feature_extractor.extractor1.pos_embed" in sd:
        kind = "mcait"
        grids, channels = [], []
        for e in ("extractor1", "extractor2"):
            pos = sd.get("feature_extractor.%s.pos_embed" % e)
            pe = sd.get("feature_extractor.%s.patch_embed.proj.weight" % e)
            if pos is None or pe is None:
                raise ConvertError("%s: tensor 'feature_extractor.%s.pos_embed' or '...patch_embed.proj.weight' "
                                   "missing" % (path, e))
            g = int(round(pos.shape[1] ** 0.5))
            grids.append(g)
            channels.append(int(pe.shape[0]))
        input_size = grids[0] * int(sd["feature_extractor.extractor1.patch_embed.proj.weight"].shape[2])
        heights = grids
        ln_mode = "none"
        arch = "mcait"
    elif "feature_extractor.extractor.conv1.weight" in sd:
        kind = "resnet"
        lns = sorted({int(m.group(1)) for k in sd
                      for m in [re.fullmatch(r"feature_extractor\.feature_normalizations\.(\d+)\.weight", k)] if m})
        if lns != [0, 1, 2]:
            raise ConvertError("%s: expected the LayerNorms feature_extractor.feature_normalizations.{0,1,2}" % path)
        shapes = [sd["feature_extractor.feature_normalizations.%d.weight" % l].shape for l in lns]
        channels, heights = [int(s[0]) for s in shapes], [int(s[1]) for s in shapes]
        input_size = 4 * heights[0]
        ln_mode = "reference"  # trained without the affine's log-determinant, as both projects do
        bottleneck = "feature_extractor.extractor.layer1.0.conv3.weight" in sd
        arch = "wide_resnet50_2" if bottleneck else "resnet18"
    else:
        raise ConvertError("%s: no extractor weights (feature_extractor.extractor.conv1.weight or "
                           "feature_extractor.extractor1.pos_embed): cannot tell the backbone" % path)
    L = len(channels)
    if not blocks or len(blocks) % L:
        raise ConvertError("%s: %d flow blocks for %d scales" % (path, len(blocks), L))
    return {"kind": kind, "arch": arch, "channels": channels, "heights": heights, "input_size": input_size,
            "ln_mode": ln_mode, "steps": len(blocks) // L, "scales": L}


def hyper(obj, names, default):
    hp = obj.get("hyper_parameters", {}) if isinstance(obj, dict) else {}
    for n in names:
        if isinstance(hp, dict) and n in hp and isinstance(hp[n], (int, float)) and not isinstance(hp[n], bool):
            return hp[n]
    return default


def to_uflow(ckpt, out, trust):
    obj = load_checkpoint(ckpt, trust)
    sd, left_out = model_state(obj, ckpt)
    hp = obj.get("hyper_parameters", {}) if isinstance(obj, dict) else {}
    anomalib = any(k.startswith("feature_extractor.feature_extractor.") for k in sd) or (
        isinstance(hp, dict) and "affine_clamp" in hp)  # an argument of anomalib's UflowModel only
    naming = "anomalib" if anomalib else "official"
    sd = map_names(sd, ckpt)
    check_permutations(sd, ckpt)
    cfg = infer_config(sd, ckpt)
    join = lambda v: ",".join(str(x) for x in v)  # noqa: E731
    meta = {
        "uflow.format": "1",
        "uflow.method": "U-Flow (Tailanian, Pardo, Muse); AllInOneBlock as FrEIA 1779d1f",
        "uflow.backbone": cfg["arch"],
        "uflow.backbone_file": "(embedded; converted from %s)" % os.path.basename(ckpt),
        "uflow.backbone_sha256": "",
        "uflow.backbone_embedded": "1",
        "uflow.input_size": str(cfg["input_size"]),
        "uflow.scales": str(cfg["scales"]),
        "uflow.channels": join(cfg["channels"]),
        "uflow.heights": join(cfg["heights"]),
        "uflow.widths": join(cfg["heights"]),
        "uflow.flow_steps": str(cfg["steps"]),
        "uflow.clamp": "2.0",
        "uflow.ln_mode": cfg["ln_mode"],
        "uflow.epochs": str(int(hyper(obj, ["epochs", "max_epochs"], 0))),
        "uflow.batch": str(max(1, int(hyper(obj, ["batch_train", "batch_size", "train_batch_size"], 1)))),
        "uflow.lr": repr(float(hyper(obj, ["learning_rate", "lr"], 1e-3))),
        "uflow.weight_decay": repr(float(hyper(obj, ["weight_decay"], 1e-5))),
        "uflow.seed": "0",
        "uflow.loss": "anomalib" if naming == "anomalib" else "official",
        "uflow.epochs_done": str(int(obj.get("epoch", 0)) if isinstance(obj, dict) and
                                 isinstance(obj.get("epoch", 0), int) else 0),
        "uflow.converted_from": "%s checkpoint %s" % (naming, os.path.basename(ckpt)),
    }
    tensors = {}
    for k in sorted(sd):
        v = sd[k]
        tensors[k] = v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int64)
    write_safetensors(out, tensors, meta)
    print("%s (%s naming, %s, input %d, %d scales x %d steps) -> %s: %d tensors%s" % (
        ckpt, naming, cfg["arch"], cfg["input_size"], cfg["scales"], cfg["steps"], out, len(tensors),
        "; left out %d non-model entries: %s" % (len(left_out), ", ".join(left_out[:6]) + (" ..." if len(left_out) > 6
                                                                                            else ""))
        if left_out else ""))


def to_pytorch(model, out, naming, lightning):
    import torch
    try:
        tensors, meta = read_safetensors(model)
    except ValueError as e:  # a dtype it cannot read; the message names the file and tensor
        raise ConvertError(str(e))
    if "uflow.format" not in meta:
        raise ConvertError("%s: not a uflow model file (metadata 'uflow.format' missing)" % model)
    if meta.get("uflow.backbone_embedded") != "1":
        raise ConvertError("%s: the model does not carry its backbone; write one that does with "
                           "'uflow export --pytorch %s OUT.safetensors'" % (model, model))
    sd = {}
    for name, v in tensors.items():
        if name.startswith("optimizer."):
            continue
        if naming == "anomalib" and name.startswith("feature_extractor.extractor."):
            name = "feature_extractor.feature_extractor." + name[len("feature_extractor.extractor."):]
        t = torch.from_numpy(v)
        sd[name] = t.float() if t.is_floating_point() else t
    if lightning:
        hp = {"input_size": int(meta["uflow.input_size"]), "flow_steps": int(meta["uflow.flow_steps"]),
              "backbone": "mcait" if meta["uflow.backbone"].startswith("mcait") else meta["uflow.backbone"],
              "learning_rate": float(meta["uflow.lr"]), "batch_size": int(meta["uflow.batch"])}
        obj = {"state_dict": {"model." + k: v for k, v in sd.items()}, "hyper_parameters": hp,
               "epoch": int(meta.get("uflow.epochs_done", "0"))}
    else:
        obj = sd
    tmp = out + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, out)
    print("%s -> %s: %d tensors, %s names%s" % (model, out, len(sd), naming, ", Lightning checkpoint" if lightning
                                                 else ""))


def main(argv):
    ap = argparse.ArgumentParser(description="U-Flow checkpoints <-> uflow model files (see the module docstring).")
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--to-pytorch", action="store_true", help="uflow model file -> PyTorch state_dict (.pt)")
    ap.add_argument("--naming", choices=("official", "anomalib"), default="official")
    ap.add_argument("--lightning", action="store_true", help="with --to-pytorch: a Lightning-style checkpoint")
    ap.add_argument("--trust", action="store_true", help="allow full unpickling (only for files you trust)")
    a = ap.parse_args(argv)
    try:
        if a.to_pytorch:
            to_pytorch(a.src, a.dst, a.naming, a.lightning)
        else:
            to_uflow(a.src, a.dst, a.trust)
    except (ConvertError, OSError, KeyError, ValueError) as e:
        msg = str(e) if isinstance(e, ConvertError) else "%s: %s" % (a.src, e)
        print("convert_checkpoint: error: %s" % msg.replace("\n", " "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
