"""Evaluation: run a predictor over a labelled data set and write a report (JSON, CED plot, file list).

The predictor is anything implementing the Predictor protocol of ``docs/ARCHITECTURE.md``
(``input_size``, ``crop_scale``, ``meta``, ``predict_crops``), so the torch and ONNX backends are
measured by the same code. No torch is imported here.

Face boxes (``box_source``):

* ``"gt"``: the ground-truth landmark box, cropped at ``predictor.crop_scale`` (the training
  crop). This isolates the landmark model from the detector.
* ``"detector"``: ``detector.detect(image)`` gives ``(N, 5)`` x1, y1, x2, y2, score; the detection
  overlapping the ground-truth landmark box most (IoU >= ``min_iou``) is the face. Its crop uses
  ``detector.box_mapping.crop_for(predictor.crop_scale)``: the detector's
  mapping gives the 1.25x landmark crop, rescaled for models trained at another crop scale.
  **A miss** (no detection, or none with IoU >= ``min_iou``) gets no prediction: its NME is
  infinite, so it is a failure at every threshold and adds 0 to the AUC; it is left out of the mean
  NME (which then describes the faces found), counted in ``summary.n_missed``, and written in the
  per-image list with ``"missed": true`` and null errors.
* ``"predict_all"``: the whole photo pipeline, as users run it: ``detector`` is a
  :class:`~lightmark.api.Landmarker` (detector, mapped crop, refinement) whose
  ``predict_all(image, convention=...)`` faces are matched to the label by the same IoU rule;
  misses count as above. ``predictor`` is then only asked which conventions it has.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from lightmark.core import files, geometry, metrics
from lightmark.core.geometry import match_detection  # one matching rule for fitting and evaluation
from lightmark.core.types import Detector, Predictor
from lightmark.core.errors import ConventionError, DataError, EvaluationError

PathLike = Union[str, Path]
#: "gt": the tight box of the labels; "detector": the detector's box through its mapping, one pass;
#: "predict_all": the whole pipeline of a Landmarker (detector, mapping, refinement).
BOX_SOURCES = ("gt", "detector", "predict_all")

#: The CED plot covers NME up to this fraction.
PLOT_THRESHOLD = 0.10




def _model_info(predictor: Any) -> dict:
    meta = getattr(predictor, "meta", None) or {}
    path = getattr(predictor, "onnx_path", None) or getattr(predictor, "path", None)
    name = meta.get("name") or (Path(path).stem if path else type(predictor).__name__)
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    return {
        "name": name,
        # A mirror-averaging wrapper (Landmarker(flip=True)) is reported as the model it wraps.
        "backend": type(getattr(predictor, "inner", predictor)).__name__,
        "flip": hasattr(predictor, "inner"),
        "sha256": meta.get("sha256"),
        "onnx_sha256": meta.get("onnx_sha256"),
        "head": model.get("head"),
        "input_size": int(predictor.input_size),
        "crop_scale": float(predictor.crop_scale),
        "decoder": (meta.get("codec") or {}).get("decoder") if isinstance(meta.get("codec"), dict) else None,
    }


def _progress(iterable: Sequence, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, file=sys.stderr, leave=False)


def evaluate(predictor: Predictor, dataset: Any, split: str = "all", box_source: str = "gt",
             detector: Optional[Detector] = None, seed: int = 0, batch_size: int = 32,
             progress: bool = True, min_iou: float = 0.3, val_fraction: float = 0.1,
             store_points: bool = False, convention: Optional[str] = None) -> dict:
    """Run ``predictor`` on the ``split`` of ``dataset`` and return the report dict.

    ``dataset``: a :class:`lightmark.data.readers.LandmarkDataset` or a path for
    :func:`~lightmark.data.readers.open_dataset`. ``split``: ``"all"``, or the seeded ``"val"`` /
    ``"test"`` part (:func:`lightmark.data.protocol.select_split` with ``seed``, ``val_fraction``).
    ``store_points`` adds each image's predicted points (image pixels) to the per-image list.
    ``convention``: which of the model's landmark sets to score (``"2d"`` / ``"3d"``); ``None``:
    the data set kind's (:data:`~lightmark.data.readers.KIND_CONVENTIONS`) when the model has it,
    else the model's first. The report's ``convention`` says which was scored.

    The report holds ``summary`` (:func:`lightmark.metrics.summarize`: NME/FR in percent, AUC in
    [0, 1], yaw bins when every record has ``meta['yaw_deg']``), ``per_image`` (file, nme_box,
    nme_io as fractions, missed, yaw), ``model`` (name, sha256, ...), ``data`` (path, kind, split,
    seed, files), ``box_source`` and the detector's mapping.
    """
    from lightmark.data.protocol import select_split
    from lightmark.data.readers import LandmarkDataset, open_dataset, require_68

    if box_source not in BOX_SOURCES:
        raise EvaluationError(f"unknown box_source {box_source!r}; expected one of {BOX_SOURCES}")
    if box_source == "predict_all" and not callable(getattr(detector, "predict_all", None)):
        raise EvaluationError("box_source='predict_all' needs a Landmarker as the detector")
    if box_source == "detector":
        if detector is None or not callable(getattr(detector, "detect", None)):
            raise EvaluationError("box_source='detector' needs a detector with a detect(image) method")
        if not hasattr(detector, "box_mapping"):
            raise EvaluationError("box_source='detector': the detector has no 'box_mapping' "
                                  "(its box -> crop mapping)")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(dataset, LandmarkDataset):
        dataset = open_dataset(dataset)
    require_68(dataset, "evaluate")
    ds = select_split(dataset, split, seed, val_fraction)
    if len(ds) == 0:
        raise EvaluationError(f"{dataset.name}: split {split!r} (seed {seed}) is empty")

    model_conventions = list(getattr(predictor, "conventions", None) or ["2d"])
    if convention is None:
        convention = dataset.convention if dataset.convention in model_conventions else model_conventions[0]
    elif convention not in model_conventions:
        raise ConventionError(f"evaluate: the model has no {convention!r} landmarks (its "
                              f"conventions: {', '.join(model_conventions)})")
    # Predictors from outside lightmark may not know conventions: only ours are asked for one.
    convention_kw = {"convention": convention} if hasattr(predictor, "conventions") else {}
    size = int(predictor.input_size)
    n = len(ds)
    gt = np.zeros((n, geometry.NUM_POINTS, 2), np.float64)
    pred = np.full((n, geometry.NUM_POINTS, 2), np.nan, np.float64)  # NaN rows = missed faces
    yaw: list[Optional[float]] = []
    det_boxes: list[Optional[list[float]]] = []
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # (index, crop, matrix)

    def flush() -> None:
        if not pending:
            return
        crops = np.stack([c for _, c, _ in pending])
        mats = np.stack([m for _, _, m in pending])
        out = np.asarray(predictor.predict_crops(crops, **convention_kw), dtype=np.float64)
        if out.shape != (len(crops), geometry.NUM_POINTS, 2):
            raise EvaluationError(f"predictor {type(predictor).__name__} returned shape {out.shape} "
                                  f"for {len(crops)} crops; expected ({len(crops)}, 68, 2)")
        pts = geometry.points_to_image(out, mats)
        for (i, _, _), p in zip(pending, pts):
            pred[i] = p
        pending.clear()

    if box_source == "detector":
        # The detector's fitted mapping, for this model's own crop scale (as the API does).
        scale, shift = detector.box_mapping.crop_for(predictor.crop_scale)
    for i in _progress(range(n), progress, f"evaluate {ds.name}/{split}"):
        sample = ds[i]  # DataError (naming the file) for an unreadable image: never skipped silently
        gt[i] = sample.points
        y = sample.meta.get("yaw_deg")
        yaw.append(float(y) if y is not None else None)
        lm_box = geometry.landmark_box(sample.points)
        if box_source == "gt":
            crops, mats = geometry.crops_from_boxes(sample.image, lm_box[None], size,
                                                    scale=float(predictor.crop_scale))
            det_boxes.append(None)
        elif box_source == "predict_all":
            faces = detector.predict_all(sample.image, convention=convention)
            rows = np.array([np.r_[f.box, f.score] for f in faces], np.float64).reshape(-1, 5)
            d = match_detection(rows, lm_box, min_iou)
            det_boxes.append(None if d is None else [round(float(v), 2) for v in d])
            if d is not None:
                pred[i] = faces[int(np.flatnonzero((rows == d).all(axis=1))[0])].points
            continue
        else:
            d = match_detection(detector.detect(sample.image), lm_box, min_iou)
            det_boxes.append(None if d is None else [round(float(v), 2) for v in d])
            if d is None:
                continue  # a miss: pred stays NaN
            crops, mats = geometry.crops_from_boxes(sample.image, d[None, :4], size, scale=scale,
                                                    shift=shift)
        pending.append((i, crops[0], mats[0]))
        if len(pending) >= batch_size:
            flush()
    flush()

    have_yaw = all(v is not None for v in yaw)
    summary = metrics.summarize(pred, gt, np.asarray(yaw, float) if have_yaw else None)
    e_box, e_io = metrics.nme_box(pred, gt), metrics.nme_io(pred, gt)
    names = ds.relative_names()
    per_image = []
    for i in range(n):
        missed = not np.isfinite(e_box[i])
        row: dict[str, Any] = {
            "file": names[i],
            "nme_box": None if missed else round(float(e_box[i]), 6),
            "nme_io": None if missed else round(float(e_io[i]), 6),
            "missed": bool(missed),
        }
        if yaw[i] is not None:
            row["yaw_deg"] = round(yaw[i], 3)
        if box_source != "gt":
            row["detection"] = det_boxes[i]
        if store_points and not missed:
            row["points"] = np.round(pred[i], 2).tolist()
        per_image.append(row)

    report: dict[str, Any] = {
        # the headline numbers (percent) at the top level, for scripts that read only these
        "n": summary["n"],
        "nme_box": summary["nme_box"],
        "nme_io": summary["nme_io"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": _model_info(predictor),
        "data": {
            "path": str(dataset.root) if dataset.root is not None else None,
            "name": dataset.name,
            "kind": dataset.kind,
            "split": split,
            "seed": seed,
            "val_fraction": val_fraction if split != "all" else None,
            "n": n,
            "files": names,
        },
        "box_source": box_source,
        "convention": convention,
        "summary": summary,
        "per_image": per_image,
    }
    if box_source == "detector":
        report["detector"] = {
            "type": type(detector).__name__,
            "min_iou": min_iou,
            "crop_scale": scale,
            "crop_shift": list(shift),
            "model": str(getattr(detector, "model_path", "")) or None,
            "score_threshold": getattr(detector, "score_threshold", None),
        }
    return report


def mean_crop_residual(predictor: Predictor, dataset: Any, convention: str = "2d",
                       batch_size: int = 32, skip_bad: bool = False) -> tuple[np.ndarray, int]:
    """Mean of (label - prediction) in crop pixels over every point of every face of ``dataset``,
    each cropped from its ground-truth landmark box (the training crop): ``(float64 (2,), faces)``.

    What ``codec.offsets`` would have to add for the predictions to be right on average
    (``scripts/calibrate_offsets.py``). The predictor's own offsets, if any, are already in its
    answers, so the result is what is still missing. ``skip_bad``: leave out the faces whose
    image or label the reader refuses (else its error, naming the file, ends the run).
    """
    from lightmark.data.readers import LandmarkDataset, open_dataset, require_68

    if not isinstance(dataset, LandmarkDataset):
        dataset = open_dataset(dataset)
    require_68(dataset, "calibrate")
    if convention not in list(getattr(predictor, "conventions", None) or ["2d"]):
        raise ConventionError(f"calibrate: the model has no {convention!r} landmarks")
    if len(dataset) == 0:
        raise EvaluationError(f"{dataset.name}: no faces to calibrate on")
    size, total, n = int(predictor.input_size), np.zeros(2), 0
    for start in range(0, len(dataset), batch_size):
        crops, labels = [], []
        for i in range(start, min(start + batch_size, len(dataset))):
            try:
                sample = dataset[i]
            except DataError:
                if not skip_bad:
                    raise
                continue
            c, m = geometry.crops_from_boxes(sample.image, geometry.landmark_box(sample.points)[None],
                                             size, scale=float(predictor.crop_scale))
            crops.append(c[0])
            labels.append(geometry.apply_affine(sample.points, m[0]))
        if not crops:
            continue
        pred = np.asarray(predictor.predict_crops(np.stack(crops), convention=convention), np.float64)
        total += (np.stack(labels) - pred).sum(axis=(0, 1))
        n += len(crops)
    if n == 0:
        raise EvaluationError(f"{dataset.name}: every face was refused by the reader")
    return total / (n * geometry.NUM_POINTS), n


def _json_safe(x: Any) -> Any:
    """NaN/inf -> null (strict JSON), numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def write_report(report: dict, json_path: PathLike, plot_path: Optional[PathLike] = None,
                 file_lists_dir: Optional[PathLike] = None) -> dict[str, Path]:
    """Write the report JSON atomically, optionally its CED plot, and the split's file list.

    The file list (the evaluated images, relative names, one a line; see
    :func:`lightmark.data.protocol.write_file_list`) goes to ``file_lists_dir`` or, by default,
    beside the JSON as ``<json stem>.<split>.txt``; the JSON records its name under
    ``data.file_list``. The plot shows the CED of both NMEs up to 10%. Returns the paths written.
    """
    from lightmark.data.protocol import write_file_list

    jp = Path(json_path)
    data = report.get("data", {})
    names = data.get("files")
    if names is None:
        names = [row["file"] for row in report.get("per_image", [])]
    list_dir = Path(file_lists_dir) if file_lists_dir is not None else jp.parent
    list_path = list_dir / f"{jp.stem}.{data.get('split', 'all')}.txt"
    write_file_list(list_path, names)
    out = dict(report)
    out["data"] = dict(data, file_list=str(list_path.name if list_dir == jp.parent else list_path))
    written = {"file_list": list_path}
    if plot_path is not None:
        rows = report.get("per_image", [])
        inf = float("inf")
        curves = {
            "NME (landmark box)": [inf if r["nme_box"] is None else r["nme_box"] for r in rows],
            "NME (inter-ocular)": [inf if r["nme_io"] is None else r["nme_io"] for r in rows],
        }
        model = report.get("model", {}).get("name", "model")
        title = f"{model} on {data.get('name')} ({data.get('split')}, {report.get('box_source')} boxes)"
        written["plot"] = metrics.ced_plot(curves, plot_path, PLOT_THRESHOLD, title=title)
        out["plot"] = str(Path(plot_path).name if Path(plot_path).parent == jp.parent else plot_path)
    try:
        text = json.dumps(_json_safe(out), indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise EvaluationError(f"{jp}: report is not JSON-serialisable ({e})") from None
    files.write_text(jp, text + "\n")
    written["json"] = jp
    return written
