"""Losses: MSE on heatmaps (the original write-up's), L1/MSE/Wing on coordinates, and distillation."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from lightmark.core.config import Config
from lightmark.models import load_model
from lightmark.models.heads import heatmap_to_crop, soft_argmax


def output_points(head: str, output: torch.Tensor, input_size: int) -> torch.Tensor:
    """A coordinate head's output as (B, 68, 2) crop pixels (soft-argmax for the integral head)."""
    if head == "integral":
        return heatmap_to_crop(soft_argmax(output), input_size, output.shape[-1])
    return output


def own_outputs(cfg: Config, output: torch.Tensor, output_set: torch.Tensor) -> torch.Tensor:
    """Each sample's own ``num_points`` outputs of a several-convention model: a sample trains
    only the output set its labels' convention defines."""
    if len(cfg.model.conventions) == 1:
        return output
    b, k = output.shape[0], cfg.model.num_points
    sets = output.reshape(b, len(cfg.model.conventions), k, *output.shape[2:])
    return sets[torch.arange(b, device=output.device), output_set.to(output.device).long()]


def compute_loss(cfg: Config, output: torch.Tensor, target: torch.Tensor,
                 output_set: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE on heatmaps (the original write-up's) or L1/MSE on coordinates normalised by the input size."""
    head, s = cfg.model.head, cfg.model.input_size
    if output_set is not None:
        output = own_outputs(cfg, output, output_set)
    if head == "heatmap":
        if cfg.train.loss != "mse":
            raise ValueError(f"the heatmap head trains with loss 'mse', not {cfg.train.loss!r}")
        return F.mse_loss(output, target)
    return point_loss(cfg.train.loss, output_points(head, output, s), target, s)


#: Wing loss (Feng et al., "Wing loss for robust facial landmark localisation", CVPR 2018) in
#: percent of the input size: logarithmic below WING_W (steeper than L1 for small errors), L1
#: beyond. The paper's w = 10, epsilon = 2 pixels of a 256 px input, scaled to percent.
WING_W, WING_EPS = 4.0, 0.8


def point_loss(loss: str, points: torch.Tensor, target: torch.Tensor, input_size: int) -> torch.Tensor:
    """L1, MSE or Wing between point sets (per coordinate), in percent of the input size."""
    d = (points - target) / input_size * 100
    if loss == "l1":
        return d.abs().mean()
    if loss == "mse":
        return d.pow(2).mean()
    if loss == "wing":
        a = d.abs()
        c = WING_W - WING_W * math.log(1 + WING_W / WING_EPS)  # makes the two pieces meet at WING_W
        return torch.where(a < WING_W, WING_W * torch.log1p(a / WING_EPS), a - c).mean()
    raise ValueError(f"unknown loss {loss!r} for a coordinate head")


class Teacher:
    """A trained model whose points on the same augmented crops are a second target (distillation).

    It runs in eval mode without gradients; a teacher that sees crops differently (input size, crop
    scale) or predicts no points (the heatmap head) is refused before any data is cached.
    """

    def __init__(self, cfg: Config, device: torch.device):
        t = cfg.train  # the student's side was checked by validate_config
        model, meta = load_model(t.teacher)  # checks the checksum
        m = meta["model"]
        if m["head"] == "heatmap":
            raise ValueError(f"train.teacher {t.teacher}: its heatmap head predicts no points "
                             "for distillation")
        if m["input_size"] != cfg.model.input_size or meta.get("crop_scale") != cfg.crop_scale:
            raise ValueError(f"train.teacher {t.teacher}: it sees {m['input_size']} px crops at "
                             f"scale {meta.get('crop_scale')}, the student {cfg.model.input_size} px "
                             f"at {cfg.crop_scale}; they must match")
        self.model = model.to(device).eval().requires_grad_(False)
        self.head, self.input_size, self.weight = m["head"], m["input_size"], t.teacher_weight

    @torch.no_grad()
    def points(self, x: torch.Tensor) -> torch.Tensor:
        return output_points(self.head, self.model(x), self.input_size)


def distill_loss(cfg: Config, output: torch.Tensor, target: torch.Tensor,
                 teacher_points: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) x the loss on the labels + weight x the loss on the teacher's points."""
    s = cfg.model.input_size
    points = output_points(cfg.model.head, output, s)
    return ((1 - weight) * point_loss(cfg.train.loss, points, target, s)
            + weight * point_loss(cfg.train.loss, points, teacher_points, s))
