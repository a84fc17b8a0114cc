"""The bundled face detector: Ultra-Light-Fast-Generic-Face-Detector-1MB (RFB-320), run by onnxruntime.

No torch here. ``FaceDetector.detect`` returns boxes in image pixels; ``crop_scale`` and
``crop_shift`` turn such a box into the crop the landmark model was trained on (a square of
1.25 x the larger side of the *landmark* box). A detector box is not a landmark box: it is
typically larger, reaching above the brows, and its centre sits a little higher than the landmarks'
centre. The two constants were fitted on training data by :func:`fit_box_mapping` and are stored in
``assets/face_detector/box_mapping.json``.

Run ``python -m lightmark.runtime.detector fit DATASET ...`` to refit them.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from ..geometry import LANDMARK_CROP_SCALE, landmark_box
from ..imaging import ImageLike, as_image

PathLike = Union[str, Path]

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "face_detector"
DEFAULT_MODEL = ASSET_DIR / "version-RFB-320.onnx"
DEFAULT_MAPPING = ASSET_DIR / "box_mapping.json"

# The detector's own normalisation (README of the shared models): (pixel - 127) / 128.
_MEAN = 127.0
_SCALE = 1.0 / 128.0


class DetectorError(ValueError):
    """A detector model or box-mapping file that cannot be used; the message names the file."""


def make_session(path: PathLike, threads: int = 1, what: str = "ONNX model"):
    """An onnxruntime CPU session with quiet logging and a fixed number of threads.

    Shared by the detector and the landmark runtime. The detector files list their initializers
    among the graph inputs, which makes onnxruntime warn on every load; severity 3 (errors only)
    silences that without hiding real failures, which raise.
    """
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise DetectorError(f"{p}: no such {what} file")
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for broken files
        raise DetectorError(f"{p}: cannot load {what} ({type(e).__name__}: {e})") from None


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3,
        top_k: Optional[int] = None) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    ``boxes`` (N, 4) x1, y1, x2, y2; a box is dropped when its IoU with a kept, higher-scoring box
    exceeds ``iou_threshold``. ``top_k`` caps the number kept.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"nms: {len(b)} boxes but {len(s)} scores")
    # Stable sort so that equal scores keep their input order (reproducible results).
    order = np.argsort(-s, kind="stable")
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if top_k is not None and len(keep) >= top_k:
            break
        rest = order[1:]
        xx1 = np.maximum(b[i, 0], b[rest, 0])
        yy1 = np.maximum(b[i, 1], b[rest, 1])
        xx2 = np.minimum(b[i, 2], b[rest, 2])
        yy2 = np.minimum(b[i, 3], b[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = area[i] + area[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of two sets of x1, y1, x2, y2 boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def load_box_mapping(path: PathLike = DEFAULT_MAPPING) -> dict[str, Any]:
    """Read a box-mapping JSON (``crop_scale``, ``crop_shift`` and how they were fitted)."""
    p = Path(path)
    if not p.is_file():
        raise DetectorError(f"{p}: no such box-mapping file (fit one with "
                            f"`python -m lightmark.runtime.detector fit`)")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DetectorError(f"{p}: not a valid box-mapping file ({type(e).__name__}: {e})") from None
    return checked_box_mapping(data, str(p))


def checked_box_mapping(data: Any, where: str = "box mapping") -> dict[str, Any]:
    """A copy of a box mapping (a dict as in the JSON files) with numbers checked and
    ``side_ratio`` filled in; :class:`DetectorError` naming ``where`` otherwise."""
    try:
        out = dict(data)
        scale = float(out["crop_scale"])
        shift = tuple(float(v) for v in out["crop_shift"])
    except (ValueError, KeyError, TypeError) as e:
        raise DetectorError(f"{where}: not a valid box mapping ({type(e).__name__}: {e})") from None
    if len(shift) != 2 or not (np.isfinite(scale) and scale > 0) or not np.all(np.isfinite(shift)):
        raise DetectorError(f"{where}: crop_scale must be positive and crop_shift two finite numbers")
    out["crop_scale"] = scale
    out["crop_shift"] = shift
    # landmark-box side / detector-box side; older files hold only the 1.25x crop scale
    out["side_ratio"] = float(out.get("side_ratio", scale / LANDMARK_CROP_SCALE))
    return out


class FaceDetector:
    """Ultra-Light face detector on onnxruntime (CPU, no torch).

    ``detect(image)`` -> float32 ``(N, 5)``: x1, y1, x2, y2, score in pixels of ``image``, best
    first. Boxes are not clipped to the image: a face at the border keeps its true shape, which the
    crop mapping relies on.

    ``crop_scale`` / ``crop_shift``: pass a detector box to
    ``geometry.crop_matrix_from_box(box, S, scale=crop_scale, shift=crop_shift)`` to get the
    training crop (1.25 x the landmark box, centred on it). ``side_ratio`` is the fitted
    landmark-box side / detector-box side, for models trained with another crop scale.
    """

    def __init__(self, model_path: Optional[PathLike] = None, score_threshold: float = 0.7,
                 nms_iou: float = 0.3, top_k: int = 200, threads: int = 1,
                 box_mapping: Union[PathLike, dict, None] = None) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.top_k = int(top_k)
        self._session = make_session(self.model_path, threads, "face detector")
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        shape = inp.shape  # [1, 3, H, W]; both published variants have fixed sizes
        if len(shape) != 4 or not all(isinstance(v, int) for v in shape[2:]):
            raise DetectorError(f"{self.model_path}: expected a fixed (1, 3, H, W) input, got {shape}")
        self.input_hw = (int(shape[2]), int(shape[3]))
        outs = {o.name for o in self._session.get_outputs()}
        if not {"scores", "boxes"} <= outs:
            raise DetectorError(f"{self.model_path}: expected outputs 'scores' and 'boxes', got {sorted(outs)}")

        if isinstance(box_mapping, dict):
            mapping = checked_box_mapping(box_mapping, "FaceDetector(box_mapping=...)")
        else:
            mapping = load_box_mapping(box_mapping if box_mapping is not None else DEFAULT_MAPPING)
        self.box_mapping: dict[str, Any] = mapping
        self.crop_scale: float = mapping["crop_scale"]
        self.crop_shift: tuple[float, float] = mapping["crop_shift"]
        self.side_ratio: float = mapping["side_ratio"]

    def canvas_size(self, image: np.ndarray) -> tuple[int, int]:
        """(width, height) of the image padded right/bottom to the detector's aspect ratio.

        Letterboxing instead of stretching keeps faces their true shape in wide group photos and
        tall portraits alike, so one box mapping fits every image shape.
        """
        h_in, w_in = self.input_hw
        h, w = image.shape[:2]
        if w * h_in >= h * w_in:
            return w, int(np.ceil(w * h_in / w_in))
        return int(np.ceil(h * w_in / h_in)), h

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> (1, 3, H_in, W_in) float32, letterboxed with the normalisation's zero."""
        import cv2

        h_in, w_in = self.input_hw
        cw, ch = self.canvas_size(image)
        h, w = image.shape[:2]
        scale = min(w_in / cw, h_in / ch)
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        x = np.zeros((h_in, w_in, 3), np.float32)  # 0 after normalisation = pixel value 127
        x[: small.shape[0], : small.shape[1]] = (small.astype(np.float32) - _MEAN) * _SCALE
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def detect(self, image: ImageLike) -> np.ndarray:
        """Faces in ``image`` (array or path): float32 (N, 5) x1, y1, x2, y2, score, best first."""
        img = as_image(image)
        scores, boxes = self._session.run(["scores", "boxes"], {self._input_name: self.preprocess(img)})
        face = scores[0, :, 1]
        sel = face > self.score_threshold
        if not np.any(sel):
            return np.zeros((0, 5), np.float32)
        cw, ch = self.canvas_size(img)
        b = boxes[0, sel].astype(np.float64) * np.array([cw, ch] * 2)
        s = face[sel].astype(np.float64)
        # Degenerate boxes (zero width or height) cannot be cropped; drop them before NMS.
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s = b[ok], s[ok]
        keep = nms(b, s, self.nms_iou, self.top_k)
        return np.hstack([b[keep], s[keep, None]]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Fitting the detector-box -> landmark-crop mapping


def match_detection(dets: np.ndarray, lm_box: np.ndarray, min_iou: float) -> Optional[np.ndarray]:
    """The detection that belongs to the labelled face: highest IoU with its landmark box."""
    if len(dets) == 0:
        return None
    iou = box_iou(lm_box, dets[:, :4])[0]
    j = int(np.argmax(iou))
    return dets[j] if iou[j] >= min_iou else None


def _samples(paths: Sequence[PathLike], limit: Optional[int], seed: int) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """(source, image, points) from each data set, at most ``limit`` per set (seeded choice)."""
    from ..data.readers import open_dataset  # only the fitting step reads data sets

    for path in paths:
        ds = open_dataset(path)
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
    det = detector or FaceDetector(box_mapping={"crop_scale": LANDMARK_CROP_SCALE, "crop_shift": (0, 0)})
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
        raise ValueError(f"fit_box_mapping: only {n} faces matched a detection in {list(map(str, dataset_paths))}; "
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
    from ..files import write_text

    write_text(path, json.dumps(mapping, indent=2) + "\n")


def _main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lightmark.runtime.detector")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit the detector-box -> landmark-crop mapping on training data")
    f.add_argument("datasets", nargs="+")
    f.add_argument("--limit", type=int, default=400, help="faces per data set (seeded choice)")
    f.add_argument("--out", default=str(DEFAULT_MAPPING))
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--note", default=None, help="free text stored with the fit (e.g. why a set was left out)")
    args = ap.parse_args(argv)
    mapping = fit_box_mapping(args.datasets, args.limit, seed=args.seed)
    if args.note:
        mapping["note"] = args.note
    write_box_mapping(mapping, args.out)
    print(json.dumps(mapping, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
