"""Training augmentation: the original write-up's colour pipeline and the geometric one it had to skip.

Geometry is never done on pixels here. A random rotation, scale, shift and mirror only perturb the
arguments of :func:`lightmark.geometry.crop_matrix`; the same matrix then moves the pixels (one
``warpAffine``) and the points (one matrix product), so labels follow pixels exactly. A mirrored
crop also relabels the points with :data:`lightmark.geometry.FLIP_PERMUTATION`.

Colour uses albumentations (a well-kept library) on the final crop:

* colour jitter: brightness and saturation factors drawn uniformly in [0.5, 1.5] (the original write-up's
  "0.5–1.5"). A hue *factor* has no standard meaning; we read the original write-up's hue factor f in
  [0.5, 1.5] as a hue rotation of (f − 1) turns, i.e. up to ±0.5 of the colour wheel, which is what
  ``ColorJitter(hue=0.5)`` in torchvision and albumentations does. Contrast is left at 1.
* grayscale with probability p (three equal channels, so the network input shape is unchanged);
* random erasing with probability p: one rectangle of 2–33 % of the crop, filled with noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from lightmark.core import geometry
from lightmark.core.config import AugmentConfig


@dataclass
class CropParams:
    """Where to cut the training crop from the source image."""

    centre: np.ndarray
    side: float
    angle_deg: float = 0.0
    flip: bool = False


def base_crop(points: np.ndarray, crop_scale: float) -> CropParams:
    """The un-augmented crop: the landmark box, squared and enlarged by ``crop_scale``."""
    centre, side = geometry.square_from_box(geometry.landmark_box(points), crop_scale)
    return CropParams(centre, side)


def random_crop(points: np.ndarray, crop_scale: float, cfg: AugmentConfig,
                rng: np.random.Generator) -> CropParams:
    """The landmark-box crop with a random rotation, scale, translation and mirror from ``cfg``."""
    p = base_crop(points, crop_scale)
    side = p.side * float(np.exp(rng.uniform(-cfg.scale, cfg.scale))) if cfg.scale else p.side
    shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * p.side if cfg.translate else 0.0
    angle = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)) if cfg.rotation_deg else 0.0
    flip = bool(rng.random() < cfg.flip) if cfg.flip else False
    return CropParams(p.centre + shift, side, angle, flip)


def apply_crop(image: np.ndarray, points: np.ndarray, params: CropParams,
               out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the crop described by ``params``; returns the crop and the points in crop pixels."""
    m = geometry.crop_matrix(params.centre, params.side, out_size, params.angle_deg, params.flip)
    crop = geometry.warp_image(image, m, out_size)
    pts = geometry.apply_affine(points, m)
    if params.flip:
        pts = geometry.flip_points_in_crop(pts)
    return crop, pts.astype(np.float32)


class ColorAugment:
    """The original write-up's photometric pipeline on uint8 RGB crops; a no-op when all probabilities are 0."""

    def __init__(self, cfg: AugmentConfig, seed: Optional[int] = None):
        import albumentations as A  # training-only dependency

        ops = []
        if cfg.color_jitter > 0:
            ops.append(A.ColorJitter(brightness=(0.5, 1.5), contrast=(1.0, 1.0),
                                     saturation=(0.5, 1.5), hue=(-0.5, 0.5), p=cfg.color_jitter))
        if cfg.grayscale > 0:
            ops.append(A.ToGray(num_output_channels=3, p=cfg.grayscale))
        if cfg.erasing > 0:
            ops.append(A.Erasing(scale=(0.02, 0.33), ratio=(0.3, 3.3), fill="random", p=cfg.erasing))
        self.pipeline = A.Compose(ops, seed=seed) if ops else None

    def __call__(self, crop: np.ndarray, seed: Optional[int] = None) -> np.ndarray:
        """Augment one crop; ``seed`` makes this call's random draws a function of the seed alone."""
        if self.pipeline is None:
            return crop
        if seed is not None:
            self.pipeline.set_random_seed(seed)
        return self.pipeline(image=crop)["image"]
