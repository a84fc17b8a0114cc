"""Networks by name: a backbone and a head from a :class:`~lightmark.core.config.ModelConfig`.

``build_model(cfg)`` looks both up in :data:`BACKBONES` / :data:`HEADS` (add entries with
:func:`register_backbone` / :func:`register_head`) and returns a :class:`LandmarkModel`: exactly one
backbone and one head, the shape the model-file rules check for.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from lightmark.core.config import ModelConfig, model_config_from_dict
from lightmark.core.errors import ModelConfigError
from lightmark.models.heads import ATTENTIONS, HEAD_BLOCKS, RegressionHead, make_map_head
from lightmark.models.shufflenet import STAGE_CHANNELS, STRIDE, ShuffleNetV2

#: BatchNorm's int64 step counters: never saved (they only matter for momentum=None, unused here).
EXEMPT_SUFFIX = "num_batches_tracked"


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
        strides = cfg.upsample_strides
        if not isinstance(strides, (list, tuple)) or not all(isinstance(s, int) and s >= 1 for s in strides):
            raise ModelConfigError(f"model.upsample_strides: must be a list of positive integers, got {strides!r}")
        if not isinstance(cfg.heatmap_size, int) or cfg.heatmap_size < 1:
            raise ModelConfigError(f"model.heatmap_size: must be a positive integer, got {cfg.heatmap_size!r}")
        if not isinstance(cfg.head_channels, int) or cfg.head_channels < 1:
            raise ModelConfigError(f"model.head_channels: must be a positive integer, got {cfg.head_channels!r}")


def build_model(cfg: Union[ModelConfig, dict]) -> LandmarkModel:
    """The network described by ``cfg`` (a :class:`ModelConfig` or its dict), in training mode."""
    if isinstance(cfg, dict):
        cfg = model_config_from_dict(cfg)
    cfg = dataclasses.replace(cfg, upsample_strides=list(cfg.upsample_strides))  # own copy
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




def saved_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors written to a model file: the state dict minus BN ``num_batches_tracked``."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith(EXEMPT_SUFFIX)}
