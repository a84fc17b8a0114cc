"""The methods measured for accuracy, behind one small interface, and lightmark's own.

A :class:`Method` maps ``(image, GT landmark box) -> (68, 2) points or None`` (a miss). Methods
that use their own detector take the GT box only to pick the detection that is the labelled face
(:data:`common.MIN_IOU`); the others crop from it. Each peer module (``dlib_peer``,
``mediapipe_peer``) and :class:`LightmarkPeer` here list their methods; ``peers.py`` runs them
all on the same images.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from common import BenchmarkError, match

Points = Optional[np.ndarray]


@dataclass(frozen=True)
class Method:
    """One row of the accuracy tables."""

    key: str  # stable id, the JSON key ("dlib/hog")
    who: str  # the library, as the table shows it
    box: str  # where its face box comes from
    run: Callable[[np.ndarray, np.ndarray], Points]


def copy_model(model: Path, dest: Path, tries: int = 20) -> tuple[Path, dict]:
    """Copy NAME.safetensors + NAME.json to ``dest`` (the source may be rewritten by a training run:
    retry until the copied weights match the copied JSON's checksum). Returns (weights, meta)."""
    from lightmark.core.files import sha256
    from lightmark.core.modelfile import model_paths

    paths = model_paths(model)
    for p in (paths.safetensors, paths.json):
        if not p.is_file():
            raise BenchmarkError(f"{p}: no such file (a lightmark model is NAME.safetensors + NAME.json)")
    dest.mkdir(parents=True, exist_ok=True)
    out_w, out_j = dest / paths.safetensors.name, dest / paths.json.name
    for _ in range(tries):
        shutil.copyfile(paths.json, out_j)
        shutil.copyfile(paths.safetensors, out_w)
        meta = json.loads(out_j.read_text())
        if meta.get("sha256") == sha256(out_w):
            return out_w, meta
        time.sleep(1.0)  # caught between the weights and the JSON being rewritten
    raise BenchmarkError(f"{paths.safetensors}: weights never matched the sha256 in {paths.json.name} "
                         f"after {tries} tries")


@dataclass(frozen=True)
class ModelFiles:
    """The lightmark model measured: given path, the copy used, its JSON, its ONNX export."""

    source: Path
    weights: Path
    meta: dict
    onnx: Path
    onnx_source: str


class LightmarkPeer:
    """lightmark on the torch and onnxruntime backends, sharing one RFB-320 detector."""

    def __init__(self, lm_torch: Any, lm_onnx: Any, files: ModelFiles) -> None:
        self.torch, self.onnx, self.files = lm_torch, lm_onnx, files
        #: The landmark set every method asks for: set per data set (its kind's convention when
        #: the model has it, else 2d) by the caller before the accuracy pass.
        self.convention = "2d"

    def use_convention_of(self, dataset_path: Path) -> str:
        """Ask for ``dataset_path``'s convention from now on, when the model has it; returns it."""
        from lightmark.data.readers import open_dataset

        wanted = open_dataset(dataset_path, limit=1).convention
        self.convention = wanted if wanted in self.onnx.conventions else "2d"
        return self.convention

    @classmethod
    def load(cls, model: Path, onnx: Optional[Path], tmp: Path, show: bool) -> "LightmarkPeer":
        """Both backends of ``model`` (copied to ``tmp`` first); ``onnx`` its export, else exported
        here into ``tmp``."""
        from lightmark import Landmarker
        from lightmark.runtime.detector import FaceDetector

        weights, meta = copy_model(model, tmp / "torch")
        if onnx is not None:
            if not onnx.is_file():
                raise BenchmarkError(f"{onnx}: no such ONNX file")
            onnx_path, source = onnx, "given with --onnx"
        else:
            from lightmark.export import export_onnx

            if show:
                print("exporting ONNX", file=sys.stderr)
            onnx_path = Path(export_onnx(weights, tmp / "onnx" / weights.with_suffix(".onnx").name))
            source = "exported by this run with lightmark.export.export_onnx"
        detector = FaceDetector(threads=1)
        return cls(Landmarker(weights, backend="torch", threads=1, detector=detector),
                   Landmarker(onnx_path, backend="onnx", threads=1, detector=detector),
                   ModelFiles(model, weights, meta, onnx_path, source))

    def info(self) -> dict[str, Any]:
        """The model measured: where from, checksums, architecture and cost."""
        from lightmark.core.files import sha256
        from lightmark.models import model_info

        f = self.files
        m, onnx_sha = f.meta["model"], sha256(f.onnx)
        onnx_meta = json.loads(f.onnx.with_suffix(".json").read_text())
        cost = model_info(m, self.torch.predictor.model)
        return {"source": str(f.source), "name": f.meta.get("name"), "epoch": f.meta.get("epoch"),
                "sha256": sha256(f.weights), "onnx_sha256": onnx_sha, "onnx_source": f.onnx_source,
                "input_size": m.get("input_size"), "head": m.get("head"),
                "head_block": m.get("head_block", "deconv"), "backbone": m.get("backbone"),
                "width": m.get("width"), "crop_scale": f.meta.get("crop_scale"),
                "json_onnx_sha256_matches": onnx_meta.get("onnx_sha256") == onnx_sha,
                "params": cost["params"], "macs": cost["macs"], "float32_mb": cost["float32_mb"]}

    def detector_face(self, lm: Any, image: np.ndarray, lm_box: np.ndarray) -> Points:
        """``predict_all``; the face whose detector box is the labelled face's."""
        faces = lm.predict_all(image, convention=self.convention)
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
                   lambda im, b: t.predict(im, b, box_kind="landmarks", convention=self.convention)),
            Method("lightmark-onnx/gt", "lightmark (onnxruntime)", gt,
                   lambda im, b: o.predict(im, b, box_kind="landmarks", convention=self.convention)),
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
