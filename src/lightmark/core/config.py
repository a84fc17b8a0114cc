"""Configuration as plain data: dataclasses read from and written to YAML/JSON.

One :class:`Config` describes a run end to end (model, data, training); the model part alone
travels with every checkpoint and exported model, so a weights file can always be rebuilt.

A YAML file may start from another with ``base: other.yaml`` (a path relative to the file): the
base is read first (recursively) and the file's own keys are deep-merged over it, so a config
holds only what it changes. Every value is type-checked against its field when read, and
:func:`validate_config` refuses combinations that cannot train, before any data is cached.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from lightmark.core.errors import ConfigError

Backbone = Literal["shufflenet_v2", "shufflenet_v2_noconv5"]
Head = Literal["heatmap", "integral", "regression"]
HeadBlock = Literal["deconv", "separable"]
Attention = Literal["se", "coord"]
Decoder = Literal["subpixel", "argmax"]
Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["step", "cosine"]
Loss = Literal["mse", "l1", "wing"]
#: Landmark conventions: "2d" (300W: the jaw on the visible contour) and "3d" (projected 3D points:
#: AFLW2000-3D, FaceSynthetics, lightmark synth; the jaw where the bone is, hidden or not).
Convention = Literal["2d", "3d"]
CONVENTIONS: tuple[str, ...] = typing.get_args(Convention)
#: Losses each head trains with.
HEAD_LOSSES: dict[str, tuple[str, ...]] = {"heatmap": ("mse",), "integral": ("l1", "mse", "wing"),
                                           "regression": ("l1", "mse", "wing")}
#: Older names of fields, accepted when reading (model files written before the rename).
RENAMED = {"deconv_strides": "upsample_strides"}


@dataclass
class ModelConfig:
    """Network shape. ``head``: ``heatmap`` (the original write-up's: Gaussian targets, MSE), ``integral``
    (soft-argmax over heatmap logits, coordinate loss) or ``regression`` (direct coordinates)."""

    backbone: Backbone = "shufflenet_v2"
    width: float = 0.5  # ShuffleNet V2 multiplier: 0.5, 1.0, 1.5, 2.0
    input_size: int = 128
    head: Head = "integral"
    head_channels: int = 128
    heatmap_size: int = 16
    # Up-sampling steps of heatmap/integral heads, each by its factor, with the head_block below.
    upsample_strides: list[int] = field(default_factory=lambda: [2, 2])
    # "deconv" (the original write-up's transposed convs) or "separable" (bilinear +
    # depthwise-separable convs: the fast CPU head).
    head_block: HeadBlock = "deconv"
    attention: Optional[Attention] = None
    num_points: int = 68
    # One set of num_points outputs per convention, in this order, from the same forward pass.
    conventions: list[Convention] = field(default_factory=lambda: ["2d"])


@dataclass
class CodecConfig:
    """Heatmap targets and decoding (for the ``heatmap`` head)."""

    sigma: float = 1.5  # Gaussian width in heatmap pixels
    peak: float = 100.0  # the original write-up scales targets to a peak of 100
    decoder: Decoder = "subpixel"  # "argmax" is the original write-up's
    # Crop-pixel (x, y) added to the decoded points of a convention, e.g. {"2d": [0.35, 0.0]}: a
    # calibration of the labels' own habit that a mirror-trained network cannot learn
    # (scripts/calibrate_offsets.py; docs/MODEL_CARD.md). Empty: none.
    offsets: dict[Convention, list[float]] = field(default_factory=dict)


@dataclass
class DataSource:
    """One training set; ``weight`` is its share of each epoch's draws."""

    path: str
    weight: float = 1.0
    limit: Optional[int] = None  # use at most this many samples (seeded choice)
    kind: Optional[str] = None  # None: recognised from the folder's contents
    # None: the kind's convention (data.readers.KIND_CONVENTIONS); set it for folders of .pts
    # files that hold 3D-convention points (e.g. the output of `lightmark fit21`).
    convention: Optional[Convention] = None


@dataclass
class AugmentConfig:
    # colour (the original write-up's pipeline)
    color_jitter: float = 0.0  # probability; factors drawn in [0.5, 1.5]
    grayscale: float = 0.0  # probability
    erasing: float = 0.0  # probability of one random erased rectangle
    # geometry (which the original write-up did without), applied through the crop matrix
    rotation_deg: float = 0.0  # uniform in [-r, r]
    scale: float = 0.0  # side multiplied by exp(uniform(-s, s))
    translate: float = 0.0  # centre shifted by uniform(-t, t) * side
    flip: float = 0.0  # probability of a mirrored crop


@dataclass
class TrainConfig:
    epochs: int = 25
    batch_size: int = 16
    optimizer: Optimizer = "sgd"  # "sgd" is the original write-up's
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = "step"  # "step": x gamma at milestones (the original write-up's)
    milestones: list[int] = field(default_factory=lambda: [10, 15, 20])
    gamma: float = 0.4
    warmup_steps: int = 0
    loss: Loss = "mse"  # "mse" on heatmaps; "l1", "mse" or "wing" on coordinates
    steps_per_epoch: Optional[int] = None  # None: one pass over the mixed data
    max_minutes: Optional[float] = None  # stop cleanly (with a checkpoint) after this long
    seed: int = 0  # random seed of sampling and augmentation
    workers: int = 0
    threads: Optional[int] = None  # torch intra-op threads
    val_limit: Optional[int] = None  # validate on at most this many images
    # Which part of val_data to score: None picks the protocol's seeded "val" part of a whole
    # AFLW2000-3D and "all" of anything else; "all" for a folder that is a validation set already.
    val_split: Optional[Literal["all", "val"]] = None
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


def _type_error(where: str, value: Any, expected: str) -> ConfigError:
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return ConfigError(f"{where}: expected {expected}, got {shown}")


def _check_value(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ints are accepted as floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(where, value, "a mapping")
        return {_check_value(args[0], k, f"{where} key"): _check_value(args[1], v, f"{where}.{k}")
                for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _type_error(where, value, "a list")
        return [_check_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(where, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(where, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _type_error(where, value, "a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(where, value, "a string")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    """Recursively turn dicts into dataclasses: unknown keys and wrong types are clear errors."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = {RENAMED.get(k, k): v for k, v in data.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _check_value(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict, where: str = "config") -> Config:
    return _build(Config, data, where)


def model_config_from_dict(data: dict, where: str = "model config") -> ModelConfig:
    return _build(ModelConfig, data, where)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    """A config file's mapping with its ``base:`` chain merged in (cycles refused)."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to this file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return _deep_merge(_read_yaml(path.parent / base, seen + (path.resolve(),)), data)


def load_config(path: Union[str, Path]) -> Config:
    """Read a YAML (or JSON) run configuration, its ``base:`` chain merged in, and validate it."""
    p = Path(path)
    cfg = config_from_dict(_read_yaml(p, ()), str(p))
    validate_config(cfg, str(p))
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``["train.epochs=3", "model.width=1.0"]`` -> a new, validated Config (values parsed as YAML)."""
    import yaml

    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.epochs=3)")
        key, value = item.split("=", 1)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section of the config")
            node = node[part]
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
    out = config_from_dict(data, "config with overrides")
    validate_config(out, "config with overrides")
    return out


def validate_config(cfg: Config, where: Optional[str] = None) -> None:
    """Refuse values and combinations that cannot train (checked before minutes of data caching)."""
    w = where or f"config {cfg.name!r}"
    t, m = cfg.train, cfg.model

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"{w}: {message}")

    need(t.loss in HEAD_LOSSES[m.head], f"the {m.head} head trains with loss "
         f"{' or '.join(HEAD_LOSSES[m.head])}, not {t.loss!r}")
    need(t.epochs >= 1, f"train.epochs must be at least 1, got {t.epochs}")
    need(t.batch_size >= 1, f"train.batch_size must be at least 1, got {t.batch_size}")
    need(t.lr >= 0, f"train.lr must be 0 or more, got {t.lr}")
    need(t.steps_per_epoch is None or t.steps_per_epoch >= 1,
         f"train.steps_per_epoch must be at least 1, got {t.steps_per_epoch}")
    need(t.workers >= 0, f"train.workers must be 0 or more, got {t.workers}")
    need(t.threads is None or t.threads >= 1, f"train.threads must be at least 1, got {t.threads}")
    need(t.max_minutes is None or t.max_minutes > 0, f"train.max_minutes must be positive, got {t.max_minutes}")
    need(t.warmup_steps >= 0, f"train.warmup_steps must be 0 or more, got {t.warmup_steps}")
    need(cfg.crop_scale > 0, f"crop_scale must be positive, got {cfg.crop_scale}")
    need(m.input_size >= 8, f"model.input_size must be at least 8, got {m.input_size}")
    need(all(s >= 1 for s in m.upsample_strides),
         f"model.upsample_strides must be positive integers, got {m.upsample_strides}")
    need(len(m.conventions) >= 1 and len(set(m.conventions)) == len(m.conventions),
         f"model.conventions must name each convention once, got {m.conventions}")
    for i, src in enumerate(cfg.train_data):
        need(src.convention is None or src.convention in m.conventions,
             f"train_data[{i}].convention {src.convention!r} is not one of model.conventions {m.conventions}")
        need(src.weight > 0, f"train_data[{i}].weight must be positive, got {src.weight}")
        need(src.limit is None or src.limit >= 1, f"train_data[{i}].limit must be at least 1, got {src.limit}")
    if t.teacher:
        need(m.head != "heatmap", "train.teacher needs a coordinate head (integral or regression), "
             "not the heatmap head")
        need(len(m.conventions) == 1, "train.teacher distils one convention; the model has "
             f"{m.conventions}")
        need(0.0 <= t.teacher_weight <= 1.0, f"train.teacher_weight must be in [0, 1], not {t.teacher_weight}")


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def dumps(obj: Any) -> str:
    return json.dumps(to_dict(obj), indent=2, sort_keys=True)
