"""Tests of the ICT-model data engine (lightmark.synth): rasteriser, synthetic faces, the
FaceSynthetics files they are written to, the contour jaw, and 3D profiling of real faces."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lightmark.synth import camera
from lightmark.synth.raster import RasterError, quads_to_triangles, rasterize

# The ICT face model that lightmark.synth loads ($LIGHTMARK_ICT_MODEL, else the shared models
# folder): a test needing it is marked `needs_ict` (the conftest fixture `ict_model` skips it when
# the file is missing). HELEN photos, for profiling, come from the `shared_data` fixture.
needs_ict = pytest.mark.usefixtures("ict_model")
HELEN = "300w/helen_trainset"


# ------------------------------------------------------------------------------------------
# rasteriser and camera (no data needed)


def test_raster_covers_triangle_area_and_keeps_the_nearest():
    xy = np.array([[10.0, 10.0], [10.0, 50.0], [50.0, 10.0],  # counter-clockwise on screen: visible
                   [0.0, 0.0], [0.0, 63.0], [63.0, 0.0]])
    depth = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    # Screen winding with y down: (10,10) -> (10,50) -> (50,10) has negative signed area.
    r = rasterize(xy, depth, np.array([[0, 1, 2], [3, 4, 5]]), 64, 64)
    assert abs(int((r.tri == 0).sum()) - 0.5 * 40 * 40) <= 61  # area + the 41+41-1 pixels on its edges / 2
    assert r.tri[20, 20] == 0 and r.tri[5, 5] == 1  # the near triangle wins where both cover
    assert abs(float(r.depth[20, 20]) - 1.0) < 1e-5
    np.testing.assert_allclose(r.bary[r.mask].sum(axis=1), 1.0, atol=1e-5)


def test_raster_culls_back_faces():
    xy = np.array([[10.0, 10.0], [50.0, 10.0], [10.0, 50.0]])  # clockwise on screen: back face
    tri = np.array([[0, 1, 2]])
    assert not rasterize(xy, np.ones(3), tri, 64, 64).mask.any()
    assert rasterize(xy, np.ones(3), tri, 64, 64, cull="none").mask.sum() > 700
    with pytest.raises(RasterError):
        rasterize(xy, np.ones(3), tri, 64, 64, cull="front-ish")


def test_quads_to_triangles():
    t = quads_to_triangles(np.array([[0, 1, 2, 3], [4, 5, 6, -1]]))
    assert t.tolist() == [[0, 1, 2], [4, 5, 6], [0, 2, 3]]


def test_pose_angles_round_trip():
    for ypr in [(0, 0, 0), (60, -20, 10), (-85, 35, -25)]:
        np.testing.assert_allclose(camera.angles(camera.rotation(*ypr)), ypr, atol=1e-9)
    # +yaw turns the nose (model +z) towards image right (+x in camera space).
    nose = camera.to_camera(np.array([[0.0, 0.0, 10.0]]), camera.rotation(30, 0, 0), np.array([0, 0, 50.0]))
    assert nose[0, 0] > 0


# ------------------------------------------------------------------------------------------
# synthetic faces


def _face(yaw: float, pitch: float = 0.0, roll: float = 0.0, seed: int = 3, size: int = 160):
    from lightmark.synth import faces

    rng = np.random.default_rng(seed)
    m = faces.prepare().model
    p = faces.sample_params(rng, m, size)
    p.update(yaw=yaw, pitch=pitch, roll=roll, expr=np.zeros_like(p["expr"]))
    return faces.render_face(rng, size, params=p, occluders=False)


@needs_ict
def test_landmarks_land_on_the_rendered_face():
    f = _face(yaw=5.0)
    pts = np.round(f.points).astype(int)
    # At a near-frontal pose every non-jaw landmark is on the rendered head ...
    assert f.head_mask[pts[17:, 1], pts[17:, 0]].all()
    # ... and the nose tip, eyes and mouth corners on the face area itself.
    assert f.face_mask[pts[[30, 36, 45, 48, 54], 1], pts[[30, 36, 45, 48, 54], 0]].all()
    # Pupils sit between the eye corners.
    assert pts[36, 0] < f.pupils[0, 0] < pts[39, 0] and pts[42, 0] < f.pupils[1, 0] < pts[45, 0]
    assert f.image.shape == (160, 160, 3) and f.image.dtype == np.uint8
    assert set(np.unique(f.seg)) >= {0, 1, 3, 4}  # background, skin, both eyes


@needs_ict
def test_yaw_moves_the_nose_towards_the_turn():
    left, right = _face(yaw=-60.0), _face(yaw=60.0)

    def nose_offset(f):  # nose tip relative to the eye-corner midpoint, in inter-ocular units
        mid = (f.points[36] + f.points[45]) / 2
        return (f.points[30, 0] - mid[0]) / np.linalg.norm(f.points[45] - f.points[36])

    assert nose_offset(right) > 0.3 and nose_offset(left) < -0.3


@needs_ict
@pytest.mark.parametrize("yaw", [-55.0, 0.0, 55.0])
def test_contour_jaw_lies_on_the_silhouette(yaw):
    from lightmark.synth.faces import jaw_directions  # noqa: F401  (the rule under test)

    f = _face(yaw=yaw)
    h, w = f.face_mask.shape
    moved = 0
    for i in [j for j in range(17) if j != 8]:
        x, y = f.contour[i]
        row = int(round(float(y)))
        assert abs(y - f.points[i, 1]) < 1e-5  # only x moves
        if not f.face_mask[row].any():
            continue
        xi = int(x)
        assert x == xi and f.face_mask[row, xi]
        # Outward of the point (either way along the row) the face ends there: a silhouette pixel.
        cols = np.flatnonzero(f.face_mask[row])
        assert xi in (cols.min(), cols.max())
        moved += abs(x - f.points[i, 0]) > 0.5
    if yaw != 0.0:
        assert moved >= 3  # on a turned face the hidden side's jaw moves to the outline
    np.testing.assert_array_equal(f.contour[17:], f.points[17:])


@needs_ict
def test_render_dataset_files_round_trip_through_the_reader(tmp_path):
    from lightmark.data.readers import open_dataset
    from lightmark.synth.faces import MANIFEST, render_dataset

    stats = render_dataset(tmp_path / "a", 3, seed=7, size=96, seg=True)
    assert stats["n"] == 3 and stats["images_per_s"] > 0
    ds = open_dataset(tmp_path / "a")
    assert ds.kind == "facesynthetics" and len(ds) == 3
    s = ds[0]
    assert s.image.shape == (96, 96, 3)
    lines = (tmp_path / "a" / "000000_ldmks.txt").read_text().splitlines()
    assert len(lines) == 70
    np.testing.assert_allclose(s.points, np.loadtxt(lines)[:68], atol=1e-3)
    contour = np.loadtxt(tmp_path / "a" / "000000_ldmks_contour.txt")
    assert contour.shape == (70, 2)
    np.testing.assert_allclose(contour[17:], np.loadtxt(lines)[17:], atol=1e-6)
    assert (tmp_path / "a" / "000000_seg.png").is_file()
    man = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert man["seed"] == 7 and len(man["images"]) == 3 and "yaw" in man["images"][0]
    # jaw="contour" swaps which convention is the main label file.
    render_dataset(tmp_path / "b", 1, seed=7, size=96, jaw="contour")
    np.testing.assert_allclose(np.loadtxt(tmp_path / "b" / "000000_ldmks.txt"), contour, atol=1e-6)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "b" / "000000_ldmks_3d.txt"), np.loadtxt(lines), atol=1e-6)


@needs_ict
def test_render_dataset_is_deterministic(tmp_path):
    from lightmark.synth.faces import render_dataset

    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        render_dataset(tmp_path / name, 2, seed=seed, size=80)
    for f in ("000000.png", "000001_ldmks.txt"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()
    # A slice of a run renders the same image as the whole run.
    render_dataset(tmp_path / "d", 1, seed=1, size=80, start=1)
    assert (tmp_path / "d" / "000001.png").read_bytes() == (tmp_path / "a" / "000001.png").read_bytes()


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=2.5), dict(size=16), dict(size=5000),
                                    dict(jaw="2d"), dict(start=-1)])
def test_render_dataset_rejects_bad_parameters(tmp_path, kwargs):
    """Checked before the face model is loaded: no ICT model needed; the error names the argument."""
    from lightmark.synth.faces import render_dataset

    args = dict(n=1, size=64) | kwargs
    with pytest.raises(ValueError, match=rf"^{next(iter(kwargs))}\b"):
        render_dataset(tmp_path, **args)
    assert not list(tmp_path.glob("*.png"))


# ------------------------------------------------------------------------------------------
# 3D profiling


def _ortho_face(yaw: float, seed: int = 1):
    """A face rendered with a near-orthographic camera and no expression: the fitter's own model."""
    from lightmark.synth import faces

    rng = np.random.default_rng(seed)
    m = faces.prepare().model
    p = faces.sample_params(rng, m, 256)
    p.update(yaw=yaw, pitch=0.0, roll=0.0, fov_deg=1.0, focal=128 / np.tan(np.deg2rad(0.5)),
             expr=np.zeros_like(p["expr"]))
    return faces.render_face(rng, 256, params=p, occluders=False)


@needs_ict
def test_fit_recovers_pose_and_reprojects_close_to_the_input():
    from lightmark.synth.profile import fit_ict

    for yaw in (0.0, 35.0):
        f = _ortho_face(yaw)
        fit = fit_ict(f.contour, (256, 256))
        face_w = np.ptp(f.points[:, 0])
        assert fit.error_nonjaw_px < 0.02 * face_w  # model-generated labels: nearly exact
        assert fit.error_px < 0.05 * face_w
        assert abs(fit.yaw_pitch_roll[0] - yaw) < 6.0
        assert abs(fit.yaw_pitch_roll[1]) < 10.0


@needs_ict
def test_fit_and_profile_a_real_face(shared_data):
    from lightmark.data.readers import open_dataset
    from lightmark.synth.profile import fit_ict, profile, profile_face

    s = open_dataset(shared_data(HELEN))[5]
    h, w = s.image.shape[:2]
    fit = fit_ict(s.points, (w, h))
    face_w = np.ptp(s.points[:, 0])
    assert fit.error_nonjaw_px < 0.04 * face_w  # a few pixels on a ~190 px face
    yaw0 = fit.yaw_pitch_roll[0]

    def nose_offset(p):  # nose tip relative to the outer eye corners' midpoint, inter-ocular units
        mid = (p[36] + p[45]) / 2
        return (p[30, 0] - mid[0]) / np.linalg.norm(p[45] - p[36])

    r = profile(s.image, s.points, 40.0, fit=fit)
    assert r.image.shape == s.image.shape and r.points.shape == (68, 2)
    assert nose_offset(r.points) > nose_offset(s.points) + 0.2  # the head turned to image right
    assert abs(r.info["yaw"] - (yaw0 + 40.0)) < 0.01  # rounded in the info
    img, pts = profile_face(s.image, s.points, -40.0, fit=fit)
    assert nose_offset(pts) < nose_offset(s.points) - 0.2
    assert not np.array_equal(img, s.image)
    # Away from the face the photo is unchanged (the warp is local).
    np.testing.assert_array_equal(img[:4, :4], s.image[:4, :4])


@needs_ict
@pytest.mark.parametrize("bad", [dict(points=np.zeros((67, 2))), dict(points=np.full((68, 2), np.nan)),
                                 dict(yaw=75.0), dict(yaw=float("nan"))])
def test_profile_rejects_bad_input(bad):
    from lightmark.synth.profile import profile_face

    f = _ortho_face(0.0)
    pts = bad.get("points", f.points)
    with pytest.raises(ValueError):
        profile_face(f.image, pts, bad.get("yaw", 20.0))


@needs_ict
def test_fit_rejects_bad_input():
    from lightmark.synth.profile import fit_ict

    pts = _ortho_face(0.0).points
    with pytest.raises(ValueError):
        fit_ict(pts, (8, 8))
    with pytest.raises(ValueError):
        fit_ict(pts[:, :1], (256, 256))


@needs_ict
def test_profile_main_writes_a_readable_data_set(shared_data, tmp_path):
    from lightmark.data.readers import open_dataset
    from lightmark.synth.profile import profile_main

    helen = shared_data(HELEN)
    stats = profile_main(str(helen), str(tmp_path), 2, seed=3, max_yaw=45.0)
    assert stats["n"] == 2 and stats["fit_error_px_mean"] < 15
    ds = open_dataset(tmp_path)
    assert len(ds) == 2 and ds[0].image.shape[2] == 3
    assert (tmp_path / "000000_ldmks_contour.txt").is_file()
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert all(15.0 <= abs(im["yaw_delta"]) <= 45.0 or abs(im["yaw"]) >= 89.9 for im in man["images"])
    with pytest.raises(ValueError):
        profile_main(str(helen), str(tmp_path / "x"), 1, max_yaw=80.0)
    with pytest.raises(ValueError):
        profile_main(str(helen), str(tmp_path / "x"), 0)


# ------------------------------------------------------------------------------------------
# worker processes: the same files as one process

SPEED_FIELDS = ("seconds", "images_per_s", "workers")


def _same_output(a: Path, b: Path) -> None:
    """The same files, byte for byte, and the same manifest apart from its speed record."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert any(n.endswith(".png") for n in names) and not any(n.endswith(".tmp") for n in names)
    for n in names:
        if n != "manifest.json":
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ma["workers"] == 1 and mb["workers"] == 2
    for k in SPEED_FIELDS:
        ma.pop(k), mb.pop(k)
    assert ma == mb


@needs_ict
def test_synth_workers_write_the_same_files(tmp_path):
    from lightmark.synth.faces import synth_main

    synth_main(str(tmp_path / "one"), 5, seed=4, size=64, seg=True)
    stats = synth_main(str(tmp_path / "two"), 5, seed=4, size=64, seg=True, workers=2)
    assert stats["n"] == 5 and stats["workers"] == 2
    _same_output(tmp_path / "one", tmp_path / "two")


@needs_ict
def test_profile_workers_write_the_same_files(shared_data, tmp_path):
    from lightmark.synth.profile import profile_main

    helen = shared_data(HELEN)
    profile_main(str(helen), str(tmp_path / "one"), 4, seed=5, jaw="contour")
    stats = profile_main(str(helen), str(tmp_path / "two"), 4, seed=5, jaw="contour", workers=2)
    assert stats["n"] == 4
    _same_output(tmp_path / "one", tmp_path / "two")


def test_work_is_split_into_contiguous_slices():
    from lightmark.synth.parallel import SLICE, split

    assert split(3, 5, 2) == [range(3, 6), range(6, 8)]
    assert split(0, 4, 8) == [range(i, i + 1) for i in range(4)]
    big = split(10, 3 * SLICE + 1, 2)
    assert [len(s) for s in big] == [SLICE] * 3 + [1] and big[0].start == 10 and big[-1].stop == 3 * SLICE + 11


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_bad_workers_value_raises(tmp_path, workers):
    from lightmark.synth.faces import SynthError, synth_main
    from lightmark.synth.profile import profile_main

    with pytest.raises(SynthError, match="workers"):
        synth_main(str(tmp_path / "s"), 1, size=64, workers=workers)
    with pytest.raises(SynthError, match="workers"):
        profile_main(str(tmp_path), str(tmp_path / "p"), 1, workers=workers)
    assert not list(tmp_path.rglob("*.png"))


@needs_ict
def test_an_error_in_a_worker_names_the_image(tmp_path):
    from lightmark.synth.faces import SynthError, synth_main

    (tmp_path / "000003_ldmks.txt").mkdir()  # image 3's label file cannot be written
    with pytest.raises(SynthError, match=r"image 3 \(.*000003\.png\): IsADirectoryError"):
        synth_main(str(tmp_path), 4, size=64, workers=2)
    assert not (tmp_path / "000003.png").exists() and not list(tmp_path.glob("*.tmp"))


def test_cli_passes_workers():
    from lightmark.cli import build_parser

    p = build_parser()
    assert p.parse_args(["synth", "--out", "o", "--n", "3"]).workers == 1
    assert p.parse_args(["synth", "--out", "o", "--n", "3", "--workers", "0"]).workers == 0
    assert p.parse_args(["profile", "--data", "d", "--out", "o", "--n", "3", "--workers", "2"]).workers == 2
