"""Two landmark conventions from one network: "2d" (300W's visible contour) and "3d" (projected
3D points). One forward pass, each output set trained only by samples of its convention."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lightmark.core.codec import conventions_of, select_convention  # noqa: E402
from lightmark.core.config import (CodecConfig, Config, DataSource, TrainConfig, apply_overrides,  # noqa: E402
                                   validate_config)
from lightmark.core.errors import ConfigError, ConventionError  # noqa: E402
from lightmark.models import TorchPredictor, build_model, load_model, save_model  # noqa: E402
from lightmark.training.losses import compute_loss  # noqa: E402
from lightmark.training.loop import expand_conventions  # noqa: E402

from helpers import randomize, tiny  # noqa: E402

torch.set_num_threads(1)
TWO = ["2d", "3d"]


def two_model(tmp_path: Path, name: str = "two") -> Path:
    m = randomize(build_model(tiny(conventions=TWO)))
    save_model(m, {"codec": CodecConfig(), "crop_scale": 1.25}, tmp_path / name)
    return tmp_path / f"{name}.safetensors"


def test_outputs_one_set_per_convention() -> None:
    one, two = build_model(tiny()).eval(), build_model(tiny(conventions=TWO)).eval()
    x = torch.zeros(2, 3, 64, 64)
    assert one(x).shape == (2, 68, 8, 8) and two(x).shape == (2, 136, 8, 8)
    y = np.arange(2 * 136).reshape(2, 136)
    assert np.array_equal(select_convention(y, tiny(conventions=TWO), "3d"), y[:, 68:])
    assert np.array_equal(select_convention(y, tiny(conventions=TWO), "2d"), y[:, :68])
    assert conventions_of({"head": "integral"}) == ["2d"]  # a model file from before conventions
    with pytest.raises(ConventionError, match="no '3d' landmarks"):
        select_convention(y[:, :68], tiny(), "3d")


def test_expand_conventions_keeps_the_start_model() -> None:
    start = randomize(build_model(tiny()))
    two = build_model(tiny(conventions=TWO)).eval()
    two.load_state_dict(expand_conventions(start.state_dict(), ["2d"], TWO, 68))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = start(x), two(x)
    assert torch.equal(b[:, :68], a) and torch.equal(b[:, 68:], a)


def test_a_sample_trains_only_its_own_outputs() -> None:
    cfg = Config(model=tiny(conventions=TWO), train=TrainConfig(loss="l1"))
    model = randomize(build_model(cfg.model)).train()
    out = model(torch.randn(3, 3, 64, 64))
    out.retain_grad()
    loss = compute_loss(cfg, out, torch.full((3, 68, 2), 30.0), torch.tensor([0, 1, 1]))
    loss.backward()
    g = out.grad.abs().sum(dim=(2, 3))  # (3, 136)
    assert g[0, :68].sum() > 0 and g[0, 68:].sum() == 0  # a 2d sample: the 2d set only
    assert g[1, :68].sum() == 0 and g[1, 68:].sum() > 0  # a 3d sample: the 3d set only


def test_config_checks_conventions() -> None:
    cfg = Config(model=tiny(conventions=TWO), train_data=[DataSource(path="x", convention="3d")],
                 train=TrainConfig(loss="l1"))
    validate_config(cfg)
    with pytest.raises(ConfigError, match="must be one of '2d', '3d'"):
        apply_overrides(cfg, ["model.conventions=[2d, 4d]"])
    with pytest.raises(ConfigError, match="each convention once"):
        validate_config(dataclasses.replace(cfg, model=tiny(conventions=["2d", "2d"])))
    with pytest.raises(ConfigError, match="not one of model.conventions"):
        validate_config(dataclasses.replace(cfg, model=tiny()))


def test_predictors_give_each_convention(tmp_path: Path) -> None:
    from lightmark.export import export_onnx
    from lightmark.runtime.onnx import OnnxPredictor

    path = two_model(tmp_path)
    model, meta = load_model(path)
    torch_pred = TorchPredictor(model, meta)
    onnx_pred = OnnxPredictor(export_onnx(path, tmp_path / "two_onnx"))
    crops = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    for pred in (torch_pred, onnx_pred):
        assert pred.conventions == TWO
        sets = pred.predict_crops_sets(crops, TWO)
        assert np.array_equal(pred.predict_crops(crops), sets["2d"])
        assert np.array_equal(pred.predict_crops(crops, convention="3d"), sets["3d"])
        assert np.abs(sets["2d"] - sets["3d"]).max() > 0.01  # two sets, not one twice
        with pytest.raises(ConventionError, match="'4d'"):
            pred.predict_crops(crops, convention="4d")
    assert np.abs(onnx_pred.predict_crops(crops, "3d") - torch_pred.predict_crops(crops, "3d")).max() < 0.01


def test_landmarker_convention_keyword_and_pose_points(tmp_path: Path) -> None:
    from lightmark.api import Landmarker
    from lightmark.core.imaging import load_image
    from lightmark.core.pose import head_pose_batch

    lm = Landmarker(model=two_model(tmp_path))
    assert lm.conventions == TWO
    image = load_image(Path(__file__).resolve().parents[1] / "src/lightmark/assets/example.jpg")
    box = (100.0, 100.0, 220.0, 240.0)
    p2, p3 = lm.predict(image, box), lm.predict(image, box, convention="3d")
    assert p2.shape == p3.shape == (68, 2) and np.abs(p2 - p3).max() > 0.01
    assert np.array_equal(lm.predict_batch(image, [box], convention="3d")[0], p3)
    faces = lm.predict_all(image)
    assert faces, "the bundled detector finds the example photo's faces"
    for f in faces:
        assert f.points_3d is not None and f.points_3d.shape == (68, 2)
        np.testing.assert_allclose(f.pose, head_pose_batch(f.points_3d[None], (1, 1), "3d")[0])
    faces3 = lm.predict_all(image, convention="3d")
    assert all(f.points_3d is None for f in faces3)  # the points are the 3d ones already
    np.testing.assert_allclose(faces3[0].points, faces[0].points_3d, atol=1e-4)
    one = randomize(build_model(tiny()))
    save_model(one, {"codec": CodecConfig(), "crop_scale": 1.25}, tmp_path / "one")
    lm1 = Landmarker(model=tmp_path / "one.safetensors")
    assert lm1.conventions == ["2d"] and lm1.predict_all(image)[0].points_3d is None
    with pytest.raises(ConventionError, match="no '3d' landmarks"):
        lm1.predict(image, box, convention="3d")
    bundled = Landmarker()  # the bundled model has both sets
    assert bundled.conventions == TWO and bundled.predict_all(image)[0].points_3d is not None


def test_evaluate_picks_the_data_sets_convention(tmp_path: Path, tiny_faces: Path) -> None:
    from lightmark.evaluate import evaluate

    model, meta = load_model(two_model(tmp_path))
    pred = TorchPredictor(model, meta)
    assert evaluate(pred, str(tiny_faces), progress=False)["convention"] == "2d"  # .pts: 300W
    r3 = evaluate(pred, str(tiny_faces), progress=False, convention="3d")
    assert r3["convention"] == "3d" and r3["nme_box"] != evaluate(pred, str(tiny_faces), progress=False)["nme_box"]
    one, one_meta = randomize(build_model(tiny())), {"model": tiny(), "codec": CodecConfig(), "crop_scale": 1.25}
    with pytest.raises(ConventionError, match="no '3d' landmarks"):
        evaluate(TorchPredictor(one, one_meta), str(tiny_faces), progress=False, convention="3d")


def test_kind_conventions(shared_data) -> None:
    from lightmark.data.readers import open_dataset

    assert open_dataset(shared_data("aflw2000_sample")).convention == "3d"
    assert open_dataset(shared_data("300w/afw"), limit=2).convention == "2d"


def test_training_mixes_conventions(tiny_faces: Path, tmp_path: Path, shared_data) -> None:
    from lightmark.core.config import AugmentConfig
    from lightmark.training.loop import train

    cfg = Config(
        name="two", model=tiny(conventions=TWO),
        train_data=[DataSource(path=str(tiny_faces), limit=12),
                    DataSource(path=str(tiny_faces), limit=12, convention="3d")],
        val_data=str(tiny_faces), augment=AugmentConfig(),
        train=TrainConfig(epochs=1, batch_size=4, optimizer="adamw", lr=0.003, schedule="cosine",
                          loss="l1", steps_per_epoch=3, val_limit=4, threads=1),
        out_dir=str(tmp_path / "run"))
    shared_aflw = shared_data("aflw2000_sample")
    lines: list[str] = []
    state = train(cfg, log=lines.append)
    assert any("12 samples (3d)" in ln for ln in lines) and any("12 samples (2d)" in ln for ln in lines)
    model, meta = load_model(tmp_path / "run" / "last.safetensors")
    assert meta["model"]["conventions"] == TWO and state["epoch"] == 1
    # A one-convention (2d) model given labels of the other convention (a 300W folder read as 3d
    # is refused by the config check; an AFLW2000-3D folder by the loop, from its kind).
    with pytest.raises(ValueError, match="'3d' landmarks, which model.conventions"):
        train(dataclasses.replace(cfg, model=tiny(), train_data=[DataSource(path=str(shared_aflw))],
                                  val_data=None, out_dir=str(tmp_path / "r2")), log=lines.append)


def test_evaluate_the_predict_all_pipeline(tiny_faces: Path) -> None:
    from lightmark.api import Landmarker
    from lightmark.evaluate import EvaluationError, evaluate

    lm = Landmarker()
    r = evaluate(lm.predictor, str(tiny_faces), box_source="predict_all", detector=lm, progress=False)
    found = [row for row in r["per_image"] if not row["missed"]]
    assert r["box_source"] == "predict_all" and found and all(row["detection"] for row in found)
    # the points are predict_all's own (detector, mapping, refinement), matched by IoU
    sample_name = found[0]["file"]
    from lightmark.core.imaging import load_image

    faces = lm.predict_all(load_image(tiny_faces / sample_name))
    assert any(np.allclose([*f.box, f.score], found[0]["detection"], atol=0.01) for f in faces)
    with pytest.raises(EvaluationError, match="needs a Landmarker"):
        evaluate(lm.predictor, str(tiny_faces), box_source="predict_all", progress=False)


def test_baseline_table_shows_the_balanced_nme_of_aflw2000() -> None:
    from lightmark.training.experiments import format_table

    rows = [{"row": "r", "n_train": 10, "epochs": 1,
             "aflw": {"nme_box": 5.0, "nme_io": 9.0, "nme_box_balanced": 6.5},
             "afw": {"nme_box": 3.0, "nme_io": 5.0, "nme_box_balanced": None}}]
    table = format_table(rows, ["aflw", "afw"]).splitlines()
    assert "aflw NME_box balanced %" in table[0] and "afw NME_box balanced" not in table[0]
    assert table[2] == "| r | 10 | 1 | 5.00 | 9.00 | 6.50 | 3.00 | 5.00 |"
    assert table[1].count("---") == 8
