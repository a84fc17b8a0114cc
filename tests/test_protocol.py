"""Evaluation protocol: the seeded AFLW2000-3D split and stored file lists."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightmark.data import (DataError, open_dataset, read_file_list, select_split, split_aflw,
                            subset_by_names, write_file_list)

NAMES = [f"image{i:05d}.jpg" for i in range(2000)]


def aflw_folder(tmp_path: Path, n: int = 12) -> Path:
    scipy_io = pytest.importorskip("scipy.io")
    d = tmp_path / "aflw"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        pts = rng.uniform(100, 300, (68, 2))
        pts[36:48, 1], pts[48:68, 1] = 150, 250
        Image.fromarray(np.zeros((450, 450, 3), np.uint8)).save(d / f"image{i:05d}.jpg")
        scipy_io.savemat(str(d / f"image{i:05d}.mat"),
                         {"pt3d_68": np.vstack([pts.T, np.zeros((1, 68))]).astype(np.float32),
                          "Pose_Para": np.zeros((1, 7), np.float32)})
    return d


def test_split_sizes_and_partition():
    val, test = split_aflw(NAMES)
    assert len(val) == 200 and len(test) == 1800
    names_val = {p.name for p in val}
    names_test = {p.name for p in test}
    assert not names_val & names_test and names_val | names_test == set(NAMES)
    assert [p.name for p in val] == sorted(names_val)  # returned sorted


def test_split_is_deterministic_and_order_independent():
    shuffled = NAMES[:]
    random.Random(7).shuffle(shuffled)
    a = split_aflw(NAMES, seed=0)
    b = split_aflw(shuffled, seed=0)
    assert a == b
    # the folder a file lives in does not matter, only its name
    c = split_aflw([f"/elsewhere/{n}" for n in shuffled], seed=0)
    assert [p.name for p in c[0]] == [p.name for p in a[0]]
    other = split_aflw(NAMES, seed=1)
    assert other[0] != a[0]
    # a different fraction keeps the same ranking: the 5% set is inside the 10% set
    small, _ = split_aflw(NAMES, val_fraction=0.05, seed=0)
    assert len(small) == 100 and {p.name for p in small} <= {p.name for p in a[0]}


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="val_fraction"):
        split_aflw(NAMES, val_fraction=1.5)
    with pytest.raises(ValueError, match="not unique"):
        split_aflw(["a/x.jpg", "b/x.jpg"])


def test_split_datasets(tmp_path):
    d = aflw_folder(tmp_path, 12)
    ds = open_dataset(d)
    val, test = split_aflw(ds, val_fraction=0.25, seed=3)
    assert len(val) == 3 and len(test) == 9
    assert val.kind == "aflw2000" and val.name == "aflw"
    by_path = split_aflw(d, val_fraction=0.25, seed=3)  # a folder is opened as AFLW2000-3D
    assert by_path[0].relative_names() == val.relative_names()
    # the same split on the bare file names
    names_val, _ = split_aflw([r.image_path for r in ds.records], val_fraction=0.25, seed=3)
    assert [p.name for p in names_val] == val.relative_names()
    assert select_split(ds, "val", seed=3, val_fraction=0.25).relative_names() == val.relative_names()
    assert select_split(ds, "test", seed=3, val_fraction=0.25).relative_names() == test.relative_names()
    assert select_split(ds, "all") is ds
    with pytest.raises(ValueError, match="unknown split"):
        select_split(ds, "train")


def test_real_sample_split(shared_data):
    d = shared_data("aflw2000_sample")
    val, test = split_aflw(d)
    assert len(val) == 1 and len(test) == 3  # tiny sets still get both parts
    assert set(val.relative_names()) | set(test.relative_names()) == {
        "image00050.jpg", "image00081.jpg", "image00251.jpg", "image00430.jpg"}
    assert split_aflw(d)[0].relative_names() == val.relative_names()


def test_file_list_roundtrip(tmp_path):
    d = aflw_folder(tmp_path, 6)
    ds = open_dataset(d)
    _, test = split_aflw(ds, val_fraction=0.5, seed=0)
    out = tmp_path / "report" / "test_files.txt"
    write_file_list(out, test)
    text = out.read_text()
    assert text.startswith("# lightmark file list: aflw (aflw2000), 3 files")
    names = read_file_list(out)
    assert names == test.relative_names() and len(names) == 3
    again = subset_by_names(ds, names)
    assert [r.image_path for r in again.records] == [r.image_path for r in test.records]
    assert [p.name for p in out.parent.iterdir()] == ["test_files.txt"]  # no temporary left behind
    # plain path lists work too
    write_file_list(out, ["a/b.jpg", "c.jpg"])
    assert read_file_list(out) == ["a/b.jpg", "c.jpg"]


def test_file_list_errors(tmp_path):
    with pytest.raises(DataError, match="missing.txt"):
        read_file_list(tmp_path / "missing.txt")
    ds = open_dataset(aflw_folder(tmp_path, 2))
    with pytest.raises(DataError, match="image09999.jpg"):
        subset_by_names(ds, ["image00000.jpg", "image09999.jpg"])
