"""AFLW 21-point faces: the reader, the AFLW-21 -> iBUG-68 map, the ICT fit (on a synthetic face
whose answer is known, and on 10 AFLW2000-3D faces), and the label generation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightmark.core.errors import DataError, ProfileError
from lightmark.core.paths import data_root
from lightmark.data import open_dataset, require_68
from lightmark.data.aflw21 import (AFLW21_COMMON, AFLW21_NAMES, AFLW21_TO_IBUG68, IBUG68_COMMON,
                                   read_aflw2000_pt2d)

HEADER = "image,yaw_deg," + ",".join(f"x{k},y{k}" for k in range(21))


def _row(name: str, yaw: float, pts: np.ndarray) -> str:
    p = np.where(np.isfinite(pts), pts, -1.0)
    return f"{name},{yaw:.2f}," + ",".join(f"{v:.2f}" for v in p.ravel())


def _points(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(20, 100, (21, 2))


def make_aflw21(folder: Path, rows: list[str], images: list[str], header: bool = True) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.fromarray(np.full((120, 120, 3), 100, np.uint8)).save(folder / "images" / name)
    (folder / "aflw21.csv").write_text("\n".join(([HEADER] if header else []) + rows) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------
# reader


def test_reader_parses_points_yaw_and_invisible(tmp_path):
    p0 = _points(0)
    p0[[5, 11, 16]] = np.nan  # not visible: written as -1,-1
    rows = [_row("a.jpg", -45.5, p0), _row("b.jpg", 61.0, _points(1))]
    d = make_aflw21(tmp_path / "aflw", rows, ["a.jpg", "b.jpg"])
    for path in (d, d / "aflw21.csv"):  # sniffed from the folder and from the table's path
        ds = open_dataset(path)
        assert ds.kind == "aflw21" and len(ds) == 2 and ds.num_points == 21
        r = ds.records[0]
        assert r.points.shape == (21, 2) and r.points.dtype == np.float32
        assert np.isnan(r.points[[5, 11, 16]]).all()
        np.testing.assert_allclose(r.points[0], p0[0], atol=0.01)
        assert r.meta["yaw_deg"] == pytest.approx(-45.5)
        assert r.meta["num_points"] == 21 and r.meta["convention"] == "aflw21"
        assert r.image_path == d / "images" / "a.jpg"
        assert ds[1].image.shape == (120, 120, 3)
    assert ds.relative_names() == ["images/a.jpg", "images/b.jpg"]


def test_reader_without_header_limit_and_seed(tmp_path):
    rows = [_row(f"{i}.jpg", 40.0 + i, _points(i)) for i in range(6)]
    d = make_aflw21(tmp_path / "aflw", rows, [f"{i}.jpg" for i in range(6)], header=False)
    ds = open_dataset(d, limit=3, seed=5)
    assert len(ds) == 3
    assert [r.meta["yaw_deg"] for r in ds.records] == sorted(r.meta["yaw_deg"] for r in ds.records)
    again = open_dataset(d, limit=3, seed=5)
    assert [r.image_path for r in again.records] == [r.image_path for r in ds.records]


@pytest.mark.parametrize("bad, message", [
    ("c.jpg,30.0," + ",".join(["50"] * 40), "row 4 ('c.jpg'): wrong number of columns"),
    ("c.jpg,30.0," + ",".join(["50"] * 41 + ["x"]), "row 4 ('c.jpg'): garbled row"),
    ("c.jpg,nan," + ",".join(["50"] * 42), "row 4 ('c.jpg'): non-finite yaw"),
    ("c.jpg,30.0," + ",".join(["50"] * 41 + ["inf"]), "row 4 ('c.jpg'): non-finite"),
    ("c.jpg,30.0," + ",".join(["-1"] * 42), "row 4 ('c.jpg'): no visible points"),
    (_row("missing.jpg", 30.0, _points(3)), "row 4: missing image"),
])
def test_bad_rows_are_named_and_skippable(tmp_path, bad, message):
    rows = [_row("a.jpg", 40.0, _points(0)), _row("b.jpg", 50.0, _points(1)), bad]
    d = make_aflw21(tmp_path / "aflw", rows, ["a.jpg", "b.jpg", "c.jpg"])
    with pytest.raises(DataError) as e:
        open_dataset(d)
    assert str(d / "aflw21.csv") in str(e.value) and message in str(e.value)
    ds = open_dataset(d, skip_bad=True)
    assert len(ds) == 2 and len(ds.bad) == 1 and "row 4" in ds.bad[0][0]


def test_bad_header_and_empty_table(tmp_path):
    d = make_aflw21(tmp_path / "a", [], [])
    with pytest.raises(DataError, match="header but no rows"):
        open_dataset(d / "aflw21.csv")
    (d / "aflw21.csv").write_text("image,yaw_deg,x0,y0\n")
    with pytest.raises(DataError, match="not an AFLW-21 table"):
        open_dataset(d / "aflw21.csv", kind="aflw21")


def test_68_point_consumers_refuse_21_points(tmp_path):
    d = make_aflw21(tmp_path / "aflw", [_row("a.jpg", 40.0, _points(0))], ["a.jpg"])
    ds = open_dataset(d)
    with pytest.raises(DataError, match="needs 68-point labels.*21 points per face.*fit21"):
        require_68(ds, "training")
    from lightmark.evaluate import evaluate

    with pytest.raises(DataError, match="evaluate needs 68-point labels"):
        evaluate(object(), ds, progress=False)  # refused before the predictor is touched


# ---------------------------------------------------------------------------------------------
# the AFLW-21 -> iBUG-68 map


def test_map_constant():
    assert AFLW21_TO_IBUG68 == {0: 17, 1: 19, 2: 21, 3: 22, 4: 24, 5: 26, 6: 36, 8: 39, 9: 42,
                                11: 45, 14: 30, 17: 48, 19: 54, 20: 8}
    assert len(AFLW21_NAMES) == 21
    assert AFLW21_COMMON.tolist() == sorted(AFLW21_TO_IBUG68)
    assert [AFLW21_TO_IBUG68[k] for k in AFLW21_COMMON] == IBUG68_COMMON.tolist()
    # The points map onto the right parts of the iBUG markup (brows 17-26, eyes 36-47, ...).
    for k, i in AFLW21_TO_IBUG68.items():
        name = AFLW21_NAMES[k]
        part = ("brow" if 17 <= i <= 26 else "eye" if 36 <= i <= 47 else "nose" if 27 <= i <= 35
                else "mouth" if 48 <= i <= 67 else "chin")
        assert part in name, (k, name, i)
    # "left" is the picture's left, like iBUG's low indices within each part (17 before 26, ...).
    assert AFLW21_TO_IBUG68[0] < AFLW21_TO_IBUG68[5] and AFLW21_TO_IBUG68[6] < AFLW21_TO_IBUG68[11]
    assert AFLW21_TO_IBUG68[17] < AFLW21_TO_IBUG68[19]


def test_map_sides_on_the_face_model():
    """On the ICT model, the iBUG vertex of every picture-left AFLW point lies at model x < 0
    (the subject's right: picture left on a frontal face), and of every picture-right one at x > 0."""
    from lightmark.synth import ict

    if not ict.default_model_path().is_file():
        pytest.skip("ICT face model not available")
    m = ict.load_ict()
    x = m.neutral[m.landmarks68[IBUG68_COMMON], 0]
    for k, xi in zip(AFLW21_COMMON, x):
        name = AFLW21_NAMES[k]
        if name.startswith("left") or name.endswith("left corner") and "mouth" in name:
            assert xi < 0, name
        elif name.startswith("right") or name.endswith("right corner") and "mouth" in name:
            assert xi > 0, name


# ---------------------------------------------------------------------------------------------
# the fit


@pytest.fixture(scope="module")
def sm():
    from lightmark.synth import fit21, ict

    if not ict.default_model_path().is_file():
        pytest.skip("ICT face model not available")
    return fit21.shape_model()


def _synthetic_face(sm, yaw: float, pitch: float, roll: float, seed: int = 0):
    """The model's own face at a known pose: 21 clicks (far side dropped) and its true 68."""
    from lightmark.synth import camera, fit21

    rng = np.random.default_rng(seed)
    coef = np.zeros(sm.points_basis.shape[2])
    coef[:sm.n_id] = rng.normal(0, 0.5, sm.n_id)
    coef[sm.n_id] = 0.2  # jawOpen
    rot = camera.rotation(yaw, pitch, roll)
    t = np.array([60.0, 60.0])
    p21 = fit21._project(sm.points_mean + sm.points_basis @ coef, 4.0, rot, t)
    p68 = fit21._project(sm.lm_mean + sm.lm_basis @ coef, 4.0, rot, t)
    if yaw > 20:  # turned towards image right: the picture-right side is hidden
        p21[[3, 4, 5, 9, 10, 11, 15, 16, 19]] = np.nan
    elif yaw < -20:
        p21[[0, 1, 2, 6, 7, 8, 12, 13, 17]] = np.nan
    return p21, p68


@pytest.mark.parametrize("pose", [(0, 0, 0), (40, 10, 5), (-70, -5, 10), (85, 0, -8)])
def test_fit_recovers_a_known_face(sm, pose):
    from lightmark.core.metrics import nme_box
    from lightmark.synth import fit21

    p21, p68 = _synthetic_face(sm, *pose)
    r = fit21.fit21(p21)
    # Measured 0.3-0.9 % (the ridge prior pulls the shape a little towards the mean).
    assert nme_box(r.points68, p68)[0] < 0.015
    assert r.visible.sum() == np.isfinite(p21).all(axis=1).sum()
    assert abs(r.yaw_pitch_roll[0] - pose[0]) < 4.0
    assert r.error_px < 0.5 and r.points68.shape == (68, 2)


def test_fit_bad_input(sm):
    from lightmark.synth import fit21

    with pytest.raises(ProfileError, match="shape"):
        fit21.fit21(np.zeros((68, 2)))
    p = np.full((21, 2), np.nan)
    p[:3] = [[10, 10], [20, 10], [30, 12]]
    with pytest.raises(ProfileError, match="3 visible points"):
        fit21.fit21(p)


def test_fit_on_ten_aflw2000_faces():
    """The check where the answer is known, on 10 validation faces: fit the 21 pt2d clicks, score
    the 68 against pt3d_68 (NME by the GT box). Measured mean 3.84 %."""
    from lightmark.core.metrics import nme_box
    from lightmark.data.formats import read_aflw_mat
    from lightmark.synth import fit21, ict

    folder = data_root() / "aflw2000_val"
    files = sorted(folder.glob("*.mat"))[:10]
    if len(files) < 10 or not ict.default_model_path().is_file():
        pytest.skip("aflw2000_val or the ICT model not available")
    errs = [nme_box(fit21.fit21(read_aflw2000_pt2d(f)).points68, read_aflw_mat(f)[0])[0] for f in files]
    assert np.mean(errs) < 0.045


def test_pt2d_reader(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    pt = np.vstack([np.arange(23.0) + 10, np.arange(23.0) + 20])
    pt[:, 4] = (-1, 452)  # missing
    scipy_io.savemat(str(tmp_path / "x.mat"), {"pt2d": pt})
    p = read_aflw2000_pt2d(tmp_path / "x.mat")
    assert p.shape == (21, 2) and np.isnan(p[4]).all()
    np.testing.assert_allclose(p[0], (9.0, 19.0))  # 1-based -> 0-based
    scipy_io.savemat(str(tmp_path / "y.mat"), {"pt2d": np.zeros((2, 5))})
    with pytest.raises(DataError, match="y.mat: pt2d should be 2x21"):
        read_aflw2000_pt2d(tmp_path / "y.mat")


# ---------------------------------------------------------------------------------------------
# label generation


def test_label_generation_is_readable_and_resumable(sm, tmp_path):
    from lightmark.synth import fit21_labels

    poses = [(45, 5, 0), (-60, 0, 5), (70, -5, -5)]
    faces = [_synthetic_face(sm, *p, seed=i) for i, p in enumerate(poses)]
    rows = [_row(f"f{i}.jpg", -p[0], f[0]) for i, (p, f) in enumerate(zip(poses, faces))]
    bad = np.full((21, 2), np.nan)
    bad[:2] = [[10, 10], [30, 12]]
    rows.append(_row("f3.jpg", 40.0, bad))  # too few points to fit: skipped, named in the manifest
    src = make_aflw21(tmp_path / "src", rows, [f"f{i}.jpg" for i in range(4)])
    out = tmp_path / "out"
    stats = fit21_labels.fit21_main(str(src), str(out))
    assert stats["n"] == 3 and stats["n_skipped"] == 1 and stats["fitted_this_run"] == 4
    ds = open_dataset(out)
    assert ds.kind == "pts" and len(ds) == 3 and ds.num_points == 68
    for rec, (_, p68) in zip(ds.records, faces):
        np.testing.assert_allclose(rec.points, p68, atol=2.0)  # 1-based in the file, 0-based here
    man = json.loads((out / "manifest.json").read_text())
    assert man["convention"] == "3d" and man["source"] == str(src) and len(man["faces"]) == 3
    assert all("fit_error_px" in f and "fit" in f for f in man["faces"])
    assert "f3.jpg" in man["skipped"][0]
    # Resumed: nothing is refitted; a face whose labels vanished is.
    assert fit21_labels.fit21_main(str(src), str(out))["fitted_this_run"] == 0
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert [r["fitted"] for r in runs] == [4, 0]
    (out / "f1.pts").unlink()
    again = fit21_labels.fit21_main(str(src), str(out))
    assert again["fitted_this_run"] == 1 and again["n"] == 3
    with pytest.raises(ProfileError, match="jaw"):
        fit21_labels.fit21_main(str(src), str(out), jaw="landmarks68")


def test_cli_fit21_needs_its_arguments(capsys):
    from lightmark.cli import main

    assert main(["fit21"]) == 2
    assert "needs --data and --out" in capsys.readouterr().err
