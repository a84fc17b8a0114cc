"""The evaluation protocol: a seeded validation/test split of AFLW2000-3D, and file lists.

The split ranks files by a seeded hash of their *name* (not their path, not the listing order),
so the same seed gives the same lists on any machine, from any copy of the folder. Validation gets
``round(n * val_fraction)`` files (at least one when there are two or more and the fraction is
positive), test the rest; both lists come back sorted by name.

A report stores the lists it used beside itself with :func:`write_file_list`;
:func:`read_file_list` reads them back and :func:`subset_by_names` re-selects those records.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence, Union

from lightmark.core import files
from lightmark.data.readers import DataError, LandmarkDataset, open_dataset

PathLike = Union[str, Path]
SPLITS = ("val", "test", "all")
_HEADER = "# lightmark file list"


def _rank_key(name: str, seed: int) -> bytes:
    # sha256 rather than numpy's generator: stable across library versions and platforms.
    return hashlib.sha256(f"{seed}:{name}".encode("utf-8")).digest()


def _split_names(names: Sequence[str], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    unique = sorted(set(names))
    if len(unique) != len(names):
        raise ValueError("split: file names are not unique; cannot split by name")
    n = len(unique)
    n_val = int(round(n * val_fraction))
    if 0.0 < val_fraction < 1.0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)  # tiny sets (the 4-image sample) still get both parts
    ranked = sorted(unique, key=lambda s: _rank_key(s, seed))
    return set(ranked[:n_val]), set(ranked[n_val:])


def _name_of(p: PathLike) -> str:
    return Path(p).name


def split_aflw(dataset_or_paths: Union[LandmarkDataset, PathLike, Sequence[PathLike]],
               val_fraction: float = 0.1, seed: int = 0):
    """Seeded random split into ``(val, test)``.

    Takes an opened :class:`LandmarkDataset` or a folder (opened as AFLW2000-3D) and returns two
    data sets; or a list of file paths and returns two sorted path lists. Files are identified by
    their name, so the split does not depend on listing order or on where the folder lives.
    """
    if isinstance(dataset_or_paths, (str, Path)):
        dataset_or_paths = open_dataset(dataset_or_paths, kind="aflw2000")
    if isinstance(dataset_or_paths, LandmarkDataset):
        ds = dataset_or_paths
        names = [r.image_path.name for r in ds.records]
        val, test = _split_names(names, val_fraction, seed)
        order = sorted(range(len(names)), key=lambda i: names[i])
        return (ds.subset([i for i in order if names[i] in val]),
                ds.subset([i for i in order if names[i] in test]))
    paths = [Path(p) for p in dataset_or_paths]
    val, test = _split_names([_name_of(p) for p in paths], val_fraction, seed)
    paths.sort(key=_name_of)
    return [p for p in paths if p.name in val], [p for p in paths if p.name in test]


def select_split(dataset: LandmarkDataset, split: str, seed: int = 0,
                 val_fraction: float = 0.1) -> LandmarkDataset:
    """The ``"val"`` or ``"test"`` part of :func:`split_aflw`, or the whole data set (``"all"``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "all":
        return dataset
    val, test = split_aflw(dataset, val_fraction, seed)
    return val if split == "val" else test


def write_file_list(path: PathLike, dataset: Union[LandmarkDataset, Sequence[PathLike]]) -> None:
    """Write the image names of ``dataset`` (relative to its root), one a line, atomically."""
    if isinstance(dataset, LandmarkDataset):
        names = dataset.relative_names()
        head = f"{_HEADER}: {dataset.name} ({dataset.kind}), {len(names)} files"
    else:
        names = [Path(p).as_posix() for p in dataset]
        head = f"{_HEADER}: {len(names)} files"
    bad = [n for n in names if "\n" in n or n.startswith("#")]
    if bad:
        raise ValueError(f"{path}: cannot store file name {bad[0]!r} in a file list")
    files.write_text(path, "\n".join([head, *names]) + "\n")


def read_file_list(path: PathLike) -> list[str]:
    """The names stored by :func:`write_file_list` (comment lines skipped)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{p}: no such file list") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read file list ({e})") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def subset_by_names(dataset: LandmarkDataset, names: Sequence[str], where: str = "file list") -> LandmarkDataset:
    """The records of ``dataset`` whose relative names are ``names`` (in that order)."""
    index = {n: i for i, n in enumerate(dataset.relative_names())}
    missing = [n for n in names if n not in index]
    if missing:
        raise DataError(f"{where}: {len(missing)} name(s) not in data set {dataset.name!r}, "
                        f"first: {missing[0]!r}")
    return dataset.subset([index[n] for n in names])
