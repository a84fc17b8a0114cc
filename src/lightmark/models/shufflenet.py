"""ShuffleNet V2 backbone (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", ECCV 2018), written from the paper.

Structure: conv1 3x3/2 (24 ch) + max-pool 3x3/2, then three stages of 4, 8 and 4 units (the first
unit of each stage halves the resolution), then an optional 1x1 ``conv5``. The ImageNet classifier
(global pool + FC) is not part of it: a landmark head sits on the stride-32 feature map instead.

A stride-1 unit splits the channels in two, transforms one half (1x1, depthwise 3x3, 1x1), keeps
the other as is, concatenates and shuffles; a stride-2 unit feeds the whole input to two branches
(each ending at half the output channels), concatenates and shuffles.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: Output channels of conv1, stage 2, stage 3, stage 4 and conv5 for each width multiplier
#: (Table 5 of the paper).
STAGE_CHANNELS: dict[float, tuple[int, int, int, int, int]] = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
#: Units per stage (stages 2, 3, 4).
STAGE_REPEATS: tuple[int, int, int] = (4, 8, 4)
#: Total down-sampling factor of the feature map it returns.
STRIDE = 32


def shuffle_order(channels: int, groups: int = 2) -> torch.Tensor:
    """The channel shuffle as an index: output channel j takes input channel ``order[j]``, which
    interleaves the ``groups`` groups so information crosses the two branches."""
    return torch.arange(channels).reshape(groups, channels // groups).t().reshape(-1)


def conv_bn(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Conv (no bias: BN follows) + BatchNorm (+ ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ShuffleUnit(nn.Module):
    """One ShuffleNet V2 unit (Fig. 3 (c) for stride 1, (d) for stride 2)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit stride must be 1 or 2, got {stride}")
        if out_ch % 2:
            raise ValueError(f"ShuffleUnit needs an even channel count, got {out_ch}")
        if stride == 1 and in_ch != out_ch:
            raise ValueError(f"a stride-1 ShuffleUnit keeps its width ({in_ch} != {out_ch})")
        self.stride = stride
        self.channels = out_ch
        self.half = half = out_ch // 2
        # The shuffle is one gather with a constant index rather than the usual reshape/transpose/
        # reshape: the same result, but the exported graph needs no run-time shape arithmetic
        # (Shape/Gather/Concat chains around every unit cost about a quarter of the CPU time).
        # A buffer, so that models.padding can give an inference copy a layout with zero
        # channels; not saved (persistent=False): checkpoints hold weights only.
        self.register_buffer("shuffle_order", shuffle_order(out_ch), persistent=False)
        if stride == 2:
            # Left branch: depthwise 3x3/2 (linear) then 1x1 to half the output channels.
            self.branch1: nn.Module = nn.Sequential(
                conv_bn(in_ch, in_ch, 3, stride, groups=in_ch, relu=False),
                conv_bn(in_ch, half, 1),
            )
        else:
            self.branch1 = nn.Identity()  # the untouched half of the split
        branch2_in = in_ch if stride == 2 else half
        self.branch2 = nn.Sequential(
            conv_bn(branch2_in, half, 1),
            conv_bn(half, half, 3, stride, groups=half, relu=False),  # depthwise, no ReLU
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            half = self.half  # a constant split point: no shape arithmetic in the ONNX graph
            out = torch.cat((x[:, :half], self.branch2(x[:, half:])), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return out.index_select(1, self.shuffle_order)


def make_stage(in_ch: int, out_ch: int, repeats: int) -> nn.Sequential:
    """A stage: one stride-2 unit, then ``repeats - 1`` stride-1 units."""
    units = [ShuffleUnit(in_ch, out_ch, 2)]
    units += [ShuffleUnit(out_ch, out_ch, 1) for _ in range(repeats - 1)]
    return nn.Sequential(*units)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 feature extractor: ``(B, 3, S, S) -> (B, out_channels, S/32, S/32)``.

    ``conv5=False`` drops the final 1x1 convolution (saves 0.2M-2M parameters); the features then
    have the stage-4 channel count. ``out_channels`` tells a head what it receives.
    """

    def __init__(self, width: float = 1.0, conv5: bool = True,
                 repeats: Sequence[int] = STAGE_REPEATS) -> None:
        super().__init__()
        key = float(width)
        if key not in STAGE_CHANNELS:
            raise ValueError(f"ShuffleNet V2 width must be one of {sorted(STAGE_CHANNELS)}, got {width}")
        if len(repeats) != 3:
            raise ValueError(f"ShuffleNet V2 has three stages; got repeats {list(repeats)}")
        ch = STAGE_CHANNELS[key]
        self.width = key
        self.conv1 = conv_bn(3, ch[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = make_stage(ch[0], ch[1], repeats[0])
        self.stage3 = make_stage(ch[1], ch[2], repeats[1])
        self.stage4 = make_stage(ch[2], ch[3], repeats[2])
        self.conv5: nn.Module = conv_bn(ch[3], ch[4], 1) if conv5 else nn.Identity()
        self.out_channels = ch[4] if conv5 else ch[3]
        self.stride = STRIDE
        self._init_weights()

    def _init_weights(self) -> None:
        # He init for convs (ReLU network), BN to identity: trains from scratch without surprises.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x)
