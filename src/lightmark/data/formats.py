"""Label-file parsers, one per format: 300W ``.pts``, AFLW2000-3D ``.mat``, FaceSynthetics
``_ldmks.txt`` and CSV keypoint tables. Each returns float32 ``(68, 2)`` 0-based points (see
:mod:`lightmark.data.readers` for the coordinate conventions) or raises :class:`DataError`
naming the file; :mod:`lightmark.data.readers` turns folders of them into data sets.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from lightmark.core.errors import DataError
from lightmark.core.geometry import NUM_POINTS
from lightmark.data.matfile import read_mat_arrays

PathLike = Union[str, Path]


#: No photo is a million pixels wide: a coordinate beyond this is a broken label (1e7 made the crop
#: of that face hang; 1e39 is not even a float32).
MAX_COORDINATE = 1e6


def _check_points(points: np.ndarray, where: str) -> np.ndarray:
    """float32 (68, 2) points, checked *after* the cast to float32 (1e39 is inf there)."""
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (NUM_POINTS, 2):
        raise DataError(f"{where}: wrong number of points: expected {NUM_POINTS} (x, y) pairs, "
                        f"got {p.size // 2 if p.ndim else 0} (shape {p.shape})")
    with np.errstate(over="ignore", invalid="ignore"):
        p32 = p.astype(np.float32)
    finite = np.all(np.isfinite(p32), axis=1)
    if not np.all(finite):
        bad = np.nonzero(~finite)[0]
        raise DataError(f"{where}: non-finite (NaN or inf, or beyond float32) coordinates at "
                        f"point(s) {bad.tolist()[:8]}")
    far = np.nonzero(np.any(np.abs(p32) > MAX_COORDINATE, axis=1))[0]
    if len(far):
        i = int(far[0])
        raise DataError(f"{where}: absurd coordinates at point(s) {far.tolist()[:8]} (point {i} is "
                        f"({float(p32[i, 0]):.4g}, {float(p32[i, 1]):.4g}); beyond "
                        f"{MAX_COORDINATE:.0e} pixels)")
    span = p32.max(axis=0) - p32.min(axis=0)
    if not np.all(span > 0):
        raise DataError(f"{where}: degenerate points: all 68 lie on one "
                        f"{'point' if not np.any(span > 0) else 'line'} (width {float(span[0]):g}, "
                        f"height {float(span[1]):g})")
    return p32


def read_text(path: Path, what: str = "label file") -> str:
    """A label file's or table's text (a byte-order mark dropped); a ``DataError`` naming the
    file and ``what`` it is otherwise."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: garbled {what} (not UTF-8 text)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def _parse_xy_lines(lines: Sequence[str], path: Path, first_line: int = 1) -> np.ndarray:
    rows = []
    for k, line in enumerate(lines):
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise DataError(f"{path}: line {first_line + k}: expected 'x y', got {line.strip()[:60]!r}")
        try:
            rows.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise DataError(f"{path}: line {first_line + k}: not numbers: {line.strip()[:60]!r}") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def read_facesynthetics_labels(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``NNNNNN_ldmks.txt`` -> (68 points, 2 pupils (left, right)), both float32, pixel centres."""
    path = Path(path)
    lines = [ln for ln in read_text(path).splitlines() if ln.strip()]
    if len(lines) != NUM_POINTS + 2:
        raise DataError(f"{path}: wrong number of points: expected 70 lines 'x y' (68 landmarks "
                        f"and 2 pupils), got {len(lines)} (truncated?)")
    xy = _parse_xy_lines(lines, path)
    # No shift: these are already pixel-centre coordinates (see the module docstring).
    pts = _check_points(xy[:NUM_POINTS], str(path))
    with np.errstate(over="ignore", invalid="ignore"):
        pupils = xy[NUM_POINTS:].astype(np.float32)
    if not np.all(np.isfinite(pupils)) or np.any(np.abs(pupils) > MAX_COORDINATE):
        raise DataError(f"{path}: non-finite or absurd pupil coordinates "
                        f"{np.asarray(xy[NUM_POINTS:]).tolist()}")
    return pts, pupils


# --------------------------------------------------------------------------------------------
# AFLW2000-3D


def read_aflw_mat(path: PathLike) -> tuple[np.ndarray, dict]:
    """``imageNNNNN.mat`` -> (68 points as 0-based pixel centres, pose meta in degrees)."""
    path = Path(path)
    # Our own strict reader, not scipy.io.loadmat: a corrupt uncompressed file crashed scipy's
    # (SIGSEGV, the whole run gone); this one can only raise a DataError naming the file.
    mat = read_mat_arrays(path, ["pt3d_68", "Pose_Para"])
    if "pt3d_68" not in mat:
        raise DataError(f"{path}: no 'pt3d_68' variable (is this an AFLW2000-3D label file?)")
    for name, value in mat.items():
        if isinstance(value, str):
            raise DataError(f"{path}: {name} is {value}, not numbers")
    p3 = np.asarray(mat["pt3d_68"], dtype=np.float64)
    if p3.ndim != 2 or p3.shape[0] < 2 or p3.shape[1] != NUM_POINTS:
        raise DataError(f"{path}: wrong number of points: pt3d_68 should be 3x68, got {p3.shape}")
    # MATLAB 1-based -> 0-based pixel centres (see the module docstring).
    pts = _check_points(p3[:2].T - 1.0, str(path))
    meta: dict = {"source": "aflw2000", "label_path": str(path)}
    if "Pose_Para" in mat:
        pose = np.asarray(mat["Pose_Para"], dtype=np.float64).reshape(-1)
        if pose.size < 3 or not np.all(np.isfinite(pose[:3])):
            raise DataError(f"{path}: Pose_Para should start with finite pitch, yaw, roll; "
                            f"got {pose[:3].tolist()}")
        # Pose_Para = (pitch, yaw, roll) in radians, then translation and scale.
        meta["pitch_deg"], meta["yaw_deg"], meta["roll_deg"] = (float(math.degrees(a)) for a in pose[:3])
    return pts, meta


# --------------------------------------------------------------------------------------------
# 300W .pts


def read_pts(path: PathLike) -> np.ndarray:
    """A 300W ``.pts`` file (with or without its ``version``/``n_points``/``{ }`` header) ->
    float32 (68, 2) 0-based pixel centres (the file is 1-based)."""
    path = Path(path)
    lines = [ln.strip() for ln in read_text(path).splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(f"{path}: empty label file")
    if lines[0].lower().startswith("version"):
        header, first = {}, None
        for k, ln in enumerate(lines):
            if ln == "{":
                first = k + 1
                break
            key, _, value = ln.partition(":")
            header[key.strip().lower()] = value.strip()
        if first is None:
            raise DataError(f"{path}: truncated or garbled .pts file: no '{{' after the header")
        try:
            n = int(header.get("n_points", ""))
        except ValueError:
            raise DataError(f"{path}: garbled .pts header: n_points is {header.get('n_points')!r}") from None
        if n != NUM_POINTS:
            raise DataError(f"{path}: wrong number of points: n_points is {n}, expected {NUM_POINTS}")
        if "}" not in lines[first:]:
            raise DataError(f"{path}: truncated .pts file: no closing '}}' "
                            f"({len(lines) - first} point lines)")
        end = lines.index("}", first)
        body, start = lines[first:end], first + 1
    else:
        body, start = lines, 1
    xy = _parse_xy_lines(body, path, start)
    if len(xy) != NUM_POINTS:
        raise DataError(f"{path}: wrong number of points: expected {NUM_POINTS}, got {len(xy)}")
    return _check_points(xy - 1.0, str(path))  # 1-based -> 0-based


# --------------------------------------------------------------------------------------------
# label files with their image beside them (FaceSynthetics, AFLW2000-3D, 300W)


_HEADER_WORDS = {"", "image", "name", "file", "filename", "path", "image_path", "img"}


def is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_keypoint_csv(path: PathLike) -> tuple[list[str], list[Any], bool]:
    """Parse a keypoint table: (names, per row either float32 (68, 2) points or the
    :class:`DataError` that row raises when used, whether it had a header row)."""
    path = Path(path)
    text = read_text(path, "CSV")
    lines = [ln for ln in text.splitlines() if ln.strip(" ,\t")]
    if not lines:
        raise DataError(f"{path}: empty CSV table")
    head = next(csv.reader([lines[0]]))
    # A header row: first cell empty or a column word, or any non-numeric coordinate cell.
    has_header = head[0].strip().lower() in _HEADER_WORDS or not all(is_number(c) for c in head[1:])
    if has_header:
        if len(head) != 1 + 2 * NUM_POINTS:
            raise DataError(f"{path}: not a 68-point keypoint table: header has {len(head)} columns, "
                            f"expected name + {2 * NUM_POINTS} numbers")
        lines = lines[1:]
        if not lines:
            raise DataError(f"{path}: CSV table has a header but no rows")
    first_line = 2 if has_header else 1
    table = _fast_table(lines) if '"' not in text else None
    if table is None:  # quoted names or a broken row somewhere: parse row by row for exact errors
        rows = list(csv.reader(lines))
        names = [r[0].strip() for r in rows]
        values: list[Any] = []
        for k, r in enumerate(rows):
            where = f"{path}: row {first_line + k} ({names[k]!r})"
            if len(r) != 1 + 2 * NUM_POINTS:
                values.append(DataError(f"{where}: wrong number of points: expected name + "
                                        f"{2 * NUM_POINTS} numbers, got {len(r) - 1} (truncated?)"))
                continue
            try:
                xy = np.array([float(c) for c in r[1:]], dtype=np.float64).reshape(NUM_POINTS, 2)
            except ValueError:
                values.append(DataError(f"{where}: garbled row: non-numeric coordinate"))
                continue
            try:
                values.append(_check_points(xy, where))
            except DataError as e:
                values.append(e)
        return names, values, has_header
    names, arr = table
    with np.errstate(over="ignore", invalid="ignore"):
        pts = arr.astype(np.float32).reshape(len(arr), NUM_POINTS, 2)
    # The checks of _check_points, vectorised (12,000 rows); rows failing one get its exact error.
    ok = np.isfinite(pts).all(axis=(1, 2))
    ok &= ~(np.abs(np.where(np.isfinite(pts), pts, 0)) > MAX_COORDINATE).any(axis=(1, 2))
    ok &= ((pts.max(axis=1) - pts.min(axis=1)) > 0).all(axis=1)
    values: list[Any] = []
    for k in range(len(arr)):
        if ok[k]:
            values.append(pts[k])
            continue
        try:
            values.append(_check_points(arr[k].reshape(NUM_POINTS, 2),
                                        f"{path}: row {first_line + k} ({names[k]!r})"))
        except DataError as e:
            values.append(e)
    return names, values, has_header


def _fast_table(lines: list[str]) -> Optional[tuple[list[str], np.ndarray]]:
    """Names and an (N, 136) array via numpy's C parser (12,000 rows in ~0.3 s instead of ~1 s);
    None if any row is malformed, so the caller falls back to row-by-row parsing."""
    import io

    names, rest = [], []
    for ln in lines:
        name, _, r = ln.partition(",")
        names.append(name.strip())
        rest.append(r)
    try:
        arr = np.loadtxt(io.StringIO("\n".join(rest)), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        return None
    if arr.shape != (len(lines), 2 * NUM_POINTS):
        return None
    return names, arr
