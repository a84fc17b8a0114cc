"""Accuracy of every method on one labelled data set, with the same ``lightmark.core.metrics`` code.

A face a method misses (its detector found nothing that matches the labelled face) gets NaN points:
left out of the mean NME, a failure in FR and 0 in the AUC. Where the data set gives each face's
yaw (AFLW2000-3D), box-NME is also reported by |yaw| bin, and each detector's recall (the share of
faces it found) by the same bins.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from common import progress
from dlib_peer import DlibPeer
from methods import OWN_DETECTOR, SHORT, Method


def found_by_yaw(found: np.ndarray, yaw_deg: np.ndarray) -> dict[str, Any]:
    """Share of faces found per |yaw| bin (the bins of ``metrics.yaw_bins``: the last takes > 90)
    and overall; ``n_*`` the faces per bin."""
    from lightmark.core.metrics import YAW_BINS

    yaw = np.abs(np.asarray(yaw_deg, np.float64))
    out: dict[str, Any] = {}
    for i, (lo, hi) in enumerate(YAW_BINS):
        sel = (yaw >= lo) & ((yaw < hi) | (i == len(YAW_BINS) - 1))
        key = f"yaw_{lo:g}_{hi:g}"
        out[key] = float(found[sel].mean()) if sel.any() else float("nan")
        out[f"n_{key}"] = int(sel.sum())
    out["all"] = float(found.mean()) if found.size else float("nan")
    return out


def predict_all_methods(methods: list[Method], dlib: DlibPeer, ds: Any, show: bool
                        ) -> tuple[np.ndarray, dict[str, np.ndarray], Optional[np.ndarray], list[float]]:
    """Labels (N, 68, 2), each method's points (NaN for a miss), the yaw angles (None where the
    data has none) and the IoUs of dlib's mapped GT box with its own HOG box."""
    from lightmark.core import geometry

    n = len(ds)
    gt = np.zeros((n, 68, 2), np.float64)
    preds = {m.key: np.full((n, 68, 2), np.nan) for m in methods}
    yaw = np.full(n, np.nan)
    map_iou = []
    for i in progress(range(n), show, f"accuracy {ds.name}"):
        s = ds[i]
        gt[i] = s.points
        yaw[i] = s.meta.get("yaw_deg", np.nan)
        lb = geometry.landmark_box(s.points)
        dlib.last_hog_box = None
        for m in methods:
            p = m.run(s.image, lb)
            if p is not None:
                preds[m.key][i] = p
        if dlib.last_hog_box is not None:  # how close the mapped GT box comes to dlib's own box
            map_iou.append(float(geometry.box_iou(dlib.mapping(lb), dlib.last_hog_box)[0, 0]))
    return gt, preds, (yaw if np.isfinite(yaw).all() else None), map_iou


def run_accuracy(methods: list[Method], dlib: DlibPeer, dataset_path: Path, show: bool,
                 limit: Optional[int] = None) -> tuple[dict, dict]:
    """(summary per method, facts about the data set and the faces every detector found)."""
    from lightmark.core import metrics
    from lightmark.data.readers import open_dataset

    ds = open_dataset(dataset_path, limit=limit)
    gt, preds, yaw, map_iou = predict_all_methods(methods, dlib, ds, show)
    summaries = {k: metrics.summarize(p, gt, yaw) for k, p in preds.items()}
    found = {k: np.isfinite(p[:, 0, 0]) for k, p in preds.items()}
    # The faces every own-detector method found: the methods end to end on the same faces.
    every = np.logical_and.reduce([found[k] for k in OWN_DETECTOR])
    common = {k: metrics.summarize(preds[k][every], gt[every], None if yaw is None else yaw[every])
              for k in SHORT} if every.any() else {}
    info: dict[str, Any] = {
        "path": str(dataset_path), "name": ds.name, "kind": ds.kind, "n": len(ds),
        "limit": limit, "has_yaw": yaw is not None,
        "mapped_gt_box_vs_hog_box_iou_p10_50_90": [round(float(v), 3) for v in
                                                   np.percentile(map_iou, [10, 50, 90])] if map_iou else None,
        "found_by_every_detector": int(every.sum()), "summary_on_faces_found_by_every_detector": common,
    }
    if yaw is not None:
        info["found_by_yaw"] = {k: found_by_yaw(f, yaw) for k, f in found.items()}
    return summaries, info


def cross_check(lm_onnx: Any, dataset_path: Path, limit: Optional[int] = None) -> dict:
    """``lightmark.evaluate`` on the same predictor and GT boxes: must give the same NME as here."""
    from lightmark.data.readers import open_dataset
    from lightmark.evaluate import evaluate

    ds = open_dataset(dataset_path, limit=limit)
    rep = evaluate(lm_onnx.predictor, ds, "all", "gt", progress=False)
    return {k: rep["summary"][k] for k in ("n", "nme_io", "nme_box")}
