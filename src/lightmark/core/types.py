"""The shapes the parts of lightmark agree on: a found face, and the predictor and detector seams.

Both backends (:class:`lightmark.runtime.onnx.OnnxPredictor`, :class:`lightmark.models.TorchPredictor`)
implement :class:`Predictor`; the bundled :class:`lightmark.runtime.detector.FaceDetector`
implements :class:`Detector`, and so can any other face detector handed to ``Landmarker`` or
``evaluate``. Points are float32 ``(68, 2)`` (x, y) in 0-based pixel centres everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from lightmark.core.boxmap import BoxMapping


@dataclass
class Face:
    """One face: the detector's ``box`` (x1, y1, x2, y2) and ``score``, its 68 ``points`` and its
    head ``pose`` (yaw, pitch, roll in degrees, :func:`lightmark.core.pose.head_pose`).

    From :meth:`Landmarker.track` also ``track_id`` (stable over frames) and ``quality`` (in
    (0, 1), :mod:`lightmark.core.quality`); there ``box`` is the tight box around the points.
    ``convention``: the landmark convention of ``points`` (``"2d"`` or ``"3d"``). ``points_3d``:
    the same face's 3D-convention points when the model has them and ``points`` are another
    convention's (else ``None``); the pose is fitted to 3D-convention points when there are any.
    ``pose`` is fitted when first read (it costs more than the rest of a tracked frame), then kept.
    """

    box: np.ndarray  # float32 (4,)
    score: float
    points: np.ndarray  # float32 (68, 2), image pixels
    track_id: Optional[int] = None
    quality: Optional[float] = None
    convention: str = "2d"
    points_3d: Optional[np.ndarray] = field(default=None, repr=False)  # float32 (68, 2) or None
    _pose: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def pose(self) -> np.ndarray:
        """float (3,): yaw, pitch, roll in degrees, in AFLW2000-3D's ``Pose_Para`` convention."""
        if self._pose is None:
            from lightmark.core.pose import head_pose_batch

            # The weak-perspective fit needs no image size; (1, 1) only satisfies the check.
            if self.points_3d is not None:
                pts, convention = self.points_3d, "3d"
            else:
                pts, convention = self.points, self.convention
            self._pose = head_pose_batch(pts[None], (1, 1), convention)[0]
        return self._pose

    @pose.setter
    def pose(self, value: np.ndarray) -> None:
        self._pose = np.asarray(value, np.float64)


@runtime_checkable
class Predictor(Protocol):
    """A landmark network: uint8 crops (N, S, S, 3) in, points in crop pixels (N, 68, 2) out.

    lightmark's own predictors also list ``conventions`` (``"2d"``, ``"3d"``), take
    ``predict_crops(crops, convention=...)`` and give several sets from one pass with
    ``predict_crops_sets(crops, conventions)``; evaluation asks for a convention only of those.
    The tracker asks ``predict_crops_quality(crops, convention)`` for points and a face quality
    (:mod:`lightmark.core.quality`) when a predictor has it, and trusts the detector otherwise.
    """

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

