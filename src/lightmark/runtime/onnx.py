"""The landmark model on onnxruntime: the torch-free implementation of the Predictor protocol.

A model is two files side by side: ``NAME.onnx`` (input ``"input"`` (N, 3, S, S) float32 from
``imaging.to_input``, output ``"output"``) and ``NAME.json`` (``"model"``: the ModelConfig,
``"codec"``, ``"crop_scale"``, ``"onnx_sha256"``). The checksum is verified on load so a stale or
truncated ``.onnx`` never runs with the wrong metadata.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np

from lightmark.core.files import sha256
from lightmark.core.geometry import LANDMARK_CROP_SCALE
from lightmark.core.codec import decode
from lightmark.core.imaging import to_input
from lightmark.core.errors import ModelFileError
from lightmark.core.modelfile import model_paths, read_meta
from lightmark.runtime.session import make_session

PathLike = Union[str, Path]

# Crops per onnxruntime call when the model's batch axis is dynamic. The time per face is the same
# from 1 to 32 crops a call (docs/SPEED.md), while onnxruntime's arena keeps the largest batch's
# activations for good (about 1.7 MB a crop), so 8 caps that at about 14 MB.
DEFAULT_CHUNK = 8


class OnnxPredictor:
    """Predictor protocol on onnxruntime: ``predict_crops(uint8 (N, S, S, 3)) -> float32 (N, 68, 2)``.

    ``path``: ``NAME.onnx`` (or ``NAME`` / ``NAME.json``). ``threads``: onnxruntime intra-op threads.
    ``verify=False`` skips the checksum (for files being written by an export in progress only).
    """

    def __init__(self, path: PathLike, threads: int = 1, verify: bool = True) -> None:
        paths = model_paths(path)
        self.onnx_path, self.json_path = paths.onnx, paths.json
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
        self._session = make_session(self.onnx_path, threads, "ONNX landmark model")
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
