"""Readers for the landmark data sets lightmark trains and tests on, and :func:`open_dataset`.

(A little over 400 lines: every kind's folder opener sits beside the one sniffing rule that picks
it, so a new kind is added in one place; the label parsers themselves are in ``formats.py``.)

Every reader turns a folder (or a single file) into a :class:`LandmarkDataset`: a list of
:class:`Record` (image path, 68 points, meta). Labels are small, so they are parsed *eagerly* when
the data set is opened, and every label problem is found then. Images are loaded *lazily* by
``dataset[i]`` through :func:`lightmark.imaging.load_image`, the only image reader.

Coordinates. Every reader returns float32 ``(68, 2)`` points, (x, y), in 0-based pixel-centre
coordinates (the centre of the top-left pixel is (0, 0)), the convention of the whole package.
Per format:

* **300W ``.pts``**: 1-based (the 300W release puts the centre of the top-left pixel at (1, 1)):
  we subtract 1.
* **AFLW2000-3D ``pt3d_68``**: 1-based. The points are 3DMM vertices projected by the authors'
  MATLAB code, which flips y as ``height + 1 - y`` (MATLAB pixel indices start at 1); the authors'
  later Python port (3DDFA_V2, ``similar_transform``) subtracts 1 "for Python compatibility".
  We subtract 1 from x and y.
* **FaceSynthetics ``_ldmks.txt``**: taken as 0-based pixel centres already (no shift). The
  release only says "pixel coordinates". We checked on the 100-image sample: the centroid of the
  dark pupil blob around each pupil landmark (points 69 and 70), measured in pixel-centre indices,
  sits +0.10 ± 0.11 px (median -0.14 px, 170 pupils) to the right of the landmark horizontally.
  A pixel-corner convention would have put it at -0.5 px, so we use the values as they are.
* **CSV tables** (ytf_keypoints, utkface_dlib68): 0-based pixels per the data notes (dlib's
  convention), used as they are.
* **AFLW-21 tables** (``aflw21.csv``: ``image,yaw_deg,x0,y0,...,x20,y20``): 0-based pixels of the
  crops, used as they are. The one kind whose records do *not* hold 68 points: see
  :func:`open_aflw21` and :func:`require_68`.

Bad input raises :class:`DataError` (a ``ValueError``) naming the file and the problem. With
``skip_bad=True`` label problems found at open time are skipped instead and listed in
``dataset.bad`` as ``(file, reason)``. An image that turns out to be unreadable or truncated is
only found when ``dataset[i]`` loads it: that always raises :class:`DataError`, and a training loop
that wants to skip bad samples catches it there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from lightmark.core.errors import DataError, ImageError
from lightmark.core.geometry import NUM_POINTS
from lightmark.core.imaging import IMAGE_SUFFIXES, load_image
from lightmark.data.aflw21 import NUM_POINTS_AFLW21, looks_like_aflw21_csv, read_aflw21_csv
from lightmark.data.formats import read_aflw_mat, read_facesynthetics_labels, read_keypoint_csv, read_pts


#: The kinds :func:`open_dataset` knows, and what each one looks for in a folder.
KINDS = {
    "facesynthetics": "NNNNNN_ldmks.txt beside NNNNNN.png (FaceSynthetics)",
    "aflw2000": "imageNNNNN.mat with pt3d_68 beside imageNNNNN.jpg (AFLW2000-3D)",
    "pts": "NAME.pts beside NAME.jpg/.png (300W: AFW, HELEN, ...)",
    "csv": "a .csv of rows name,x0,y0,...,x67,y67 with the images in a sibling folder",
    "aflw21": "aflw21.csv of rows image,yaw_deg,x0,y0,...,x20,y20 beside images/ (AFLW, 21 points)",
}

#: The landmark convention each kind's labels follow: projected 3D points ("3d") or 300W's visible
#: contour ("2d"). AFLW's 21 points are the same in both (no jaw); its 68-point fits are "3d".
KIND_CONVENTIONS = {"facesynthetics": "3d", "aflw2000": "3d", "pts": "2d", "csv": "2d", "aflw21": "3d"}

PathLike = Union[str, Path]


@dataclass
class Record:
    """One labelled face: where its image is, its 68 points, and what else is known about it."""

    image_path: Path
    points: np.ndarray  # float32 (68, 2), 0-based pixel centres; (21, 2) with NaN for kind "aflw21"
    meta: dict = field(default_factory=dict)


@dataclass
class Sample:
    """A loaded record: the image as uint8 HxWx3 RGB, its points and meta."""

    image: np.ndarray
    points: np.ndarray
    meta: dict


class LandmarkDataset:
    """A list of records with lazily loaded images.

    ``name`` is the folder (or file) name, ``kind`` one of :data:`KINDS`, ``root`` the folder the
    labels came from, ``bad`` the ``(file, reason)`` pairs skipped when opened with ``skip_bad``.
    """

    def __init__(self, records: Sequence[Record], name: str, kind: str, root: Optional[Path] = None,
                 bad: Optional[list[tuple[str, str]]] = None) -> None:
        self.records: list[Record] = list(records)
        self.name = name
        self.kind = kind
        self.root = Path(root) if root is not None else None
        self.bad: list[tuple[str, str]] = list(bad or [])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        rec = self.records[i]
        try:
            image = load_image(rec.image_path, apply_exif=False)  # labels index stored pixels
        except ImageError as e:  # re-raised as the data layer's error type; the message names the file
            raise DataError(str(e)) from None
        check_points_in_image(rec, image.shape)
        return Sample(image=image, points=rec.points.copy(), meta=dict(rec.meta))

    def subset(self, indices: Iterable[int]) -> "LandmarkDataset":
        """A data set of the records at ``indices`` (in that order)."""
        return LandmarkDataset([self.records[int(i)] for i in indices], self.name, self.kind,
                               self.root, self.bad)

    def relative_names(self) -> list[str]:
        """Image paths relative to ``root`` (POSIX), the stable names used in file lists."""
        out = []
        for rec in self.records:
            try:
                out.append(rec.image_path.relative_to(self.root).as_posix() if self.root else
                           rec.image_path.as_posix())
            except ValueError:
                out.append(rec.image_path.as_posix())
        return out

    @property
    def convention(self) -> str:
        """``"2d"`` or ``"3d"``: the landmark convention of this kind's labels (:data:`KIND_CONVENTIONS`)."""
        return KIND_CONVENTIONS[self.kind]

    @property
    def num_points(self) -> int:
        """Points per record: 68, except 21 for kind ``"aflw21"``."""
        return NUM_POINTS_AFLW21 if self.kind == "aflw21" else NUM_POINTS

    def __repr__(self) -> str:
        return f"LandmarkDataset({self.name!r}, kind={self.kind!r}, {len(self)} records, {len(self.bad)} bad)"


#: Labelled points may lie outside their image (a jaw under the frame), but at most this many image
#: sizes beyond each edge: further out they are a broken label, and their crop would be mostly void.
MAX_POINTS_OUTSIDE = 1.0


def check_points_in_image(rec: Record, shape: tuple[int, ...]) -> None:
    """Refuse a record whose points are absurd for its image, naming the label file."""
    h, w = shape[:2]
    p = rec.points
    lo = -MAX_POINTS_OUTSIDE * np.array([w, h])
    hi = (1 + MAX_POINTS_OUTSIDE) * np.array([w, h])
    far = np.nonzero(np.any((p < lo) | (p > hi), axis=1))[0]
    if len(far):
        where = rec.meta.get("label_path") or (f"{rec.meta['table']} ({rec.image_path.name})"
                                               if "table" in rec.meta else str(rec.image_path))
        i = int(far[0])
        raise DataError(f"{where}: point(s) {far.tolist()[:8]} lie far outside the {w}x{h} image "
                        f"{rec.image_path.name} (point {i} at ({float(p[i, 0]):.4g}, "
                        f"{float(p[i, 1]):.4g}))")


# --------------------------------------------------------------------------------------------
# helpers


def _listdir(folder: Path) -> set[str]:
    """File names in ``folder`` (one listing: cheap even for 100k files)."""
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it}
    except OSError:
        return set()


def _find_image(stem: str, names: set[str]) -> Optional[str]:
    for ext in IMAGE_SUFFIXES:
        for cand in (stem + ext, stem + ext.upper()):
            if cand in names:
                return cand
    return None


class _Collector:
    """Gathers records and, with ``skip_bad``, the (file, reason) of what was skipped."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.records: list[Record] = []
        self.bad: list[tuple[str, str]] = []

    def run(self, where: str, make: Callable[[], Record]) -> bool:
        try:
            self.records.append(make())
            return True
        except DataError as e:
            if not self.skip_bad:
                raise
            self.bad.append((where, str(e)))
            return False


def _pick(n: int, limit: Optional[int], seed: int) -> np.ndarray:
    """Order in which to try candidates: all of them in order, or a seeded shuffle when limited."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return np.random.default_rng(seed).permutation(n)


def _collect(candidates: Sequence[Any], make: Callable[[Any], Record], where: Callable[[Any], str],
             skip_bad: bool, limit: Optional[int], seed: int) -> _Collector:
    """Parse candidates (in a seeded random order when ``limit`` is set) until ``limit`` are good.

    Parsing stops early with a limit, so ``limit`` draws from a 100k-file folder stay quick; the
    kept records are then put back into listing order so results do not depend on the draw order.
    """
    col = _Collector(skip_bad)
    order = _pick(len(candidates), limit, seed)
    kept: list[int] = []
    for idx in order:
        if limit is not None and len(kept) >= limit:
            break
        if col.run(where(candidates[idx]), lambda c=candidates[idx]: make(c)):
            kept.append(int(idx))
    if limit is not None and limit < len(candidates):
        pairs = sorted(zip(kept, col.records), key=lambda t: t[0])
        col.records = [r for _, r in pairs]
    return col


# --------------------------------------------------------------------------------------------
# FaceSynthetics


def _facesynthetics_labels(path: Path) -> tuple[np.ndarray, dict]:
    pts, pupils = read_facesynthetics_labels(path)
    return pts, {"source": "facesynthetics", "pupils": pupils, "label_path": str(path)}


def _pts_labels(path: Path) -> tuple[np.ndarray, dict]:
    return read_pts(path), {"source": "300w", "label_path": str(path)}


#: kind -> (label suffix, the image kinds named when one is missing, reader: path -> (points, meta))
_BESIDE: dict[str, tuple[str, str, Callable[[Path], tuple[np.ndarray, dict]]]] = {
    "facesynthetics": ("_ldmks.txt", ".png", _facesynthetics_labels),
    "aflw2000": (".mat", ".jpg", read_aflw_mat),
    "pts": (".pts", ".jpg/.png", _pts_labels),
}


def _open_beside(kind: str, folder: Path, labels: Sequence[str], names: set[str], skip_bad: bool,
                 limit: Optional[int], seed: int) -> _Collector:
    """Records for label files ``STEM + suffix`` whose image ``STEM.*`` lies in the same folder."""
    suffix, image_kinds, read = _BESIDE[kind]

    def make(label: str) -> Record:
        stem = label[: -len(suffix)]
        image = _find_image(stem, names)
        if image is None:
            raise DataError(f"{folder / label}: missing image {stem}{image_kinds} beside it")
        pts, meta = read(folder / label)
        return Record(folder / image, pts, meta)

    return _collect(labels, make, lambda lb: str(folder / lb), skip_bad, limit, seed)


# --------------------------------------------------------------------------------------------
# CSV keypoint tables

def _csv_image_folder(path: Path, names: list[str]) -> tuple[Path, set[str]]:
    """The sibling folder holding a table's images: the one (of a few candidates) with most of them.

    Candidates: the stem's first word (``training_frames_keypoints.csv`` -> ``training/``), the
    stem itself, ``images/``, ``imgs/``, and the table's own folder.
    """
    stem = path.stem
    cands = [stem.split("_")[0], stem, "images", "imgs", "."]
    best: Optional[tuple[int, Path, set[str]]] = None
    probe = names[:200]  # a sample is enough to tell the folders apart
    for c in dict.fromkeys(cands):
        folder = (path.parent / c) if c != "." else path.parent
        if not folder.is_dir():
            continue
        listing = _listdir(folder)
        hits = sum(n in listing for n in probe)
        if best is None or hits > best[0]:
            best = (hits, folder, listing)
    if best is None or best[0] == 0:
        looked = ", ".join(f"{c}/" for c in dict.fromkeys(cands))
        raise DataError(f"{path}: cannot find the images it names (first: {names[0]!r}); "
                        f"looked in {looked} beside it")
    return best[1], best[2]


def _open_csv(tables: Sequence[Path], source: str, skip_bad: bool, limit: Optional[int],
              seed: int) -> _Collector:
    cands: list[tuple[Path, Path, set[str], str, Any, int]] = []
    for table in tables:
        names, values, has_header = read_keypoint_csv(table)
        folder, listing = _csv_image_folder(table, names)
        for k, (name, val) in enumerate(zip(names, values)):
            cands.append((table, folder, listing, name, val, k + (2 if has_header else 1)))

    def make(c: tuple) -> Record:
        table, folder, listing, name, val, line = c
        if isinstance(val, DataError):
            raise val
        if not name or name not in listing:
            raise DataError(f"{table}: row {line}: missing image {folder / name}")
        # 0-based pixel coordinates already (dlib / the table's convention): no shift.
        return Record(folder / name, val, {"source": source, "table": table.name,
                                           "part": folder.name if folder != table.parent else table.stem})

    return _collect(cands, make, lambda c: f"{c[0]}: row {c[5]}", skip_bad, limit, seed)


def _looks_like_keypoint_csv(path: Path) -> bool:
    """Cheap sniff: the first line has name + 136 fields."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline()
    except OSError:
        return False
    return len(first.rstrip("\r\n").split(",")) == 1 + 2 * NUM_POINTS


# --------------------------------------------------------------------------------------------
# AFLW 21-point tables


def open_aflw21(table: Path, skip_bad: bool, limit: Optional[int], seed: int) -> _Collector:
    """Records of an ``aflw21.csv`` table (images in ``images/`` beside it, or beside the table).

    Unlike every other kind, ``Record.points`` is float32 **(21, 2)** in AFLW's order
    (:data:`lightmark.data.aflw21.AFLW21_NAMES`), NaN where the point was not visible
    (``-1,-1`` in the file). ``meta``: ``yaw_deg`` (the table's), ``num_points`` 21,
    ``convention`` ``"aflw21"``, ``source``, ``table``, ``row``. Code that needs 68 points calls
    :func:`require_68`, which refuses these; ``lightmark fit21`` turns them into 68-point labels.
    """
    rows = read_aflw21_csv(table)
    names = [n for n, _, _ in rows if n]
    if not names:
        raise DataError(f"{table}: no image names in the table")
    folder, listing = _csv_image_folder(table, names)

    def make(row: tuple) -> Record:
        name, line, val = row
        if isinstance(val, DataError):
            raise val
        if not name or name not in listing:
            raise DataError(f"{table}: row {line}: missing image {folder / name}")
        yaw, pts = val
        return Record(folder / name, pts, {"source": "aflw21", "yaw_deg": yaw, "num_points": NUM_POINTS_AFLW21,
                                           "convention": "aflw21", "table": table.name, "row": line})

    return _collect(rows, make, lambda r: f"{table}: row {r[1]}", skip_bad, limit, seed)


def require_68(dataset: LandmarkDataset, what: str) -> LandmarkDataset:
    """``dataset`` if its records hold 68 points, else a :class:`DataError` saying ``what`` needs
    68-point labels (AFLW-21 tables do not have them)."""
    if dataset.num_points != NUM_POINTS:
        raise DataError(f"{dataset.root or dataset.name}: {what} needs 68-point labels, but this "
                        f"{dataset.kind!r} data set has {dataset.num_points} points per face; make "
                        "68-point labels for it first (lightmark fit21)")
    return dataset


# --------------------------------------------------------------------------------------------
# open_dataset


def _sniff(folder: Path, names: set[str]) -> dict[str, list]:
    found: dict[str, list] = {k: [] for k in KINDS}
    for n in names:
        low = n.lower()
        if low.endswith("_ldmks.txt"):
            found["facesynthetics"].append(n)
        elif low.endswith(".mat"):
            found["aflw2000"].append(n)
        elif low.endswith(".pts"):
            found["pts"].append(n)
        elif low.endswith(".csv"):
            found["csv"].append(n)
    # A .csv counts only if it has the shape of a 68-point table (other CSVs may sit beside data).
    csvs = found["csv"]
    found["csv"] = [n for n in csvs if _looks_like_keypoint_csv(folder / n)]
    found["aflw21"] = [n for n in csvs if looks_like_aflw21_csv(folder / n)]
    return {k: sorted(v) for k, v in found.items()}


def _finish(col: _Collector, name: str, kind: str, root: Path, where: Path) -> LandmarkDataset:
    if not col.records and col.bad:
        raise DataError(f"{where}: no usable samples: all {len(col.bad)} were bad, first: {col.bad[0][1]}")
    return LandmarkDataset(col.records, name, kind, root, col.bad)


def open_dataset(path: PathLike, kind: Optional[str] = None, skip_bad: bool = False,
                 limit: Optional[int] = None, seed: int = 0) -> LandmarkDataset:
    """Open a landmark data set from a folder (kind recognised from its contents) or a single file.

    ``kind`` forces one of :data:`KINDS`. ``skip_bad`` skips samples whose labels are bad or whose
    image is missing, listing them in ``.bad`` (images are only read by ``dataset[i]``, which raises
    :class:`DataError` for an unreadable one). ``limit`` keeps a seeded random subset of that many
    good samples (in listing order). Files are taken in sorted order, so results never depend on
    the order the file system lists them in.
    """
    p = Path(path)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; known: {sorted(KINDS)}")
    if not p.exists():
        raise DataError(f"{p}: no such data folder or file")
    if p.is_file():
        return _open_file(p, kind, skip_bad, limit, seed)

    names = _listdir(p)
    visible = {n for n in names if not n.startswith(".")}
    if not visible:
        raise DataError(f"{p}: empty folder: no data files")
    found = _sniff(p, visible)
    kinds = [k for k in KINDS if found[k]] if kind is None else [kind]
    if not kinds or not found[kinds[0]]:
        subdirs = sorted(n for n in visible if (p / n).is_dir())
        hint = f"; its subfolders ({', '.join(subdirs[:8])}) may each be a data set" if subdirs else ""
        looked = "; ".join(KINDS[k] for k in ([kind] if kind else KINDS))
        raise DataError(f"{p}: unrecognised data folder: looked for {looked}{hint}")
    if len(kinds) > 1:
        raise DataError(f"{p}: holds several kinds of labels ({', '.join(kinds)}); pass kind= to choose")
    k = kinds[0]
    if k == "csv":
        col = _open_csv([p / n for n in found[k]], p.name, skip_bad, limit, seed)
    elif k == "aflw21":
        if len(found[k]) > 1:
            raise DataError(f"{p}: holds several AFLW-21 tables ({', '.join(found[k])}); open one by its path")
        col = open_aflw21(p / found[k][0], skip_bad, limit, seed)
    else:
        col = _open_beside(k, p, found[k], names, skip_bad, limit, seed)
    return _finish(col, p.name, k, p, p)


def _open_file(p: Path, kind: Optional[str], skip_bad: bool, limit: Optional[int],
               seed: int) -> LandmarkDataset:
    low = p.name.lower()
    folder = p.parent
    if low.endswith(IMAGE_SUFFIXES):
        # An image: use the label file beside it.
        names = _listdir(folder)
        for label, k in ((p.stem + "_ldmks.txt", "facesynthetics"), (p.stem + ".mat", "aflw2000"),
                         (p.stem + ".pts", "pts")):
            if label in names and (kind is None or kind == k):
                return _open_file(folder / label, k, skip_bad, limit, seed)
        raise DataError(f"{p}: no label file beside this image (looked for {p.stem}_ldmks.txt, "
                        f"{p.stem}.mat, {p.stem}.pts)")
    if kind is None:
        kind = ("facesynthetics" if low.endswith("_ldmks.txt") else "aflw2000" if low.endswith(".mat")
                else "pts" if low.endswith(".pts")
                else "aflw21" if low.endswith(".csv") and looks_like_aflw21_csv(p)
                else "csv" if low.endswith(".csv") else None)
    if kind is None:
        raise DataError(f"{p}: unrecognised data file: expected NNNNNN_ldmks.txt, .mat, .pts, .csv "
                        "or an image with one of them beside it")
    if kind == "csv":
        col = _open_csv([p], folder.name, skip_bad, limit, seed)
        return _finish(col, p.stem, kind, folder, p)
    if kind == "aflw21":
        return _finish(open_aflw21(p, skip_bad, limit, seed), folder.name, kind, folder, p)
    names = _listdir(folder)
    col = _open_beside(kind, folder, [p.name], names, skip_bad, limit, seed)
    return _finish(col, p.stem, kind, folder, p)
