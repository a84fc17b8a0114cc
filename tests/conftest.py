"""Shared test set-up: put tests/ on sys.path so test files can ``import helpers`` (the shared
helpers: tiny model configs and weights, tiny ONNX models) under any pytest import mode."""
from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
