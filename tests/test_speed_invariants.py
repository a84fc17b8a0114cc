"""The speed work changes no output: the cleaned detector finds the published detector's boxes,
and the landmark path gives the reference points.

``tests/data/speed_reference.npz`` holds, for the first AFW photos: the bundled (cleaned)
detector's boxes, ``predict_all``'s points (refinement on, the default) and the points from the
ground-truth landmark box. It was first written at commit 9f014df (before the speed work) with
the cleaned detector file, so it pinned the landmark path's outputs as they were, and written
again when the bundled model changed (the two-convention model, 2d points), and when the points
came to be read from the graph's softmax moments (normalised, centred sums: 2-4x closer to a
float64 decode than the old float32 soft-argmax; the GT-box points moved by at most 2.7e-4 px,
refined ones by at most 0.012 px, docs/SPEED.md), and when the model's 2d set got its offset
(codec.offsets, docs/MODEL_CARD.md). Regenerate it only
for an intended change of outputs: ``python tests/test_speed_invariants.py --write``.

Tests that need ``../shared`` skip inside the test when it is absent.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lightmark.core import geometry

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
AFW = SHARED / "data" / "300w" / "afw"
AFLW = SHARED / "data" / "aflw2000_val"
ORIGINAL_DETECTOR = SHARED / "models" / "face_detector" / "version-RFB-320.onnx"
REFERENCE = Path(__file__).resolve().parent / "data" / "speed_reference.npz"
N_REFERENCE = 8


def _photos(folder: Path, n: int) -> list[Path]:
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there (shared data)")
    return sorted(folder.glob("*.jpg"))[:n]


def test_bundled_detector_lists_no_initializer_as_input():
    onnx = pytest.importorskip("onnx")
    from lightmark.runtime.detector import DEFAULT_MODEL

    g = onnx.load(str(DEFAULT_MODEL)).graph
    init = {t.name for t in g.initializer}
    assert [i.name for i in g.input] == ["input"]
    assert len(init) > 200 and not init & {i.name for i in g.input}


def test_cleaned_detector_finds_the_original_boxes():
    from lightmark.core.imaging import load_image
    from lightmark.runtime.detector import FaceDetector

    if not ORIGINAL_DETECTOR.is_file():
        pytest.skip(f"{ORIGINAL_DETECTOR} is not there (shared models)")
    photos = _photos(AFW, 6) + _photos(AFLW, 3)
    original, cleaned = FaceDetector(ORIGINAL_DETECTOR), FaceDetector()
    faces = 0
    for p in photos:
        img = load_image(p)
        a, b = original.detect(img), cleaned.detect(img)
        assert a.shape == b.shape, p
        faces += len(a)
        # Folded batch norms and the blocked layout sum in another order: a few float32 ulps of
        # the graph's box fractions (docs/SPEED.md), never more than 1e-6 of the canvas side.
        tol = max(1e-4, 1e-6 * max(cleaned.canvas_size(img)))
        np.testing.assert_allclose(b[:, :4], a[:, :4], rtol=0, atol=tol, err_msg=str(p))
        np.testing.assert_allclose(b[:, 4], a[:, 4], rtol=0, atol=1e-5, err_msg=str(p))
    assert faces >= len(photos)


def _reference_outputs(photos: list[Path]) -> dict[str, np.ndarray]:
    from lightmark import Landmarker
    from lightmark.data.readers import read_pts
    from lightmark.core.imaging import load_image

    lm = Landmarker()
    out = {}
    for k, p in enumerate(photos):
        img = load_image(p)
        faces = lm.predict_all(img)
        out[f"{k}/boxes"] = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        out[f"{k}/all"] = np.array([f.points for f in faces], np.float32).reshape(-1, 68, 2)
        gt = read_pts(p.with_suffix(".pts"))
        out[f"{k}/gt"] = lm.predict(img, geometry.landmark_box(gt), box_kind="landmarks")
    return out


def test_points_match_the_reference():
    photos = _photos(AFW, N_REFERENCE)
    ref = np.load(REFERENCE)
    got = _reference_outputs(photos)
    assert sorted(got) == sorted(ref.files)
    for k, v in got.items():
        assert v.shape == ref[k].shape, k
        np.testing.assert_allclose(v, ref[k], rtol=0, atol=1e-4, err_msg=k)


# --- the rewritten pieces against what they replaced, bit for bit ------------------------------


def _old_preprocess(det, image: np.ndarray) -> np.ndarray:
    """The detector's letterbox + normalisation as it was written before (broadcast formula)."""
    import cv2

    h_in, w_in = det.input_hw
    cw, ch = det.canvas_size(image)
    h, w = image.shape[:2]
    scale = min(w_in / cw, h_in / ch)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x = np.zeros((h_in, w_in, 3), np.float32)
    x[: small.shape[0], : small.shape[1]] = (small.astype(np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


@pytest.mark.parametrize("hw", [(480, 640), (300, 1000), (900, 300), (37, 53), (900, 1200)])
def test_detector_preprocess_is_the_broadcast_formula(hw):
    from lightmark.runtime.detector import FaceDetector

    det = FaceDetector()
    img = np.random.default_rng(hw[0]).integers(0, 256, hw + (3,), dtype=np.uint8)
    got = det.preprocess(img)
    assert got.shape == (1, 3) + det.input_hw and got.dtype == np.float32
    assert np.array_equal(got, _old_preprocess(det, img))


@pytest.mark.parametrize("hw", [(3000, 4000), (2400, 700)])
def test_large_photos_are_halved_first_to_within_a_grey_level(hw):
    # Photos 8x the input or more are halved by 2x2 averages before the last resize: on a photo
    # (the bundled example, enlarged) the input stays within a grey level of the direct resize.
    import cv2

    from lightmark.runtime.detector import FaceDetector

    det = FaceDetector()
    from lightmark.api import ASSET_DIR
    from lightmark.core.imaging import load_image

    img = cv2.resize(load_image(ASSET_DIR / "example.jpg"), hw[::-1], interpolation=cv2.INTER_CUBIC)
    got, ref = det.preprocess(img), _old_preprocess(det, img)
    cw, ch = det.canvas_size(img)
    s = min(det.input_hw[1] / cw, det.input_hw[0] / ch)
    sh, sw = round(hw[0] * s), round(hw[1] * s)
    diff = np.abs(got - ref)[0, :, :sh, :sw] * 128  # grey levels, where the photo is
    assert ref.std() > 0.1 and not diff[:, sh:].any()
    # Measured: mean 0.32 and 0.66 levels; the largest, 8 and 20, at crisp edges squeezed 12x.
    assert diff.mean() < 1.0 and diff.max() <= 24


def test_crop_matrices_and_mapping_back_are_bit_identical():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(-300, 3000, (n, 2))
        boxes = np.hstack([xy, xy + rng.uniform(0.5, 2000, (n, 2))])
        scale, shift, s = rng.uniform(0.8, 2), tuple(rng.uniform(-0.2, 0.2, 2)), int(rng.choice([64, 128]))
        mats = geometry.crop_matrices_from_boxes(boxes, s, scale, shift)
        old = np.stack([geometry.crop_matrix_from_box(b, s, scale, shift) for b in boxes])
        assert np.array_equal(mats, old)
        pts = rng.uniform(-10, s + 10, (n, 68, 2)).astype(np.float32)
        ref = geometry.apply_affine(pts, geometry.invert_affine(old)).astype(np.float32)
        assert np.array_equal(geometry.points_to_image(pts, mats), ref)
    # A rotated crop takes the general path and still inverts the matrix.
    m = geometry.crop_matrix((50.0, 60.0), 80.0, 128, angle_deg=20.0)[None]
    p = rng.uniform(0, 128, (1, 68, 2))
    back = geometry.points_to_image(p, m)
    np.testing.assert_allclose(geometry.apply_affine(back[0].astype(np.float64), m[0]), p[0], atol=1e-3)


def test_crop_matrices_reject_bad_boxes():
    with pytest.raises(ValueError, match="empty"):
        geometry.crop_matrices_from_boxes(np.array([[0, 0, 10, 10], [5, 5, 5, 9]]), 128)
    with pytest.raises(ValueError, match="finite"):
        geometry.crop_matrices_from_boxes(np.array([[0, 0, np.nan, 10]]), 128)


def test_warp_into_a_given_array_equals_a_new_crop():
    img = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for side in (60.0, 290.0):  # without and with the anti-alias blur
        m = geometry.crop_matrix((200.0, 150.0), side, 64)
        out = np.zeros((64, 64, 3), np.uint8)
        assert geometry.warp_image(img, m, 64, out=out) is out
        assert np.array_equal(out, geometry.warp_image(img, m, 64))


# --- sessions and batching ----------------------------------------------------------------------


def test_sessions_are_shared_per_file_and_threads(tmp_path):
    from helpers import write_tiny_model

    from lightmark.runtime.onnx import OnnxPredictor
    from lightmark.runtime.session import make_session

    path = write_tiny_model(tmp_path)
    a, b = OnnxPredictor(path), OnnxPredictor(path)
    assert a._session is b._session
    assert OnnxPredictor(path, threads=2)._session is not a._session
    assert make_session(path, shared=False) is not a._session
    # A rewritten file is a new model: never the old session.
    write_tiny_model(tmp_path, gain=2.0)
    c = OnnxPredictor(path)
    assert c._session is not a._session
    x = np.full((1, 32, 32, 3), 255, np.uint8)
    assert not np.allclose(c.predict_crops(x), a.predict_crops(x))


def test_predict_boxes_batches_like_image_by_image():
    from lightmark import Landmarker

    lm = Landmarker()
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [np.array([[40, 30, 160, 170]]), np.zeros((0, 4)), np.array([[10, 10, 90, 100], [150, 60, 300, 220]])]
    got = lm.predict_boxes(imgs, boxes)
    assert [g.shape for g in got] == [(1, 68, 2), (0, 68, 2), (2, 68, 2)]
    for img, b, g in zip(imgs, boxes, got):
        np.testing.assert_allclose(g, lm.predict_batch(img, b), atol=1e-4)
    from lightmark.core.errors import LandmarkerError

    with pytest.raises(LandmarkerError, match="2 images but 1"):
        lm.predict_boxes(imgs[:2], boxes[:1])


if __name__ == "__main__" and "--write" in sys.argv:
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **_reference_outputs(sorted(AFW.glob("*.jpg"))[:N_REFERENCE]))
    print(f"wrote {REFERENCE}")


# --- graph variants padded for the CPU's block width --------------------------------------------


def test_bundled_variants_give_the_main_graphs_outputs():
    from lightmark.api import DEFAULT_MODEL
    from lightmark.runtime.onnx import OnnxPredictor

    main = OnnxPredictor(DEFAULT_MODEL, channel_multiple=16)
    c8 = OnnxPredictor(DEFAULT_MODEL, channel_multiple=8)
    assert main.onnx_path.name == "lightmark.onnx" and c8.onnx_path.name == "lightmark.c8.onnx"
    x = np.random.default_rng(3).standard_normal((3, 3, 128, 128)).astype(np.float32)
    np.testing.assert_allclose(c8.run(x), main.run(x), rtol=0, atol=1e-5)


def _with_variant(tmp_path, sha: str | None = None):
    import json
    import shutil

    from helpers import write_tiny_model

    from lightmark.core.files import sha256

    path = write_tiny_model(tmp_path)
    shutil.copy(path, tmp_path / "tiny.c8.onnx")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["onnx_channel_multiple"] = 16
    meta["onnx_variants"] = {"8": {"file": "tiny.c8.onnx", "sha256": sha or sha256(path)}}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_variant_is_chosen_by_channel_multiple(tmp_path, monkeypatch):
    from lightmark.core.errors import ModelFileError
    from lightmark.runtime import onnx as ronnx

    path = _with_variant(tmp_path)
    assert ronnx.OnnxPredictor(path, channel_multiple=8).onnx_path.name == "tiny.c8.onnx"
    assert ronnx.OnnxPredictor(path, channel_multiple=16).onnx_path.name == "tiny.onnx"
    with pytest.raises(ModelFileError, match="no graph padded to 4"):
        ronnx.OnnxPredictor(path, channel_multiple=4)
    for block, name in ((8, "tiny.c8.onnx"), (16, "tiny.onnx"), (None, "tiny.onnx")):
        monkeypatch.setattr(ronnx, "cpu_channel_block", lambda b=block: b)
        assert ronnx.OnnxPredictor(path).onnx_path.name == name


def test_variant_checksum_is_verified(tmp_path):
    from lightmark.core.errors import ModelFileError
    from lightmark.runtime.onnx import OnnxPredictor

    path = _with_variant(tmp_path, sha="0" * 64)
    with pytest.raises(ModelFileError, match=r"tiny\.c8\.onnx.*checksum"):
        OnnxPredictor(path, channel_multiple=8)
    (tmp_path / "tiny.c8.onnx").unlink()
    with pytest.raises(ModelFileError, match="onnx_variants"):
        OnnxPredictor(path, channel_multiple=8)


# --- JPEG decoding by OpenCV ---------------------------------------------------------------------


def _pil_read(path, apply_exif=True):
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if apply_exif:
            im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_fast_path_is_pil_with_exif(tmp_path, orientation):
    from PIL import Image

    from lightmark.core.imaging import _read_jpeg_cv2, load_image

    img = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    f = tmp_path / "o.jpg"
    img.save(f, exif=exif, quality=95)
    assert _read_jpeg_cv2(f, True) is not None  # the fast path is the one tested
    assert np.array_equal(load_image(f), _pil_read(f))
    assert np.array_equal(load_image(f, apply_exif=False), _pil_read(f, False))


def test_jpeg_fast_path_on_real_photos_and_gray_and_truncated(tmp_path):
    from PIL import Image

    from lightmark.core.errors import ImageError
    from lightmark.core.imaging import _read_jpeg_cv2, load_image

    for p in _photos(AFW, 5):
        assert np.array_equal(load_image(p, apply_exif=False), _pil_read(p, False)), p
    g = tmp_path / "gray.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)).save(g)
    assert np.array_equal(load_image(g), _pil_read(g))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((AFW / sorted(x.name for x in AFW.glob("*.jpg"))[0]).read_bytes()[:3000])
    assert _read_jpeg_cv2(cut, True) is None  # no end-of-image marker: PIL reads it and complains
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(cut)
