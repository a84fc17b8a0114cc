"""codec.offsets: a per-convention crop-pixel shift that every backend adds to decoded points."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightmark import Landmarker
from lightmark.api import BUNDLED_MODELS
from lightmark.core.codec import point_offsets
from lightmark.core.config import config_from_dict
from lightmark.core.errors import CodecError, ConfigError, ModelFileError
from lightmark.core.geometry import crops_from_boxes, landmark_box
from lightmark.core.modelfile import read_meta
from lightmark.evaluate import mean_crop_residual

import video_clips as vc

ROOT = Path(__file__).resolve().parents[1]


def test_point_offsets_are_checked():
    assert point_offsets(None) == {} and point_offsets({"decoder": "subpixel"}) == {}
    got = point_offsets({"offsets": {"2d": [0.5, -1]}})
    assert list(got) == ["2d"] and got["2d"].dtype == np.float32
    np.testing.assert_array_equal(got["2d"], [0.5, -1.0])
    for bad in ({"2e": [0, 0]}, {"2d": [0]}, {"2d": [0, 1, 2]}, {"2d": [0, float("nan")]},
                {"2d": ["a", 0]}, {"2d": [True, 0]}, [1, 2]):
        with pytest.raises(CodecError):
            point_offsets({"offsets": bad})
    # The training config's codec section takes the same mapping, type-checked.
    assert config_from_dict({"codec": {"offsets": {"3d": [1, 2]}}}).codec.offsets == {"3d": [1.0, 2.0]}
    with pytest.raises(ConfigError):
        config_from_dict({"codec": {"offsets": {"4d": [1, 2]}}})
    with pytest.raises(ConfigError):
        config_from_dict({"codec": {"offsets": [1, 2]}})


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory) -> Path:
    """The bundled default model's four files in a temporary folder (its JSON is edited here)."""
    src = BUNDLED_MODELS["default"]
    out = tmp_path_factory.mktemp("offset_model")
    for f in src.parent.glob(src.stem + ".*"):
        if f.name.split(".", 1)[0] == src.stem:
            shutil.copy(f, out / f.name)
    return out / (src.stem + ".json")


def _set_offsets(json_path: Path, offsets) -> None:
    meta = json.loads(json_path.read_text())
    meta["codec"]["offsets"] = offsets
    json_path.write_text(json.dumps(meta))


def test_every_backend_adds_the_offset_to_its_convention_only(model_copy):
    img = vc.render(320, 240, [(0, 96, 56)], 0)
    face = Landmarker().predict_all(img)[0]
    crops, _ = crops_from_boxes(img, landmark_box(face.points)[None], 128, 1.25)

    def points(backend: str, suffix: str, flip: bool, offsets) -> dict:
        _set_offsets(model_copy, offsets)
        lm = Landmarker(model=str(model_copy.with_suffix(suffix)), backend=backend, flip=flip)
        return lm.predictor.predict_crops_sets(crops, ("2d", "3d"))

    for backend, suffix in (("onnx", ".onnx"), ("torch", ".safetensors")):
        # With flip the mirrored view's shift must come back pointing the same way, not cancel.
        for flip in (False, True):
            ref = points(backend, suffix, flip, {})
            got = points(backend, suffix, flip, {"2d": [0.75, -0.25]})
            np.testing.assert_allclose(got["2d"] - ref["2d"], np.broadcast_to([0.75, -0.25], (1, 68, 2)),
                                       atol=1e-4, err_msg=f"{backend} flip={flip}")
            np.testing.assert_allclose(got["3d"], ref["3d"], atol=1e-5)
    _set_offsets(model_copy, {})


def test_a_bad_offset_names_the_model_file(model_copy):
    _set_offsets(model_copy, {"2d": [1.0]})
    try:
        with pytest.raises(ModelFileError, match=model_copy.name):
            read_meta(model_copy)
        with pytest.raises(ModelFileError, match="offsets"):
            Landmarker(model=str(model_copy.with_suffix(".onnx")))
    finally:
        _set_offsets(model_copy, {})


def test_calibration_writes_what_removes_the_residual(model_copy, tiny_faces):
    _set_offsets(model_copy, {})
    lm = Landmarker(model=str(model_copy.with_suffix(".onnx")))
    residual, n = mean_crop_residual(lm.predictor, tiny_faces, "2d")
    assert n > 0 and residual.shape == (2,) and np.abs(residual).max() > 1e-3
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "calibrate_offsets.py"), str(model_copy),
                          "--data", str(tiny_faces), "--write"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    meta = json.loads(model_copy.read_text())
    np.testing.assert_allclose(meta["codec"]["offsets"]["2d"], residual, atol=1e-4)
    after, _ = mean_crop_residual(Landmarker(model=str(model_copy.with_suffix(".onnx"))).predictor,
                                  tiny_faces, "2d")
    assert np.abs(after).max() < 1e-3
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "calibrate_offsets.py"), str(model_copy),
                          "--data", str(tiny_faces / "nowhere")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "nowhere" in bad.stderr and "Traceback" not in bad.stderr
    _set_offsets(model_copy, {})
