"""The Python package as a user runs it (tests/test_python.sh): Model.load / predict on numpy
arrays (RGB, RGBA, gray, strided crops) and on files, against `uflow predict` on the same
images (scores, decisions, the 16-bit maps it writes); uflow.train with a progress callback
that stops and one that raises; errors as uflow.Error; uflow.test's image AUROC against
scikit-learn's on the same scores; uflow.dask.predict on a LocalCluster of 2 worker
processes against the same run in one process and against `uflow predict`'s files.
Prints PASS / FAIL lines and "RESULT passed failed"."""
import csv
import filecmp
import os
import shutil
import subprocess
import tempfile

import numpy as np

import uflow

from harness import check, demo_model, predict_files, run_test, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UFLOW = os.path.join(ROOT, "build", "uflow")


def read_png(path):
    from PIL import Image
    return np.asarray(Image.open(path))


def cli_rows(path):
    with open(path, newline="") as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def test_predict(T, model, test_dir, cli):
    m = uflow.Model.load(model)
    check(m.input_size == (64, 64) and m.backbone == "resnet18" and m.epochs in (1, 2), "model properties")
    img = os.path.join(test_dir, "hole", "000.png")
    rgb = read_png(img)[:, :, :3].copy()
    rf, ra = m.predict(img), m.predict(rgb)
    check(rf.anomaly_map.dtype == np.float32 and rf.anomaly_map.shape == (64, 64) and rf.mask.dtype == bool,
          "anomaly_map float32 HxW, mask bool HxW")
    check(np.array_equal(rf.anomaly_map, ra.anomaly_map) and rf.score == ra.score and
          np.array_equal(rf.mask, ra.mask), "an RGB array gives what its file gives")
    check(np.array_equal(rf.mask, rf.neg_log10_nfa > 0) and rf.detected_pixels == int(rf.mask.sum()) and
          isinstance(rf.score, float) and isinstance(rf.anomalous, bool), "mask is NFA < 1")
    rb = m.predict_bytes(open(img, "rb").read(), name="upload")
    check(np.array_equal(rb.anomaly_map, rf.anomaly_map) and rb.score == rf.score, "predict_bytes = predict(path)")
    try:
        m.predict_bytes(b"not an image", name="upload")
        check(False, "predict_bytes on garbage raises uflow.Error")
    except uflow.Error as e:
        check("upload" in str(e), "predict_bytes on garbage raises uflow.Error naming it: %s" % e)
    import io
    from PIL import Image
    mask = np.asarray(Image.open(io.BytesIO(rb.png("mask"))))
    check(np.array_equal(mask, np.where(rb.mask, 255, 0)), "Result.png('mask') = the mask")
    check(Image.open(io.BytesIO(rb.png("overlay"))).size == (rb.width, rb.height), "Result.png('overlay') at the image's size")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    check(np.array_equal(m.predict(rgba).anomaly_map, rf.anomaly_map), "RGBA: alpha ignored")
    from PIL import Image
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    gpath = os.path.join(T, "gray.png")
    Image.fromarray(gray).save(gpath)
    rg = m.predict(gray)
    check(np.array_equal(rg.anomaly_map, m.predict(gpath).anomaly_map) and
          np.array_equal(m.predict(gray[:, :, None]).anomaly_map, rg.anomaly_map), "gray HxW and HxWx1 = gray file")
    crop = rgb[7:43, 2:60]  # a strided view, 58 x 36
    cpath = os.path.join(T, "crop.png")
    Image.fromarray(np.ascontiguousarray(crop)).save(cpath)
    rc = m.predict(crop)
    check(rc.anomaly_map.shape == (36, 58) and np.array_equal(rc.anomaly_map, m.predict(cpath).anomaly_map),
          "strided crop: results at its own size, = its file")
    big = np.asarray(Image.fromarray(rgb).resize((300, 170)))
    rb = m.predict(big)
    check(rb.anomaly_map.shape == (170, 300) and rb.mask.shape == (170, 300), "300x170 image: 170x300 results")
    for bad, kind in ((rgb.astype(np.float32), TypeError), (np.zeros((4, 4, 2), np.uint8), ValueError)):
        try:
            m.predict(bad)
            check(False, "bad array %s raises %s" % (bad.dtype, kind.__name__))
        except kind:
            check(True, "bad array %s %s raises %s" % (bad.dtype, bad.shape, kind.__name__))
    try:
        m.predict(os.path.join(T, "missing.png"))
        check(False, "missing file raises")
    except uflow.Error as e:
        check("missing.png" in str(e), "missing file raises uflow.Error naming it: %s" % e)
    try:
        uflow.Model.load(os.path.join(T, "none.safetensors"))
        check(False, "missing model raises")
    except uflow.Error as e:
        check("none.safetensors" in str(e), "missing model raises uflow.Error: %s" % e)

    # Against `uflow predict` on the same images: same order and batches of 8, so equal values.
    items = uflow.list_images([test_dir])
    results = m.predict_files([p for p, _ in items])
    rows = cli_rows(os.path.join(cli, "results.csv"))
    same = same_maps = 0
    for (path, stem), r in zip(items, results):
        row = rows[path]
        same += (row["score"] == "%.6f" % r.score and int(row["anomalous"]) == r.anomalous and
                 int(row["detected_pixels"]) == r.detected_pixels and row["outputs"] == stem)
        png = read_png(os.path.join(cli, stem + "_map.png")).astype(np.int64)
        mine = np.rint(np.clip(r.anomaly_map, 0, 1) * 65535).astype(np.int64)
        same_maps += np.array_equal(png, mine) and np.array_equal(read_png(os.path.join(cli, stem + "_mask.png")) > 0,
                                                                  r.mask)
    check(len(items) == len(rows) and same == len(items), "Python = uflow predict: %d of %d rows" % (same, len(items)))
    check(same_maps == len(items), "Python maps and masks = uflow predict's PNGs: %d of %d" % (same_maps, len(items)))
    mixed = m.predict_files([items[0][0], os.path.join(T, "missing.png")])
    check(isinstance(mixed[0], uflow.Result) and isinstance(mixed[1], uflow.Error), "predict_files: bad file is an Error item")

    # uflow.test: image AUROC = scikit-learn's on the scores of the test images. Some good images
    # are filed as defective and defective ones as good (no masks), so the AUROC is not 1.
    mixed = os.path.join(T, "mixed")
    os.makedirs(os.path.join(mixed, "test"))
    os.symlink(os.path.join(os.path.dirname(test_dir), "train"), os.path.join(mixed, "train"))
    labels, scores = [], []
    for (path, stem), r in zip(items, results):
        flip = stem in ("good/000", "good/003", "hole/001", "color/002", "stain/000")
        label = ("/good/" in path) == flip
        folder = os.path.join(mixed, "test", "defect" if label else "good")
        os.makedirs(folder, exist_ok=True)
        shutil.copy(path, os.path.join(folder, stem.replace("/", "_") + ".png"))
        labels.append(int(label))
        scores.append(r.score)
    metrics = uflow.test(m, mixed, out_dir=os.path.join(T, "eval"), eval_size=64)  # scores on the model grid
    try:
        from sklearn.metrics import roc_auc_score
        ref = roc_auc_score(labels, scores)
        check(abs(metrics["image_auroc"] - ref) < 1e-9, "uflow.test image AUROC %.6f = sklearn %.6f" %
              (metrics["image_auroc"], ref))
        check(np.isnan(metrics["pixel_auroc"]), "no masks: pixel AUROC NaN")
    except ImportError:
        print("  (scikit-learn absent: AUROC not cross-checked)")
    check(0.5 < metrics["image_auroc"] < 1 and metrics["images"] == len(items) and os.path.exists(os.path.join(T, "eval", "report.html")),
          "uflow.test counts and report.html")
    m.close()


def test_train(T, data):
    calls, logs = [], []
    uflow.set_log(lambda level, msg: logs.append((level, msg)))
    out = os.path.join(T, "t.safetensors")
    s = uflow.train(data, out, size=64, epochs=2, batch=8, max_images=16,
                    progress=lambda e, n, loss, eta: calls.append((e, n, loss)))
    uflow.set_log(None)
    check([c[:2] for c in calls] == [(1, 2), (2, 2)] and s["epochs_done"] == 2 and s["images"] == 14 and
          s["val_images"] == 2 and len(s["val_z2"]) == 3 and s["last_loss"] == calls[-1][2],
          "train: progress after each epoch, summary (2 of 16 images held out)")
    check(any(level == uflow.LOG_INFO for level, _ in logs), "train: log lines through uflow.set_log")
    s = uflow.train(data, os.path.join(T, "stop.safetensors"), size=64, epochs=5, batch=8, max_images=16,
                    progress=lambda e, n, loss, eta: e >= 2)
    check(s["epochs_done"] == 2 and uflow.Model.load(os.path.join(T, "stop.safetensors")).epochs == 2,
          "train: progress returning True stops (model written)")

    def boom(e, n, loss, eta):
        raise KeyError("from the callback")
    try:
        uflow.train(data, os.path.join(T, "boom.safetensors"), size=64, epochs=3, batch=8, max_images=16,
                    progress=boom)
        check(False, "train: callback exception raised again")
    except KeyError:
        check(True, "train: an exception in progress stops training and is raised again")
    try:
        uflow.train(os.path.join(T, "nodata"), out, epochs=1)
        check(False, "train: missing data raises")
    except uflow.Error as e:
        check("nodata" in str(e), "train: missing data raises uflow.Error: %s" % e)
    try:
        uflow.train(data, out, epochz=1)
        check(False, "train: unknown option")
    except TypeError:
        check(True, "train: unknown option raises TypeError")


def test_dask(T, model, test_dir, cli):
    try:
        import pandas  # noqa: F401
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        print("SKIP dask test: %s (sh tools/install_deps.sh test installs python3-distributed)" % e)
        return
    import uflow.dask
    os.environ["PYTHONPATH"] = os.path.join(ROOT, "python")  # for the worker processes
    local = uflow.dask.predict(None, model, [test_dir], out_dir=os.path.join(T, "local"), chunk_size=8)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        df = uflow.dask.predict(client, model, [test_dir], out_dir=os.path.join(T, "dask"), chunk_size=8)
        loaded = client.run(lambda: len(uflow.dask._models))
    print("  dask: models loaded per worker process: %s" % sorted(loaded.values()))
    check(len(df) == len(local) > 10 and "score" in df.columns and df.equals(local),
          "dask on 2 worker processes = one process (%d rows)" % len(df))
    check(sum(loaded.values()) >= 1 and all(v <= 1 for v in loaded.values()), "each worker loads the model once")
    cmp = filecmp.dircmp(os.path.join(T, "dask"), os.path.join(T, "local"))
    files = [f for f in os.listdir(os.path.join(T, "dask", "hole")) if f.endswith(".png")]
    same = all(filecmp.cmp(os.path.join(T, "dask", "hole", f), os.path.join(cli, "hole", f), shallow=False)
               for f in files)
    check(not cmp.diff_files and len(files) >= 6 and same, "dask wrote uflow predict's files (%d in hole/)" % len(files))
    check(filecmp.cmp(os.path.join(T, "dask", "results.csv"), os.path.join(cli, "results.csv"), shallow=False),
          "dask results.csv = uflow predict's")


def main():
    T = tempfile.mkdtemp(prefix="uflow-py.")
    try:
        model, data = demo_model(UFLOW, T)
        test_dir = os.path.join(data, "test")
        cli = os.path.join(T, "cli")
        predict_files(UFLOW, model, cli, test_dir)
        uflow.set_threads(1)
        check(uflow.version() == subprocess.run([UFLOW, "--version"], capture_output=True, text=True).stdout.split()[1],
              "version %s" % uflow.version())
        run_test(test_predict, T, model, test_dir, cli)
        run_test(test_train, T, data)
        run_test(test_dask, T, model, test_dir, cli)
    finally:
        shutil.rmtree(T, ignore_errors=True)
    summary()


if __name__ == "__main__":
    main()
