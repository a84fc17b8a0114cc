"""Landmark heads on top of a stride-32 feature map, attention blocks and torch decoding helpers.

Every head is built as ``Head(in_channels, cfg)`` from a :class:`~lightmark.config.ModelConfig` and
returns what the architecture contract says for its ``cfg.head``:

* ``heatmap``    -> ``(B, K, h, w)`` heatmaps (trained against Gaussian targets, as in the original write-up);
* ``integral``   -> ``(B, K, h, w)`` logits, turned into points by :func:`soft_argmax`;
* ``regression`` -> ``(B, K, 2)`` points in crop pixels.

Heatmap pixel <-> crop pixel (both pixel-centre): ``x_hm = (x_crop + 0.5) * h / S - 0.5``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from lightmark.core.config import ModelConfig
from lightmark.models.shufflenet import STRIDE


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        mid = max(8, channels // reduction)
        self.fc1 = nn.Conv2d(channels, mid, 1)
        self.fc2 = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class CoordAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021): gates per row and per column.

    Pooling along each axis separately keeps position in the other axis, which is what a
    landmark head needs (where along x / y a part lies), unlike SE's single global pool.
    """

    def __init__(self, channels: int, reduction: int = 32) -> None:
        super().__init__()
        mid = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mid, channels, 1)
        self.conv_w = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        # mean() rather than AdaptiveAvgPool2d((None, 1)): the same maths, and it exports to ONNX.
        x_h = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        y = self.act(self.bn1(self.conv1(torch.cat((x_h, x_w), dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = torch.sigmoid(self.conv_h(y_h))  # (B, C, H, 1)
        a_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))  # (B, C, 1, W)
        return x * a_h * a_w


#: Attention blocks by the name used in ``ModelConfig.attention``.
ATTENTIONS: dict[str, type[nn.Module]] = {"se": SqueezeExcite, "coord": CoordAttention}


def make_attention(name: Optional[str], channels: int) -> nn.Module:
    """The attention block called ``name`` (``None``: identity)."""
    if name is None:
        return nn.Identity()
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; known: None, {sorted(ATTENTIONS)}")
    return ATTENTIONS[name](channels)


def deconv_geometry(stride: int) -> tuple[int, int]:
    """(kernel, padding) of a transposed conv that multiplies the size by exactly ``stride``.

    ``out = (in - 1) * s - 2p + k`` equals ``in * s`` when ``k = s + 2p``. Strides 1-3 use one pixel
    of overlap each side (k = s + 2: the usual 4x4/2), strides >= 4 use k = s (no overlap), which
    keeps a 4x up-sampling from 1024 channels affordable under the size limit.
    """
    if stride < 1:
        raise ValueError(f"deconv strides must be positive integers, got {stride}")
    kernel = stride + 2 if stride < 4 else stride
    return kernel, (kernel - stride) // 2


def output_count(cfg: ModelConfig) -> int:
    """Maps (or points) a head outputs: ``num_points`` per entry of ``cfg.conventions``."""
    return int(cfg.num_points) * len(cfg.conventions)


class MapHead(nn.Module):
    """What the heads with map outputs share: the channel check, the output side, the resize.

    The natural output side is ``input_size / 32 * prod(upsample_strides)``. When that differs from
    ``heatmap_size`` the maps are resized bilinearly (half-pixel centres, ``align_corners=False``)
    to ``heatmap_size``, which keeps the pixel-centre mapping of the contract exact. Subclasses
    build their layers and pass their output through :meth:`to_heatmap_size`.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.channels = int(cfg.head_channels)
        if self.channels < 1:
            raise ValueError(f"head_channels must be positive, got {cfg.head_channels}")
        self.heatmap_size = int(cfg.heatmap_size)
        self.natural_size = cfg.input_size // STRIDE * math.prod(int(s) for s in cfg.upsample_strides)
        self.resize = self.natural_size != self.heatmap_size

    def to_heatmap_size(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize:
            x = F.interpolate(x, size=(self.heatmap_size, self.heatmap_size), mode="bilinear",
                              align_corners=False)
        return x


class HeatmapHead(MapHead):
    """The original write-up's head: transposed convs (BN+ReLU) -> attention -> 3x3 conv (BN+ReLU) -> 1x1 conv."""

    def __init__(self, in_channels: int, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        c = self.channels
        layers: list[nn.Module] = []
        prev = in_channels
        for s in cfg.upsample_strides:
            k, p = deconv_geometry(int(s))
            layers += [nn.ConvTranspose2d(prev, c, k, int(s), p, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True)]
            prev = c
        self.deconv = nn.Sequential(*layers)
        self.attention = make_attention(cfg.attention, prev)
        self.conv = nn.Sequential(
            nn.Conv2d(prev, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(c, output_count(cfg), 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, std=0.001 if m is self.out else 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_heatmap_size(self.out(self.conv(self.attention(self.deconv(x)))))


def separable_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Depthwise 3x3 (BN) then pointwise 1x1 (BN+ReLU): a 3x3 conv's reach at a fraction of its cost."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, 1, 1, groups=in_ch, bias=False), nn.BatchNorm2d(in_ch),
        nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class SeparableHead(MapHead):
    """The heatmap/integral head made cheap for CPU inference (``head_block: separable``).

    1x1 projection to ``head_channels`` at stride 32, then per entry of ``upsample_strides`` a
    bilinear up-sampling (half-pixel centres, like the heatmap contract) and a depthwise-separable
    block, then attention and a separable 1x1 output: the same up-sampling as :class:`HeatmapHead`
    for a fraction of its cost (measured in ``docs/ABLATIONS.md``). The output contract
    (maps of ``heatmap_size``, pixel-centre mapping) is the same as :class:`HeatmapHead`'s.
    """

    def __init__(self, in_channels: int, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        c = self.channels
        self.proj = nn.Sequential(nn.Conv2d(in_channels, c, 1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(inplace=True))
        self.strides = [int(s) for s in cfg.upsample_strides]
        self.blocks = nn.ModuleList(separable_block(c, c) for _ in self.strides)
        self.attention = make_attention(cfg.attention, c)
        self.out = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c),
                                 nn.Conv2d(c, output_count(cfg), 1))
        nn.init.normal_(self.out[-1].weight, std=0.001)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for s, block in zip(self.strides, self.blocks):
            if s > 1:
                x = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            x = block(x)
        return self.to_heatmap_size(self.out(self.attention(x)))


#: Up-sampling blocks by ``ModelConfig.head_block``, for the ``heatmap`` and ``integral`` heads.
HEAD_BLOCKS: dict[str, type[nn.Module]] = {"deconv": HeatmapHead, "separable": SeparableHead}


def make_map_head(in_channels: int, cfg: ModelConfig) -> nn.Module:
    """The ``heatmap`` / ``integral`` head built with the up-sampling block ``cfg.head_block``."""
    if cfg.head_block not in HEAD_BLOCKS:
        raise ValueError(f"unknown head_block {cfg.head_block!r}; known: {sorted(HEAD_BLOCKS)}")
    return HEAD_BLOCKS[cfg.head_block](in_channels, cfg)


class RegressionHead(nn.Module):
    """Global average pool -> linear -> ``(B, K, 2)`` points in crop pixels.

    The linear layer predicts normalised coordinates ``u`` (0 and 1 at the crop's outer edges);
    forward maps them to pixel centres, ``x = u * S - 0.5``, so the output obeys the contract while
    the layer trains on well-scaled numbers. The bias starts at 0.5: every point at the centre.
    Attention, if any, acts on the backbone features before pooling (there are no deconvs).
    """

    def __init__(self, in_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_points = output_count(cfg)
        self.input_size = int(cfg.input_size)
        self.attention = make_attention(cfg.attention, in_channels)
        self.fc = nn.Linear(in_channels, self.num_points * 2)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.constant_(self.fc.bias, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x).mean(dim=(2, 3))
        u = self.fc(x).reshape(-1, self.num_points, 2)
        return u * self.input_size - 0.5


def soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``(B, K, h, w)`` logits -> ``(B, K, 2)`` (x, y) expected position in heatmap pixels.

    Pixel-centre coordinates: ``x = sum p[i, j] * j``, ``y = sum p[i, j] * i`` with
    ``p = softmax`` over each map. Differentiable; computed in float32.
    """
    if logits.ndim != 4:
        raise ValueError(f"soft_argmax expects (B, K, h, w) logits, got shape {tuple(logits.shape)}")
    b, k, h, w = logits.shape
    p = torch.softmax(logits.float().reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
    xs = torch.arange(w, dtype=p.dtype, device=p.device)
    ys = torch.arange(h, dtype=p.dtype, device=p.device)
    x = (p.sum(dim=2) * xs).sum(dim=-1)
    y = (p.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack((x, y), dim=-1)


SizeLike = Union[int, Sequence[int]]


def heatmap_to_crop(points_hm: torch.Tensor, input_size: int, hm_size: SizeLike) -> torch.Tensor:
    """Heatmap-pixel points ``(..., 2)`` -> crop pixels: ``x_crop = (x_hm + 0.5) * S / w - 0.5``.

    ``hm_size`` is ``h`` for square maps or ``(h, w)``.
    """
    h, w = (int(hm_size), int(hm_size)) if isinstance(hm_size, int) else (int(hm_size[0]), int(hm_size[1]))
    scale = points_hm.new_tensor([input_size / w, input_size / h])
    return (points_hm + 0.5) * scale - 0.5


def crop_to_heatmap(points_crop: torch.Tensor, input_size: int, hm_size: SizeLike) -> torch.Tensor:
    """Inverse of :func:`heatmap_to_crop`: ``x_hm = (x_crop + 0.5) * w / S - 0.5``."""
    h, w = (int(hm_size), int(hm_size)) if isinstance(hm_size, int) else (int(hm_size[0]), int(hm_size[1]))
    scale = points_crop.new_tensor([w / input_size, h / input_size])
    return (points_crop + 0.5) * scale - 0.5
