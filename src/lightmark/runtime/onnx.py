"""The landmark model on onnxruntime: the torch-free implementation of the Predictor protocol.

A model is two files side by side: ``NAME.onnx`` (input ``"input"`` (N, 3, S, S) float32 from
``imaging.to_input``, output ``"output"``) and ``NAME.json`` (``"model"``: the ModelConfig,
``"codec"``, ``"crop_scale"``, ``"onnx_sha256"``). The checksum is verified on load so a stale or
truncated ``.onnx`` never runs with the wrong metadata.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..files import sha256
from ..geometry import LANDMARK_CROP_SCALE
from ..heatmap import decode
from ..imaging import to_input
from .detector import DetectorError, make_session

PathLike = Union[str, Path]

# Crops per onnxruntime call when the model's batch axis is dynamic: large enough to amortise the
# call overhead, small enough to keep the activations of a 100-face photo in a few MB.
DEFAULT_CHUNK = 32


class ModelFileError(ValueError):
    """A landmark model file (``.onnx`` or its ``.json``) that cannot be used; names the file."""


def model_paths(path: PathLike) -> tuple[Path, Path]:
    """``NAME``, ``NAME.onnx`` or ``NAME.json`` -> (``NAME.onnx``, ``NAME.json``)."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix.lower() in (".onnx", ".json") else p
    return base.with_name(base.name + ".onnx"), base.with_name(base.name + ".json")


def read_meta(json_path: PathLike) -> dict[str, Any]:
    """Read and check a model's JSON metadata (needs ``model.head`` and ``model.input_size``)."""
    p = Path(json_path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model metadata file (every model needs NAME.json beside it)")
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{p}: not valid JSON ({e})") from None
    model = meta.get("model") if isinstance(meta, dict) else None
    if not isinstance(model, dict) or "head" not in model or "input_size" not in model:
        raise ModelFileError(f"{p}: metadata must hold a 'model' mapping with 'head' and 'input_size'")
    try:
        size = int(model["input_size"])
        crop_scale = float(meta.get("crop_scale", LANDMARK_CROP_SCALE))
    except (TypeError, ValueError):
        raise ModelFileError(f"{p}: 'model.input_size' and 'crop_scale' must be numbers") from None
    if size < 8 or not (np.isfinite(crop_scale) and crop_scale > 0):
        raise ModelFileError(f"{p}: bad input_size {size} or crop_scale {crop_scale}")
    return meta


class OnnxPredictor:
    """Predictor protocol on onnxruntime: ``predict_crops(uint8 (N, S, S, 3)) -> float32 (N, 68, 2)``.

    ``path``: ``NAME.onnx`` (or ``NAME`` / ``NAME.json``). ``threads``: onnxruntime intra-op threads.
    ``verify=False`` skips the checksum (for files being written by an export in progress only).
    """

    def __init__(self, path: PathLike, threads: int = 1, verify: bool = True) -> None:
        self.onnx_path, self.json_path = model_paths(path)
        if not self.onnx_path.is_file():
            raise ModelFileError(f"{self.onnx_path}: no such ONNX model file")
        self.meta: dict[str, Any] = read_meta(self.json_path)
        if verify:
            want = self.meta.get("onnx_sha256")
            if not want:
                raise ModelFileError(f"{self.json_path}: no 'onnx_sha256' to check {self.onnx_path.name} against")
            got = sha256(self.onnx_path)
            if got != want:
                raise ModelFileError(f"{self.onnx_path}: checksum {got[:12]}... does not match "
                                     f"'onnx_sha256' {str(want)[:12]}... in {self.json_path.name} "
                                     "(the model and its metadata are from different exports)")
        self.input_size: int = int(self.meta["model"]["input_size"])
        self.crop_scale: float = float(self.meta.get("crop_scale", LANDMARK_CROP_SCALE))
        self.num_points: int = int(self.meta["model"].get("num_points", 68))
        try:
            self._session = make_session(self.onnx_path, threads, "ONNX landmark model")
        except DetectorError as e:  # same loader as the detector; re-raise as a model error
            raise ModelFileError(str(e)) from None
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        if "input" not in inputs or "output" not in outputs:
            raise ModelFileError(f"{self.onnx_path}: expected input 'input' and output 'output', got "
                                 f"inputs {sorted(inputs)} and outputs {outputs}")
        shape = inputs["input"].shape
        if len(shape) != 4 or any(isinstance(v, int) and v != want for v, want in
                                  zip(shape[1:], (3, self.input_size, self.input_size))):
            raise ModelFileError(f"{self.onnx_path}: input shape {shape} does not match (N, 3, "
                                 f"{self.input_size}, {self.input_size}) from {self.json_path.name}")
        # A fixed batch axis (some exports) is honoured by chunking at exactly that size.
        self._fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.chunk: int = self._fixed_batch or DEFAULT_CHUNK

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.onnx_path)!r}, input_size={self.input_size})"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Raw network output for a normalised float32 (n, 3, S, S) batch (n <= chunk when fixed)."""
        return self._session.run(["output"], {"input": x})[0]

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """Points in crop pixels, float32 (N, K, 2), for uint8 crops (N, S, S, 3) or one (S, S, 3)."""
        c = np.asarray(crops)
        if c.ndim == 3:
            c = c[None]
        s = self.input_size
        if c.ndim != 4 or c.shape[1:] != (s, s, 3):
            raise ValueError(f"{self.onnx_path.name}: crops must be (N, {s}, {s}, 3), got shape {c.shape}")
        if c.dtype != np.uint8:
            raise ValueError(f"{self.onnx_path.name}: crops must be uint8, got {c.dtype}")
        if len(c) == 0:
            return np.zeros((0, self.num_points, 2), np.float32)
        out = []
        for i in range(0, len(c), self.chunk):
            x = to_input(c[i:i + self.chunk])
            n = len(x)
            if self._fixed_batch and n < self._fixed_batch:  # pad the last chunk of a fixed batch
                x = np.concatenate([x, np.zeros((self._fixed_batch - n,) + x.shape[1:], x.dtype)])
            y = self.run(x)[:n]
            out.append(decode(y, self.meta["model"], self.meta.get("codec")))
        return np.concatenate(out).astype(np.float32)
