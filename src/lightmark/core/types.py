"""The shapes the parts of lightmark agree on: a found face, and the predictor and detector seams.

Both backends (:class:`lightmark.runtime.onnx.OnnxPredictor`, :class:`lightmark.models.TorchPredictor`)
implement :class:`Predictor`; the bundled :class:`lightmark.runtime.detector.FaceDetector`
implements :class:`Detector`, and so can any other face detector handed to ``Landmarker`` or
``evaluate``. Points are float32 ``(68, 2)`` (x, y) in 0-based pixel centres everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from lightmark.core.boxmap import BoxMapping


@dataclass
class Face:
    """One face: the detector's ``box`` (x1, y1, x2, y2) and ``score``, its 68 ``points`` and its
    head ``pose`` (yaw, pitch, roll in degrees, :func:`lightmark.core.pose.head_pose`).

    From :meth:`Landmarker.track` also ``track_id`` (stable over frames) and ``quality`` (in
    (0, 1), :mod:`lightmark.core.quality`); there ``box`` is the tight box around the points.
    """

    box: np.ndarray  # float32 (4,)
    score: float
    points: np.ndarray  # float32 (68, 2), image pixels
    track_id: Optional[int] = None
    quality: Optional[float] = None
    pose: Optional[np.ndarray] = None  # float (3,): yaw, pitch, roll in degrees


@runtime_checkable
class Predictor(Protocol):
    """A landmark network: uint8 crops (N, S, S, 3) in, points in crop pixels (N, 68, 2) out."""

    input_size: int
    crop_scale: float  # crop side / larger side of the landmark box, as trained
    meta: dict

    def predict_crops(self, crops: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Detector(Protocol):
    """A face detector: ``detect(image) -> float32 (N, 5)`` x1, y1, x2, y2, score, best first, and
    the :class:`BoxMapping` that turns its boxes into a model's training crop."""

    box_mapping: BoxMapping

    def detect(self, image: np.ndarray) -> np.ndarray: ...

