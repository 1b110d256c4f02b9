"""uflow - U-Flow image anomaly detection and segmentation on the CPU, from Python.

A ctypes binding of libuflow.so (include/uflow.h); numpy arrays in and out.

    import uflow
    uflow.train("mvtec/bottle", "bottle.safetensors", epochs=25, progress=print)
    m = uflow.Model.load("bottle.safetensors")
    r = m.predict(image)          # numpy uint8 HxWx3 (RGB), HxWx4 (RGBA) or HxW (gray), or a file path
    r.score, r.anomalous          # float; bool (some pixel with NFA < 1)
    r.anomaly_map                 # float32 HxW at the image's size
    r.mask                        # bool HxW, NFA < 1
    r.neg_log10_nfa               # float32 HxW

The library is found as, in order: $UFLOW_LIBRARY (a path to libuflow.so), the
build/libuflow.so of the checkout this package is in (after `make`), libuflow.so.0 on
the loader's path (LD_LIBRARY_PATH, or installed with `make install`).

Every error raises uflow.Error with the library's one-line message. A Model is used by
one thread at a time; load one per thread to predict in parallel.
"""
import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_float, c_int, c_size_t, c_ubyte,
                    c_ulonglong, c_void_p)

import numpy as np

__all__ = ["Error", "Model", "Result", "train", "test", "list_images", "set_threads", "set_log", "version",
           "LOG_PROGRESS", "LOG_INFO", "LOG_WARNING", "LOG_ERROR"]

LOG_PROGRESS, LOG_INFO, LOG_WARNING, LOG_ERROR = 0, 1, 2, 3


class Error(RuntimeError):
    """An error reported by libuflow (its message says what and where)."""


def _load_library():
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = []
    if os.environ.get("UFLOW_LIBRARY"):
        candidates.append(os.environ["UFLOW_LIBRARY"])
    candidates.append(os.path.join(here, "..", "..", "build", "libuflow.so"))
    candidates.append("libuflow.so.0")
    tried = []
    for path in candidates:
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (missing)")
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("uflow: cannot load libuflow.so (run `make`, or set UFLOW_LIBRARY or LD_LIBRARY_PATH); "
                      "tried: " + "; ".join(tried))


_lib = _load_library()

_EPOCH_FN = CFUNCTYPE(c_int, c_int, c_int, c_double, c_double, c_void_p)
_LOG_FN = CFUNCTYPE(None, c_int, c_char_p, c_void_p)


class _TrainOptions(Structure):
    _fields_ = [("data_dir", c_char_p), ("out_path", c_char_p), ("backbone", c_char_p), ("weights", c_char_p),
                ("width", c_int), ("height", c_int), ("keep_aspect", c_int), ("flow_steps", c_int),
                ("epochs", c_int), ("batch", c_int), ("lr", c_double), ("weight_decay", c_double),
                ("seed", c_ulonglong), ("max_images", c_int), ("skip_bad_images", c_int), ("resume", c_int),
                ("val_split", c_double), ("val_dir", c_char_p), ("early_stop", c_int), ("patience", c_int),
                ("tile", c_int), ("calib_rate", c_double), ("on_epoch", _EPOCH_FN), ("user", c_void_p)]


class _TrainSummary(Structure):
    _fields_ = [("images", c_int), ("epochs_done", c_int), ("skipped", c_int), ("val_images", c_int),
                ("best_epoch", c_int), ("stopped_early", c_int), ("val_z2", c_double * 3), ("first_loss", c_double),
                ("last_loss", c_double), ("seconds", c_double)]


class _PredictOptions(Structure):
    _fields_ = [("model_size", c_int), ("nfa_block", c_int)]


class _WriteOptions(Structure):
    _fields_ = [("outputs", c_char_p), ("map_safetensors", c_int), ("overlay_jpeg", c_int), ("model_size", c_int),
                ("nfa_block", c_int)]


class _Row(Structure):
    _fields_ = [("ok", c_int), ("score", c_float), ("max_neg_log10_nfa", c_float), ("anomalous", c_int),
                ("detected_pixels", c_int), ("width", c_int), ("height", c_int)]


class _TestOptions(Structure):
    _fields_ = [("data_dir", c_char_p), ("out_dir", c_char_p), ("eval_size", c_int)]


class _Metrics(Structure):
    _fields_ = [("images", c_int), ("good_images", c_int), ("good_with_detection", c_int),
                ("image_auroc", c_double), ("pixel_auroc", c_double), ("aupro", c_double),
                ("miou_auto", c_double), ("miou_oracle", c_double), ("f1_auto", c_double),
                ("tp", c_int), ("fp", c_int), ("tn", c_int), ("fn", c_int)]


def _sig(name, res, *args):
    f = getattr(_lib, name)
    f.restype, f.argtypes = res, list(args)
    return f


_version = _sig("uflow_version", c_char_p)
_last_error = _sig("uflow_last_error", c_char_p)
_set_threads = _sig("uflow_set_threads", None, c_int)
_set_log = _sig("uflow_set_log", None, _LOG_FN, c_void_p)
_train_defaults = _sig("uflow_train_default_options", _TrainOptions)
_train = _sig("uflow_train", c_int, POINTER(_TrainOptions), POINTER(_TrainSummary))
_model_load = _sig("uflow_model_load", c_void_p, c_char_p, c_char_p)
_model_free = _sig("uflow_model_free", None, c_void_p)
_model_w = _sig("uflow_model_input_width", c_int, c_void_p)
_model_h = _sig("uflow_model_input_height", c_int, c_void_p)
_model_backbone = _sig("uflow_model_backbone", c_char_p, c_void_p)
_model_epochs = _sig("uflow_model_epochs", c_int, c_void_p)
_model_precision = _sig("uflow_model_set_precision", c_int, c_void_p, c_char_p)
_predict_defaults = _sig("uflow_predict_default_options", _PredictOptions)
_predict_pixels = _sig("uflow_predict_pixels", c_void_p, c_void_p, POINTER(c_ubyte), c_int, c_int, c_int, c_size_t,
                       POINTER(_PredictOptions))
_predict_file = _sig("uflow_predict_file", c_void_p, c_void_p, c_char_p, POINTER(_PredictOptions))
_predict_encoded = _sig("uflow_predict_encoded", c_void_p, c_void_p, c_char_p, c_size_t, c_char_p,
                        POINTER(_PredictOptions))
_predict_files = _sig("uflow_predict_files", c_int, c_void_p, POINTER(c_char_p), c_int, POINTER(_PredictOptions),
                      POINTER(c_void_p), POINTER(c_void_p))
_predict_to_files = _sig("uflow_predict_to_files", c_int, c_void_p, POINTER(c_char_p), POINTER(c_char_p), c_int,
                         c_char_p, POINTER(_WriteOptions), POINTER(_Row), POINTER(c_void_p))
_r_score = _sig("uflow_result_score", c_float, c_void_p)
_r_anomalous = _sig("uflow_result_anomalous", c_int, c_void_p)
_r_w = _sig("uflow_result_width", c_int, c_void_p)
_r_h = _sig("uflow_result_height", c_int, c_void_p)
_r_map = _sig("uflow_result_anomaly_map", POINTER(c_float), c_void_p)
_r_nfa = _sig("uflow_result_neg_log10_nfa", POINTER(c_float), c_void_p)
_r_mask = _sig("uflow_result_mask", POINTER(c_ubyte), c_void_p)
_r_detected = _sig("uflow_result_detected_pixels", c_int, c_void_p)
_r_max_nfa = _sig("uflow_result_max_neg_log10_nfa", c_float, c_void_p)
_r_write = _sig("uflow_result_write", c_int, c_void_p, c_char_p, c_char_p, c_int)
_r_png = _sig("uflow_result_png", c_int, c_void_p, c_char_p, POINTER(c_void_p), POINTER(c_size_t))
_r_free = _sig("uflow_result_free", None, c_void_p)
_list = _sig("uflow_list_images", c_void_p, POINTER(c_char_p), c_int)
_list_count = _sig("uflow_image_list_count", c_int, c_void_p)
_list_path = _sig("uflow_image_list_path", c_char_p, c_void_p, c_int)
_list_stem = _sig("uflow_image_list_stem", c_char_p, c_void_p, c_int)
_list_free = _sig("uflow_image_list_free", None, c_void_p)
_test_defaults = _sig("uflow_test_default_options", _TestOptions)
_test = _sig("uflow_test", c_int, c_void_p, POINTER(_TestOptions), POINTER(_Metrics))
_libc_free = ctypes.CDLL(None).free
_libc_free.argtypes = [c_void_p]


def _path(p):
    return os.fsencode(p) if p is not None else None


def _fail():
    raise Error(_last_error().decode("utf-8", "replace") or "uflow: unknown error")


def version():
    """The library's version, e.g. '0.2.0'."""
    return _version().decode()


def set_threads(n):
    """Threads of the library's loops and of OpenBLAS (0: all cores)."""
    _set_threads(int(n))


_log_keep = None


def set_log(callback):
    """callback(level, message) for the library's progress lines (LOG_PROGRESS), run accounts
    (LOG_INFO), warnings and per-item errors; None: silent (the default). It may be called from
    the library's threads, one call at a time, and must not call into uflow."""
    global _log_keep
    if callback is None:
        _log_keep = None
        _set_log(_LOG_FN(), None)
        return

    def trampoline(level, message, user):
        try:
            callback(level, message.decode("utf-8", "replace"))
        except Exception:  # an exception cannot cross the C library
            pass

    _log_keep = _LOG_FN(trampoline)
    _set_log(_log_keep, None)


class Result:
    """One image's results, at the image's own size (or the model's with model_size=True)."""

    def __init__(self, handle, image=None):
        self._h = handle
        self.image = image
        self.score = float(_r_score(handle))
        self.anomalous = bool(_r_anomalous(handle))
        self.width, self.height = _r_w(handle), _r_h(handle)
        self.detected_pixels = int(_r_detected(handle))
        self.max_neg_log10_nfa = float(_r_max_nfa(handle))
        n = self.width * self.height
        shape = (self.height, self.width)
        self.anomaly_map = np.ctypeslib.as_array(_r_map(handle), (n,)).reshape(shape).copy()
        self.neg_log10_nfa = np.ctypeslib.as_array(_r_nfa(handle), (n,)).reshape(shape).copy()
        self.mask = np.ctypeslib.as_array(_r_mask(handle), (n,)).reshape(shape).astype(bool)

    def write(self, out_dir, stem, map_safetensors=False):
        """Writes out_dir/<stem>_map.png, _overlay.png and _mask.png as `uflow predict` does."""
        if self._h is None:
            raise Error("uflow: result already closed")
        if _r_write(self._h, _path(out_dir), _path(stem), int(bool(map_safetensors))) != 0:
            _fail()

    def png(self, what):
        """The PNG file `uflow predict` writes, as bytes: what = "map" (16-bit gray), "mask" or "overlay"."""
        if self._h is None:
            raise Error("uflow: result already closed")
        buf, n = c_void_p(), c_size_t()
        if _r_png(self._h, what.encode(), ctypes.byref(buf), ctypes.byref(n)) != 0:
            _fail()
        try:
            return ctypes.string_at(buf, n.value)
        finally:
            _libc_free(buf)

    def close(self):
        if self._h is not None:
            _r_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self):
        return "<uflow.Result %dx%d score %.4f anomalous %s>" % (self.width, self.height, self.score, self.anomalous)


def _options(model_size, nfa):
    o = _predict_defaults()
    o.model_size = int(bool(model_size))
    if nfa not in ("tree", "block"):
        raise ValueError("nfa must be 'tree' or 'block'")
    o.nfa_block = int(nfa == "block")
    return o


class Model:
    """A trained U-Flow model (a .safetensors file of `uflow train` or uflow.train)."""

    def __init__(self, handle, path):
        self._h = handle
        self.path = path

    @classmethod
    def load(cls, path, weights=None):
        """Loads a model; weights: the backbone file(s) when not the recorded / embedded ones."""
        h = _model_load(_path(path), _path(weights))
        if not h:
            _fail()
        return cls(h, os.fspath(path))

    def _handle(self):
        if self._h is None:
            raise Error("uflow: model closed")
        return self._h

    @property
    def input_size(self):
        """(width, height) of the model's input."""
        return _model_w(self._handle()), _model_h(self._handle())

    @property
    def backbone(self):
        return _model_backbone(self._handle()).decode()

    @property
    def epochs(self):
        return _model_epochs(self._handle())

    def predict(self, image, model_size=False, nfa="tree"):
        """image: a numpy uint8 array HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA, alpha ignored), anything
        numpy.asarray makes one of those (a PIL image), or a file path. Returns a Result."""
        o = _options(model_size, nfa)
        if isinstance(image, (str, bytes, os.PathLike)):
            h = _predict_file(self._handle(), _path(image), ctypes.byref(o))
            if not h:
                _fail()
            return Result(h, os.fspath(image))
        a = np.asarray(image)
        if a.dtype != np.uint8:
            raise TypeError("uflow: images must be uint8 (got %s)" % a.dtype)
        if a.ndim == 2:
            channels = 1
        elif a.ndim == 3 and a.shape[2] in (1, 3, 4):
            channels = a.shape[2]
        else:
            raise ValueError("uflow: image shape %s (expected HxW, HxWx3 or HxWx4)" % (a.shape,))
        # Rows may be strided (a crop of a larger array); the pixels within a row must be packed.
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.strides[-1] != 1 or (a.ndim == 3 and a.strides[1] != channels) or a.strides[0] < 0:
            a = np.ascontiguousarray(a)
        ptr = a.ctypes.data_as(POINTER(c_ubyte))
        h = _predict_pixels(self._handle(), ptr, a.shape[1], a.shape[0], channels, a.strides[0], ctypes.byref(o))
        if not h:
            _fail()
        return Result(h)

    def predict_bytes(self, data, name=None, model_size=False, nfa="tree"):
        """data: an image file's bytes (PNG, JPEG, BMP, TIFF), e.g. an upload, checked as a file would be;
        name stands for it in error messages. Returns a Result."""
        o = _options(model_size, nfa)
        data = bytes(data)
        h = _predict_encoded(self._handle(), data, len(data), name.encode() if name else None, ctypes.byref(o))
        if not h:
            _fail()
        return Result(h, name)

    def predict_files(self, paths, model_size=False, nfa="tree"):
        """Predicts files in batches (faster than one by one). Returns one item per path: a Result, or
        a uflow.Error for an image that could not be read (the others are not affected)."""
        paths = [os.fspath(p) for p in paths]
        n = len(paths)
        if n == 0:
            return []
        o = _options(model_size, nfa)
        c_paths = (c_char_p * n)(*[_path(p) for p in paths])
        results, errors = (c_void_p * n)(), (c_void_p * n)()
        if _predict_files(self._handle(), c_paths, n, ctypes.byref(o), results, errors) < 0:
            _fail()
        out = []
        for i in range(n):
            if results[i]:
                out.append(Result(results[i], paths[i]))
            else:
                out.append(Error(ctypes.string_at(errors[i]).decode("utf-8", "replace")))
                _libc_free(errors[i])
        return out

    def set_precision(self, precision):
        """The backbone's arithmetic: "fp32" (default), "bf16" (ResNet on CPUs with AVX512-BF16 or AMX), or
        "auto" (bf16 where it runs). Raises uflow.Error where bf16 cannot run."""
        if _model_precision(self._handle(), precision.encode()) != 0:
            _fail()

    def predict_to_files(self, paths, stems, out_dir, outputs=None, map_safetensors=False, overlay_jpeg=False,
                         model_size=False, nfa="tree"):
        """Predicts paths and writes each one's files as out_dir/<stem>_map.png etc., as `uflow predict`
        does (its pipeline: decoding, the model and the writing overlap). outputs: e.g. "map,mask,overlay,nfa"
        or "none" (None: map,mask,overlay). Returns one dict per path: score, anomalous, detected_pixels,
        max_neg_log10_nfa, width, height; or a uflow.Error for an image that could not be read."""
        paths = [os.fspath(p) for p in paths]
        stems = [os.fspath(s) for s in stems]
        if len(stems) != len(paths):
            raise ValueError("uflow: one stem per path")
        n = len(paths)
        if n == 0:
            return []
        p = _options(model_size, nfa)  # the same checks as predict's
        o = _WriteOptions(outputs.encode() if outputs else None, int(bool(map_safetensors)), int(bool(overlay_jpeg)),
                          p.model_size, p.nfa_block)
        c_paths = (c_char_p * n)(*[_path(p) for p in paths])
        c_stems = (c_char_p * n)(*[_path(s) for s in stems])
        rows, errors = (_Row * n)(), (c_void_p * n)()
        if _predict_to_files(self._handle(), c_paths, c_stems, n, _path(out_dir), ctypes.byref(o), rows, errors) < 0:
            _fail()
        out = []
        for i in range(n):
            r = rows[i]
            if r.ok:
                out.append({"score": float(r.score), "anomalous": bool(r.anomalous),
                            "detected_pixels": int(r.detected_pixels), "max_neg_log10_nfa": float(r.max_neg_log10_nfa),
                            "width": int(r.width), "height": int(r.height)})
            else:
                out.append(Error(ctypes.string_at(errors[i]).decode("utf-8", "replace")))
                _libc_free(errors[i])
        return out

    def close(self):
        if self._h is not None:
            _model_free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


_TRAIN_KEYS = {"backbone", "weights", "width", "height", "keep_aspect", "flow_steps", "epochs", "batch", "lr",
               "weight_decay", "seed", "max_images", "skip_bad_images", "resume", "val_split", "val_dir",
               "early_stop", "patience", "tile", "calib_rate"}


def train(data_dir, out, progress=None, size=None, **options):
    """Trains a model on the normal images of data_dir and writes it to out.

    progress(epoch, epochs, loss, eta_seconds) is called after each epoch; returning True stops
    training there (the model is written and can be resumed with resume=True). An exception
    raised by progress stops training too and is raised again here. size: N or (width, height).
    Other options (uflow.h's uflow_train_options): backbone, weights, keep_aspect, flow_steps,
    epochs, batch, lr, weight_decay, seed, max_images, skip_bad_images, resume, val_split, val_dir,
    early_stop, patience, tile (-1 auto, 0 off, 1 on), calib_rate (0.05; 0: uncalibrated NFA).
    Returns a dict: images, epochs_done, skipped, val_images, best_epoch, stopped_early, val_z2,
    first_loss, last_loss, seconds."""
    unknown = set(options) - _TRAIN_KEYS
    if unknown:
        raise TypeError("uflow.train: unknown options %s" % ", ".join(sorted(unknown)))
    o = _train_defaults()
    keep = [_path(data_dir), _path(out)]
    o.data_dir, o.out_path = keep[0], keep[1]
    if size is not None:
        o.width, o.height = (size, size) if isinstance(size, int) else size
    for k, v in options.items():
        if k in ("backbone", "weights", "val_dir"):
            v = None if v is None else (v.encode() if k == "backbone" else _path(v))
            keep.append(v)
        elif k in ("keep_aspect", "skip_bad_images", "resume", "early_stop"):
            v = int(bool(v))
        setattr(o, k, v)
    raised = []
    if progress is not None:
        def on_epoch(epoch, epochs, loss, eta, user):
            try:
                return 1 if progress(epoch, epochs, loss, eta) else 0
            except BaseException as e:  # cannot cross the C library: stop, then raise it here
                raised.append(e)
                return 1
        o.on_epoch = _EPOCH_FN(on_epoch)
    s = _TrainSummary()
    rc = _train(ctypes.byref(o), ctypes.byref(s))
    if raised:
        raise raised[0]
    if rc != 0:
        _fail()
    out = {k: getattr(s, k) for k, _ in _TrainSummary._fields_}
    out["val_z2"] = [v for v in s.val_z2 if v == v]
    return out


def test(model, data_dir, out_dir=None, eval_size=256):
    """Metrics of a model (a Model or a path) on a labelled test split (MVTec-AD, BTAD, VisA ...);
    out_dir: also write metrics.json and report.html there. Returns a dict (NaN where the data do
    not allow a metric)."""
    m = model if isinstance(model, Model) else Model.load(model)
    o = _test_defaults()
    o.data_dir, o.out_dir, o.eval_size = _path(data_dir), _path(out_dir), eval_size
    r = _Metrics()
    if _test(m._handle(), ctypes.byref(o), ctypes.byref(r)) != 0:
        _fail()
    return {k: getattr(r, k) for k, _ in _Metrics._fields_}


def list_images(paths):
    """The images `uflow predict` would process for these paths (folders walked recursively), as
    (path, output stem) pairs in its order."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = [_path(p) for p in paths]
    arr = (c_char_p * len(paths))(*paths)
    h = _list(arr, len(paths))
    if not h:
        _fail()
    try:
        return [(os.fsdecode(_list_path(h, i)), os.fsdecode(_list_stem(h, i))) for i in range(_list_count(h))]
    finally:
        _list_free(h)
