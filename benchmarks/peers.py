#!/usr/bin/env python
"""lightmark against dlib's 68-point shape predictor: accuracy, latency, throughput, size.

One run measures, on the same images and with the same metric code (``lightmark.metrics``):

* lightmark, torch backend and onnxruntime backend, each (a) on the ground-truth landmark box
  (``box_kind="landmarks"``: the training crop, one pass) and (b) end to end with the bundled
  Ultra-Light RFB-320 detector (``Landmarker.predict_all``: detector box -> fitted mapping ->
  landmarks, refined on the first answer's own box, the API default); the ONNX backend also
  without the refinement pass;
* dlib's ``shape_predictor_68_face_landmarks.dat`` (from ``face_recognition_models``), (a) on its
  own HOG detector's box (``dlib.get_frontal_face_detector()``, upsampling the image once, dlib's
  usual setting, and not at all), (b) on the raw ground-truth landmark box, and (c) on the
  ground-truth landmark box mapped to a HOG-like box. dlib's predictor was trained on its
  detector's boxes, which are square and sit higher on the face than the landmark box (brows in,
  chin cut), so (b) is a mismatched input; (c) removes most of that mismatch with a fixed mapping
  (median centre shift and side ratio, landmark box -> HOG box) fitted here on HELEN train, never
  on the evaluation sets.

Detections are matched to the labelled face by IoU >= 0.3 with its landmark box (the rule of
``lightmark.evaluate``); a face without a match is a *miss*: it is left out of the mean NME and
counts as a failure (FR) and as 0 in the AUC.

Timing is at one thread (OMP/MKL/torch/onnxruntime/OpenCV set to 1; dlib's predictor and HOG
detector are single-threaded), twice: with all methods interleaved image by image, so a
background load (e.g. a training run on the same CPU) slows every method alike, and one method at
a time (a whole pass over the images each), as a program using one library runs; interleaving
also charges each method for the caches the others evicted. The report gives the ratios to dlib
and the CPU share other processes used during the run.

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/peers.py --model runs/default/best.safetensors --repeats 3

Writes ``--out`` (Markdown) and the same path with ``.json``.
"""
from __future__ import annotations

import os

# One thread everywhere, before numpy / torch / onnxruntime are imported.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# OpenCV's own thread pool (crops, blur, the detector's resize) would otherwise use every core.
cv2.setNumThreads(1)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "src" / "lightmark" / "assets" / "model" / "lightmark.safetensors"
DEFAULT_AFW = REPO.parent / "shared" / "data" / "300w" / "afw"
DEFAULT_AFLW = REPO.parent / "shared" / "data" / "aflw2000_sample"
DEFAULT_HELEN = REPO.parent / "shared" / "data" / "300w" / "helen_trainset"
MIN_IOU = 0.3
#: dlib's usual HOG setting (its examples, face_recognition): upsample the image once. Upsampling 0
#: is measured as well (faster; on AFW's large faces it finds about as many).
DLIB_UPSAMPLE = 1
BATCH = 32


class BenchmarkError(SystemExit):
    """Exit with a one-line message (no traceback) for bad arguments or missing files."""

    def __init__(self, msg: str) -> None:
        super().__init__(f"peers.py: error: {msg}")


# ------------------------------------------------------------------------------------------------
# inputs


def copy_model(model: Path, dest: Path, tries: int = 20) -> tuple[Path, dict]:
    """Copy NAME.safetensors + NAME.json to ``dest`` (the source may be rewritten by a training run:
    retry until the copied weights match the copied JSON's checksum). Returns (weights, meta)."""
    from lightmark.core.files import sha256
    from lightmark.models.checkpoint import model_paths

    weights, meta_path = model_paths(model)
    for p in (weights, meta_path):
        if not p.is_file():
            raise BenchmarkError(f"{p}: no such file (a lightmark model is NAME.safetensors + NAME.json)")
    dest.mkdir(parents=True, exist_ok=True)
    out_w, out_j = dest / weights.name, dest / meta_path.name
    for _ in range(tries):
        shutil.copyfile(meta_path, out_j)
        shutil.copyfile(weights, out_w)
        meta = json.loads(out_j.read_text())
        if meta.get("sha256") == sha256(out_w):
            return out_w, meta
        time.sleep(1.0)  # caught between the weights and the JSON being rewritten
    raise BenchmarkError(f"{weights}: weights never matched the sha256 in {meta_path.name} "
                         f"after {tries} tries")


def dlib_model_path(arg: Optional[str]) -> Path:
    if arg:
        p = Path(arg)
    else:
        # Do not import face_recognition_models: it needs pkg_resources (gone from new setuptools).
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise BenchmarkError("face_recognition_models is not installed "
                                 "(pip install -r benchmarks/requirements.txt) and no --dlib-model given")
        p = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not p.is_file():
        raise BenchmarkError(f"{p}: no such dlib shape predictor file")
    return p


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "platform": platform.platform(), "python": platform.python_version()}


class LoadMeter:
    """CPU used by *other* processes during the run, from /proc/stat minus this process's own time."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = self._busy()
        self.self0 = self._self()
        self.load0 = os.getloadavg()

    @staticmethod
    def _busy() -> Optional[float]:
        try:
            f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            v = [float(x) for x in f]
            idle = v[3] + (v[4] if len(v) > 4 else 0.0)
            return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _self() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

    def read(self) -> dict:
        wall = time.monotonic() - self.t0
        busy1 = self._busy()
        mine = self._self() - self.self0
        n = os.cpu_count() or 1
        out: dict[str, Any] = {"wall_s": round(wall, 1), "cpus": n, "this_process_cpu_s": round(mine, 1),
                               "loadavg_start": [round(x, 2) for x in self.load0],
                               "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
        if busy1 is not None and self.busy0 is not None and wall > 0:
            other = max(0.0, (busy1 - self.busy0) - mine)
            out["other_processes_cpu_s"] = round(other, 1)
            out["other_processes_cores_mean"] = round(other / wall, 2)
        return out


# ------------------------------------------------------------------------------------------------
# dlib helpers


def to_rect(box: np.ndarray):
    """x1, y1, x2, y2 (pixel coordinates) -> dlib.rectangle, floored to integers."""
    import dlib

    return dlib.rectangle(*[int(math.floor(v)) for v in box[:4]])


def rects_to_array(rects) -> np.ndarray:
    """dlib rectangles -> (N, 5) x1, y1, x2, y2, score (score 1; HOG scores are not used)."""
    return np.array([[r.left(), r.top(), r.right(), r.bottom(), 1.0] for r in rects],
                    np.float64).reshape(-1, 5)


def shape_to_array(shape) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


class DlibBoxMapping:
    """Ground-truth landmark box L -> a box like dlib's HOG box D (square, centre higher).

    Fitted as medians over matched faces: side ratio ``side_D / max(w_L, h_L)`` and centre shift
    ``(c_D - c_L) / max(w_L, h_L)``; D is then the square of that side at the shifted centre.
    """

    def __init__(self, ratio: float, shift: tuple[float, float], info: Optional[dict] = None) -> None:
        self.ratio, self.shift, self.info = float(ratio), (float(shift[0]), float(shift[1])), info or {}

    def __call__(self, lm_box: np.ndarray) -> np.ndarray:
        side = float(np.max(lm_box[2:] - lm_box[:2]))
        c = (lm_box[:2] + lm_box[2:]) / 2 + np.array(self.shift) * side
        half = self.ratio * side / 2
        return np.concatenate([c - half, c + half])

    @classmethod
    def fit(cls, dataset_path: Path, detector, upsample: int, progress: bool) -> "DlibBoxMapping":
        from lightmark.core import geometry
        from lightmark.data.readers import open_dataset
        from lightmark.evaluate import match_detection

        ds = open_dataset(dataset_path)
        ratios, shifts, aspects = [], [], []
        for i in _progress(range(len(ds)), progress, f"fit dlib box mapping on {ds.name}"):
            s = ds[i]
            lb = geometry.landmark_box(s.points)
            d = match_detection(rects_to_array(detector(s.image, upsample)), lb, MIN_IOU)
            if d is None:
                continue
            side_l = float(np.max(lb[2:] - lb[:2]))
            wd, hd = d[2] - d[0], d[3] - d[1]
            ratios.append((wd + hd) / 2 / side_l)
            shifts.append(((d[:2] + d[2:4]) / 2 - (lb[:2] + lb[2:]) / 2) / side_l)
            aspects.append(hd / wd)
        if len(ratios) < 10:
            raise BenchmarkError(f"{dataset_path}: only {len(ratios)} faces matched a HOG detection; "
                                 "cannot fit the dlib box mapping")
        r, sh = np.asarray(ratios), np.asarray(shifts)
        q = lambda a: [round(float(v), 4) for v in np.percentile(a, [10, 50, 90])]  # noqa: E731
        info = {"fitted_on": str(dataset_path), "faces": len(ds), "matched": len(r),
                "side_ratio_p10_50_90": q(r), "shift_x_p10_50_90": q(sh[:, 0]),
                "shift_y_p10_50_90": q(sh[:, 1]), "hog_box_h_over_w_median": round(float(np.median(aspects)), 4)}
        return cls(float(np.median(r)), (float(np.median(sh[:, 0])), float(np.median(sh[:, 1]))), info)

    def as_dict(self) -> dict:
        return {"side_ratio": round(self.ratio, 5), "shift": [round(v, 5) for v in self.shift], **self.info}


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, file=sys.stderr, leave=False)


# ------------------------------------------------------------------------------------------------
# methods


class Methods:
    """Every method as ``name -> fn(image, lm_box) -> (68, 2) points or None (a miss)``."""

    def __init__(self, lm_torch, lm_onnx, dlib_det, dlib_sp, mapping: DlibBoxMapping, upsample: int) -> None:
        self.lm_torch, self.lm_onnx = lm_torch, lm_onnx
        self.det, self.sp, self.mapping, self.upsample = dlib_det, dlib_sp, mapping, upsample
        self.last_hog_box: Optional[np.ndarray] = None

    # accuracy ----------------------------------------------------------------------------------
    @staticmethod
    def _lm_detector(lm, image, lm_box) -> Optional[np.ndarray]:
        from lightmark.evaluate import match_detection

        faces = lm.predict_all(image)
        if not faces:
            return None
        dets = np.array([np.r_[f.box, f.score] for f in faces], np.float64)
        d = match_detection(dets, lm_box, MIN_IOU)
        if d is None:
            return None
        j = int(np.argmin(np.abs(dets - d).sum(axis=1)))
        return faces[j].points

    def lm_onnx_norefine(self, image, lm_box):
        old = self.lm_onnx.refine
        self.lm_onnx.refine = False
        try:
            return self._lm_detector(self.lm_onnx, image, lm_box)
        finally:
            self.lm_onnx.refine = old

    def dlib_hog(self, image, lm_box, upsample: int) -> Optional[np.ndarray]:
        from lightmark.evaluate import match_detection

        d = match_detection(rects_to_array(self.det(image, upsample)), lm_box, MIN_IOU)
        if d is None:
            return None
        if upsample == self.upsample:
            self.last_hog_box = d[:4]
        return shape_to_array(self.sp(image, to_rect(d)))

    def accuracy_methods(self) -> dict[str, Callable]:
        return {
            "lightmark-torch/gt": lambda im, b: self.lm_torch.predict(im, b, box_kind="landmarks"),
            "lightmark-onnx/gt": lambda im, b: self.lm_onnx.predict(im, b, box_kind="landmarks"),
            "lightmark-torch/detector": lambda im, b: self._lm_detector(self.lm_torch, im, b),
            "lightmark-onnx/detector": lambda im, b: self._lm_detector(self.lm_onnx, im, b),
            "lightmark-onnx/detector-norefine": self.lm_onnx_norefine,
            "dlib/hog": lambda im, b: self.dlib_hog(im, b, self.upsample),
            "dlib/hog-up0": lambda im, b: self.dlib_hog(im, b, 0),
            "dlib/gt-raw": lambda im, b: shape_to_array(self.sp(im, to_rect(b))),
            "dlib/gt-mapped": lambda im, b: shape_to_array(self.sp(im, to_rect(self.mapping(b)))),
        }


LABELS = {
    "lightmark-torch/gt": ("lightmark (torch)", "GT landmark box (`box_kind=\"landmarks\"`)"),
    "lightmark-onnx/gt": ("lightmark (onnxruntime)", "GT landmark box (`box_kind=\"landmarks\"`)"),
    "lightmark-torch/detector": ("lightmark (torch)", "own detector (RFB-320), `predict_all` (refine)"),
    "lightmark-onnx/detector": ("lightmark (onnxruntime)", "own detector (RFB-320), `predict_all` (refine)"),
    "lightmark-onnx/detector-norefine": ("lightmark (onnxruntime)", "own detector (RFB-320), no refine"),
    "dlib/hog": ("dlib 68", "own detector (HOG, upsample 1)"),
    "dlib/hog-up0": ("dlib 68", "own detector (HOG, upsample 0)"),
    "dlib/gt-raw": ("dlib 68", "GT landmark box, raw (mismatched for dlib)"),
    "dlib/gt-mapped": ("dlib 68", "GT landmark box mapped to a HOG-like box (fit on HELEN train)"),
}


SHORT = {
    "lightmark-torch/detector": "lightmark torch + RFB-320",
    "lightmark-onnx/detector": "lightmark onnx + RFB-320",
    "lightmark-onnx/detector-norefine": "lightmark onnx + RFB-320 no refine",
    "dlib/hog": "dlib + HOG",
    "lightmark-onnx/gt": "lightmark onnx on GT box",
    "dlib/gt-mapped": "dlib on mapped GT box",
}


def run_accuracy(methods: Methods, dataset_path: Path, progress: bool) -> tuple[dict, dict]:
    from lightmark.core import geometry, metrics
    from lightmark.data.readers import open_dataset
    from lightmark.runtime.detector import box_iou

    ds = open_dataset(dataset_path)
    fns = methods.accuracy_methods()
    n = len(ds)
    gt = np.zeros((n, 68, 2), np.float64)
    preds = {k: np.full((n, 68, 2), np.nan) for k in fns}
    map_iou = []
    for i in _progress(range(n), progress, f"accuracy {ds.name}"):
        s = ds[i]
        gt[i] = s.points
        lb = geometry.landmark_box(s.points)
        methods.last_hog_box = None
        for k, fn in fns.items():
            p = fn(s.image, lb)
            if p is not None:
                preds[k][i] = p
        if methods.last_hog_box is not None:  # how close the mapped GT box comes to dlib's own box
            map_iou.append(float(box_iou(methods.mapping(lb), methods.last_hog_box)[0, 0]))
    summaries = {k: metrics.summarize(p, gt) for k, p in preds.items()}
    # The faces both detectors found: lightmark and dlib end to end on the same faces.
    both = np.isfinite(preds["lightmark-onnx/detector"][:, 0, 0]) & np.isfinite(preds["dlib/hog"][:, 0, 0])
    common = {k: metrics.summarize(preds[k][both], gt[both]) for k in
              ("lightmark-torch/detector", "lightmark-onnx/detector", "lightmark-onnx/detector-norefine",
               "dlib/hog", "lightmark-onnx/gt", "dlib/gt-mapped")} if both.any() else {}
    info = {"path": str(dataset_path), "name": ds.name, "kind": ds.kind, "n": n,
            "mapped_gt_box_vs_hog_box_iou_p10_50_90": [round(float(v), 3) for v in
                                                       np.percentile(map_iou, [10, 50, 90])] if map_iou else None,
            "found_by_both_detectors": int(both.sum()), "summary_on_faces_found_by_both": common}
    return summaries, info


def cross_check(lm_onnx, dataset_path: Path) -> dict:
    """lightmark.evaluate on the same predictor and GT boxes: must give the same NME as here."""
    from lightmark.evaluate import evaluate

    rep = evaluate(lm_onnx.predictor, dataset_path, "all", "gt", progress=False)
    return {k: rep["summary"][k] for k in ("n", "nme_io", "nme_box")}


# ------------------------------------------------------------------------------------------------
# timing


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return t1 - t0, c1 - c0


def _summaries(wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict:
    """Per method: median and 10/90th percentile wall time (ms), calls, CPU time per wall time."""
    out = {}
    for k in wall:
        w = np.asarray(wall[k]) * 1e3
        out[k] = {"median_ms": float(np.median(w)), "p10_ms": float(np.percentile(w, 10)),
                  "p90_ms": float(np.percentile(w, 90)), "calls": len(w),
                  "cpu_per_wall": float(np.sum(cpu[k]) / max(np.sum(wall[k]), 1e-12))}
    return out


def interleaved(tasks: dict[str, list[Callable[[], Any]]], repeats: int, warmup: int = 3) -> dict:
    """Time every task's calls; methods interleaved call by call, their order rotated each time.

    ``tasks[name]`` is a list of zero-argument calls (one per image); call ``i`` of every method
    runs back to back, so all methods see the same background load. Returns per method the median
    and 10/90th percentile of the wall time (ms) and the CPU time per wall time (1.0 = one busy
    thread; below 1 the process was waiting for a CPU).
    """
    names = list(tasks)
    n = min(len(v) for v in tasks.values())
    for name in names:
        for call in tasks[name][:warmup]:
            call()
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    step = 0
    for _ in range(repeats):
        for i in range(n):
            order = names[step % len(names):] + names[:step % len(names)]
            step += 1
            for name in order:
                w, c = _timed(tasks[name][i])
                wall[name].append(w)
                cpu[name].append(c)
    return _summaries(wall, cpu)


#: End-to-end methods also timed one at a time (the detectors alone are left out for run time).
E2E_BLOCKED = ("lightmark-onnx/e2e", "lightmark-onnx/e2e-norefine", "dlib/e2e-up0", "dlib/e2e")


def blocked(tasks: dict[str, list[Callable[[], Any]]], repeats: int, warmup: int = 3) -> dict:
    """Time every task's calls, one method at a time: each round runs a method's whole list back
    to back, then the next method's (the order rotated each round).

    This is how a program uses one library: interleaving call by call also measures what each
    library costs the other (caches and allocator state refilled after the other one ran), which
    here doubled dlib's predictor time (1.03 -> 2.04 ms) and added a quarter to lightmark's. Same
    result layout as :func:`interleaved`.
    """
    names = list(tasks)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for call in tasks[name][:warmup]:
                call()
            for call in tasks[name]:
                w, c = _timed(call)
                wall[name].append(w)
                cpu[name].append(c)
    return _summaries(wall, cpu)


def run_timing(methods: Methods, afw: Path, n_images: int, repeats: int, progress: bool) -> dict:
    from lightmark.core import geometry
    from lightmark.data.readers import open_dataset

    ds = open_dataset(afw)
    lm_t, lm_o = methods.lm_torch, methods.lm_onnx
    # Images where both detectors find the labelled face, so the face-box rows time the same faces.
    from lightmark.evaluate import match_detection

    samples = []
    for i in range(len(ds)):
        s = ds[i]
        lb = geometry.landmark_box(s.points)
        rd = match_detection(lm_o.detect(s.image), lb, MIN_IOU)
        hd = match_detection(rects_to_array(methods.det(s.image, methods.upsample)), lb, MIN_IOU)
        if rd is not None and hd is not None:
            samples.append((s.image, lb, rd[:4], hd[:4]))
        if len(samples) >= n_images:
            break
    sp, det, mp = methods.sp, methods.det, methods.mapping

    def norefine(im):
        lm_o.refine = False
        try:
            return lm_o.predict_all(im)
        finally:
            lm_o.refine = True

    def dlib_e2e(im, upsample):
        return [sp(im, r) for r in det(im, upsample)]

    single = {
        "lightmark-torch/gt": [lambda im=im, b=b: lm_t.predict(im, b, box_kind="landmarks") for im, b, _, _ in samples],
        "lightmark-onnx/gt": [lambda im=im, b=b: lm_o.predict(im, b, box_kind="landmarks") for im, b, _, _ in samples],
        "lightmark-onnx/facebox": [lambda im=im, d=d: lm_o.predict(im, d, box_kind="face") for im, _, d, _ in samples],
        "dlib/gt-mapped": [lambda im=im, b=b: sp(im, to_rect(mp(b))) for im, b, _, _ in samples],
        "dlib/hogbox": [lambda im=im, d=d: sp(im, to_rect(d)) for im, _, _, d in samples],
    }
    s_in = lm_o.input_size
    one = [geometry.crops_from_boxes(im, b[None], s_in, lm_o.crop_scale)[0] for im, b, _, _ in samples]
    single["lightmark-torch/model-only"] = [lambda c=c: lm_t.predictor.predict_crops(c) for c in one]
    single["lightmark-onnx/model-only"] = [lambda c=c: lm_o.predictor.predict_crops(c) for c in one]

    e2e = {
        "lightmark-torch/e2e": [lambda im=im: lm_t.predict_all(im) for im, *_ in samples],
        "lightmark-onnx/e2e": [lambda im=im: lm_o.predict_all(im) for im, *_ in samples],
        "lightmark-onnx/e2e-norefine": [lambda im=im: norefine(im) for im, *_ in samples],
        "dlib/e2e": [lambda im=im: dlib_e2e(im, 1) for im, *_ in samples],
        "dlib/e2e-up0": [lambda im=im: dlib_e2e(im, 0) for im, *_ in samples],
        "lightmark/detector-only": [lambda im=im: lm_o.detect(im) for im, *_ in samples],
        "dlib/detector-only": [lambda im=im: det(im, 1) for im, *_ in samples],
        "dlib/detector-only-up0": [lambda im=im: det(im, 0) for im, *_ in samples],
    }
    if progress:
        print(f"timing single faces on {len(samples)} AFW images x {repeats} repeats", file=sys.stderr)
    res_single = interleaved(single, repeats)
    if progress:
        print("timing single faces, one method at a time", file=sys.stderr)
    res_blocked = blocked(single, repeats)
    if progress:
        print("timing end to end", file=sys.stderr)
    res_e2e = interleaved(e2e, repeats)
    if progress:
        print("timing end to end, one method at a time", file=sys.stderr)
    res_e2e_blocked = blocked({k: e2e[k] for k in E2E_BLOCKED}, repeats)

    # Throughput: BATCH faces (GT boxes) from BATCH different images, as a batch for lightmark.
    batch = (samples * (BATCH // max(len(samples), 1) + 1))[:BATCH]
    crops, mats = zip(*[geometry.crops_from_boxes(im, b[None], s_in, lm_o.crop_scale) for im, b, _, _ in batch])
    crops = np.concatenate(crops)

    def lm_full(lm):
        def f():
            cs, ms = zip(*[geometry.crops_from_boxes(im, b[None], s_in, lm.crop_scale) for im, b, _, _ in batch])
            return geometry.points_to_image(lm.predictor.predict_crops(np.concatenate(cs)), np.concatenate(ms))
        return f

    def dlib_batch():
        return [sp(im, to_rect(mp(b))) for im, b, _, _ in batch]

    reps = max(10, 3 * repeats)
    tput_tasks = {
        "lightmark-torch/model-only": [lambda: lm_t.predictor.predict_crops(crops)] * reps,
        "lightmark-onnx/model-only": [lambda: lm_o.predictor.predict_crops(crops)] * reps,
        "lightmark-torch/with-crops": [lm_full(lm_t)] * reps,
        "lightmark-onnx/with-crops": [lm_full(lm_o)] * reps,
        "dlib/sequential": [dlib_batch] * reps,
    }
    if progress:
        print("timing throughput", file=sys.stderr)
    res_tput = interleaved(tput_tasks, 1, warmup=1)
    for v in res_tput.values():
        v["faces_per_s"] = BATCH / (v["median_ms"] / 1e3)
    sizes = sorted({im.shape[:2] for im, *_ in samples})
    return {"images": len(samples), "repeats": repeats, "image_sizes_hw_min_max": [list(sizes[0]), list(sizes[-1])],
            "single_face": res_single, "single_face_blocked": res_blocked, "end_to_end": res_e2e,
            "end_to_end_blocked": res_e2e_blocked, "batch": BATCH, "throughput": res_tput}


# ------------------------------------------------------------------------------------------------
# report


def _f(x: Optional[float], nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def _mb(n: Optional[int]) -> str:
    return "–" if n is None else f"{n / 1e6:.1f} MB"


def write_markdown(res: dict, path: Path) -> None:
    acc, t, sz = res["accuracy"], res["timing"], res["sizes"]
    sets = list(acc)
    L: list[str] = []
    L.append("# lightmark vs dlib (68 points)\n")
    L.append(f"- Date: {res['date']}")
    m = res["machine"]
    L.append(f"- Machine: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
             f"{m['platform']}; Python {m['python']}")
    L.append(f"- Versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}")
    L.append(f"- Command: `{res['command']}`")
    mo = res["model"]
    trained = f", epoch {mo['epoch']}" if mo.get("epoch") is not None else ""
    L.append(f"- lightmark model: `{mo['source']}` ({mo.get('name') or 'unnamed'}{trained}; sha256 `{mo['sha256']}`; ONNX sha256 "
             f"`{mo['onnx_sha256']}`, {mo['onnx_source']}); input {mo['input_size']} px, `{mo['backbone']}` x{mo['width']} + `{mo['head']}` head "
             f"({mo.get('head_block') or 'deconv'} block), "
             f"{mo['params'] / 1e6:.2f} M parameters, {mo['macs'] / 1e6:.0f} M multiply-adds per face")
    L.append(f"- dlib: `{Path(res['dlib']['model']).name}` with `get_frontal_face_detector()` "
             f"(upsample {res['dlib']['upsample']} unless said otherwise)")
    ld = res["load"]
    L.append(f"- Load: {(res['load_note'] + ' ') if res['load_note'] else ''}During this run other processes used on average "
             f"{_f(ld.get('other_processes_cores_mean'))} of the {ld['cpus']} CPUs "
             f"(load average {ld['loadavg_start'][0]} at start, {ld['loadavg_end'][0]} at end); "
             f"the run took {ld['wall_s']:.0f} s.")
    L.append("")
    L.append("## Accuracy\n")
    L.append("NME in % (inter-ocular: outer eye corners 36/45; box: sqrt(w·h) of the GT landmark box), "
             "mean over faces with a prediction; FR@8% and AUC@8% are on the inter-ocular NME and count "
             "detector misses as failures. Same `lightmark.metrics` code for every row.\n")
    head = "| method | box |"
    sep = "|---|---|"
    for s in sets:
        nm = acc[s]["data"]["name"]
        head += f" {nm} NME io | {nm} NME box | {nm} FR@8 | {nm} AUC@8 | {nm} missed |"
        sep += "---:|---:|---:|---:|---:|"
    L += [head, sep]
    for k, (who, box) in LABELS.items():
        row = f"| {who} | {box} |"
        for s in sets:
            r = acc[s]["summary"][k]
            row += (f" {_f(r['nme_io'])} | {_f(r['nme_box'])} | {_f(r['fr_8_io'], 1)} | "
                    f"{_f(r['auc_8_io'], 3)} | {r['n_missed']}/{r['n']} |")
        L.append(row)
    L.append("")
    mp = res["dlib"]["box_mapping"]
    L.append("Which dlib figure is which: **own detector (HOG)** is dlib as people use it (its HOG box, "
             "the box its predictor was trained on); **GT landmark box, raw** hands dlib the tight box "
             "around the 68 labelled points, which differs in shape and position from the square HOG "
             "boxes it was trained on (those sit higher: brows in, chin cut), so it is a wrong input for dlib (shown because it is the same box lightmark gets in "
             "its GT rows); **GT landmark box mapped** turns that box into a HOG-like square of "
             f"{mp['side_ratio']:.3f} x its larger side, centre moved by ({mp['shift'][0]:+.3f}, "
             f"{mp['shift'][1]:+.3f}) x that side (medians over {mp['matched']} of {mp['faces']} HELEN "
             "train faces matched to a HOG detection): the fair GT-box comparison with lightmark's "
             "GT rows, free of detector misses.\n")
    for s in sets:
        info = acc[s]["data"]
        com = info.get("summary_on_faces_found_by_both") or {}
        if com:
            parts = ", ".join(f"{SHORT[k]} {_f(v['nme_io'])}" for k, v in com.items())
            L.append(f"- {info['name']}: on the {info['found_by_both_detectors']} of {info['n']} faces both "
                     f"detectors found, NME io: {parts}.")
        if info.get("mapped_gt_box_vs_hog_box_iou_p10_50_90"):
            q = info["mapped_gt_box_vs_hog_box_iou_p10_50_90"]
            L.append(f"- {info['name']}: IoU of the mapped GT box with dlib's own HOG box (faces HOG found), "
                     f"10/50/90%: {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}. dlib's cascade is sensitive to "
                     "its start box, so the mapped-box row is the better GT-box comparison but not "
                     "dlib's best case; the HOG row is, on the faces HOG finds.")
    for note in res["notes"]:
        L.append(f"- {note}")
    L.append("")
    L.append("## Speed and size (1 thread)\n")
    L.append(f"Median wall time per call over {t['images']} AFW images x {t['repeats']} repeats "
             f"(images {t['image_sizes_hw_min_max'][0]}..{t['image_sizes_hw_min_max'][1]} px, h x w), "
             "all methods interleaved call by call; p10–p90 in brackets; ratio = dlib time / this time "
             "(above 1: faster than dlib), against dlib on the mapped GT box (landmarks only), dlib "
             "with HOG upsample 0 (end to end: its faster setting) and dlib face after face (batch).\n")
    ss, ee, tp = t["single_face"], t["end_to_end"], t["throughput"]
    ref1 = ss["dlib/gt-mapped"]["median_ms"]
    ref2 = ee["dlib/e2e-up0"]["median_ms"]  # the faster dlib setting: the harder reference
    ref3 = tp["dlib/sequential"]["faces_per_s"]
    L.append("| method | landmarks only, box given (ms) | vs dlib | detector + landmarks (ms) | vs dlib | "
             f"batch of {t['batch']} faces (faces/s) | vs dlib | model on disk |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")

    def cell(d):
        return f"{d['median_ms']:.2f} [{d['p10_ms']:.2f}–{d['p90_ms']:.2f}]"

    rows = [
        ("lightmark (torch), GT landmark box", ss["lightmark-torch/gt"], ee["lightmark-torch/e2e"],
         tp["lightmark-torch/with-crops"], f"{_mb(sz['lightmark_safetensors'])} (.safetensors)"),
        ("lightmark (onnxruntime), GT landmark box", ss["lightmark-onnx/gt"], ee["lightmark-onnx/e2e"],
         tp["lightmark-onnx/with-crops"], f"{_mb(sz['lightmark_onnx'])} (.onnx)"),
        ("lightmark (onnxruntime), RFB-320 box: landmarks with refine (2 passes); end to end without", ss["lightmark-onnx/facebox"],
         ee["lightmark-onnx/e2e-norefine"], None, ""),
        ("dlib 68, mapped GT box; HOG upsample 0", ss["dlib/gt-mapped"], ee["dlib/e2e-up0"],
         tp["dlib/sequential"], f"{_mb(sz['dlib_shape_predictor'])} (.dat)"),
        ("dlib 68, HOG box; HOG upsample 1", ss["dlib/hogbox"], ee["dlib/e2e"], None, ""),
    ]
    for name, a, b, c, size in rows:
        e2e_cell = cell(b) if b else ""
        e2e_ratio = f"{ref2 / b['median_ms']:.2f}x" if b else ""
        tp_cell = f"{c['faces_per_s']:.0f}" if c else ""
        tp_ratio = f"{c['faces_per_s'] / ref3:.2f}x" if c else ""
        L.append(f"| {name} | {cell(a)} | {ref1 / a['median_ms']:.2f}x | {e2e_cell} | {e2e_ratio} | "
                 f"{tp_cell} | {tp_ratio} | {size} |")
    ref4 = ee["dlib/detector-only-up0"]["median_ms"]
    L.append(f"| detector only: RFB-320 (onnxruntime) | | | {cell(ee['lightmark/detector-only'])} | "
             f"{ref4 / ee['lightmark/detector-only']['median_ms']:.2f}x | | | "
             f"{_mb(sz['lightmark_detector'])} |")
    L.append(f"| detector only: dlib HOG, upsample 0 | | | {cell(ee['dlib/detector-only-up0'])} | 1.00x | | | "
             f"{_mb(sz.get('dlib_hog_detector'))} (serialised) |")
    L.append(f"| detector only: dlib HOG, upsample 1 | | | {cell(ee['dlib/detector-only'])} | "
             f"{ref4 / ee['dlib/detector-only']['median_ms']:.2f}x | | | |")
    L.append("")
    bb = t.get("single_face_blocked")
    if bb:
        refb = bb["dlib/gt-mapped"]["median_ms"]
        L.append("One library at a time (each round runs one method over all the images, then the "
                 "next; the order rotated each round): how a program that uses one of them sees it. "
                 "Interleaving call by call, as in the table above, also charges each method for "
                 "the caches the others evicted. Landmark rows are compared with dlib on the mapped "
                 "GT box, detector rows with dlib's HOG (upsample 0) + landmarks.\n")
        L.append("| method, one library at a time | ms | vs dlib |")
        L.append("|---|---:|---:|")
        for key, name in (("lightmark-onnx/gt", "lightmark (onnxruntime), landmarks from the GT landmark box"),
                          ("lightmark-onnx/model-only", "lightmark (onnxruntime), model only (ready crop)"),
                          ("lightmark-torch/gt", "lightmark (torch), landmarks from the GT landmark box"),
                          ("dlib/gt-mapped", "dlib 68, landmarks from the mapped GT box"),
                          ("dlib/hogbox", "dlib 68, landmarks from the HOG box")):
            L.append(f"| {name} | {cell(bb[key])} | {refb / bb[key]['median_ms']:.2f}x |")
        eb = t.get("end_to_end_blocked")
        if eb:
            refe = eb["dlib/e2e-up0"]["median_ms"]
            for key, name in (("lightmark-onnx/e2e", "lightmark (onnxruntime), detector + landmarks (`predict_all`, refine)"),
                              ("lightmark-onnx/e2e-norefine", "lightmark (onnxruntime), detector + landmarks, one pass"),
                              ("dlib/e2e-up0", "dlib, HOG (upsample 0) + landmarks"),
                              ("dlib/e2e", "dlib, HOG (upsample 1) + landmarks")):
                L.append(f"| {name} | {cell(eb[key])} | {refe / eb[key]['median_ms']:.2f}x |")
        L.append("")
    L.append(f"Model only (`predict_crops` on ready crops, no cropping): one crop torch "
             f"{ss['lightmark-torch/model-only']['median_ms']:.2f} ms, onnxruntime "
             f"{ss['lightmark-onnx/model-only']['median_ms']:.2f} ms; {t['batch']} crops: torch "
             f"{tp['lightmark-torch/model-only']['faces_per_s']:.0f} crops/s, onnxruntime "
             f"{tp['lightmark-onnx/model-only']['faces_per_s']:.0f} crops/s. The batch columns above "
             "include cropping each face from its image (lightmark) — dlib has no batch mode and runs "
             "face after face. \"Landmarks only\" includes lightmark's crop, model, decoding and "
             "mapping back; dlib's call includes its own feature extraction. CPU time per wall time "
             "of each method is in the JSON (`cpu_per_wall`; 1.0 = one thread running all the time).")
    L.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(L) + "\n")
    tmp.replace(path)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    return x


# ------------------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="lightmark model NAME.safetensors (+ NAME.json); default: the bundled "
                    f"{DEFAULT_MODEL.relative_to(REPO)}")
    ap.add_argument("--onnx", help="its ONNX export NAME.onnx (+ NAME.json with onnx_sha256); default: "
                    "export --model with lightmark.export.export_onnx into a temporary folder")
    ap.add_argument("--afw", default=str(DEFAULT_AFW), help="AFW (300W .pts) folder")
    ap.add_argument("--aflw", default=str(DEFAULT_AFLW), help="AFLW2000-3D folder (.jpg + .mat)")
    ap.add_argument("--helen", default=str(DEFAULT_HELEN),
                    help="training set for the GT box -> dlib box mapping fit (never the evaluation sets)")
    ap.add_argument("--dlib-model", help="shape_predictor_68_face_landmarks.dat (default: from face_recognition_models)")
    ap.add_argument("--repeats", type=int, default=3, help="timing passes over the timing images")
    ap.add_argument("--timing-images", type=int, default=100, help="AFW images used for timing")
    ap.add_argument("--load-note", default="",
                    help="what else ran on the machine (written into the report; the measured "
                         "load of other processes is always reported)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.timing_images < 1:
        raise BenchmarkError("--repeats and --timing-images must be >= 1")
    progress = not args.quiet
    meter = LoadMeter()

    model = Path(args.model) if args.model else DEFAULT_MODEL
    if not args.model and not model.is_file():
        raise BenchmarkError(f"{model}: the bundled model is not there yet; pass --model PATH "
                             "(e.g. runs/default/best.safetensors)")
    for p, what in ((args.afw, "--afw"), (args.aflw, "--aflw"), (args.helen, "--helen")):
        if not Path(p).exists():
            raise BenchmarkError(f"{what} {p}: no such folder")
    dat = dlib_model_path(args.dlib_model)

    try:
        import dlib
    except ImportError:
        raise BenchmarkError("dlib is not installed (pip install -r benchmarks/requirements.txt)") from None
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from lightmark import Landmarker, __version__
    from lightmark.core.files import sha256
    from lightmark.runtime.detector import DEFAULT_MODEL as DETECTOR_MODEL, FaceDetector

    with tempfile.TemporaryDirectory(prefix="lightmark-peers-") as tmp:
        tmp = Path(tmp)
        weights, meta = copy_model(model, tmp / "torch")
        if args.onnx:
            onnx_path, onnx_source = Path(args.onnx), "given with --onnx"
            if not onnx_path.is_file():
                raise BenchmarkError(f"{onnx_path}: no such ONNX file")
        else:
            from lightmark.export import export_onnx

            if progress:
                print("exporting ONNX", file=sys.stderr)
            onnx_path = export_onnx(weights, tmp / "onnx" / weights.with_suffix(".onnx").name)
            onnx_source = "exported by this run with lightmark.export.export_onnx"
        detector = FaceDetector(threads=1)
        lm_torch = Landmarker(weights, backend="torch", threads=1, detector=detector)
        lm_onnx = Landmarker(onnx_path, backend="onnx", threads=1, detector=detector)
        det = dlib.get_frontal_face_detector()
        sp = dlib.shape_predictor(str(dat))

        mapping = DlibBoxMapping.fit(Path(args.helen), det, DLIB_UPSAMPLE, progress)
        methods = Methods(lm_torch, lm_onnx, det, sp, mapping, DLIB_UPSAMPLE)

        accuracy = {}
        for key, path in (("afw", Path(args.afw)), ("aflw2000", Path(args.aflw))):
            summaries, info = run_accuracy(methods, path, progress)
            accuracy[key] = {"data": info, "summary": summaries}
        check = cross_check(lm_onnx, Path(args.afw))
        mine = accuracy["afw"]["summary"]["lightmark-onnx/gt"]
        if abs(check["nme_io"] - mine["nme_io"]) > 1e-3:
            print(f"warning: lightmark.evaluate gives NME_io {check['nme_io']:.4f} on AFW GT boxes, "
                  f"this script {mine['nme_io']:.4f}", file=sys.stderr)

        timing = run_timing(methods, Path(args.afw), args.timing_images, args.repeats, progress)

        hog_bytes = None
        try:
            hog_file = tmp / "hog.svm"
            det.save(str(hog_file))
            hog_bytes = hog_file.stat().st_size
        except Exception:  # older dlib builds cannot serialise the built-in detector
            pass
        sizes = {"lightmark_safetensors": weights.stat().st_size, "lightmark_onnx": Path(onnx_path).stat().st_size,
                 "lightmark_detector": DETECTOR_MODEL.stat().st_size, "dlib_shape_predictor": dat.stat().st_size,
                 "dlib_hog_detector": hog_bytes}
        onnx_meta = json.loads(Path(onnx_path).with_suffix(".json").read_text())
        model_info = {"source": str(model), "name": meta.get("name"), "epoch": meta.get("epoch"),
                      "sha256": sha256(weights), "onnx_sha256": sha256(onnx_path),
                      "onnx_source": onnx_source, "input_size": meta["model"].get("input_size"),
                      "head": meta["model"].get("head"),
                      "head_block": meta["model"].get("head_block", "deconv"), "backbone": meta["model"].get("backbone"),
                      "width": meta["model"].get("width"), "crop_scale": meta.get("crop_scale"),
                      "json_onnx_sha256_matches": onnx_meta.get("onnx_sha256") == sha256(onnx_path)}
        from lightmark.models import model_info as _model_info

        cost = _model_info(meta["model"], lm_torch.predictor.model)
        model_info.update({"params": cost["params"], "macs": cost["macs"], "float32_mb": cost["float32_mb"]})

    prog = Path(sys.argv[0])
    try:
        prog = prog.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    argv_list = sys.argv[1:] if argv is None else argv
    res = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {"lightmark": __version__, "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__, "dlib": dlib.__version__,
                     "numpy": np.__version__},
        "command": " ".join(shlex.quote(a) for a in ["python", str(prog), *argv_list]),
        "model": model_info,
        "dlib": {"model": str(dat), "upsample": DLIB_UPSAMPLE, "box_mapping": mapping.as_dict()},
        "load_note": args.load_note,
        "load": meter.read(),
        "accuracy": accuracy,
        "cross_check_lightmark_evaluate_afw_gt": check,
        "timing": timing,
        "sizes": sizes,
        "notes": [
            "dlib's 68-point model was trained on iBUG 300-W, whose training part includes AFW and HELEN "
            "train: its AFW rows are on images it was trained on (an optimistic figure for dlib). "
            "lightmark never trains on AFW (its validation set); some of lightmark's training labels "
            "(utkface_dlib68) are dlib's own predictions.",
            "AFLW2000-3D labels are projected 3D points (the jaw follows the 3D contour, not the "
            "visible one), a different markup convention from 300W that penalises both methods; the "
            f"sample has only {accuracy['aflw2000']['data']['n']} images: anecdotal.",
            "Detections are matched to the labelled face by IoU >= 0.3 with its landmark box; a miss "
            "gets no prediction (left out of the mean NME, a failure in FR and AUC).",
            "lightmark's detector rows use the API default: the first answer's own landmark box is "
            "cropped again and the model runs a second time (refine); 'no refine' is one pass.",
        ],
    }
    out = Path(args.out)
    write_markdown(res, out)
    jp = out.with_suffix(".json")
    jtmp = jp.with_suffix(".json.tmp")
    jtmp.write_text(json.dumps(_json_safe(res), indent=2) + "\n")
    jtmp.replace(jp)
    print(out.read_text())
    print(f"wrote {out} and {jp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
