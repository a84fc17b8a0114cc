"""Test-time mirroring: a predictor that also runs each crop's mirror image and averages the two.

The landmark network is not exactly symmetric, so its answers on a crop and on the same crop
flipped left to right (points mirrored back and relabelled, :data:`geometry.FLIP_PERMUTATION`)
err differently; their mean is more accurate, for one more crop in the same batch. The gain
measured on the validation sets is in docs/MODEL_CARD.md. ``Landmarker(flip=True)`` and the
command line's ``--flip`` wrap the model's predictor in :class:`MirrorAveraged`.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from lightmark.core.geometry import flip_points_in_crop


def mirror_crop_points(points: np.ndarray, size: int) -> np.ndarray:
    """Points ``(N, K, 2)`` found in a mirrored ``size`` px crop, as points of the crop itself:
    x mirrored about the crop's centre (pixel centres: x -> size - 1 - x) and left/right relabelled."""
    p = np.array(points, dtype=np.float32)
    p[..., 0] = (size - 1) - p[..., 0]
    return flip_points_in_crop(p)


class MirrorAveraged:
    """The Predictor protocol over another predictor, each crop run beside its mirror image.

    Points are the mean of the two answers; the quality score (``predict_crops_quality``) is the
    mean of the two crops' scores. Everything else (``input_size``, ``meta``, ``conventions``, ...)
    is the wrapped predictor's. ``predict_crops_raw`` gives the raw output of the crops as they
    are (the maps of one view), with the averaged points beside it.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"MirrorAveraged({self.inner!r})"

    def _both(self, crops: np.ndarray) -> tuple[np.ndarray, int]:
        c = np.asarray(crops)
        if c.ndim == 3:
            c = c[None]
        if c.ndim != 4:  # let the wrapped predictor word the error
            return c, -1
        return np.concatenate([c, c[:, :, ::-1]]), len(c)

    def _average(self, points: np.ndarray, n: int, convention: str) -> np.ndarray:
        back = mirror_crop_points(points[n:], int(self.inner.input_size))
        # The inner predictor added its calibration shift (codec.offsets) in the mirrored crop's
        # frame; mirrored back, the x part points the other way: turn it round again.
        d = (getattr(self.inner, "point_offsets", None) or {}).get(convention)
        if d is not None:
            back[..., 0] += 2 * d[0]
        return ((points[:n] + back) / 2).astype(np.float32)

    def predict_crops(self, crops: np.ndarray, convention: str = "2d") -> np.ndarray:
        return self.predict_crops_sets(crops, (convention,))[convention]

    def predict_crops_sets(self, crops: np.ndarray, conventions: Sequence[str]) -> dict[str, np.ndarray]:
        both, n = self._both(crops)
        out = self.inner.predict_crops_sets(both, conventions)
        return out if n < 0 else {name: self._average(p, n, name) for name, p in out.items()}

    def predict_crops_quality(self, crops: np.ndarray, conventions: Sequence[str] = ("2d",)
                              ) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
        both, n = self._both(crops)
        pts, q = self.inner.predict_crops_quality(both, conventions)
        if n < 0:
            return pts, q
        quality = None if q is None else ((q[:n] + q[n:]) / 2).astype(np.float32)
        return {name: self._average(p, n, name) for name, p in pts.items()}, quality

    def predict_crops_raw(self, crops: np.ndarray, decode_points: bool = True, convention: str = "2d"
                          ) -> tuple[Optional[np.ndarray], np.ndarray]:
        _, raw = self.inner.predict_crops_raw(crops, decode_points=False, convention=convention)
        return (self.predict_crops(crops, convention) if decode_points else None), raw
