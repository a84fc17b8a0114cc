"""Geometric augmentation moves points exactly with pixels; colour augmentation keeps shape."""
import numpy as np
import pytest

from lightmark.core import geometry
from lightmark.core.config import AugmentConfig
from lightmark.training import augment


def _face_points(rng: np.random.Generator) -> np.ndarray:
    # A plausible face-sized cloud of 68 points in a 200x160 image.
    return (rng.uniform(0, 1, size=(68, 2)) * [80, 90] + [60, 40]).astype(np.float32)


@pytest.mark.parametrize("kind", ["rotation", "scale", "translate", "flip", "all"])
def test_dot_lands_on_moved_landmark(kind: str) -> None:
    rng = np.random.default_rng(7)
    cfg = AugmentConfig(
        rotation_deg=40.0 if kind in ("rotation", "all") else 0.0,
        scale=0.3 if kind in ("scale", "all") else 0.0,
        translate=0.1 if kind in ("translate", "all") else 0.0,
        flip=1.0 if kind in ("flip", "all") else 0.0,
    )
    for trial in range(5):
        pts = _face_points(rng)
        idx = int(rng.integers(68))
        image = np.zeros((160, 200, 3), np.uint8)
        x, y = np.round(pts[idx]).astype(int)
        pts[idx] = (x, y)  # put the landmark on a pixel centre so the dot is symmetric around it
        image[y - 1:y + 2, x - 1:x + 2] = 255  # a 3x3 dot centred on the landmark
        params = augment.random_crop(pts, 1.25, cfg, rng)
        if kind in ("flip",):
            assert params.flip
        crop, moved = augment.apply_crop(image, pts, params, 128)
        # After a mirrored crop, landmark idx is stored under its mirrored label.
        label = geometry.FLIP_PERMUTATION[idx] if params.flip else idx
        target = moved[label]
        w = crop[..., 0].astype(np.float64)
        assert w.sum() > 0, "the dot left the crop"
        ys, xs = np.mgrid[: w.shape[0], : w.shape[1]]
        centroid = np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()
        assert np.linalg.norm(centroid - target) < 0.35, (kind, trial, centroid, target)


def test_flip_twice_is_identity() -> None:
    perm = geometry.FLIP_PERMUTATION
    assert np.array_equal(perm[perm], np.arange(68))
    # left outer eye corner (36) <-> right outer eye corner (45); nose bridge stays
    assert perm[36] == 45 and perm[27] == 27 and perm[8] == 8


def test_colour_pipeline_shapes_and_grayscale() -> None:
    crop = np.random.default_rng(0).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    gray = augment.ColorAugment(AugmentConfig(grayscale=1.0), seed=1)(crop)
    assert gray.shape == crop.shape and gray.dtype == np.uint8
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    erased = augment.ColorAugment(AugmentConfig(erasing=1.0), seed=1)(crop)
    assert (erased != crop).any(axis=2).mean() > 0.01
    jitter = augment.ColorAugment(AugmentConfig(color_jitter=1.0), seed=1)(crop)
    assert jitter.shape == crop.shape and not np.array_equal(jitter, crop)
    assert augment.ColorAugment(AugmentConfig())(crop) is crop
