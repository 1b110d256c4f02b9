#!/usr/bin/python3
"""The markdown table of make bench-quality (bench/quality/run.sh), standard library only.

    table.py OUT NAME...

reads, per data set NAME, OUT/NAME/run.json (written by run.sh: data folder, training and test
wall seconds), OUT/NAME/eval/metrics.json (uflow test) and OUT/NAME/knn.json (uflow bench knn),
and prints one row per data set with its kNN diagnostic row under it.
"""
import json
import os
import sys

HEADER = ["data set", "image AUROC", "pixel AUROC", "AUPRO", "mIoU NFA=1", "mIoU oracle",
          "good w/ detection at NFA=1", "good z^2 per scale", "training (s)", "test ms/image"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit("bench-quality: error: cannot read %s: %s" % (path, e))


def num(v, fmt="%.4f"):
    return "n/a" if v is None else fmt % v


def rows_of(out, name):
    run = load(os.path.join(out, name, "run.json"))
    met = load(os.path.join(out, name, "eval", "metrics.json"))
    knn = load(os.path.join(out, name, "knn.json"))
    m, cnt = met["metrics"], met["counts"]
    good, det = cnt["good_images"], cnt["good_images_with_detection"]
    share = "n/a (0 good)" if good == 0 else "%.3f (%d/%d)" % (det / good, det, good)
    z2 = " ".join(num(z, "%.3f") for z in met.get("good_mean_z2_per_scale", []))
    n_test = cnt["images"]
    ms = 1000.0 * run["test_seconds"] / n_test if n_test else None
    flow = [name, num(m["image_auroc"]), num(m["pixel_auroc"]), num(m["aupro"]), num(m["miou_auto"]),
            num(m["miou_oracle"]), share, z2, num(run["train_seconds"], "%.0f"), num(ms, "%.1f")]
    diag = ["↳ kNN diagnostic (%d train features, %.0f s)" % (knn["train_features"], knn["seconds"]),
            num(knn["image_auroc"]), num(knn["pixel_auroc"]), num(knn["aupro"]), "", "", "", "", "", ""]
    return flow, diag


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, names = sys.argv[1], sys.argv[2:]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name in names:
        for row in rows_of(out, name):
            lines.append("| " + " | ".join(row) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
