"""Configuration as plain data: dataclasses read from and written to YAML/JSON.

One :class:`Config` describes a run end to end (model, data, training); the model part alone
travels with every checkpoint and exported model, so a weights file can always be rebuilt.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union


@dataclass
class ModelConfig:
    """Network shape. ``head``: ``heatmap`` (seed: Gaussian targets, MSE), ``integral``
    (soft-argmax over heatmap logits, coordinate loss) or ``regression`` (direct coordinates)."""

    backbone: str = "shufflenet_v2"
    width: float = 0.5  # ShuffleNet V2 multiplier: 0.5, 1.0, 1.5, 2.0
    input_size: int = 128
    head: str = "integral"
    head_channels: int = 128
    heatmap_size: int = 16
    deconv_strides: list[int] = field(default_factory=lambda: [2, 2])
    # Up-sampling of heatmap/integral heads: "deconv" (the seed's transposed convs) or
    # "separable" (bilinear + depthwise-separable convs: the fast CPU head).
    head_block: str = "deconv"
    attention: Optional[str] = None  # None, "se" or "coord"
    num_points: int = 68


@dataclass
class CodecConfig:
    """Heatmap targets and decoding (for the ``heatmap`` head)."""

    sigma: float = 1.5  # Gaussian width in heatmap pixels
    peak: float = 100.0  # the seed scales targets to a peak of 100
    decoder: str = "subpixel"  # "subpixel" (default) or "argmax" (seed)


@dataclass
class DataSource:
    """One training set; ``weight`` is its share of each epoch's draws."""

    path: str
    weight: float = 1.0
    limit: Optional[int] = None  # use at most this many samples (seeded choice)
    kind: Optional[str] = None  # None: recognised from the folder's contents


@dataclass
class AugmentConfig:
    # colour (the seed's pipeline)
    color_jitter: float = 0.0  # probability; factors drawn in [0.5, 1.5]
    grayscale: float = 0.0  # probability
    erasing: float = 0.0  # probability of one random erased rectangle
    # geometry (what the seed skipped), applied through the crop matrix
    rotation_deg: float = 0.0  # uniform in [-r, r]
    scale: float = 0.0  # side multiplied by exp(uniform(-s, s))
    translate: float = 0.0  # centre shifted by uniform(-t, t) * side
    flip: float = 0.0  # probability of a mirrored crop


@dataclass
class TrainConfig:
    epochs: int = 25
    batch_size: int = 16
    optimizer: str = "sgd"  # "sgd" (seed) or "adamw"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"  # "step" (seed: x gamma at milestones) or "cosine"
    milestones: list[int] = field(default_factory=lambda: [10, 15, 20])
    gamma: float = 0.4
    warmup_steps: int = 0
    loss: str = "mse"  # "mse" on heatmaps (seed); "l1" or "mse" on coordinates
    steps_per_epoch: Optional[int] = None  # None: one pass over the mixed data
    max_minutes: Optional[float] = None  # stop cleanly (with a checkpoint) after this long
    seed: int = 0
    workers: int = 0
    threads: Optional[int] = None  # torch intra-op threads
    val_limit: Optional[int] = None  # validate on at most this many images
    init_from: Optional[str] = None  # start from these weights (a fine-tune), fresh optimiser
    # Copy only these parts of init_from (e.g. [backbone]: a new head on a trained backbone);
    # None: the whole model. Each named part must match exactly.
    init_modules: Optional[list[str]] = None
    # Distillation: a trained model file whose predicted points on each augmented crop are a second
    # target; the loss is (1 - teacher_weight) * loss(labels) + teacher_weight * loss(teacher).
    # It must see crops as this model does (same input size and crop scale).
    teacher: Optional[str] = None
    teacher_weight: float = 0.5


@dataclass
class Config:
    name: str = "lightmark"
    model: ModelConfig = field(default_factory=ModelConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    train_data: list[DataSource] = field(default_factory=list)
    val_data: Optional[str] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    crop_scale: float = 1.25  # crop side / larger side of the landmark box
    out_dir: str = "runs/lightmark"


def _build(cls: type, data: Any, where: str) -> Any:
    """Recursively turn dicts into dataclasses, rejecting unknown keys with a clear message."""
    if not dataclasses.is_dataclass(cls):
        return data
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls, name))
        if sub is list:
            kwargs[name] = [_build(DataSource, v, f"{where}.{name}[{i}]") for i, v in enumerate(value or [])]
        elif sub is not None:
            kwargs[name] = _build(sub, value, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


_NESTED: dict[tuple[type, str], Any] = {
    (Config, "model"): ModelConfig,
    (Config, "codec"): CodecConfig,
    (Config, "augment"): AugmentConfig,
    (Config, "train"): TrainConfig,
    (Config, "train_data"): list,
}


def config_from_dict(data: dict, where: str = "config") -> Config:
    return _build(Config, data, where)


def model_config_from_dict(data: dict, where: str = "model config") -> ModelConfig:
    return _build(ModelConfig, data, where)


def load_config(path: Union[str, Path]) -> Config:
    """Read a YAML (or JSON) run configuration."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML ({e})") from None
    return config_from_dict(data, str(p))


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def dumps(obj: Any) -> str:
    return json.dumps(to_dict(obj), indent=2, sort_keys=True)
