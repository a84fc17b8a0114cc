"""OnnxPredictor on tiny ONNX graphs built with the `onnx` helper API (no torch needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lightmark import Landmarker
from lightmark.core import geometry
from lightmark.core.files import sha256
from lightmark.core.imaging import to_input
from lightmark.core.errors import ModelFileError
from lightmark.core.modelfile import model_paths
from lightmark.runtime.onnx import OnnxPredictor

from helpers import S, tiny_points, write_tiny_model

onnx = pytest.importorskip("onnx")


def expected(crops: np.ndarray, gain: float = 1.0) -> np.ndarray:
    m = to_input(crops).mean(axis=(1, 2, 3))
    return tiny_points()[None] + gain * m[:, None, None]


def random_crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, S, S, 3), dtype=np.uint8)


def test_predict_crops_matches_graph_and_chunks(tmp_path):
    p = OnnxPredictor(write_tiny_model(tmp_path, gain=3.0))
    assert p.input_size == S and p.crop_scale == 1.25 and p.meta["model"]["head"] == "regression"
    p.chunk = 4  # force several chunks, including a partial last one
    crops = random_crops(10)
    out = p.predict_crops(crops)
    assert out.shape == (10, 68, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected(crops, 3.0), atol=1e-4)
    # One crop without a batch axis, and an empty batch
    np.testing.assert_allclose(p.predict_crops(crops[3]), expected(crops[3:4], 3.0), atol=1e-4)
    assert p.predict_crops(crops[:0]).shape == (0, 68, 2)


def test_fixed_batch_model_is_padded(tmp_path):
    p = OnnxPredictor(write_tiny_model(tmp_path, batch=4))
    assert p.chunk == 4
    crops = random_crops(6, seed=1)
    np.testing.assert_allclose(p.predict_crops(crops), expected(crops), atol=1e-4)


def test_integral_head_is_decoded_to_crop_pixels(tmp_path):
    p = OnnxPredictor(write_tiny_model(tmp_path, head="integral"))
    out = p.predict_crops(random_crops(2))
    # Soft-argmax of a sharp peak at heatmap cell (x=1, y=2) of a 4x4 map; heatmap -> crop pixels:
    # x_crop = (x_hm + 0.5) * S / 4 - 0.5
    want = np.array([(1 + 0.5) * S / 4 - 0.5, (2 + 0.5) * S / 4 - 0.5])
    np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), atol=0.05)


def test_model_paths_accept_any_spelling(tmp_path):
    for given in ("m", "m.onnx", "m.json", "m.safetensors", "m.ONNX"):
        paths = model_paths(tmp_path / given)
        assert (paths.onnx.name, paths.json.name, paths.safetensors.name) == ("m.onnx", "m.json", "m.safetensors")


def test_checksum_mismatch_names_the_file(tmp_path):
    path = write_tiny_model(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["onnx_sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"tiny\.onnx.*checksum"):
        OnnxPredictor(path)
    # verify=False is the escape hatch
    assert OnnxPredictor(path, verify=False).input_size == S


@pytest.mark.parametrize("problem, match", [
    ("no_json", r"tiny\.json: no such model metadata"),
    ("bad_json", r"tiny\.json: not valid JSON"),
    ("no_head", r"tiny\.json: metadata must hold"),
    ("no_onnx", r"tiny\.onnx: no such ONNX model"),
    ("broken_onnx", r"tiny\.onnx: cannot load"),
    ("size_mismatch", r"does not match \(N, 3, 64, 64\)"),
])
def test_bad_model_files_give_clear_errors(tmp_path, problem, match):
    path = write_tiny_model(tmp_path)
    js = path.with_suffix(".json")
    meta = json.loads(js.read_text())
    if problem == "no_json":
        js.unlink()
    elif problem == "bad_json":
        js.write_text("{not json")
    elif problem == "no_head":
        js.write_text(json.dumps({"crop_scale": 1.25}))
    elif problem == "no_onnx":
        path.unlink()
    elif problem == "broken_onnx":
        path.write_bytes(b"not an onnx file")
        meta["onnx_sha256"] = sha256(path)
        js.write_text(json.dumps(meta))
    elif problem == "size_mismatch":
        meta["model"]["input_size"] = 64
        js.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=match):
        OnnxPredictor(path)


def test_wrong_crops_are_rejected(tmp_path):
    p = OnnxPredictor(write_tiny_model(tmp_path))
    with pytest.raises(ValueError, match=r"crops must be \(N, 32, 32, 3\)"):
        p.predict_crops(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        p.predict_crops(np.zeros((2, S, S, 3), np.float32))


def test_predictor_and_geometry_round_trip(tmp_path):
    """Crop with geometry, predict, map back: constant crop points land where the matrix says."""
    p = OnnxPredictor(write_tiny_model(tmp_path, gain=0.0))
    img = np.zeros((100, 120, 3), np.uint8)
    boxes = np.array([[10, 20, 50, 70], [60, 5, 110, 45]], float)
    crops, mats = geometry.crops_from_boxes(img, boxes, S, p.crop_scale)
    pts = geometry.points_to_image(p.predict_crops(crops), mats)
    for b, m, q in zip(boxes, mats, pts):
        np.testing.assert_allclose(geometry.apply_affine(q, m), tiny_points(), atol=1e-3)
        centre = q.mean(axis=0)  # the ring is centred on the crop centre = the box centre
        np.testing.assert_allclose(centre, [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], atol=0.6)


def test_to_input_is_the_normalisation_formula():
    """The fast plane-by-plane to_input equals (pixel / 255 - MEAN) / STD in NCHW layout."""
    from lightmark.core.imaging import MEAN, STD

    crops = random_crops(3, seed=5)
    want = ((crops.astype(np.float64) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    got = to_input(crops)
    assert got.shape == (3, 3, S, S) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_array_equal(to_input(crops[1]), got[1:2])  # one crop without a batch axis
    # A non-contiguous view (every other crop) gives the same numbers as its copy.
    np.testing.assert_array_equal(to_input(crops[::2]), to_input(np.ascontiguousarray(crops[::2])))


@pytest.mark.parametrize("name", ["default", "accurate"])
def test_bundled_models_keep_the_rules(name):
    # Each bundled model: checksums that match its files, the model rules (one float32
    # LandmarkModel, <= 15 MB), and both padded graphs answering like the weights they came from.
    from lightmark.api import BUNDLED_MODELS

    path = BUNDLED_MODELS[name]
    if not path.is_file():
        pytest.skip(f"{path.name} is not bundled in this checkout")
    graphs = [OnnxPredictor(path, channel_multiple=m) for m in (16, 8)]
    assert graphs[0].onnx_path != graphs[1].onnx_path
    for f in (path, path.with_suffix(".safetensors"), graphs[1].onnx_path):
        assert f.stat().st_size <= 15 * 2**20, f
    crops = np.random.default_rng(3).integers(0, 256, (3, graphs[0].input_size, graphs[0].input_size, 3),
                                              dtype=np.uint8)
    want = graphs[0].predict_crops_sets(crops, graphs[0].conventions)
    got = graphs[1].predict_crops_sets(crops, graphs[0].conventions)
    for c in graphs[0].conventions:
        np.testing.assert_allclose(got[c], want[c], atol=2e-3)
    torch = pytest.importorskip("torch")
    from lightmark.models import load_model
    from lightmark.models.checkpoint import check_model_rules

    model, _ = load_model(path.with_suffix(".safetensors"))  # checks the weights' checksum
    check_model_rules(model, name)
    with torch.no_grad():
        lm = Landmarker(model=path.with_suffix(".safetensors"), backend="torch")
        ref = lm.predictor.predict_crops_sets(crops, graphs[0].conventions)
    for c in graphs[0].conventions:
        np.testing.assert_allclose(ref[c], want[c], atol=2e-3)
