"""The AFLW 21-point markup: its point names, the 14 points it shares with iBUG-68, and the
``aflw21.csv`` table parser (``image,yaw_deg,x0,y0,...,x20,y20``).

The 21 points are human clicks on the *visible* face (AFLW, Koestinger et al. 2011); a point the
annotators did not see is stored as ``-1,-1`` and read as NaN. "Left" is the left of the picture
(the subject's right on a frontal face). Coordinates are 0-based pixel centres of the image, as
the package uses everywhere; they are taken as they are.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Union

import numpy as np

from lightmark.core.errors import DataError
from lightmark.data.formats import MAX_COORDINATE, is_number, read_text

PathLike = Union[str, Path]

NUM_POINTS_AFLW21 = 21

#: The 21 AFLW points, in file order ("left" = picture left).
AFLW21_NAMES = (
    "left brow left corner", "left brow centre", "left brow right corner",
    "right brow left corner", "right brow centre", "right brow right corner",
    "left eye left corner", "left eye centre", "left eye right corner",
    "right eye left corner", "right eye centre", "right eye right corner",
    "left ear", "nose left", "nose tip", "nose right", "right ear",
    "mouth left corner", "mouth centre", "mouth right corner", "chin",
)

#: AFLW-21 index -> iBUG-68 index (0-based) for the 14 points both markups place on the same
#: feature: brow ends and centres, eye corners, nose tip, mouth corners, chin.
AFLW21_TO_IBUG68: dict[int, int] = {
    0: 17, 1: 19, 2: 21, 3: 22, 4: 24, 5: 26,
    6: 36, 8: 39, 9: 42, 11: 45,
    14: 30, 17: 48, 19: 54, 20: 8,
}
#: The same map as two aligned index arrays: ``points21[AFLW21_COMMON] ~ points68[IBUG68_COMMON]``.
AFLW21_COMMON = np.array(sorted(AFLW21_TO_IBUG68), dtype=np.int64)
IBUG68_COMMON = np.array([AFLW21_TO_IBUG68[k] for k in sorted(AFLW21_TO_IBUG68)], dtype=np.int64)

# name + yaw + 21 (x, y)
_COLUMNS = 2 + 2 * NUM_POINTS_AFLW21
_INVISIBLE = (-1.0, -1.0)


def looks_like_aflw21_csv(path: PathLike) -> bool:
    """Cheap sniff: the first line has the 44 fields of an AFLW-21 table."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline()
    except OSError:
        return False
    return len(first.rstrip("\r\n").split(",")) == _COLUMNS


def parse_aflw21_row(cells: list[str], where: str) -> tuple[float, np.ndarray]:
    """``[yaw, x0, y0, ..., x20, y20]`` -> (yaw in degrees, float32 (21, 2) with NaN where invisible)."""
    if len(cells) != _COLUMNS - 1:
        raise DataError(f"{where}: wrong number of columns: expected name, yaw and "
                        f"{2 * NUM_POINTS_AFLW21} numbers, got {len(cells) + 1} (truncated?)")
    try:
        vals = np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        raise DataError(f"{where}: garbled row: non-numeric value") from None
    yaw = float(vals[0])
    if not math.isfinite(yaw):
        raise DataError(f"{where}: non-finite yaw {cells[0]!r}")
    # Checked after the float32 cast (1e39 is inf there), and against absurd magnitudes.
    with np.errstate(over="ignore", invalid="ignore"):
        xy = vals[1:].reshape(NUM_POINTS_AFLW21, 2).astype(np.float32)
    if not np.all(np.isfinite(xy)):
        bad = np.nonzero(~np.all(np.isfinite(xy), axis=1))[0]
        raise DataError(f"{where}: non-finite (NaN or inf, or beyond float32) coordinates at "
                        f"point(s) {bad.tolist()[:8]}")
    far = np.nonzero(np.any(np.abs(xy) > MAX_COORDINATE, axis=1))[0]
    if len(far):
        raise DataError(f"{where}: absurd coordinates at point(s) {far.tolist()[:8]} "
                        f"(beyond {MAX_COORDINATE:.0e} pixels)")
    hidden = (xy[:, 0] == _INVISIBLE[0]) & (xy[:, 1] == _INVISIBLE[1])
    if hidden.all():
        raise DataError(f"{where}: no visible points (all 21 are -1,-1)")
    xy[hidden] = np.nan
    return yaw, xy


def read_aflw21_csv(path: PathLike) -> list[tuple[str, int, Any]]:
    """Parse an ``aflw21.csv`` table: per row ``(image name, line number, value)`` where value is
    ``(yaw_deg, points)`` or the :class:`DataError` that row raises when used (so ``skip_bad``
    can skip single rows). A header row (first cell ``image``, or a non-numeric yaw) is skipped."""
    path = Path(path)
    text = read_text(path, "CSV")
    numbered = [(k + 1, ln) for k, ln in enumerate(text.splitlines()) if ln.strip(" ,\t")]
    if not numbered:
        raise DataError(f"{path}: empty AFLW-21 table")
    head = next(csv.reader([numbered[0][1]]))
    if head[0].strip().lower() in ("image", "name", "file", "") or (len(head) > 1 and not is_number(head[1])):
        if len(head) != _COLUMNS:
            raise DataError(f"{path}: not an AFLW-21 table: header has {len(head)} columns, expected "
                            f"image, yaw_deg and {2 * NUM_POINTS_AFLW21} coordinates")
        numbered = numbered[1:]
        if not numbered:
            raise DataError(f"{path}: AFLW-21 table has a header but no rows")
    out: list[tuple[str, int, Any]] = []
    for line, r in zip((n for n, _ in numbered), csv.reader(ln for _, ln in numbered)):
        name = r[0].strip() if r else ""
        where = f"{path}: row {line} ({name!r})"
        try:
            out.append((name, line, parse_aflw21_row(r[1:], where)))
        except DataError as e:
            out.append((name, line, e))
    return out




def read_aflw2000_pt2d(path: PathLike) -> np.ndarray:
    """The 21 AFLW points (``pt2d``) of an AFLW2000-3D ``.mat`` file -> float32 (21, 2), 0-based
    pixel centres, NaN where missing.

    ``pt2d`` is 2xN with N = 21 (a few files hold 23 columns: the first 21 are AFLW's points). A
    missing point is stored as (-1, 452) (also read: any negative coordinate). The values are
    1-based like ``pt3d_68`` in the same files (the points shared with iBUG sit on ``pt3d_68`` with
    no mean offset of a pixel), so 1 is subtracted, as :func:`lightmark.data.formats.read_aflw_mat` does.
    """
    from lightmark.data.matfile import read_mat_arrays  # strict: scipy's reader could segfault

    path = Path(path)
    mat = read_mat_arrays(path, ["pt2d"])
    if "pt2d" not in mat:
        raise DataError(f"{path}: no 'pt2d' variable (is this an AFLW2000-3D label file?)")
    if isinstance(mat["pt2d"], str):
        raise DataError(f"{path}: pt2d is {mat['pt2d']}, not numbers")
    p = np.asarray(mat["pt2d"], dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != 2 or p.shape[1] < NUM_POINTS_AFLW21:
        raise DataError(f"{path}: pt2d should be 2x21 (or 2x23), got {p.shape}")
    xy = p[:, :NUM_POINTS_AFLW21].T.copy()
    missing = (xy < 0).any(axis=1) | ~np.isfinite(xy).all(axis=1)
    xy[missing] = np.nan
    if missing.all():
        raise DataError(f"{path}: pt2d has no visible points")
    with np.errstate(over="ignore", invalid="ignore"):
        out = (xy - 1.0).astype(np.float32)
    if np.any(np.isinf(out)) or np.any(np.abs(np.nan_to_num(out)) > MAX_COORDINATE):
        raise DataError(f"{path}: pt2d has absurd coordinates (beyond {MAX_COORDINATE:.0e} pixels)")
    return out
