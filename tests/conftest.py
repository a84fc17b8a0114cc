"""Shared test set-up.

- tests/ goes on sys.path so test files can ``import helpers`` (tiny model configs and weights,
  tiny ONNX models, the tiny data set) under any pytest import mode.
- ``shared_data``: paths into the shared data (``$LIGHTMARK_DATA``, else ``../shared/data`` beside
  the checkout: :func:`lightmark.core.paths.data_root`); a missing one skips the test that asked.
- ``ict_model``: the ICT face model file that lightmark.synth would load, or a skip.
- ``tiny_faces``: a small labelled 300W-style folder made from the bundled example photo, for
  tests that need "some labelled faces" and must run without the shared data.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import helpers  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Callable[[str], Path]:
    """``shared_data("300w/afw")``: that path in the shared data folder, or skip this test (only)."""

    def get(sub: str) -> Path:
        p = helpers.shared_path(sub)
        if not p.exists():
            pytest.skip(f"shared data not found: {p} (set $LIGHTMARK_DATA to the data folder)")
        return p

    return get


@pytest.fixture(scope="session")
def ict_model() -> Path:
    """The ICT face model lightmark.synth loads by default ($LIGHTMARK_ICT_MODEL or the shared
    models folder), or skip the test."""
    from lightmark.synth.ict import default_model_path

    p = default_model_path()
    if not p.is_file():
        pytest.skip(f"ICT face model not found: {p} (set $LIGHTMARK_ICT_MODEL or $LIGHTMARK_DATA)")
    return p


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """``helpers.TINY_COUNT`` labelled faces (jpg + 1-based .pts), written once per session."""
    return helpers.write_tiny_faces(tmp_path_factory.mktemp("tiny_faces"))


def pytest_addoption(parser) -> None:
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="run the fuzz suite with >= 10,000 cases and resume after every "
                          "injected checkpoint fault (slow)")
