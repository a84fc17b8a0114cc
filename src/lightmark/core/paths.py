"""Where the shared data sets and models are: one answer for package code, tests and scripts.

``LIGHTMARK_DATA`` names the data folder (the one holding ``300w/``, ``aflw2000_val/``, ...). Unset,
it is ``../shared/data`` beside the checkout this package runs from; an installed wheel has no
checkout, so there it falls back to ``../shared/data`` from the working directory. The shared
models (the ICT face model) sit in ``models/`` beside the data folder.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LIGHTMARK_DATA"


def _checkout_root() -> Path | None:
    """The source checkout holding this package (``pyproject.toml`` two levels above it)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else None


def data_root() -> Path:
    """The shared data folder (``$LIGHTMARK_DATA``, else ``../shared/data`` beside the checkout)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    root = _checkout_root()
    return (root.parent if root else Path.cwd().parent) / "shared" / "data"


def shared_models_root() -> Path:
    """The shared models folder, beside the data folder."""
    return data_root().parent / "models"
