"""Batch prediction over a Dask cluster (distributed).

    from dask.distributed import Client
    import uflow.dask
    client = Client("tcp://scheduler:8786")      # or Client(LocalCluster(...))
    df = uflow.dask.predict(client, "bottle.safetensors", ["/data/line3/"], out_dir="/data/out")

The images are listed once, on the client, as `uflow predict` lists them (folders walked
recursively, output names planned for the whole list), then split into chunks that the
workers process; each worker process loads the model once (per thread that runs tasks) and
keeps it. With out_dir, every image's map, overlay and mask are written there under the name
`uflow predict` gives it, and results.csv / results.jsonl like its own. The model file, the
images and out_dir must be at the same paths on every worker (a shared file system).

The result is a pandas DataFrame, one row per image in the listed order: image, score,
anomalous, detected_pixels, max_neg_log10_nfa, width, height, outputs, error (error is ""
for the images that gave results; the other columns are then NaN / empty).
"""
import json
import os
import threading

import uflow

COLUMNS = ["image", "score", "anomalous", "detected_pixels", "max_neg_log10_nfa", "width", "height", "outputs",
           "error"]

_models = {}
_models_lock = threading.Lock()


def _model(model_path, weights, threads):
    """This worker thread's model (one model per thread: uflow's rule), loaded once."""
    key = (model_path, weights, threading.get_ident())
    with _models_lock:
        m = _models.get(key)
    if m is None:
        if threads:
            uflow.set_threads(threads)
        m = uflow.Model.load(model_path, weights)
        with _models_lock:
            _models[key] = m
    return m


def predict_chunk(model_path, items, out_dir=None, weights=None, threads=1, map_safetensors=False):
    """Predicts items [(path, stem), ...] with the model of model_path; writes the outputs when
    out_dir is given. Returns the rows (lists in COLUMNS order). Runs on a worker."""
    m = _model(model_path, weights, threads)
    rows = []
    paths = [p for p, _ in items]
    if out_dir is not None:  # uflow predict's pipeline: the files are written while the model runs
        results = m.predict_to_files(paths, [s for _, s in items], out_dir, map_safetensors=map_safetensors)
    else:
        results = m.predict_files(paths)
    for (path, stem), r in zip(items, results):
        if isinstance(r, uflow.Error):
            rows.append([path, float("nan"), None, None, float("nan"), None, None, "", str(r)])
            continue
        if isinstance(r, dict):
            rows.append([path, r["score"], r["anomalous"], r["detected_pixels"], r["max_neg_log10_nfa"], r["width"],
                         r["height"], stem, ""])
            continue
        rows.append([path, r.score, r.anomalous, r.detected_pixels, r.max_neg_log10_nfa, r.width, r.height, stem, ""])
        r.close()
    return rows


def _atomic_write(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _csv_field(s):
    return '"' + s.replace('"', '""') + '"'


def write_results(df, out_dir):
    """results.csv and results.jsonl in uflow predict's format, written atomically."""
    csv = ["image,score,anomalous,detected_pixels,max_neg_log10_nfa,width,height,outputs,error"]
    jsonl = []
    for row in df.itertuples(index=False):
        if row.error:
            csv.append(_csv_field(row.image) + ",,,,,,,," + _csv_field(row.error))
            jsonl.append(json.dumps({"image": row.image, "error": row.error}))
            continue
        csv.append("%s,%.6f,%d,%d,%.3f,%d,%d,%s," % (_csv_field(row.image), row.score, row.anomalous,
                                                    row.detected_pixels, row.max_neg_log10_nfa, row.width,
                                                    row.height, _csv_field(row.outputs)))
        jsonl.append(json.dumps({"image": row.image, "score": round(row.score, 6), "anomalous": bool(row.anomalous),
                                 "detected_pixels": int(row.detected_pixels),
                                 "max_neg_log10_nfa": round(row.max_neg_log10_nfa, 3), "width": int(row.width),
                                 "height": int(row.height), "outputs": row.outputs}, separators=(",", ":")))
    _atomic_write(os.path.join(out_dir, "results.csv"), "\n".join(csv) + "\n")
    _atomic_write(os.path.join(out_dir, "results.jsonl"), "\n".join(jsonl) + "\n")


def predict(client, model_path, paths, out_dir=None, chunk_size=64, weights=None, threads=1,
            map_safetensors=False):
    """Predicts the images under paths on the cluster of client (None: in this process, in the
    same chunks, e.g. to check a cluster's results). chunk_size images per task (a multiple of 8,
    the library's batch, keeps the batches those of `uflow predict`); threads: uflow threads per
    task. Returns a pandas DataFrame (see the module's help)."""
    import pandas as pd

    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    model_path = os.path.abspath(os.fspath(model_path))
    items = uflow.list_images(paths)
    if out_dir is not None:
        out_dir = os.path.abspath(os.fspath(out_dir))
        os.makedirs(out_dir, exist_ok=True)
    chunks = [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
    if client is None:
        parts = [predict_chunk(model_path, c, out_dir, weights, threads, map_safetensors) for c in chunks]
    else:
        futures = client.map(predict_chunk, [model_path] * len(chunks), chunks, out_dir=out_dir, weights=weights,
                             threads=threads, map_safetensors=map_safetensors, pure=False)
        parts = client.gather(futures)
    df = pd.DataFrame([row for part in parts for row in part], columns=COLUMNS)
    if out_dir is not None:
        write_results(df, out_dir)
    return df
