"""The methods measured for accuracy, behind one small interface, and lightmark's own.

A :class:`Method` maps ``(image, GT landmark box) -> (68, 2) points or None`` (a miss). Methods
that use their own detector take the GT box only to pick the detection that is the labelled face
(:data:`common.MIN_IOU`); the others crop from it. Each peer module (``dlib_peer``,
``mediapipe_peer``) and :class:`LightmarkPeer` here list their methods; ``peers.py`` runs them
all on the same images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from common import match

Points = Optional[np.ndarray]


@dataclass(frozen=True)
class Method:
    """One row of the accuracy tables."""

    key: str  # stable id, the JSON key ("dlib/hog")
    who: str  # the library, as the table shows it
    box: str  # where its face box comes from
    run: Callable[[np.ndarray, np.ndarray], Points]


class LightmarkPeer:
    """lightmark on the torch and onnxruntime backends, sharing one RFB-320 detector."""

    def __init__(self, lm_torch: Any, lm_onnx: Any) -> None:
        self.torch, self.onnx = lm_torch, lm_onnx

    @staticmethod
    def detector_face(lm: Any, image: np.ndarray, lm_box: np.ndarray) -> Points:
        """``predict_all``; the face whose detector box is the labelled face's."""
        faces = lm.predict_all(image)
        if not faces:
            return None
        dets = np.array([np.r_[f.box, f.score] for f in faces], np.float64)
        d = match(dets, lm_box)
        if d is None:
            return None
        return faces[int(np.argmin(np.abs(dets - d).sum(axis=1)))].points

    def predict_all_norefine(self, image: np.ndarray) -> list:
        """``predict_all`` in one pass (no refinement), the setting put back after."""
        old = self.onnx.refine
        self.onnx.refine = False
        try:
            return self.onnx.predict_all(image)
        finally:
            self.onnx.refine = old

    def norefine_face(self, image: np.ndarray, lm_box: np.ndarray) -> Points:
        old = self.onnx.refine
        self.onnx.refine = False
        try:
            return self.detector_face(self.onnx, image, lm_box)
        finally:
            self.onnx.refine = old

    def methods(self) -> list[Method]:
        gt = "GT landmark box (`box_kind=\"landmarks\"`)"
        det = "own detector (RFB-320), `predict_all` (refine)"
        t, o = self.torch, self.onnx
        return [
            Method("lightmark-torch/gt", "lightmark (torch)", gt,
                   lambda im, b: t.predict(im, b, box_kind="landmarks")),
            Method("lightmark-onnx/gt", "lightmark (onnxruntime)", gt,
                   lambda im, b: o.predict(im, b, box_kind="landmarks")),
            Method("lightmark-torch/detector", "lightmark (torch)", det,
                   lambda im, b: self.detector_face(t, im, b)),
            Method("lightmark-onnx/detector", "lightmark (onnxruntime)", det,
                   lambda im, b: self.detector_face(o, im, b)),
            Method("lightmark-onnx/detector-norefine", "lightmark (onnxruntime)",
                   "own detector (RFB-320), no refine", self.norefine_face),
        ]


#: Short names for the "faces every detector found" lines of the report.
SHORT = {
    "lightmark-torch/detector": "lightmark torch + RFB-320",
    "lightmark-onnx/detector": "lightmark onnx + RFB-320",
    "lightmark-onnx/detector-norefine": "lightmark onnx + RFB-320 no refine",
    "dlib/hog": "dlib + HOG",
    "mediapipe/mesh": "mediapipe",
    "lightmark-onnx/gt": "lightmark onnx on GT box",
    "dlib/gt-mapped": "dlib on mapped GT box",
}

#: The methods with their own detector: a face one of them misses is left out of the common set.
OWN_DETECTOR = ("lightmark-onnx/detector", "dlib/hog", "mediapipe/mesh")

#: Detector recall by yaw: the method whose found faces are that detector's matched detections.
RECALL = {
    "lightmark-onnx/detector-norefine": "RFB-320 (lightmark's bundled detector)",
    "dlib/hog": "dlib HOG, upsample 1",
    "dlib/hog-up0": "dlib HOG, upsample 0",
    "mediapipe/mesh": "mediapipe face detector (short range) + mesh",
}
