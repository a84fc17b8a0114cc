"""Torch-free inference: the bundled face detector and the ONNX landmark model (onnxruntime)."""
from __future__ import annotations

__all__ = ["FaceDetector", "OnnxPredictor"]


def __getattr__(name: str):
    # Lazy, so `import lightmark.runtime` does not load onnxruntime until something is used.
    if name == "FaceDetector":
        from lightmark.runtime.detector import FaceDetector

        return FaceDetector
    if name == "OnnxPredictor":
        from lightmark.runtime.onnx import OnnxPredictor

        return OnnxPredictor
    raise AttributeError(f"module 'lightmark.runtime' has no attribute {name!r}")
