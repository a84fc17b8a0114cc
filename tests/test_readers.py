"""Readers: the five real data sets, the coordinate conventions, and every kind of bad input."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightmark.data import DataError, LandmarkDataset, open_dataset
from lightmark.data.readers import read_pts

# ---------------------------------------------------------------------------------------------
# helpers to build small data sets


def face_points(cx: float = 50.0, cy: float = 50.0, s: float = 30.0) -> np.ndarray:
    """A plausible 68-point layout (eyes above the mouth) in a 100x100 image."""
    rng = np.random.default_rng(1)
    p = np.column_stack([cx + s * rng.uniform(-1, 1, 68), cy + s * rng.uniform(-1, 1, 68)])
    p[36:48, 1] = cy - 0.4 * s  # eyes
    p[48:68, 1] = cy + 0.5 * s  # mouth
    return p


def write_image(path: Path, size: int = 100) -> None:
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(path)


def write_pts(path: Path, pts: np.ndarray, header: bool = True) -> None:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    path.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n" if header else body + "\n")


def write_mat(path: Path, pts: np.ndarray, pose=(0.1, -0.5, 0.2)) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    p3 = np.vstack([pts.T, np.zeros((1, len(pts)))]).astype(np.float32)
    scipy_io.savemat(str(path), {"pt3d_68": p3,
                                 "Pose_Para": np.array([[*pose, 200.0, 200.0, -100.0, 0.001]], np.float32)})


def pts_folder(tmp_path: Path, n: int = 3) -> Path:
    d = tmp_path / "pts_set"
    d.mkdir()
    for i in range(n):
        write_image(d / f"face{i}.jpg")
        write_pts(d / f"face{i}.pts", face_points() + 1)
    return d


# ---------------------------------------------------------------------------------------------
# real data


def check_sane(ds: LandmarkDataset, n_images: int = 20, inner_only: bool = False) -> None:
    """Shapes and dtypes; eyes above the mouth and the subject's right eye on the image's left;
    points inside the image for a spread of loaded samples."""
    assert len(ds) > 0
    P = np.stack([r.points for r in ds.records])
    assert P.shape == (len(ds), 68, 2) and P.dtype == np.float32
    assert np.isfinite(P).all()
    assert (P[:, 36:48, 1].mean(1) < P[:, 48:68, 1].mean(1)).all(), "eyes must be above the mouth"
    assert (P[:, 36, 0] < P[:, 45, 0]).all(), "point 36 (outer corner, image left) left of 45"
    for i in np.linspace(0, len(ds) - 1, min(n_images, len(ds))).astype(int):
        s = ds[int(i)]
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
        h, w = s.image.shape[:2]
        p = s.points[27:] if inner_only else s.points  # dlib's jaw may leave a tight crop
        assert (p[:, 0] >= -0.5).all() and (p[:, 0] <= w - 0.5).all(), ds.records[int(i)].image_path
        assert (p[:, 1] >= -0.5).all() and (p[:, 1] <= h - 0.5).all(), ds.records[int(i)].image_path


@pytest.mark.parametrize("sub,count", [("300w/afw", 337), ("300w/helen_trainset", 870)])
def test_300w(shared_data, sub, count):
    ds = open_dataset(shared_data(sub))
    assert ds.kind == "pts" and len(ds) == count and ds.bad == []
    assert ds.records[0].meta["source"] == "300w"
    check_sane(ds)
    # the reader subtracted 1 from the file's values
    r = ds.records[0]
    raw = np.loadtxt(r.meta["label_path"], skiprows=3, max_rows=68)
    np.testing.assert_allclose(r.points, raw - 1, atol=1e-4)


def test_ytf_keypoints_both_parts(shared_data):
    ds = open_dataset(shared_data("ytf_keypoints"))
    assert ds.kind == "csv" and len(ds) == 3452 + 770
    parts = [r.meta["part"] for r in ds.records]
    assert parts.count("training") == 3452 and parts.count("test") == 770
    assert all(r.image_path.parent.name == r.meta["part"] for r in ds.records)
    check_sane(ds)


def test_utkface_dlib68_fast_and_sane(shared_data):
    d = shared_data("utkface_dlib68")
    t = time.perf_counter()
    ds = open_dataset(d)
    elapsed = time.perf_counter() - t
    assert len(ds) == 12000 and ds.kind == "csv"
    assert elapsed < 3.0, f"opening 12,000 rows took {elapsed:.2f} s"
    assert ds.records[0].image_path.parent.name == "images"
    check_sane(ds, inner_only=True)


def test_facesynthetics(shared_data):
    ds = open_dataset(shared_data("facesynthetics/dataset_100"))
    assert ds.kind == "facesynthetics" and len(ds) == 100
    check_sane(ds, n_images=10)
    r = ds.records[0]
    raw = np.loadtxt(r.meta["label_path"])
    np.testing.assert_allclose(r.points, raw[:68], atol=1e-4)  # no shift
    np.testing.assert_allclose(r.meta["pupils"], raw[68:], atol=1e-4)
    # Most pupils land on eye pixels of the rendered segmentation (classes 3 and 4); the others are
    # behind closed lids, glasses or the nose of a turned head (the points are "x-ray" projections).
    hits = 0
    for rec in ds.records:
        seg = np.asarray(Image.open(rec.image_path.with_name(rec.image_path.stem + "_seg.png")))
        for x, y in rec.meta["pupils"]:
            hits += seg[int(round(y)), int(round(x))] in (3, 4)
    assert hits >= 130, f"only {hits}/200 pupils on eye pixels"


def test_aflw2000_sample(shared_data):
    ds = open_dataset(shared_data("aflw2000_sample"))
    assert ds.kind == "aflw2000" and len(ds) == 4
    check_sane(ds)
    for r in ds.records:
        assert {"yaw_deg", "pitch_deg", "roll_deg"} <= set(r.meta)
        assert -100 < r.meta["yaw_deg"] < 100
    # image00251 is turned well to one side (Pose_Para yaw -0.954 rad)
    yaw = {r.image_path.name: r.meta["yaw_deg"] for r in ds.records}
    assert yaw["image00251.jpg"] == pytest.approx(np.degrees(-0.95443881), abs=1e-3)


def test_no_torch_needed(tiny_faces):
    code = ("import sys; from lightmark.data import open_dataset; "
            f"open_dataset({str(tiny_faces)!r}, limit=3)[0]; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------
# conventions on files we write ourselves


def test_pts_is_one_based(tmp_path):
    pts = face_points()
    write_pts(tmp_path / "a.pts", pts)
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), pts - 1, atol=1e-3)
    write_pts(tmp_path / "b.pts", pts, header=False)  # headerless copies are accepted
    np.testing.assert_allclose(read_pts(tmp_path / "b.pts"), pts - 1, atol=1e-3)


def test_tiny_generated_set_is_a_consistent_300w_folder(tiny_faces):
    """conftest's tiny_faces: read as 300W (.pts 1-based), labels on the faces' pixels.

    The labels are the bundled model's points on the example photo, moved with each crop; so the
    bundled model, run again on each generated image, must find them again (up to its own error),
    mirrored images included. Labels left unpermuted after a mirror would be far off."""
    from helpers import TINY_COUNT, TINY_VARIANTS

    from lightmark.api import Landmarker
    from lightmark.core import geometry

    ds = open_dataset(tiny_faces)
    assert ds.kind == "pts" and len(ds) == TINY_COUNT and ds.bad == []
    r = ds.records[0]
    raw = np.loadtxt(r.meta["label_path"], skiprows=3, max_rows=68)
    np.testing.assert_allclose(r.points, raw - 1, atol=1e-4)  # the file is 1-based
    check_sane(ds, n_images=TINY_COUNT)
    assert len({ds[i].image.shape[:2] for i in range(len(ds))}) > 1  # not all one size
    lm = Landmarker()
    errs, unflipped = [], []
    for i, rec in enumerate(ds.records):
        s = ds[i]
        box = geometry.landmark_box(s.points)
        norm = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        pred = lm.predict(s.image, box, box_kind="landmarks")
        errs.append(np.linalg.norm(pred - s.points, axis=1).mean() / norm)
        if TINY_VARIANTS[int(rec.image_path.stem[-2])][2]:  # a mirrored image
            wrong = s.points[geometry.FLIP_PERMUTATION]  # its labels as they were before relabelling
            unflipped.append(np.linalg.norm(pred - wrong, axis=1).mean() / norm)
    assert max(errs) < 0.03 and np.mean(errs) < 0.015, np.round(errs, 4)
    assert unflipped and min(unflipped) > 5 * max(errs)


def test_mat_is_one_based_and_pose_in_degrees(tmp_path):
    pts = face_points()
    write_mat(tmp_path / "image00001.mat", pts, pose=(0.1, -0.5, 0.2))
    write_image(tmp_path / "image00001.jpg")
    ds = open_dataset(tmp_path)
    assert ds.kind == "aflw2000"
    np.testing.assert_allclose(ds.records[0].points, pts - 1, atol=1e-3)
    m = ds.records[0].meta
    assert m["yaw_deg"] == pytest.approx(np.degrees(-0.5), abs=1e-3)
    assert m["pitch_deg"] == pytest.approx(np.degrees(0.1), abs=1e-3)
    assert m["roll_deg"] == pytest.approx(np.degrees(0.2), abs=1e-3)


def test_single_files(tmp_path):
    d = pts_folder(tmp_path, 2)
    for p in (d / "face1.pts", d / "face1.jpg"):
        ds = open_dataset(p)
        assert len(ds) == 1 and ds.records[0].image_path == d / "face1.jpg"


def test_generic_csv_table(tmp_path):
    (tmp_path / "faces").mkdir()
    pts = face_points()
    rows = []
    for i in range(3):
        write_image(tmp_path / "faces" / f"f{i}.png")
        rows.append(f"f{i}.png," + ",".join(f"{v:g}" for v in pts.reshape(-1)))
    # no header row; images in the sibling folder named after the table
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    ds = open_dataset(tmp_path)
    assert ds.kind == "csv" and len(ds) == 3
    np.testing.assert_allclose(ds.records[2].points, pts, atol=1e-3)  # 0-based: no shift
    assert ds[1].image.shape == (100, 100, 3)


def test_limit_is_seeded(tmp_path):
    d = pts_folder(tmp_path, 10)
    a = [r.image_path for r in open_dataset(d, limit=4, seed=1).records]
    b = [r.image_path for r in open_dataset(d, limit=4, seed=1).records]
    c = [r.image_path for r in open_dataset(d, limit=4, seed=2).records]
    assert len(a) == 4 and a == b and a != c
    assert a == sorted(a)  # kept in listing order
    assert len(open_dataset(d, limit=50)) == 10
    sub = open_dataset(d).subset([3, 1])
    assert [r.image_path.name for r in sub.records] == ["face3.jpg", "face1.jpg"]


# ---------------------------------------------------------------------------------------------
# bad input: each case names the file


def expect_error(path: Path, named: Path, *words: str, **kw) -> DataError:
    with pytest.raises(DataError) as ei:
        open_dataset(path, **kw)
    msg = str(ei.value)
    assert named.name in msg, msg
    for w in words:
        assert w in msg, msg
    return ei.value


def test_wrong_number_of_points(tmp_path):
    d = pts_folder(tmp_path, 1)
    write_pts(d / "face0.pts", face_points()[:67])
    expect_error(d, d / "face0.pts", "wrong number of points")
    write_pts(d / "face0.pts", face_points()[:67], header=False)
    expect_error(d, d / "face0.pts", "wrong number of points")


def test_facesynthetics_wrong_count(tmp_path):
    write_image(tmp_path / "000000.png")
    (tmp_path / "000000_ldmks.txt").write_text("\n".join("1 2" for _ in range(69)))
    expect_error(tmp_path, tmp_path / "000000_ldmks.txt", "wrong number of points")


def test_nan_and_inf(tmp_path):
    d = pts_folder(tmp_path, 1)
    p = face_points()
    p[5, 0] = np.nan
    write_pts(d / "face0.pts", p)
    expect_error(d, d / "face0.pts", "NaN")
    p[5, 0] = np.inf
    write_pts(d / "face0.pts", p)
    expect_error(d, d / "face0.pts", "NaN or inf")


def test_csv_bad_rows(tmp_path):
    (tmp_path / "images").mkdir()
    pts = face_points().reshape(-1)
    good = ",".join(f"{v:g}" for v in pts)
    lines = ["image," + ",".join(f"x{i},y{i}" for i in range(68))]
    for i in range(4):
        write_image(tmp_path / "images" / f"f{i}.jpg")
    lines += [f"f0.jpg,{good}", "f1.jpg," + good.replace(good.split(",")[3], "nan", 1),
              "f2.jpg," + ",".join(good.split(",")[:100]), f"missing.jpg,{good}", f"f3.jpg,{good}"]
    table = tmp_path / "table.csv"
    table.write_text("\n".join(lines) + "\n")
    expect_error(tmp_path, table, "row 3", "NaN")
    ds = open_dataset(tmp_path, skip_bad=True)
    assert [r.image_path.name for r in ds.records] == ["f0.jpg", "f3.jpg"]
    reasons = " | ".join(r for _, r in ds.bad)
    assert len(ds.bad) == 3 and "NaN" in reasons and "wrong number of points" in reasons
    assert "missing image" in reasons and "missing.jpg" in reasons


def test_missing_image(tmp_path):
    d = pts_folder(tmp_path, 2)
    (d / "face1.jpg").unlink()
    expect_error(d, d / "face1.pts", "missing image")


def test_truncated_image_fails_at_load(tmp_path):
    d = pts_folder(tmp_path, 2)
    data = (d / "face1.jpg").read_bytes()
    (d / "face1.jpg").write_bytes(data[: len(data) // 3])
    ds = open_dataset(d)  # opening does not read images
    assert len(ds) == 2
    ds[0]
    with pytest.raises(DataError, match="face1.jpg"):
        ds[1]
    (d / "face1.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="face1.jpg"):
        ds[1]


def test_truncated_and_garbled_labels(tmp_path):
    d = pts_folder(tmp_path, 1)
    text = (d / "face0.pts").read_text()
    (d / "face0.pts").write_text(text[: len(text) // 2])  # cut mid-file: no closing brace
    expect_error(d, d / "face0.pts", "truncated")
    (d / "face0.pts").write_bytes(b"\x89\xff\xfe garbage \x00\x01" * 20)
    expect_error(d, d / "face0.pts")
    (d / "face0.pts").write_text("version: 1\nn_points: 68\n{\n" + "1 two\n" * 68 + "}\n")
    expect_error(d, d / "face0.pts", "not numbers")


def test_garbled_mat(tmp_path):
    write_image(tmp_path / "image00002.jpg")
    (tmp_path / "image00002.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 3)
    expect_error(tmp_path, tmp_path / "image00002.mat", "garbled or truncated")


def test_empty_and_unrecognised_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(empty, empty, "empty folder")
    only_images = tmp_path / "photos"
    only_images.mkdir()
    write_image(only_images / "a.jpg")
    err = expect_error(only_images, only_images, "unrecognised")
    for looked_for in ("_ldmks.txt", ".mat", ".pts", ".csv"):
        assert looked_for in str(err)
    expect_error(tmp_path / "nope", tmp_path / "nope", "no such")


def test_skip_bad_counts_and_all_bad(tmp_path):
    d = pts_folder(tmp_path, 4)
    write_pts(d / "face1.pts", face_points()[:60])
    (d / "face2.jpg").unlink()
    ds = open_dataset(d, skip_bad=True)
    assert [r.image_path.name for r in ds.records] == ["face0.jpg", "face3.jpg"]
    assert sorted(Path(f).name for f, _ in ds.bad) == ["face1.pts", "face2.pts"]
    for k in (0, 3):
        write_pts(d / f"face{k}.pts", face_points()[:10])
    expect_error(d, d, "no usable samples", skip_bad=True)


def test_several_kinds_need_kind(tmp_path):
    d = pts_folder(tmp_path, 2)
    write_image(d / "000000.png")
    (d / "000000_ldmks.txt").write_text("\n".join(f"{x} {y}" for x, y in face_points()) + "\n1 1\n2 2\n")
    expect_error(d, d, "several kinds", "kind=")
    assert len(open_dataset(d, kind="pts")) == 2
    fs = open_dataset(d, kind="facesynthetics")
    assert len(fs) == 1 and fs.records[0].meta["pupils"].shape == (2, 2)
    with pytest.raises(ValueError, match="unknown data kind"):
        open_dataset(d, kind="300w")


def test_dataset_images_ignore_exif_rotation(tmp_path):
    """Labels index the stored pixels, so a data set image is read as stored, EXIF or not."""
    from PIL import Image

    from lightmark.data.readers import open_dataset
    from lightmark.core.imaging import load_image

    img = Image.new("RGB", (120, 80), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated by 90 degrees
    img.save(tmp_path / "face.jpg", exif=exif)
    pts = [(20 + i % 17 * 4, 20 + i // 17 * 10) for i in range(68)]
    (tmp_path / "face.pts").write_text("version: 1\nn_points: 68\n{\n"
                                       + "".join(f"{x + 1} {y + 1}\n" for x, y in pts) + "}\n")
    sample = open_dataset(tmp_path)[0]
    assert sample.image.shape == (80, 120, 3)  # as stored
    assert load_image(tmp_path / "face.jpg").shape == (120, 80, 3)  # as displayed (user photos)
