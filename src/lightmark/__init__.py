"""lightmark: a light-weight 68-point facial landmark predictor."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Landmarker", "__version__"]


def __getattr__(name: str):
    # Lazy: `import lightmark` stays cheap and torch-free; the API loads onnxruntime on first use.
    if name == "Landmarker":
        from lightmark.api import Landmarker

        return Landmarker
    raise AttributeError(name)
