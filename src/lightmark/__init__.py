"""lightmark: a light-weight 68-point facial landmark predictor.

    from lightmark import Landmarker
    faces = Landmarker().predict_all("photo.jpg")   # every face: .box, .score, .points (68, 2)

Public names: :class:`Landmarker` (the one user class), :class:`Face` (what it returns),
:class:`FaceDetector` (the bundled detector; any object with ``detect`` and ``box_mapping`` plugs
in), :class:`LightmarkError` (the base of every error on bad input), :func:`head_pose` (yaw, pitch,
roll in degrees from 68 points).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Face", "FaceDetector", "Landmarker", "LightmarkError", "head_pose", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import lightmark` stays cheap and torch-free; onnxruntime loads on first use.
    if name == "Landmarker":
        from lightmark.api import Landmarker

        return Landmarker
    if name == "Face":
        from lightmark.core.types import Face

        return Face
    if name == "FaceDetector":
        from lightmark.runtime.detector import FaceDetector

        return FaceDetector
    if name == "LightmarkError":
        from lightmark.core.errors import LightmarkError

        return LightmarkError
    if name == "head_pose":
        from lightmark.core.pose import head_pose

        return head_pose
    raise AttributeError(f"module 'lightmark' has no attribute {name!r}")
