"""Zero channels that round a ShuffleNet V2's widths up for the CPU: exact, inference only.

onnxruntime runs convolutions fastest in its blocked ("NCHWc") layout, which needs channel counts
that are multiples of the vector width (16 floats with AVX-512). ShuffleNet V2 x1.0 splits 116,
232 and 464 channels into halves of 58, 116 and 232: none fits, so most convolutions of stage 2
fell back to the plain layout and every unit paid for layout conversions. :func:`pad_channels`
returns a copy whose convolutions carry extra channels with zero weights, zero bias and BN that
outputs zero: every real channel computes exactly what it did, every added one stays 0 through
ReLU, depthwise convs and the channel shuffle, and the next layer gives it zero weight. The output
is the same up to float rounding order (export checks it against the unpadded model).

Channel bookkeeping uses *maps*: ``map[p]`` is the original channel held by physical channel
``p``, or ``-1`` for an added zero channel. Every padded unit ends in the same layout: the
passthrough half, zeros, the other half, zeros, so the next unit's split stays one slice.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from lightmark.models.heads import HeatmapHead, SeparableHead
from lightmark.models.shufflenet import ShuffleNetV2, ShuffleUnit, shuffle_order

ChannelMap = list[int]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_map(n: int, multiple: int) -> ChannelMap:
    """Channels ``0..n-1`` then zeros up to a multiple of ``multiple``."""
    return list(range(n)) + [-1] * (round_up(n, multiple) - n)


def unit_map(half: int, multiple: int) -> ChannelMap:
    """The layout a padded unit outputs: the first half, zeros, the second half, zeros."""
    return padded_map(half, multiple) + [-1 if i < 0 else i + half for i in padded_map(half, multiple)]


def _take(t: torch.Tensor, index: ChannelMap, dim: int, fill: float = 0.0) -> torch.Tensor:
    """Slices of ``t`` along ``dim`` in ``index`` order; ``-1`` gives a slice of ``fill``."""
    idx = torch.tensor([max(i, 0) for i in index], dtype=torch.long, device=t.device)
    out = t.detach().index_select(dim, idx).clone()
    pad = torch.tensor([i < 0 for i in index], device=t.device)
    out.movedim(dim, 0)[pad] = fill  # movedim is a view: this writes into out
    return out


def _conv(conv: nn.Conv2d, in_map: ChannelMap, out_map: ChannelMap) -> nn.Conv2d:
    """``conv`` reading channels laid out as ``in_map`` and writing ``out_map``."""
    depthwise = conv.groups > 1
    if depthwise and (conv.groups != conv.in_channels or conv.groups != conv.out_channels
                      or in_map != out_map):
        raise ValueError("padding handles dense and depthwise convolutions only")
    w = _take(conv.weight, out_map, 0)
    if not depthwise:
        w = _take(w, in_map, 1)
    new = nn.Conv2d(len(in_map), len(out_map), conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, groups=len(out_map) if depthwise else 1,
                    bias=conv.bias is not None).to(w.device)
    new.weight.data.copy_(w)
    if conv.bias is not None:
        new.bias.data.copy_(_take(conv.bias, out_map, 0))
    return new


def _bn(bn: nn.BatchNorm2d, out_map: ChannelMap) -> nn.BatchNorm2d:
    """``bn`` on ``out_map``: an added channel gets scale 0, shift 0, so it outputs exactly 0."""
    new = nn.BatchNorm2d(len(out_map), eps=bn.eps, momentum=bn.momentum).to(bn.weight.device)
    new.weight.data.copy_(_take(bn.weight, out_map, 0))
    new.bias.data.copy_(_take(bn.bias, out_map, 0))
    new.running_mean.copy_(_take(bn.running_mean, out_map, 0))
    new.running_var.copy_(_take(bn.running_var, out_map, 0, fill=1.0))
    return new.eval()


def _conv_bn(seq: nn.Sequential, in_map: ChannelMap, out_map: ChannelMap) -> nn.Sequential:
    """A :func:`~lightmark.models.shufflenet.conv_bn` block re-laid (conv, BN, optional ReLU)."""
    layers = list(seq)
    return nn.Sequential(_conv(layers[0], in_map, out_map), _bn(layers[1], out_map), *layers[2:])


def _pad_unit(unit: ShuffleUnit, in_map: ChannelMap, multiple: int) -> ChannelMap:
    """Re-lay ``unit`` in place for input ``in_map``; returns the layout of its output."""
    half = unit.half
    local = padded_map(half, multiple)
    if unit.stride == 2:
        dw, pw = unit.branch1
        unit.branch1 = nn.Sequential(_conv_bn(dw, in_map, in_map), _conv_bn(pw, in_map, local))
        branch_in = in_map
    else:
        if in_map != unit_map(half, multiple):
            raise ValueError("a stride-1 unit must follow a padded unit")
        branch_in = local
    pw1, dw, pw2 = unit.branch2
    unit.branch2 = nn.Sequential(_conv_bn(pw1, branch_in, local), _conv_bn(dw, local, local),
                                 _conv_bn(pw2, local, local))
    # Concatenated: [left half, zeros, right half, zeros]. Output channel j of the original shuffle
    # takes concatenated channel order[j]; the padded output lays the result out as unit_map.
    padded_half = len(local)
    order = shuffle_order(2 * half).tolist()
    out_map = unit_map(half, multiple)

    def physical(k: int) -> int:  # where concatenated channel k sits in the padded concatenation
        return k if k < half else k - half + padded_half

    zero = half  # the first added channel of the left half (exists whenever padding is needed)
    index = [physical(order[j]) if j >= 0 else zero for j in out_map]
    unit.half = padded_half
    unit.channels = 2 * padded_half
    unit.shuffle_order = torch.tensor(index, dtype=torch.long, device=unit.shuffle_order.device)
    return out_map


def pad_backbone(backbone: ShuffleNetV2, multiple: int) -> ChannelMap:
    """Pad ``backbone`` in place; returns the layout of its output features."""
    conv1 = list(backbone.conv1)
    c1 = padded_map(conv1[0].out_channels, multiple)
    backbone.conv1 = _conv_bn(backbone.conv1, [0, 1, 2], c1)
    layout = c1
    for stage in (backbone.stage2, backbone.stage3, backbone.stage4):
        for unit in stage:
            layout = _pad_unit(unit, layout, multiple)
    if isinstance(backbone.conv5, nn.Sequential):
        c5 = padded_map(list(backbone.conv5)[0].out_channels, multiple)
        backbone.conv5 = _conv_bn(backbone.conv5, layout, c5)
        layout = c5
    return layout


def pad_head_input(head: nn.Module, in_map: ChannelMap) -> bool:
    """Make ``head``'s first layer read ``in_map``; False when the head type is not known here."""
    if isinstance(head, SeparableHead):
        proj = list(head.proj)
        conv = proj[0]
        head.proj = nn.Sequential(_conv(conv, in_map, list(range(conv.out_channels))), *proj[1:])
        return True
    layers = list(getattr(head, "deconv", []))
    if isinstance(head, HeatmapHead) and layers and isinstance(layers[0], nn.ConvTranspose2d):
        t = layers[0]  # a HeatmapHead (heatmap or integral head) with at least one transposed conv
        new = nn.ConvTranspose2d(len(in_map), t.out_channels, t.kernel_size, t.stride, t.padding,
                                 t.output_padding, bias=t.bias is not None).to(t.weight.device)
        new.weight.data.copy_(_take(t.weight, in_map, 0))  # (in, out, k, k)
        if t.bias is not None:
            new.bias.data.copy_(t.bias.detach())
        head.deconv = nn.Sequential(new, *layers[1:])
        return True
    return False


def pad_channels(model: nn.Module, multiple: int = 16) -> nn.Module:
    """An eval-mode copy of ``model`` (a LandmarkModel) with its ShuffleNet V2 widths rounded up
    to ``multiple``; the same outputs. A model with another backbone, or whose head would have to
    read padded features it cannot be re-laid for (regression, a heatmap head without transposed
    convs), comes back as an unchanged eval-mode copy."""
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    out = copy.deepcopy(model).eval()
    if not isinstance(getattr(out, "backbone", None), ShuffleNetV2):
        return out
    layout = pad_backbone(out.backbone, multiple)
    if layout != list(range(len(layout))) and not pad_head_input(out.head, layout):
        return copy.deepcopy(model).eval()  # a head that cannot read the padded features
    return out.eval()


def conv_channel_counts(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, in, out) channels of every convolution: what the padding is for."""
    return [(n, m.in_channels, m.out_channels) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


__all__: Sequence[str] = ["ChannelMap", "conv_channel_counts", "pad_backbone", "pad_channels",
                          "pad_head_input", "padded_map", "round_up", "unit_map"]
