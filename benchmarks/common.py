"""What every benchmark module shares: paths, the matching rule, errors and progress bars."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Optional, TypeVar

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
DATA = REPO.parent / "shared" / "data"

#: A detection belongs to the labelled face when its IoU with the GT landmark box is at least this
#: (the rule of ``lightmark.evaluate``).
MIN_IOU = 0.3

T = TypeVar("T")


class BenchmarkError(SystemExit):
    """Exit with a one-line message (no traceback) for bad arguments or missing files."""

    def __init__(self, msg: str) -> None:
        super().__init__(f"peers.py: error: {msg}")


def progress(it: Iterable[T], enabled: bool, desc: str) -> Iterable[T]:
    """``it`` with a tqdm bar on stderr when ``enabled``."""
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, file=sys.stderr, leave=False)


def match(dets: np.ndarray, lm_box: np.ndarray) -> Optional[np.ndarray]:
    """The row of ``dets`` ((N, >=4) boxes) that is the labelled face, or None (a miss)."""
    from lightmark.core.geometry import match_detection

    d = np.asarray(dets, np.float64)
    return None if d.size == 0 else match_detection(d, lm_box, MIN_IOU)
