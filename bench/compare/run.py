#!/usr/bin/python3
"""`make bench-compare`: uflow against a PyTorch baseline on this CPU, in the same run.

Runs `uflow bench rows` and bench/compare/baseline.py as separate processes with the same
thread count, alternating which goes first, --rounds times, on the same generated images and
the same ResNet-18 weights, then prints per row the median over rounds of each side and the
ratio (how many times faster uflow is: > 1 means uflow leads). Before that it prints the CPU,
both sides' kernels and thread counts, and checks that the NumPy tree NFA of the baseline is
the spec's (against the literal reference of tools/make_detect_refs.py).

    /usr/bin/python3 bench/compare/run.py [--rounds 3] [--threads 2] [--reps 3] [--no-mcait]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
UFLOW = os.path.join(ROOT, "build", "uflow")
WEIGHTS = os.path.join(ROOT, "models", "resnet18-in1k-l3-bnfolded.safetensors")


def write_images(folder, n=16, size=300):
    """Textured RGB PNGs (the loading row decodes and resizes them on both sides)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        g = 128 + 60 * np.sin(xx / 7.0 + i) + 40 * np.cos(yy / 11.0) + rng.normal(0, 12, (size, size))
        rgb = np.stack([g, g * 0.9 + 10, g * 0.8 + 20], -1).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(folder, "img%02d.png" % i))


def run_rows(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("bench-compare: %s failed: %s" % (" ".join(cmd[:3]), (out.stderr or out.stdout).strip()[-400:]))
    rows = {}
    for ln in out.stdout.splitlines():
        parts = ln.split("\t")
        if len(parts) == 3:
            rows[parts[0]] = (float(parts[1]), parts[2])
    return rows


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-mcait", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(UFLOW):
        sys.exit("bench-compare: build/uflow not built (make)")
    env_line = subprocess.run([UFLOW, "version"], capture_output=True, text=True).stdout
    kernels = [ln.strip() for ln in env_line.splitlines() if "blas" in ln.lower() or "onednn" in ln.lower()
               or ln.startswith("flow subnets")]
    torch_info = subprocess.run([sys.executable, os.path.join(HERE, "baseline.py"), "--info", "--threads",
                                 str(a.threads)], capture_output=True, text=True).stdout.strip()
    print("CPU: %s, %d cores; %d threads each side, %d rounds (order alternating), medians" %
          (cpu_name(), os.cpu_count(), a.threads, a.rounds))
    print("uflow: %s" % "; ".join(kernels))
    print("PyTorch: %s" % torch_info)
    chk = subprocess.run([sys.executable, os.path.join(HERE, "baseline.py"), "--self-check"], capture_output=True,
                         text=True)
    print(chk.stdout.strip() or chk.stderr.strip())
    if chk.returncode != 0:
        sys.exit(1)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as big:
        write_images(tmp)
        write_images(big, n=16, size=900)
        ucmd = [UFLOW, "bench", "rows", "--images", tmp, "--predict-images", big, "--weights", WEIGHTS,
                "--threads", str(a.threads), "--reps", str(a.reps)] + ([] if a.no_mcait else ["--mcait"])
        tcmd = [sys.executable, os.path.join(HERE, "baseline.py"), "--images", tmp, "--predict-images", big,
                "--weights", WEIGHTS, "--threads", str(a.threads), "--reps", str(a.reps)] + \
            ([] if a.no_mcait else ["--mcait"])
        runs = {"uflow": [], "torch": []}
        for r in range(a.rounds):
            order = (("uflow", ucmd), ("torch", tcmd)) if r % 2 == 0 else (("torch", tcmd), ("uflow", ucmd))
            for side, cmd in order:
                runs[side].append(run_rows(cmd))
                print("  round %d/%d: %s done" % (r + 1, a.rounds, side), file=sys.stderr, flush=True)
    names = [k for k in runs["uflow"][0] if k in runs["torch"][0]]
    print()
    print("| row | PyTorch | uflow | uflow faster by |")
    print("|---|---|---|---|")
    worst = None
    for name in names:
        u = statistics.median(run[name][0] for run in runs["uflow"])
        t = statistics.median(run[name][0] for run in runs["torch"])
        unit = runs["uflow"][0][name][1]
        higher_is_better = unit in ("images/s", "GFLOP/s")
        ratio = (u / t if higher_is_better else t / u) if u > 0 and t > 0 else float("nan")
        if not name.startswith("SGEMM") and "GFLOP/s" not in name:
            worst = ratio if worst is None else min(worst, ratio)
        print("| %s | %.4g %s | %.4g %s | %.2fx |" % (name, t, unit, u, unit, ratio))
    print()
    print("slowest row for uflow: %.2fx (rows of time or throughput; GFLOP/s rows are for context: FLOPs of"
          " a direct convolution over the time, so Winograd can pass SGEMM's rate)" % worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
