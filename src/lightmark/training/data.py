"""Training data: every sample cropped once, loosely, into memory; augmentation re-crops from there.

    data set -> CropCache (loose crops + points) -> TrainSet (mix by weight, augment, target) -> EpochSampler
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from lightmark.core import codec, geometry
from lightmark.core.config import Config
from lightmark.core.errors import DataError, ImageError
from lightmark.core.imaging import to_input
from lightmark.data.readers import LandmarkDataset
from lightmark.training import augment

# The cache keeps a crop this many times larger than the training crop, so that rotation, scale and
# shift augmentation still find real pixels around the face.
LOOSE = 1.5


class CropCache:
    """Loose crops (N, L, L, 3) uint8 and their points (N, 68, 2), built once per run.

    Decoding a JPEG costs more than a training step's augmentation on these CPUs, and the loose crop
    is a similarity image of the original, so cropping from it equals cropping from the photo.
    """

    def __init__(self, dataset: LandmarkDataset, input_size: int, crop_scale: float,
                 skip_bad: bool = False, log: Callable[[str], None] = print,
                 convention: Optional[str] = None):
        #: The convention of these labels: the source's override, else the data set kind's.
        self.convention = convention or dataset.convention
        self.loose_size = int(math.ceil(input_size * LOOSE))
        n = len(dataset)
        self.images = np.zeros((n, self.loose_size, self.loose_size, 3), np.uint8)
        self.points = np.zeros((n, 68, 2), np.float32)
        keep = np.ones(n, bool)
        self.bad: list[tuple[str, str]] = list(getattr(dataset, "bad", []))
        for i, rec in enumerate(dataset.records):
            try:
                image = dataset[i].image
            except (DataError, ImageError) as e:
                if not skip_bad:
                    raise
                self.bad.append((str(rec.image_path), str(e)))
                keep[i] = False
                continue
            centre, side = geometry.square_from_box(geometry.landmark_box(rec.points),
                                                    crop_scale * LOOSE)
            m = geometry.crop_matrix(centre, side, self.loose_size)
            self.images[i] = geometry.warp_image(image, m, self.loose_size)
            self.points[i] = geometry.apply_affine(rec.points, m)
        self.images, self.points = self.images[keep], self.points[keep]
        if self.bad:
            log(f"{dataset.name}: skipped {len(self.bad)} bad sample(s), e.g. {self.bad[0]}")

    def __len__(self) -> int:
        return len(self.points)


class TrainSet(torch.utils.data.Dataset):
    """Draws augmented crops and targets from several caches mixed by weight."""

    def __init__(self, cfg: Config, caches: list[CropCache], weights: list[float]):
        self.cfg, self.caches = cfg, caches
        self.offsets = np.cumsum([0] + [len(c) for c in caches])
        # Each sample's draw probability: its source's weight shared among the source's samples.
        self.p = np.concatenate([np.full(len(c), w / max(len(c), 1)) for c, w in zip(caches, weights)])
        self.p /= self.p.sum()
        self.epoch = 0
        self.color = augment.ColorAugment(cfg.augment)
        self.hm_size = cfg.model.heatmap_size
        # Which of the model's output sets each source trains (its labels' convention).
        self.output_set = [cfg.model.conventions.index(c.convention) for c in caches]

    def epoch_indices(self, epoch: int, n_draws: int) -> np.ndarray:
        rng = np.random.default_rng([self.cfg.train.seed, epoch])
        return rng.choice(len(self.p), size=n_draws, replace=True, p=self.p)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.p)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(input, target, index of the output set the target is for)."""
        draw, index = key  # the draw number makes the augmentation of a repeated sample differ
        src = int(np.searchsorted(self.offsets, index, side="right") - 1)
        cache, j = self.caches[src], index - self.offsets[src]
        rng = np.random.default_rng([self.cfg.train.seed, self.epoch, draw])
        params = augment.random_crop(cache.points[j], self.cfg.crop_scale, self.cfg.augment, rng)
        crop, pts = augment.apply_crop(cache.images[j], cache.points[j], params,
                                       self.cfg.model.input_size)
        # Colour draws are keyed to the draw too, so DataLoader workers never repeat each other.
        x = torch.from_numpy(to_input(self.color(crop, seed=int(rng.integers(2**31))))[0])
        if self.cfg.model.head == "heatmap":
            pts_hm = codec.crop_to_heatmap(pts, self.cfg.model.input_size, self.hm_size)
            target = codec.encode(pts_hm, (self.hm_size, self.hm_size), self.cfg.codec.sigma,
                                    self.cfg.codec.peak)
            return x, torch.from_numpy(np.asarray(target, np.float32)), self.output_set[src]
        return x, torch.from_numpy(pts), self.output_set[src]


class EpochSampler(torch.utils.data.Sampler):
    """Yields (draw, index) pairs of one epoch; under DDP each rank takes every world-th draw."""

    def __init__(self, dataset: TrainSet, n_draws: int, rank: int = 0, world: int = 1):
        self.dataset, self.n_draws, self.rank, self.world = dataset, n_draws, rank, world

    def __iter__(self):
        idx = self.dataset.epoch_indices(self.dataset.epoch, self.n_draws)
        for draw in range(self.rank, self.n_draws, self.world):
            yield draw, int(idx[draw])

    def __len__(self) -> int:
        return len(range(self.rank, self.n_draws, self.world))
