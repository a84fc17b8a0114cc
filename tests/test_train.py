"""Training: end to end (train, save, reload, evaluate, export, predict), resume, repeatability, DDP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lightmark.core.config import AugmentConfig, Config, DataSource, ModelConfig, TrainConfig  # noqa: E402

from helpers import TINY_COUNT  # noqa: E402

# Every run here trains and validates on the tiny generated set (the `tiny_faces` fixture of
# conftest.py: labelled faces made from the bundled example photo), so none needs ../shared.


def tiny_config(data: Path, out: Path, epochs: int = 2, head: str = "integral", **train_kw) -> Config:
    """A model and run small enough for a few seconds of CPU, training and validating on ``data``."""
    loss = "mse" if head == "heatmap" else "l1"
    return Config(
        name="tiny",
        model=ModelConfig(backbone="shufflenet_v2_noconv5", width=0.5, input_size=64, head=head,
                          head_channels=16, heatmap_size=8),
        train_data=[DataSource(path=str(data), limit=24)],
        val_data=str(data),
        augment=AugmentConfig(rotation_deg=20, scale=0.1, translate=0.05, flip=0.5, grayscale=0.3),
        train=TrainConfig(epochs=epochs, batch_size=4, optimizer="adamw", lr=0.003, schedule="cosine",
                          loss=loss, steps_per_epoch=3, val_limit=8, threads=1, **train_kw),
        out_dir=str(out),
    )


def test_end_to_end(tiny_faces: Path, tmp_path: Path) -> None:
    from lightmark.api import Landmarker
    from lightmark.evaluate import evaluate
    from lightmark.export import export_onnx
    from lightmark.models import TorchPredictor, load_model
    from lightmark.training.loop import train

    state = train(tiny_config(tiny_faces, tmp_path / "run"), log=lambda _m: None)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all(np.isfinite(row["loss"]) and row["n"] == 8 for row in state["history"])
    for name in ("last.safetensors", "last.json", "last_state.json", "best.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name
    model, meta = load_model(tmp_path / "run" / "last.safetensors")
    assert meta["model"]["input_size"] == 64 and meta["epoch"] == 2
    report = evaluate(TorchPredictor(model, meta), str(tiny_faces), progress=False)
    assert report["summary"]["n"] == TINY_COUNT and np.isfinite(report["summary"]["nme_box"])
    onnx_path = export_onnx(tmp_path / "run" / "last.safetensors", tmp_path / "tiny.onnx")
    lm = Landmarker(model=onnx_path)
    from lightmark.data.readers import open_dataset

    sample = open_dataset(str(tiny_faces), limit=1)[0]
    box = (*sample.points.min(0), *sample.points.max(0))
    pts = lm.predict(sample.image, box, box_kind="landmarks")
    torch_pts = Landmarker(model=tmp_path / "run" / "last.safetensors").predict(
        sample.image, box, box_kind="landmarks")
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    assert np.abs(pts - torch_pts).max() < 0.01  # ONNX matches torch to 0.01 px


def test_repeatable_and_resume_is_identical(tiny_faces: Path, tmp_path: Path) -> None:
    """Fixed seeds repeat a run exactly; a run stopped after epoch 1 and resumed ends the same."""
    from lightmark.training import loop as train_mod
    from lightmark.models import load_model

    train_mod.train(tiny_config(tiny_faces, tmp_path / "full", epochs=2), log=lambda _m: None)
    train_mod.train(tiny_config(tiny_faces, tmp_path / "again", epochs=2), log=lambda _m: None)
    a, _ = load_model(tmp_path / "full" / "last.safetensors")
    c, _ = load_model(tmp_path / "again" / "last.safetensors")
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va, vc), f"fixed seeds must give identical runs ({k})"
    cfg = tiny_config(tiny_faces, tmp_path / "part", epochs=2, max_minutes=1e-9)  # stops after epoch 1
    s1 = train_mod.train(cfg, log=lambda _m: None)
    assert s1["epoch"] == 1
    s2 = train_mod.train(tiny_config(tiny_faces, tmp_path / "part", epochs=2),
                         resume=str(tmp_path / "part" / "last"), log=lambda _m: None)
    assert s2["epoch"] == 2 and len(s2["history"]) == 2
    b, _ = load_model(tmp_path / "part" / "last.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-6), f"resumed run differs at {k}"


def test_seed_heatmap_head_trains(tiny_faces: Path, tmp_path: Path) -> None:
    from lightmark.training.loop import train

    state = train(tiny_config(tiny_faces, tmp_path / "hm", epochs=1, head="heatmap"), log=lambda _m: None)
    assert np.isfinite(state["history"][0]["loss"])


def test_bad_config_and_resume_errors(tmp_path: Path) -> None:
    from lightmark.core.config import apply_overrides
    from lightmark.training.checkpoints import load_checkpoint
    from lightmark.training.loop import train

    with pytest.raises(ValueError, match="train_data"):
        train(Config(), log=lambda _m: None)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_overrides(Config(), ["epochs"])
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides(Config(), ["nothing.epochs=3"])
    with pytest.raises(FileNotFoundError, match="_state"):
        load_checkpoint(tmp_path / "missing", None, None)  # type: ignore[arg-type]


def test_skip_bad_counts_unreadable_images(tiny_faces: Path, tmp_path: Path) -> None:
    import shutil

    from lightmark.data.readers import DataError
    from lightmark.training.loop import train

    data = tmp_path / "data"
    data.mkdir()
    for pts in sorted(tiny_faces.glob("*.pts"))[:6]:
        shutil.copy(pts, data / pts.name)
        shutil.copy(pts.with_suffix(".jpg"), data / f"{pts.stem}.jpg")
    (data / f"{sorted(tiny_faces.glob('*.pts'))[0].stem}.jpg").write_bytes(b"\xff\xd8 truncated")
    cfg = tiny_config(tiny_faces, tmp_path / "run", epochs=1)
    cfg.train_data = [DataSource(path=str(data))]
    cfg.val_data = None
    with pytest.raises(DataError, match="truncated|cannot read"):
        train(cfg, log=lambda _m: None)
    messages: list[str] = []
    state = train(cfg, skip_bad=True, log=messages.append)
    assert state["epoch"] == 1
    assert any("skipped 1 bad sample" in m for m in messages)


def test_ddp_two_processes_gloo(tiny_faces: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo) runs a few steps and writes one checkpoint."""
    cfg_path = tmp_path / "ddp.yaml"
    import yaml

    from lightmark.core.config import to_dict

    cfg = tiny_config(tiny_faces, tmp_path / "run", epochs=1)
    cfg.val_data = None
    cfg_path.write_text(yaml.safe_dump(to_dict(cfg)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    import socket

    with socket.socket() as s:  # a free port: a fixed one collides with a second suite running
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(port), "-m", "lightmark", "train", str(cfg_path)],
        capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    # each of the 2 ranks took 3 steps of 4 images: 24 images in the epoch
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_fewer_samples_than_a_batch_still_trains(tiny_faces: Path, tmp_path: Path) -> None:
    """10 samples with batch 16: an epoch still holds one batch (drawn with replacement)."""
    from lightmark.training.loop import train

    cfg = tiny_config(tiny_faces, tmp_path / "small", epochs=1)
    cfg.train_data = [DataSource(path=str(tiny_faces), limit=10)]
    cfg.train.batch_size, cfg.train.steps_per_epoch, cfg.val_data = 16, None, None
    state = train(cfg, log=lambda _m: None)
    assert state["epoch"] == 1 and np.isfinite(state["history"][0]["loss"])


def test_init_from_starts_a_fine_tune_from_saved_weights(tiny_faces: Path, tmp_path: Path) -> None:
    from lightmark.models import load_model
    from lightmark.training.loop import train

    train(tiny_config(tiny_faces, tmp_path / "base", epochs=1), log=lambda _m: None)
    cfg = tiny_config(tiny_faces, tmp_path / "tune", epochs=1, init_from=str(tmp_path / "base" / "last.safetensors"))
    cfg.train.lr, cfg.val_data = 0.0, None  # no update: the weights must be the initial ones
    train(cfg, log=lambda _m: None)
    a, _ = load_model(tmp_path / "base" / "last.safetensors")
    b, _ = load_model(tmp_path / "tune" / "last.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        if "running" not in k and "num_batches" not in k:  # BN statistics still move in train mode
            assert torch.equal(va, vb), k


def test_init_modules_puts_a_new_head_on_a_trained_backbone(tiny_faces: Path, tmp_path: Path) -> None:
    from lightmark.models import load_model
    from lightmark.training.loop import train

    train(tiny_config(tiny_faces, tmp_path / "base", epochs=1), log=lambda _m: None)
    base = str(tmp_path / "base" / "last.safetensors")
    cfg = tiny_config(tiny_faces, tmp_path / "tune", epochs=1, init_from=base, init_modules=["backbone"])
    cfg.model.head_block, cfg.train.lr, cfg.val_data = "separable", 0.0, None
    train(cfg, log=lambda _m: None)
    a, _ = load_model(base)
    b, _ = load_model(tmp_path / "tune" / "last.safetensors")
    for (k, va), vb in zip(a.backbone.state_dict().items(), b.backbone.state_dict().values()):
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(va, vb), k
    assert type(b.head).__name__ == "SeparableHead"

    # Copying the whole model into another architecture, or a part that does not exist, fails
    # with the field to change named.
    cfg = tiny_config(tiny_faces, tmp_path / "t2", epochs=1, init_from=base)
    cfg.model.head_block, cfg.val_data = "separable", None
    with pytest.raises(ValueError, match="init_modules"):
        train(cfg, log=lambda _m: None)
    cfg.train.init_modules = ["neck"]
    with pytest.raises(ValueError, match="'neck' is not a part"):
        train(cfg, log=lambda _m: None)


def test_bad_head_loss_pair_fails_before_caching(tiny_faces: Path, tmp_path: Path) -> None:
    from lightmark.training.loop import train

    cfg = tiny_config(tiny_faces, tmp_path / "bad", head="heatmap")
    cfg.train.loss = "l1"
    cfg.train_data = [DataSource(path=str(tmp_path / "does-not-exist"))]  # never reached
    with pytest.raises(ValueError, match="heatmap head trains with loss mse"):
        train(cfg, log=lambda _m: None)


def test_colour_draws_follow_the_draw_not_the_call_order(tiny_faces: Path, tmp_path: Path) -> None:
    """The same (epoch, draw) gives the same augmented crop whatever was drawn before it."""
    from lightmark.training.data import CropCache, TrainSet
    from lightmark.data.readers import open_dataset

    cfg = tiny_config(tiny_faces, tmp_path / "c")
    cfg.augment = AugmentConfig(color_jitter=1.0, grayscale=0.5, erasing=0.5, rotation_deg=10)
    cache = CropCache(open_dataset(str(tiny_faces), limit=4), 64, 1.25)
    a, b = TrainSet(cfg, [cache], [1.0]), TrainSet(cfg, [cache], [1.0])
    x1 = a[(5, 2)][0]
    b[(0, 1)], b[(3, 0)]  # other draws first
    x2 = b[(5, 2)][0]
    assert torch.equal(x1, x2)
    assert not torch.equal(a[(6, 2)][0], x1)


def test_distillation_mixes_label_and_teacher_losses(tiny_faces: Path, tmp_path: Path) -> None:
    """train.teacher: a run trains against a saved model's points; the loss weights both targets."""
    from lightmark.training.losses import compute_loss, distill_loss
    from lightmark.training.loop import train

    train(tiny_config(tiny_faces, tmp_path / "teacher", epochs=1), log=lambda _m: None)
    teacher = str(tmp_path / "teacher" / "last.safetensors")
    cfg = tiny_config(tiny_faces, tmp_path / "student", epochs=1, teacher=teacher, teacher_weight=0.7)
    cfg.model.head_block, cfg.val_data = "separable", None  # a student of another architecture
    messages: list[str] = []
    state = train(cfg, log=messages.append)
    assert any("distilling from" in m for m in messages)
    assert np.isfinite(state["history"][0]["loss"])

    output = torch.randn(2, 68, 8, 8)
    labels, taught = torch.rand(2, 68, 2) * 64, torch.rand(2, 68, 2) * 64
    plain = compute_loss(cfg, output, labels)
    assert torch.allclose(distill_loss(cfg, output, labels, taught, 0.0), plain)
    mixed = distill_loss(cfg, output, labels, taught, 0.7)
    assert torch.allclose(mixed, 0.3 * plain + 0.7 * compute_loss(cfg, output, taught))
    # With all the weight on the teacher the labels do not matter.
    assert torch.allclose(distill_loss(cfg, output, labels, taught, 1.0),
                          distill_loss(cfg, output, labels * 0, taught, 1.0))


def test_a_teacher_that_sees_other_crops_is_refused_before_caching(tiny_faces: Path, tmp_path: Path) -> None:
    from lightmark.training.loop import train

    train(tiny_config(tiny_faces, tmp_path / "teacher", epochs=1), log=lambda _m: None)
    teacher = str(tmp_path / "teacher" / "last.safetensors")
    cfg = tiny_config(tiny_faces, tmp_path / "student", teacher=teacher)
    cfg.model.input_size = 96
    cfg.train_data = [DataSource(path=str(tmp_path / "does-not-exist"))]  # never reached
    with pytest.raises(ValueError, match="64 px crops .* the student 96 px"):
        train(cfg, log=lambda _m: None)
    cfg.model.input_size, cfg.train.teacher_weight = 64, 1.5
    with pytest.raises(ValueError, match="teacher_weight must be in"):
        train(cfg, log=lambda _m: None)
    cfg.train.teacher_weight, cfg.model.head, cfg.train.loss = 0.5, "heatmap", "mse"
    with pytest.raises(ValueError, match="needs a coordinate head"):
        train(cfg, log=lambda _m: None)


def test_wing_loss_is_log_then_l1_and_meets_at_w() -> None:
    import math

    import torch

    from lightmark.training.losses import WING_EPS, WING_W, point_loss

    s = 100  # input size: percent of it = pixels here
    zero = torch.zeros(1, 1, 2)

    def wing(x: float) -> float:
        return float(point_loss("wing", torch.tensor([[[x, 0.0]]]), zero, s)) * 2  # mean over x and y

    assert wing(0.0) == 0.0
    assert abs(wing(1.0) - WING_W * math.log1p(1.0 / WING_EPS)) < 1e-5
    below, above = wing(WING_W - 1e-4), wing(WING_W + 1e-4)
    assert abs(above - below) < 1e-3  # continuous where the pieces meet
    assert abs((wing(WING_W + 2) - wing(WING_W + 1)) - 1.0) < 1e-5  # slope 1 (L1) beyond w
    # Small errors pull harder than under L1 (slope w / (eps + |x|) > 1 near zero).
    p = torch.tensor([[[0.5, 0.0]]], requires_grad=True)
    point_loss("wing", p, zero, s).backward()
    g_wing = float(p.grad[0, 0, 0])
    p.grad = None
    point_loss("l1", p, zero, s).backward()
    assert g_wing > 2 * float(p.grad[0, 0, 0]) > 0
