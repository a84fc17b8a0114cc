"""dlib's 68-point shape predictor (``face_recognition_models``) with its HOG detector.

dlib's predictor was trained on its HOG detector's boxes, which are square and sit higher on the
face than the landmark box (brows in, chin cut). Handing it the raw GT landmark box is a
mismatched input; :class:`DlibBoxMapping` (fitted on HELEN train, never on the evaluation sets)
turns the landmark box into a HOG-like box.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from common import BenchmarkError, match, progress
from methods import Method

#: dlib's usual HOG setting (its examples, face_recognition): upsample the image once. Upsampling 0
#: is measured as well (faster; on AFW's large faces it finds about as many).
DLIB_UPSAMPLE = 1


def dlib_model_path(arg: Optional[str]) -> Path:
    """``--dlib-model``, or the 68-point predictor shipped in ``face_recognition_models``."""
    if arg:
        p = Path(arg)
    else:
        # Not imported: face_recognition_models needs pkg_resources (gone from new setuptools).
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise BenchmarkError("face_recognition_models is not installed "
                                 "(pip install -r benchmarks/requirements.txt) and no --dlib-model given")
        p = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not p.is_file():
        raise BenchmarkError(f"{p}: no such dlib shape predictor file")
    return p


def to_rect(box: np.ndarray) -> Any:
    """x1, y1, x2, y2 (pixel coordinates) -> dlib.rectangle, floored to integers."""
    import dlib

    return dlib.rectangle(*[int(math.floor(v)) for v in box[:4]])


def rects_to_array(rects: Any) -> np.ndarray:
    """dlib rectangles -> (N, 5) x1, y1, x2, y2, score (score 1; HOG scores are not used)."""
    return np.array([[r.left(), r.top(), r.right(), r.bottom(), 1.0] for r in rects],
                    np.float64).reshape(-1, 5)


def shape_to_array(shape: Any) -> np.ndarray:
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
    def fit(cls, dataset_path: Path, detector: Any, upsample: int, show: bool,
            limit: Optional[int] = None) -> "DlibBoxMapping":
        from lightmark.core import geometry
        from lightmark.data.readers import open_dataset

        ds = open_dataset(dataset_path, limit=limit)
        ratios, shifts, aspects = [], [], []
        for i in progress(range(len(ds)), show, f"fit dlib box mapping on {ds.name}"):
            s = ds[i]
            lb = geometry.landmark_box(s.points)
            d = match(rects_to_array(detector(s.image, upsample)), lb)
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

        def q(a: np.ndarray) -> list[float]:
            return [round(float(v), 4) for v in np.percentile(a, [10, 50, 90])]

        info = {"fitted_on": str(dataset_path), "faces": len(ds), "matched": len(r),
                "side_ratio_p10_50_90": q(r), "shift_x_p10_50_90": q(sh[:, 0]),
                "shift_y_p10_50_90": q(sh[:, 1]), "hog_box_h_over_w_median": round(float(np.median(aspects)), 4)}
        return cls(float(np.median(r)), (float(np.median(sh[:, 0])), float(np.median(sh[:, 1]))), info)

    def as_dict(self) -> dict:
        return {"side_ratio": round(self.ratio, 5), "shift": [round(v, 5) for v in self.shift], **self.info}


class DlibPeer:
    """dlib's HOG detector + 68-point shape predictor, and the box mapping fitted for it."""

    def __init__(self, dat: Path, helen: Path, show: bool, limit: Optional[int] = None,
                 upsample: int = DLIB_UPSAMPLE) -> None:
        try:
            import dlib
        except ImportError:
            raise BenchmarkError("dlib is not installed (pip install -r benchmarks/requirements.txt)") from None
        self.version = dlib.__version__
        self.dat = dat
        self.det = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(str(dat))
        self.upsample = upsample
        self.mapping = DlibBoxMapping.fit(helen, self.det, upsample, show, limit)
        #: The HOG box matched on the last image (at ``upsample``): how close the mapped GT box comes.
        self.last_hog_box: Optional[np.ndarray] = None

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        return shape_to_array(self.sp(image, to_rect(box)))

    def hog(self, image: np.ndarray, lm_box: np.ndarray, upsample: int) -> Optional[np.ndarray]:
        d = match(rects_to_array(self.det(image, upsample)), lm_box)
        if d is None:
            return None
        if upsample == self.upsample:
            self.last_hog_box = d[:4]
        return self.landmarks(image, d)

    def end_to_end(self, image: np.ndarray, upsample: int) -> list[Any]:
        """Every HOG face's landmarks, as a program using dlib runs it."""
        return [self.sp(image, r) for r in self.det(image, upsample)]

    def methods(self) -> list[Method]:
        return [
            Method("dlib/hog", "dlib 68", f"own detector (HOG, upsample {self.upsample})",
                   lambda im, b: self.hog(im, b, self.upsample)),
            Method("dlib/hog-up0", "dlib 68", "own detector (HOG, upsample 0)",
                   lambda im, b: self.hog(im, b, 0)),
            Method("dlib/gt-raw", "dlib 68", "GT landmark box, raw (mismatched for dlib)",
                   lambda im, b: self.landmarks(im, b)),
            Method("dlib/gt-mapped", "dlib 68", "GT landmark box mapped to a HOG-like box (fit on HELEN train)",
                   lambda im, b: self.landmarks(im, self.mapping(b))),
        ]

    def hog_file_bytes(self, tmp: Path) -> Optional[int]:
        """Size of the serialised HOG detector (None where this dlib build cannot save it)."""
        try:
            f = tmp / "hog.svm"
            self.det.save(str(f))
            return f.stat().st_size
        except Exception:  # older dlib builds cannot serialise the built-in detector
            return None

    def info(self) -> dict[str, Any]:
        return {"model": str(self.dat), "upsample": self.upsample, "box_mapping": self.mapping.as_dict()}
