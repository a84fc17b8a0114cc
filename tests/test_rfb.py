"""The detector at any input size: priors, decoding and the min_face input sizes."""
from __future__ import annotations

import numpy as np
import pytest

from lightmark.core.errors import DetectorError, LandmarkerError
from lightmark.runtime import rfb
from lightmark.runtime.detector import DEFAULT_MODEL, FaceDetector


def test_priors_equal_the_constants_baked_into_the_320_graph():
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    g = onnx.load(str(DEFAULT_MODEL)).graph
    consts = [numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"]
    baked = [c[0] for c in consts if c.shape == (1, 4420, 2)]
    p = rfb.priors(320, 240)
    assert p.shape == (4420, 4)
    assert any(np.array_equal(p[:, :2], b) for b in baked)  # centres
    assert any(np.array_equal(p[:, 2:], b) for b in baked)  # sizes


def test_anysize_graph_at_320_gives_the_fixed_graphs_boxes():
    det = FaceDetector()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    x = det.preprocess(img)
    s1, b1 = det.run_network(x)
    s2, b2 = det.run_anysize(x)
    np.testing.assert_allclose(s2, s1, atol=1e-5)
    np.testing.assert_allclose(b2, b1, atol=1e-6)


def test_decode_boxes_is_the_graphs_formula():
    pri = np.array([[0.5, 0.5, 0.2, 0.1]], np.float32)
    loc = np.array([[1.0, -2.0, 0.0, np.log(2.0) / 0.2]], np.float32)
    b = rfb.decode_boxes(loc, pri)
    # centre moves by loc * 0.1 * prior size; size scales by exp(loc * 0.2)
    np.testing.assert_allclose(b[0], [0.5 + 0.02 - 0.1, 0.5 - 0.02 - 0.1, 0.5 + 0.02 + 0.1, 0.5 - 0.02 + 0.1], atol=1e-6)


def test_min_face_sizes_the_input():
    det = FaceDetector(min_face=100)
    assert det.input_hw_for((480, 640, 3)) == (120, 160)  # 100 px -> 20 px needs 1/5: 128 -> 160
    assert FaceDetector(min_face=20).input_hw_for((480, 640, 3)) == (480, 640)
    assert FaceDetector().input_hw_for((3000, 4000, 3)) == (240, 320)  # None: always the graph's
    big = FaceDetector(min_face=30).input_hw_for((3000, 4000, 3))
    assert big == (960, 1280)  # capped
    with pytest.raises(DetectorError, match="min_face"):
        FaceDetector(min_face=0)
    with pytest.raises(LandmarkerError, match="min_face"):
        from lightmark import Landmarker

        Landmarker(min_face=50, detector=FaceDetector())


def test_min_face_finds_a_large_face_at_a_small_input():
    from lightmark.core.imaging import load_image
    from lightmark.api import ASSET_DIR

    img = load_image(ASSET_DIR / "example.jpg")
    full = FaceDetector().detect(img)
    assert len(full) >= 1
    side = float(np.min(np.max(full[:, 2:4] - full[:, :2], axis=1)))
    fast = FaceDetector(min_face=side * 0.8)
    assert fast.input_hw_for(img.shape)[1] < 320
    got = fast.detect(img)
    from lightmark.core.geometry import box_iou

    assert len(got) == len(full)
    assert np.all(box_iou(full[:, :4], got[:, :4]).max(axis=1) > 0.5)


def test_priors_equal_the_rfb640_constants():
    # An independent check of the prior layout at another size: the published RFB-640 graph bakes
    # its own priors for 640x480.
    onnx = pytest.importorskip("onnx")
    from pathlib import Path

    from onnx import numpy_helper

    path = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "face_detector" / "version-RFB-640.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is not there (shared models)")
    g = onnx.load(str(path)).graph
    baked = [numpy_helper.to_array(n.attribute[0].t)[0] for n in g.node
             if n.op_type == "Constant" and tuple(n.attribute[0].t.dims) == (1, 17640, 2)]
    p = rfb.priors(640, 480)
    assert any(np.array_equal(p[:, :2], b) for b in baked)
    assert any(np.array_equal(p[:, 2:], b) for b in baked)
