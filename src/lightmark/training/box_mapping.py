"""Fitting the detector-box -> training-crop mapping (:class:`lightmark.core.boxmap.BoxMapping`).

For each labelled face of some training sets, the detection that overlaps its landmark box best
gives one measurement of the centre offset and side ratio between the two boxes; their medians
are the mapping. Run by `lightmark fit-box-mapping`; use training data only, never AFW.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from lightmark.core.boxmap import DEFAULT_MAPPING, BoxMapping
from lightmark.core.errors import BoxMappingError
from lightmark.core.files import write_text
from lightmark.core.geometry import LANDMARK_CROP_SCALE, box_iou, landmark_box, match_detection
from lightmark.data.readers import open_dataset, require_68
from lightmark.runtime.detector import FaceDetector

PathLike = Union[str, Path]


def _samples(paths: Sequence[PathLike], limit: Optional[int], seed: int) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """(source, image, points) from each data set, at most ``limit`` per set (seeded choice)."""
    for path in paths:
        ds = require_68(open_dataset(path), "fit-box-mapping")
        idx = np.arange(len(ds))
        if limit is not None and len(idx) > limit:
            idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
        for i in idx:
            s = ds[int(i)]
            yield str(path), s.image, np.asarray(s.points, dtype=np.float64)


def fit_box_mapping(dataset_paths: Sequence[PathLike], limit_per_dataset: Optional[int] = 400,
                    detector: Optional[FaceDetector] = None, min_iou: float = 0.3,
                    seed: int = 0) -> dict[str, Any]:
    """Fit ``crop_scale`` and ``crop_shift`` so detector boxes give the training crop.

    For each labelled face: the detection best overlapping its landmark box L (IoU >= ``min_iou``)
    gives D. Per face we measure the centre offset ``(c_L - c_D) / (w_D, h_D)`` and the side ratio
    ``max(w_L, h_L) / max(w_D, h_D)``; medians are robust to the odd mismatched detection. Then
    ``crop_scale = 1.25 * side_ratio`` and ``crop_shift = offset``. Use training data only (never
    the validation set, AFW). Returns the mapping plus fit statistics (spread, coverage).
    """
    det = detector or FaceDetector(box_mapping=BoxMapping(side_ratio=1.0, crop_shift=(0.0, 0.0)))
    per_source: dict[str, dict[str, int]] = {}
    offs, ratios, ious, inside, aspect = [], [], [], [], []
    for source, image, pts in _samples(dataset_paths, limit_per_dataset, seed):
        stats = per_source.setdefault(source, {"faces": 0, "matched": 0})
        stats["faces"] += 1
        lm = landmark_box(pts)
        d = match_detection(det.detect(image), lm, min_iou)
        if d is None:
            continue
        stats["matched"] += 1
        dw, dh = d[2] - d[0], d[3] - d[1]
        lw, lh = lm[2] - lm[0], lm[3] - lm[1]
        offs.append([((lm[0] + lm[2]) - (d[0] + d[2])) / 2 / dw, ((lm[1] + lm[3]) - (d[1] + d[3])) / 2 / dh])
        ratios.append(max(lw, lh) / max(dw, dh))
        ious.append(box_iou(lm, d[:4])[0, 0])
        inside.append(np.mean((pts[:, 0] >= d[0]) & (pts[:, 0] <= d[2]) & (pts[:, 1] >= d[1]) & (pts[:, 1] <= d[3])))
        aspect.append(dh / dw)
    n = len(ratios)
    if n < 10:
        raise BoxMappingError(f"fit_box_mapping: only {n} faces matched a detection in {list(map(str, dataset_paths))}; "
                         "need at least 10")
    offs_a, ratios_a = np.asarray(offs), np.asarray(ratios)
    shift = np.median(offs_a, axis=0)
    ratio = float(np.median(ratios_a))

    # How good is the fitted crop? Centre error and side error relative to the ideal crop side.
    centre_err = np.hypot(offs_a[:, 0] - shift[0], offs_a[:, 1] - shift[1])
    q = lambda a: [round(float(v), 4) for v in np.percentile(a, [10, 25, 50, 75, 90])]  # noqa: E731
    faces = sum(v["faces"] for v in per_source.values())
    return {
        "crop_scale": round(LANDMARK_CROP_SCALE * ratio, 5),
        "crop_shift": [round(float(shift[0]), 5), round(float(shift[1]), 5)],
        "side_ratio": round(ratio, 5),
        "landmark_crop_scale": LANDMARK_CROP_SCALE,
        "fitted_on": {
            "data": {k: v for k, v in per_source.items()},
            "n": n,
            "faces": faces,
            "detected_fraction": round(n / faces, 4),
            "limit_per_dataset": limit_per_dataset,
            "seed": seed,
            "min_iou": min_iou,
            "detector": det.model_path.name,
            "score_threshold": det.score_threshold,
            "date": _dt.date.today().isoformat(),
        },
        "stats": {
            "shift_x_percentiles_10_25_50_75_90": q(offs_a[:, 0]),
            "shift_y_percentiles_10_25_50_75_90": q(offs_a[:, 1]),
            "side_ratio_percentiles_10_25_50_75_90": q(ratios_a),
            "centre_error_over_detector_side_percentiles": q(centre_err),
            "iou_landmark_box_vs_detector_box_median": round(float(np.median(ious)), 4),
            "landmarks_inside_detector_box_mean": round(float(np.mean(inside)), 4),
            "detector_box_aspect_h_over_w_median": round(float(np.median(aspect)), 4),
        },
    }


def write_box_mapping(mapping: dict[str, Any], path: PathLike = DEFAULT_MAPPING) -> None:
    write_text(path, json.dumps(mapping, indent=2) + "\n")
