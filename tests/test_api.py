"""The user API (Landmarker), drawing, and the torch-free guarantee of api/runtime/draw."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lightmark
from lightmark import api
from lightmark.core import geometry
from lightmark.api import Face, Landmarker, LandmarkerError, ModelNotFoundError
from lightmark.core.draw import draw_landmarks
from lightmark.core.imaging import ImageError, load_image

pytest.importorskip("onnx")
from helpers import S, tiny_points, write_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    # gain 0: the tiny model always answers the same ring of points in crop pixels, so every
    # expected output below follows from the crop geometry alone.
    return write_tiny_model(tmp_path_factory.mktemp("model"), gain=0.0)


@pytest.fixture(scope="module")
def lm(model_path) -> Landmarker:
    return Landmarker(model=model_path, refine=False)


def ring_in_image(box, scale, shift, radius=(13.0, 12.0)) -> np.ndarray:
    m = geometry.crop_matrix_from_box(box, S, scale, shift)
    return geometry.apply_affine(tiny_points(radius), geometry.invert_affine(m))


def test_landmarker_is_exported_lazily(lm):
    assert lightmark.Landmarker is Landmarker
    assert lm.backend == "onnx" and lm.input_size == S and lm.crop_scale == 1.25
    assert "Landmarker(" in repr(lm)


def test_predict_landmark_box_maps_back_to_image_pixels(lm):
    img = np.zeros((200, 300, 3), np.uint8)
    box = (100.0, 40.0, 180.0, 130.0)
    pts = lm.predict(img, box, box_kind="landmarks")
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    np.testing.assert_allclose(pts, ring_in_image(box, 1.25, (0, 0)), atol=1e-3)
    # the ring is centred on the box centre; its x radius is 13 crop pixels = 13 * side / S image pixels
    np.testing.assert_allclose(pts.mean(axis=0), [140.0, 85.0], atol=1e-3)
    side = 1.25 * 90
    assert np.ptp(pts[:, 0]) == pytest.approx(2 * 13 * side / S, rel=1e-3)


def test_predict_face_box_uses_detector_mapping(lm):
    img = np.zeros((200, 300, 3), np.uint8)
    box = [100, 40, 180, 140]
    scale, shift = lm.face_box_mapping()
    from lightmark.core.boxmap import load_box_mapping

    m = load_box_mapping()
    assert scale == pytest.approx(m.side_ratio * lm.crop_scale) and shift == m.crop_shift
    pts = lm.predict(img, box)  # default box_kind="face"
    np.testing.assert_allclose(pts, ring_in_image(box, scale, shift), atol=1e-3)
    # the mapping moves the crop centre down by shift_y * box height
    assert pts.mean(axis=0)[1] == pytest.approx(90 + shift[1] * 100, abs=1e-3)
    # a detector row (with a score) works the same
    np.testing.assert_allclose(lm.predict(img, box + [0.99]), pts, atol=1e-6)


def test_refine_recrops_on_predicted_landmarks(tmp_path):
    img = np.zeros((200, 300, 3), np.uint8)
    box = (100, 40, 180, 140)
    r = (11.0, 9.0)  # a smaller face than the crop expects: the second crop zooms in on it
    lm2 = Landmarker(model=write_tiny_model(tmp_path, gain=0.0, radius=r), refine=True)
    first = ring_in_image(box, *lm2.face_box_mapping(), radius=r)
    want = ring_in_image(geometry.landmark_box(first), 1.25, (0, 0), radius=r)
    assert np.abs(want - first).max() > 1.0, "the second pass must change something to be tested"
    np.testing.assert_allclose(lm2.predict(img, box), want, atol=1e-3)
    # a tight landmark box is already the training crop: one pass only
    np.testing.assert_allclose(lm2.predict(img, box, box_kind="landmarks"),
                               ring_in_image(box, 1.25, (0, 0), radius=r), atol=1e-3)


def test_refine_skips_implausible_first_answers(tmp_path):
    # A model answering a collapsed face (a ring of 3 of 32 pixels) must not be re-cropped on it:
    # the second crop would be 5x smaller and feed on its own error.
    small = write_tiny_model(tmp_path, name="collapsed", gain=0.0, radius=(1.5, 1.5))
    box = (100, 40, 180, 140)
    img = np.zeros((200, 300, 3), np.uint8)
    refined = Landmarker(model=small, refine=True).predict(img, box)
    plain = Landmarker(model=small, refine=False).predict(img, box)
    np.testing.assert_allclose(refined, plain, atol=1e-6)


def test_predict_batch_and_paths(lm, tmp_path):
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    p = tmp_path / "x.png"
    Image.fromarray(img).save(p)
    boxes = np.array([[10, 10, 60, 70, 0.9], [70, 20, 150, 110, 0.8]])
    out = lm.predict_batch(p, boxes)
    assert out.shape == (2, 68, 2) and out.dtype == np.float32
    for b, q in zip(boxes, out):
        np.testing.assert_allclose(q, lm.predict(img, b[:4]), atol=1e-4)
    assert lm.predict_batch(img, np.zeros((0, 4))).shape == (0, 68, 2)
    # grayscale and RGBA arrays are accepted
    assert lm.predict(img[:, :, 0], (10, 10, 60, 70)).shape == (68, 2)
    assert lm.predict(np.dstack([img, img[:, :, :1]]), (10, 10, 60, 70)).shape == (68, 2)


@pytest.mark.parametrize("box, match", [
    ((10, 10, 5, 50), "empty"),
    ((10, 10, 50), r"box must be \(x1, y1, x2, y2\)"),
    ((10, np.nan, 50, 50), "finite"),
    ("10,10,50,50", "box must be"),
    ((500, 500, 600, 600), "outside the 160x120 image"),
    (None, "box must be"),
])
def test_bad_boxes_give_clear_errors(lm, box, match):
    img = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(LandmarkerError, match=match):
        lm.predict(img, box)


def test_bad_images_and_arguments(lm, tmp_path, model_path):
    with pytest.raises(ImageError, match="nope.jpg: no such image file"):
        lm.predict(tmp_path / "nope.jpg", (0, 0, 10, 10))
    with pytest.raises(ImageError, match=r"shape \(10, 10, 2\)"):
        lm.predict(np.zeros((10, 10, 2), np.uint8), (0, 0, 5, 5))
    with pytest.raises(LandmarkerError, match=r"shape \(2, 3\)"):
        lm.predict_batch(np.zeros((10, 10, 3), np.uint8), np.zeros((2, 3)))
    with pytest.raises(LandmarkerError, match="box_kind"):
        lm.predict(np.zeros((10, 10, 3), np.uint8), (0, 0, 5, 5), box_kind="tight")
    with pytest.raises(LandmarkerError, match="backend"):
        Landmarker(model=model_path, backend="tensorrt")
    with pytest.raises(LandmarkerError, match="threads"):
        Landmarker(model=model_path, threads=0)
    with pytest.raises(ModelNotFoundError, match="missing.onnx"):
        Landmarker(model=tmp_path / "missing.onnx")
    with pytest.raises(ModelNotFoundError, match="no such model"):
        Landmarker(model=tmp_path / "missing")


def test_missing_bundled_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "BUNDLED_MODELS", {"default": tmp_path / "model" / "lightmark.onnx",
                                                "accurate": tmp_path / "model" / "big.onnx"})
    with pytest.raises(ModelNotFoundError, match="bundled 'default' landmark model is missing"):
        Landmarker()
    with pytest.raises(ModelNotFoundError, match="big.onnx: the bundled 'accurate'"):
        Landmarker(model="accurate")
    with pytest.raises(ModelNotFoundError, match=r"lightmark\.safetensors"):
        Landmarker(backend="torch")


def test_bundled_models_by_name():
    assert Landmarker(model="default").model_path == api.DEFAULT_MODEL
    accurate = api.BUNDLED_MODELS["accurate"]
    if not accurate.is_file():
        pytest.skip(f"{accurate.name} is not bundled in this checkout")
    big = Landmarker(model="accurate")
    assert big.model_path == accurate and big.conventions == Landmarker().conventions
    assert big.input_size == Landmarker().input_size


def test_predict_all_on_a_photo(lm, tiny_faces):
    img = load_image(sorted(tiny_faces.glob("*.jpg"))[0])
    faces = lm.predict_all(img)
    dets = lm.detect(img)
    assert len(faces) == len(dets) >= 1
    f = faces[0]
    assert isinstance(f, Face) and f.points.shape == (68, 2) and f.points.dtype == np.float32
    np.testing.assert_allclose(f.box, dets[0, :4])
    assert f.score == pytest.approx(float(dets[0, 4]))
    np.testing.assert_allclose(f.points, lm.predict(img, f.box), atol=1e-4)
    assert lm.predict_all(np.zeros((100, 100, 3), np.uint8)) == []


def test_predict_many_batches_like_one_by_one(model_path, tiny_faces):
    """Batched over images (and with the refine pass) = image after image."""
    lm = Landmarker(model=model_path, refine=True)
    photos = [load_image(p) for p in sorted(tiny_faces.glob("*.jpg"))[:3]] + [np.zeros((90, 90, 3), np.uint8)]
    many = lm.predict_many(photos)
    assert len(many) == 4 and many[3] == []
    for img, faces in zip(photos, many):
        single = lm.predict_all(img)
        assert len(single) == len(faces)
        for a, b in zip(single, faces):
            np.testing.assert_allclose(a.points, b.points, atol=1e-4)


def test_draw_landmarks(lm):
    img = np.zeros((200, 300, 3), np.uint8)
    pts = lm.predict(img, (100, 40, 180, 140))
    face = Face(box=np.array([100, 40, 180, 140], np.float32), score=0.9, points=pts)
    out = draw_landmarks(img, [face])
    assert out.shape == img.shape and out.dtype == np.uint8 and out is not img
    assert img.max() == 0, "the input must not be modified"
    x, y = np.round(pts[0]).astype(int)
    assert out[y, x].sum() > 0, "a landmark dot must be drawn"
    assert out[40, 140].sum() > 0, "the face box's top edge must be drawn"
    # points alone, (N, 68, 2), extra boxes, no lines
    out2 = draw_landmarks(img, pts[None], boxes=[[10, 10, 50, 50, 0.5]], lines=False)
    assert out2[10, 30].sum() > 0 and out2[y, x].sum() > 0
    with pytest.raises(ValueError, match="expected Face objects"):
        draw_landmarks(img, np.zeros((68, 3)))


def test_api_runtime_and_draw_work_without_torch(model_path, tiny_faces):
    """Block any import of torch, then detect and predict end to end."""
    photo = sorted(tiny_faces.glob("*.jpg"))[0]
    script = textwrap.dedent(f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        import lightmark, lightmark.runtime, lightmark.runtime.detector, lightmark.runtime.onnx
        import lightmark.api, lightmark.core.draw
        from lightmark import Landmarker
        lm = Landmarker(model={str(model_path)!r})
        faces = lm.predict_all({str(photo)!r})
        assert len(faces) >= 1, "no face found"
        lightmark.core.draw.draw_landmarks({str(photo)!r}, faces)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("OK", len(faces))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("OK")
