"""Test-time mirroring (Landmarker(flip=True), --flip): the mean of a crop's and its mirror's answers."""
from __future__ import annotations

import numpy as np
import pytest

from lightmark import Landmarker
from lightmark.core.geometry import FLIP_PERMUTATION
from lightmark.core.mirror import MirrorAveraged, mirror_crop_points

import video_clips as vc


def test_mirror_crop_points_is_its_own_inverse_and_relabels():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 127, (2, 68, 2)).astype(np.float32)
    back = mirror_crop_points(mirror_crop_points(p, 128), 128)
    np.testing.assert_allclose(back, p, atol=1e-5)
    m = mirror_crop_points(p, 128)
    # The left eye's outer corner (36) of the mirror is the right eye's (45) of the crop, mirrored.
    assert FLIP_PERMUTATION[36] == 45
    np.testing.assert_allclose(m[:, 36, 0], 127 - p[:, 45, 0], atol=1e-5)
    np.testing.assert_allclose(m[:, 36, 1], p[:, 45, 1], atol=1e-5)


@pytest.fixture(scope="module")
def pair():
    return Landmarker(), Landmarker(flip=True)


def test_flip_averages_the_crop_and_its_mirror(pair):
    plain, flipped = pair
    assert isinstance(flipped.predictor, MirrorAveraged) and flipped.flip and not plain.flip
    img = vc.render(320, 240, [(0, 96, 56)], 0)
    face = plain.predict_all(img)[0]
    from lightmark.core.geometry import crops_from_boxes, landmark_box

    crops, _ = crops_from_boxes(img, landmark_box(face.points)[None], plain.input_size, plain.crop_scale)
    a = plain.predictor.predict_crops(crops)
    b = mirror_crop_points(plain.predictor.predict_crops(np.ascontiguousarray(crops[:, :, ::-1])), plain.input_size)
    # The model's 2d offset (codec.offsets) was added in the mirror's frame: mirrored back it
    # points the other way, and MirrorAveraged turns it round (tests/test_offsets.py).
    b[..., 0] += 2 * plain.predictor.point_offsets.get("2d", np.zeros(2))[0]
    np.testing.assert_allclose(flipped.predictor.predict_crops(crops), (a + b) / 2, atol=1e-4)
    assert np.abs(a - b).max() > 1e-3  # the two views do differ, so the mean is not the plain answer
    sets, q = flipped.predictor.predict_crops_quality(crops, ("2d", "3d"))
    assert sets["2d"].shape == sets["3d"].shape == (1, 68, 2) and 0.5 < float(q[0]) < 1
    # Through the API: same face found, points within a pixel of the plain answer.
    f2 = flipped.predict_all(img)[0]
    assert np.abs(f2.points - face.points).mean() < 1.0 and f2.points_3d is not None
    assert [len(f) for f in flipped.track([img, img])] == [1, 1]


def test_flip_keeps_the_wrapped_errors(pair):
    _, flipped = pair
    with pytest.raises(ValueError, match="crops must be"):
        flipped.predictor.predict_crops(np.zeros((2, 5, 5, 3), np.uint8))
    with pytest.raises(ValueError):
        flipped.predictor.predict_crops(np.zeros((5, 5), np.uint8))


def test_cli_evaluate_records_flip(tmp_path, capsys):
    from pathlib import Path
    import json

    from lightmark.cli import main

    sample = Path(__file__).resolve().parents[2] / "shared" / "data" / "aflw2000_sample"
    if not sample.is_dir():
        pytest.skip(f"shared data missing: {sample}")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--data", str(sample), "--flip", "--quiet", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"]["flip"] is True and report["model"]["backend"] == "OnnxPredictor"


def test_detect_mirror_is_for_the_bundled_detector_only():
    from lightmark.core.errors import LandmarkerError
    from lightmark.runtime.detector import FaceDetector

    lm = Landmarker(detect_mirror=True)
    assert lm.detector.mirror and not Landmarker().detector.mirror
    with pytest.raises(LandmarkerError, match="detect_mirror"):
        Landmarker(detect_mirror=True, detector=FaceDetector())
