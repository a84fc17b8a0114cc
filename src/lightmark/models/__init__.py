"""Networks: a backbone and a head built by name from a :class:`~lightmark.config.ModelConfig`.

``build_model(cfg)`` looks both up in :data:`BACKBONES` / :data:`HEADS` (add entries with
:func:`register_backbone` / :func:`register_head`) and returns a :class:`LandmarkModel`: exactly one
backbone and one head, the shape the model-file rules check for. Saving and loading live in
:mod:`.checkpoint`; :class:`TorchPredictor` runs a model behind the Predictor protocol.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from ..config import CodecConfig, ModelConfig, config_from_dict, model_config_from_dict, to_dict
from .heads import (ATTENTIONS, HEAD_BLOCKS, CoordAttention, HeatmapHead, IntegralHead,
                    RegressionHead, SeparableHead, make_map_head,
                    SqueezeExcite, crop_to_heatmap, heatmap_to_crop, soft_argmax)
from .shufflenet import STAGE_CHANNELS, STRIDE, ShuffleNetV2, shuffle_order


class ModelConfigError(ValueError):
    """A model configuration that cannot be built; the message names the field."""


BackboneFactory = Callable[[ModelConfig], nn.Module]
HeadFactory = Callable[[int, ModelConfig], nn.Module]

#: Backbones by ``ModelConfig.backbone``. Each returns a module with ``out_channels`` giving the
#: channel count of its stride-32 output. ``shufflenet_v2_noconv5`` drops the last 1x1 conv.
BACKBONES: dict[str, BackboneFactory] = {
    "shufflenet_v2": lambda cfg: ShuffleNetV2(cfg.width, conv5=True),
    "shufflenet_v2_noconv5": lambda cfg: ShuffleNetV2(cfg.width, conv5=False),
}
#: Heads by ``ModelConfig.head``, each built as ``factory(in_channels, cfg)``.
HEADS: dict[str, HeadFactory] = {
    "heatmap": make_map_head,  # HeatmapHead or SeparableHead, by cfg.head_block
    "integral": make_map_head,
    "regression": RegressionHead,
}


def register_backbone(name: str, factory: BackboneFactory) -> None:
    BACKBONES[name] = factory


def register_head(name: str, factory: HeadFactory) -> None:
    HEADS[name] = factory


class LandmarkModel(nn.Module):
    """One network: ``head(backbone(x))``. ``cfg`` is the :class:`ModelConfig` it was built from."""

    def __init__(self, cfg: ModelConfig, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def check_model_config(cfg: ModelConfig) -> None:
    """Raise :class:`ModelConfigError` naming the first field that cannot be built."""
    if not isinstance(cfg, ModelConfig):
        raise ModelConfigError(f"expected a ModelConfig, got {type(cfg).__name__}")
    if cfg.backbone not in BACKBONES:
        raise ModelConfigError(f"model.backbone: unknown {cfg.backbone!r}; known: {sorted(BACKBONES)}")
    if cfg.head not in HEADS:
        raise ModelConfigError(f"model.head: unknown {cfg.head!r}; known: {sorted(HEADS)}")
    if cfg.backbone.startswith("shufflenet_v2") and float(cfg.width) not in STAGE_CHANNELS:
        raise ModelConfigError(f"model.width: must be one of {sorted(STAGE_CHANNELS)}, got {cfg.width}")
    # A multiple of the backbone stride makes the feature grid tile the crop exactly, which the
    # heatmap <-> crop pixel formula relies on.
    if not isinstance(cfg.input_size, int) or cfg.input_size < STRIDE or cfg.input_size % STRIDE:
        raise ModelConfigError(f"model.input_size: must be a positive multiple of {STRIDE}, got {cfg.input_size!r}")
    if not isinstance(cfg.num_points, int) or cfg.num_points < 1:
        raise ModelConfigError(f"model.num_points: must be a positive integer, got {cfg.num_points!r}")
    if cfg.attention is not None and cfg.attention not in ATTENTIONS:
        raise ModelConfigError(f"model.attention: unknown {cfg.attention!r}; known: None, {sorted(ATTENTIONS)}")
    if cfg.head in ("heatmap", "integral"):
        if cfg.head_block not in HEAD_BLOCKS:
            raise ModelConfigError(f"model.head_block: unknown {cfg.head_block!r}; known: {sorted(HEAD_BLOCKS)}")
        strides = cfg.deconv_strides
        if not isinstance(strides, (list, tuple)) or not all(isinstance(s, int) and s >= 1 for s in strides):
            raise ModelConfigError(f"model.deconv_strides: must be a list of positive integers, got {strides!r}")
        if not isinstance(cfg.heatmap_size, int) or cfg.heatmap_size < 1:
            raise ModelConfigError(f"model.heatmap_size: must be a positive integer, got {cfg.heatmap_size!r}")
        if not isinstance(cfg.head_channels, int) or cfg.head_channels < 1:
            raise ModelConfigError(f"model.head_channels: must be a positive integer, got {cfg.head_channels!r}")


def build_model(cfg: Union[ModelConfig, dict]) -> LandmarkModel:
    """The network described by ``cfg`` (a :class:`ModelConfig` or its dict), in training mode."""
    if isinstance(cfg, dict):
        cfg = model_config_from_dict(cfg)
    cfg = dataclasses.replace(cfg, deconv_strides=list(cfg.deconv_strides))  # own copy
    check_model_config(cfg)
    backbone = BACKBONES[cfg.backbone](cfg)
    head = HEADS[cfg.head](int(backbone.out_channels), cfg)
    return LandmarkModel(cfg, backbone, head)


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one ``(1, 3, S, S)`` forward pass through Conv2d,
    ConvTranspose2d and Linear layers (grouped and depthwise convs counted per group)."""
    total = 0

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.ConvTranspose2d):
            # each input element is scattered through a k x k kernel to out/groups channels
            kh, kw = m.kernel_size
            total += inputs[0][0].numel() * (m.out_channels // m.groups) * kh * kw
        elif isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += out[0].numel() * (m.in_channels // m.groups) * kh * kw
        elif isinstance(m, nn.Linear):
            total += out[0].numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def model_info(cfg: Union[ModelConfig, dict], model: Optional[nn.Module] = None) -> dict[str, Any]:
    """Size and cost of the network for ``cfg`` at ``cfg.input_size``.

    Keys: ``params`` (and ``params_backbone`` / ``params_head``), ``float32_mb`` (bytes of every
    saved tensor as float32 / 1e6, the quantity the 15 MB rule limits), ``macs`` (multiply-adds,
    batch 1), ``output_shape``.
    """
    from .checkpoint import saved_state

    if isinstance(cfg, dict):
        cfg = model_config_from_dict(cfg)
    if model is None:
        model = build_model(cfg)
    macs = count_macs(model, cfg.input_size)
    with torch.no_grad():
        out_shape = tuple(model.eval()(torch.zeros(1, 3, cfg.input_size, cfg.input_size)).shape[1:])
    n_saved = sum(t.numel() for t in saved_state(model).values())
    info: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "float32_mb": n_saved * 4 / 1e6,
        "macs": macs,
        "output_shape": list(out_shape),
        "input_size": cfg.input_size,
    }
    for part in ("backbone", "head"):
        sub = getattr(model, part, None)
        if isinstance(sub, nn.Module):
            info[f"params_{part}"] = sum(p.numel() for p in sub.parameters())
    return info


class TorchPredictor:
    """A torch model behind the Predictor protocol (see docs/ARCHITECTURE.md).

    ``predict_crops(crops uint8 (N, S, S, 3)) -> float32 (N, 68, 2)`` points in crop pixels,
    via :func:`lightmark.imaging.to_input`, the model and :func:`lightmark.heatmap.decode`.
    The model is put in eval mode (a caller validating mid-training switches it back).
    """

    def __init__(self, model: nn.Module, meta: dict, device: Union[str, torch.device, None] = None,
                 batch_size: int = 64) -> None:
        if "model" not in meta:
            raise ValueError("TorchPredictor: meta has no 'model' entry (the ModelConfig)")
        model_cfg = meta["model"]
        self.model_cfg = model_config_from_dict(to_dict(model_cfg) if dataclasses.is_dataclass(model_cfg)
                                                else dict(model_cfg), "meta.model")
        codec = meta.get("codec") or {}
        self.codec_cfg: CodecConfig = config_from_dict(
            {"codec": to_dict(codec) if dataclasses.is_dataclass(codec) else dict(codec)}, "meta").codec
        if "crop_scale" not in meta:
            raise ValueError("TorchPredictor: meta has no 'crop_scale' entry")
        self.meta = meta
        self.input_size: int = int(self.model_cfg.input_size)
        self.crop_scale: float = float(meta["crop_scale"])
        # Default: stay where the model is, so validating a model mid-training on a GPU neither
        # moves it to the CPU nor copies it.
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = model.to(self.device).eval()

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        from ..heatmap import decode
        from ..imaging import to_input

        c = np.asarray(crops)
        if c.ndim == 3:
            c = c[None]
        s = self.input_size
        if c.dtype != np.uint8 or c.ndim != 4 or c.shape[1:] != (s, s, 3):
            raise ValueError(f"predict_crops: expected uint8 crops of shape (N, {s}, {s}, 3), "
                             f"got {c.dtype} {c.shape}")
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for i in range(0, len(c), self.batch_size):
                x = torch.from_numpy(to_input(c[i:i + self.batch_size])).to(self.device)
                y = self.model(x).float().cpu().numpy()
                out.append(decode(y, self.model_cfg, self.codec_cfg))
        if not out:
            return np.zeros((0, self.model_cfg.num_points, 2), np.float32)
        return np.concatenate(out).astype(np.float32)


from .checkpoint import (MAX_MODEL_BYTES, ModelFileError, ModelRuleError, check_model_rules,  # noqa: E402
                         load_model, model_paths, save_model)

__all__ = [
    "ATTENTIONS", "BACKBONES", "HEADS", "MAX_MODEL_BYTES", "CoordAttention", "HeatmapHead",
    "HEAD_BLOCKS", "IntegralHead", "SeparableHead", "LandmarkModel", "ModelConfigError", "ModelFileError", "ModelRuleError",
    "RegressionHead", "ShuffleNetV2", "SqueezeExcite", "TorchPredictor", "build_model",
    "check_model_config", "check_model_rules", "count_macs", "crop_to_heatmap",
    "heatmap_to_crop", "load_model", "model_info", "model_paths", "register_backbone",
    "register_head", "save_model", "shuffle_order", "soft_argmax",
]
