"""Aligned face crops (lightmark.core.align), Landmarker.align and `lightmark align`."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightmark.core import align, pose
from lightmark.core.geometry import apply_affine

EXAMPLE = Path(align.__file__).resolve().parents[1] / "assets" / "example.jpg"


def face_points(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, scale: float = 12.0,
                shift: tuple[float, float] = (320.0, 240.0)) -> np.ndarray:
    """A plausible 68-point face: the bundled mean face projected at a pose."""
    return pose.project(pose.load_mean_face(), pose.rotation_matrix(yaw, pitch, roll), scale, shift)


def similarity(points: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return points @ r.T + np.asarray(shift)


def schematic_face(eye_gap: float, eye_to_mouth: float, centre=(300.0, 260.0)) -> np.ndarray:
    """68 points whose eye centres are exactly eye_gap apart on a horizontal line and whose mouth
    corners are centred eye_to_mouth below them (the only points the FFHQ quad reads)."""
    p = np.zeros((68, 2)) + np.asarray(centre)
    cx, cy = centre
    ring = np.stack([np.cos(np.arange(6)), np.sin(np.arange(6))], axis=1) * 4.0
    ring -= ring.mean(axis=0)  # the eye's mean is its centre
    p[36:42] = ring + (cx - eye_gap / 2, cy)
    p[42:48] = ring + (cx + eye_gap / 2, cy)
    p[48] = (cx - 0.3 * eye_gap, cy + eye_to_mouth)
    p[54] = (cx + 0.3 * eye_gap, cy + eye_to_mouth)
    p[30] = (cx, cy + 0.5 * eye_to_mouth)
    return p


# ---------------------------------------------------------------------------------------------
# FFHQ


@pytest.mark.parametrize("size", [1024, 512, 256])
def test_ffhq_eyes_land_where_the_definition_puts_them(size):
    # eyes 100 px apart, mouth 100 px below: x = (200, 0), the quad's side is 2 * 2 * 100 = 400 px,
    # its centre 0.1 * 100 px below the eyes' midpoint.
    m = align.ffhq_matrix(schematic_face(100.0, 100.0), size)
    s = size / 400.0
    centre = (size - 1) / 2
    eyes = apply_affine(np.array([[250.0, 260.0], [350.0, 260.0]]), m)
    np.testing.assert_allclose(eyes, [[centre - 50 * s, centre - 10 * s], [centre + 50 * s, centre - 10 * s]],
                               atol=1e-9)


def test_ffhq_long_face_is_sized_by_eye_to_mouth():
    # 1.8 * 150 = 270 > 2 * 60: the half side is 270, so 2 |x| = 540 px maps onto the output
    m = align.ffhq_matrix(schematic_face(60.0, 150.0), 540)
    np.testing.assert_allclose(math.hypot(m[0, 0], m[0, 1]), 1.0, atol=1e-12)
    quad = align.ffhq_quad(schematic_face(60.0, 150.0))
    np.testing.assert_allclose(apply_affine(quad, m), [[-0.5, -0.5], [-0.5, 539.5], [539.5, 539.5], [539.5, -0.5]],
                               atol=1e-9)


def test_ffhq_crop_follows_the_face_through_any_similarity():
    base = face_points(yaw=10, roll=5)
    ref = apply_affine(base, align.ffhq_matrix(base, 512))
    for angle, scale, shift in [(30.0, 1.0, (50.0, -20.0)), (-75.0, 2.5, (400.0, 100.0)), (180.0, 0.4, (0.0, 0.0))]:
        moved = similarity(base, angle, scale, shift)
        np.testing.assert_allclose(apply_affine(moved, align.ffhq_matrix(moved, 512)), ref, atol=1e-6)


def test_the_matrix_moves_pixels_as_it_moves_points():
    # A bright pixel at a landmark must come out where the matrix sends the landmark.
    img = np.zeros((600, 700, 3), np.uint8)
    pts = face_points(roll=20, scale=15.0, shift=(350.0, 300.0))
    spot = np.round(pts[30]).astype(int)
    pts = pts + (spot - pts[30])  # the nose tip exactly on a pixel centre
    img[spot[1] - 1:spot[1] + 2, spot[0] - 1:spot[0] + 2] = 255
    for style, size in [("ffhq", 1024), ("ffhq", 128), ("arcface", 112)]:  # 128: the pre-shrink path
        crop, m = align.align_face(img, pts, style=style, size=size)
        want = apply_affine(pts[30:31], m)[0]
        ys, xs = np.nonzero(crop[..., 0] > 0)
        wts = crop[ys, xs, 0].astype(float)
        got = np.array([(xs * wts).sum() / wts.sum(), (ys * wts).sum() / wts.sum()])
        assert np.abs(got - want).max() < 0.35, (style, size, got, want)


# ---------------------------------------------------------------------------------------------
# ArcFace


def test_arcface_points_land_on_the_template_for_an_exact_similarity():
    # Points built so that the five ArcFace points are an exact similarity of the template.
    t = align.ARCFACE_TEMPLATE
    pts = face_points()
    src5 = similarity(t, 25.0, 3.2, (140.0, 90.0))
    pts[36:42] = src5[0] + (pts[36:42] - pts[36:42].mean(axis=0))
    pts[42:48] = src5[1] + (pts[42:48] - pts[42:48].mean(axis=0))
    pts[30], pts[48], pts[54] = src5[2], src5[3], src5[4]
    m = align.arcface_matrix(pts)
    np.testing.assert_allclose(apply_affine(align.arcface_points(pts), m), t, atol=1e-9)
    m2 = align.arcface_matrix(pts, 224)
    np.testing.assert_allclose(apply_affine(align.arcface_points(pts), m2), (t + 0.5) * 2 - 0.5, atol=1e-9)
    crop, _ = align.align_face(np.zeros((400, 500, 3), np.uint8), pts, style="arcface")
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8


def test_arcface_least_squares_for_a_real_face():
    pts = face_points(yaw=15, roll=-10)
    m = align.arcface_matrix(pts)
    a = m[:, :2]
    assert a[0, 0] == pytest.approx(a[1, 1]) and a[0, 1] == pytest.approx(-a[1, 0])  # a similarity
    err = np.linalg.norm(apply_affine(align.arcface_points(pts), m) - align.ARCFACE_TEMPLATE, axis=1)
    assert err.max() < 6.0  # a mean face is close to, not on, the template
    # the least-squares optimum: no small change of scale or angle does better
    base = (err ** 2).sum()
    for da, ds in [(0.01, 1.0), (-0.01, 1.0), (0.0, 1.01), (0.0, 0.99)]:
        c, s = math.cos(da) * ds, math.sin(da) * ds
        m2 = np.hstack([np.array([[c, -s], [s, c]]) @ a, m[:, 2:]])
        centre = align.ARCFACE_TEMPLATE.mean(axis=0)
        m2[:, 2] += centre - apply_affine(align.arcface_points(pts), m2).mean(axis=0)
        e2 = np.linalg.norm(apply_affine(align.arcface_points(pts), m2) - align.ARCFACE_TEMPLATE, axis=1)
        assert (e2 ** 2).sum() > base


# ---------------------------------------------------------------------------------------------
# determinism and errors


def test_same_input_gives_bit_identical_output():
    img = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    pts = face_points(scale=6.0, shift=(160.0, 120.0))
    for style in ("ffhq", "arcface"):
        a, ma = align.align_face(img, pts, style=style)
        b, mb = align.align_face(img.copy(), pts.copy(), style=style)
        assert a.shape == ((1024, 1024, 3) if style == "ffhq" else (112, 112, 3))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ma, mb)
        assert a.std() > 5  # the crop shows the photo, not only border


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=np.zeros((68, 3))), "shape"),
    (dict(points=np.full((68, 2), np.nan)), "NaN"),
    (dict(points="nope"), "points"),
    (dict(points=np.ones((68, 2))), "degenerate"),
    (dict(style="vgg"), "style"),
    (dict(size=0), "size"),
    (dict(size=100.5), "size"),
    (dict(size=True), "size"),
    (dict(size=5000), "size"),
])
def test_bad_input_raises(kwargs, message):
    args = dict(points=face_points(), style="ffhq", size=None)
    args.update(kwargs)
    with pytest.raises(align.AlignError, match=message):
        align.align_face(np.zeros((480, 640, 3), np.uint8), args["points"], style=args["style"],
                         size=args["size"])
    assert issubclass(align.AlignError, ValueError)


def test_degenerate_arcface_points_raise():
    with pytest.raises(align.AlignError, match="degenerate"):
        align.align_face(np.zeros((100, 100, 3), np.uint8), np.full((68, 2), 5.0), style="arcface")


def test_bad_image_raises_value_error():
    with pytest.raises(ValueError, match="expected HxW"):
        align.align_face(np.zeros((4, 4, 4, 4), np.uint8), face_points())


# ---------------------------------------------------------------------------------------------
# API and CLI


def test_package_exports_head_pose_lazily():
    import lightmark

    assert "head_pose" in lightmark.__all__
    assert lightmark.head_pose is pose.head_pose


@pytest.fixture(scope="module")
def landmarker():
    from lightmark import Landmarker

    return Landmarker()


def test_landmarker_align_takes_a_face_or_points(landmarker):
    img = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    faces = landmarker.predict_all(img)
    assert len(faces) == 3
    crop_f, m_f = landmarker.align(img, faces[0], style="arcface")
    crop_p, m_p = landmarker.align(img, faces[0].points, style="arcface")
    np.testing.assert_array_equal(crop_f, crop_p)
    np.testing.assert_array_equal(m_f, m_p)
    assert crop_f.shape == (112, 112, 3)
    crop, _ = landmarker.align(str(EXAMPLE), faces[1], size=256)  # a path works too
    assert crop.shape == (256, 256, 3)


def test_cli_align_writes_every_face(tmp_path, capsys):
    from lightmark.cli import main

    out = tmp_path / "crops"
    rc = main(["align", str(EXAMPLE), str(tmp_path / "missing.jpg"), "--out", str(out), "--size", "256"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "missing.jpg" in err  # reported, skipped
    names = sorted(p.name for p in out.iterdir())
    assert names == ["example_1.png", "example_2.png", "example_3.png"]
    assert all(np.asarray(Image.open(out / n)).shape == (256, 256, 3) for n in names)
    assert not list(out.glob(".*"))  # nothing half-written left behind


def test_cli_align_exit_codes(tmp_path, capsys):
    from lightmark.cli import main

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    assert main(["align", str(blank), "--out", str(tmp_path / "o1")]) == 1  # no face
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["align", str(broken), "--out", str(tmp_path / "o2")]) == 2  # nothing readable
    assert main(["align", str(EXAMPLE), "--out", str(tmp_path / "o3"), "--size", "5"]) == 2
    err = capsys.readouterr().err
    assert "no face found" in err and "broken.jpg" in err and "--size" in err
    assert not (tmp_path / "o3").exists() or not any((tmp_path / "o3").iterdir())
