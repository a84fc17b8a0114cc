"""Data engine: synthetic faces from the ICT face model and 3D profiling of real faces.

Kept light: the heavy modules load on first use of a name below.
"""
from __future__ import annotations

_EXPORTS = {
    "render_dataset": "faces", "synth_main": "faces", "render_face": "faces",
    "fit_ict": "profile", "profile_face": "profile",
    "profile_main": "profile", "FitResult": "profile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
