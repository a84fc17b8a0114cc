"""Heatmap codec: Gaussian targets round-trip through every decoder; coordinates and dispatch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lightmark.core import codec as H
from lightmark.core.config import CodecConfig, ModelConfig

SIGMAS = (1.0, 1.5, 2.0, 3.0)  # 1.5 is the default CodecConfig.sigma
SIZES = (16, 64, 96)


def _random_maps(rng: np.random.Generator, size: int, sigma: float, n: int = 4,
                 lo: float = -0.5) -> tuple[np.ndarray, np.ndarray]:
    """n maps of 68 random sub-pixel points anywhere in the map's extent (borders included)."""
    pts = rng.uniform(lo, size - 1 - lo, size=(n, 68, 2))
    hm = np.stack([H.encode(p, size, sigma) for p in pts])
    return pts, hm


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_subpixel_round_trip_below_005(size: int, sigma: float) -> None:
    rng = np.random.default_rng(size * 10 + int(sigma * 10))
    pts, hm = _random_maps(rng, size, sigma)
    err = np.linalg.norm(H.decode_subpixel(hm) - pts, axis=-1)
    assert err.max() < 0.05, (err.max(), err.mean())
    # Measured: max ~5e-6 (float32 rounding); a real regression would show up far above this.
    assert err.mean() < 1e-3


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_argmax_round_trip_within_half_cell(size: int, sigma: float) -> None:
    rng = np.random.default_rng(size + int(sigma * 100))
    pts, hm = _random_maps(rng, size, sigma)
    dec = H.decode_argmax(hm)
    assert dec.dtype == np.float32 and dec.shape == pts.shape
    # Per axis the nearest cell centre is at most half a cell away (Euclidean up to 0.71).
    assert np.abs(dec - pts).max() <= 0.5 + 1e-6
    assert np.array_equal(dec, np.clip(np.round(pts), 0, size - 1))


def test_subpixel_beats_argmax_on_noisy_maps() -> None:
    rng = np.random.default_rng(7)
    pts, hm = _random_maps(rng, 64, 1.5, n=8, lo=3.0)
    noisy = hm + rng.normal(0.0, 3.0, hm.shape)  # 3% of the peak
    sub = np.linalg.norm(H.decode_subpixel(noisy) - pts, axis=-1).mean()
    arg = np.linalg.norm(H.decode_argmax(noisy) - pts, axis=-1).mean()
    assert sub < 0.1 and sub < arg / 3


def test_subpixel_independent_of_scale_and_falls_back_on_flat_maps() -> None:
    rng = np.random.default_rng(3)
    pts, hm = _random_maps(rng, 16, 1.5, n=2)
    np.testing.assert_allclose(H.decode_subpixel(hm * 0.01), H.decode_subpixel(hm), atol=1e-4)
    flat = np.zeros((1, 68, 16, 16), np.float32)
    assert np.array_equal(H.decode_subpixel(flat), H.decode_argmax(flat))


def test_encode_values_and_out_of_map_points() -> None:
    pts = np.array([[5.0, 7.0], [2.5, 3.0], [16.2, 4.0], [-0.6, 2.0], [np.nan, 1.0]])
    hm = H.encode(pts, (12, 16), sigma=1.5)  # h=12, w=16
    assert hm.shape == (5, 12, 16) and hm.dtype == np.float32
    assert hm[0, 7, 5] == pytest.approx(100.0)  # peak on a cell centre
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (7, 5)
    # Half-way between two cells both get exp(-0.25 / (2 * 1.5^2)) * 100.
    assert hm[1, 3, 2] == pytest.approx(100 * np.exp(-0.25 / 4.5), rel=1e-5)
    assert hm[1, 3, 3] == pytest.approx(hm[1, 3, 2], rel=1e-6)
    assert not hm[2:].any()  # outside x, outside (left), NaN: all-zero channels
    assert H.visible(pts, (12, 16)).tolist() == [True, True, False, False, False]
    assert H.encode(pts[:1], 8, 1.0, peak=1.0).max() == pytest.approx(1.0)


def test_encode_rejects_bad_arguments() -> None:
    with pytest.raises(H.CodecError, match="sigma"):
        H.encode(np.zeros((68, 2)), 16, 0.0)
    with pytest.raises(H.CodecError, match="points"):
        H.encode(np.zeros((68, 3)), 16, 1.5)
    with pytest.raises(H.CodecError, match="NaN"):
        H.decode_subpixel(np.full((1, 1, 4, 4), np.nan))
    with pytest.raises(H.CodecError, match=r"\(B, K, h, w\)"):
        H.decode_argmax(np.zeros((68, 16, 16)))


def test_soft_argmax() -> None:
    logits = np.zeros((2, 68, 8, 10))
    centre = H.soft_argmax(logits)  # uniform: the middle of the map
    np.testing.assert_allclose(centre, np.broadcast_to([4.5, 3.5], (2, 68, 2)), atol=1e-6)
    logits[0, 3, 6, 2] = 1000.0  # one dominant cell: exactly that cell (and no overflow)
    assert H.soft_argmax(logits)[0, 3].tolist() == [2.0, 6.0]
    two = np.full((1, 1, 8, 10), -50.0)
    two[0, 0, 1, 2] = two[0, 0, 1, 3] = 5.0  # two equal cells: half-way
    np.testing.assert_allclose(H.soft_argmax(two)[0, 0], [2.5, 1.0], atol=1e-6)


def test_coordinate_conversion() -> None:
    # Outer edges coincide: crop -0.5 <-> heatmap -0.5; crop S - 0.5 <-> heatmap w - 0.5.
    edge = np.array([[-0.5, 127.5]])
    np.testing.assert_allclose(H.crop_to_heatmap(edge, 128, 16), [[-0.5, 15.5]])
    # The centre of heatmap cell 0 is the centre of the first 8x8 block: crop 3.5.
    np.testing.assert_allclose(H.heatmap_to_crop(np.array([0.0, 0.0]), 128, 16), [3.5, 3.5])
    # Non-square maps: x uses w, y uses h.
    np.testing.assert_allclose(H.heatmap_to_crop(np.array([0.0, 0.0]), 128, (32, 16)), [3.5, 1.5])
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 128, (3, 68, 2))
    np.testing.assert_allclose(H.heatmap_to_crop(H.crop_to_heatmap(p, 128, (24, 16)), 128, (24, 16)),
                               p, atol=1e-4)


def test_decode_dispatch_dataclass_and_dict() -> None:
    rng = np.random.default_rng(5)
    crop_pts = rng.uniform(10, 118, (2, 68, 2))
    hm_pts = H.crop_to_heatmap(crop_pts, 128, 16)
    hm = np.stack([H.encode(p, 16, 1.5) for p in hm_pts])
    mc = ModelConfig(head="heatmap", input_size=128, heatmap_size=16)
    out = H.decode(hm, mc, CodecConfig())
    assert out.shape == (2, 68, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, crop_pts, atol=1e-3)  # 0.05 hm px would be 0.4 crop px
    as_dict = H.decode(hm, {"head": "heatmap", "input_size": 128}, {"decoder": "subpixel"})
    np.testing.assert_array_equal(as_dict, out)
    arg = H.decode(hm, mc, {"decoder": "argmax"})
    assert np.abs(arg - crop_pts).max() <= 4.0 + 1e-4  # half a cell of 8 crop px
    assert np.abs(arg - crop_pts).max() > 0.5  # and it is really the coarse decoder
    np.testing.assert_array_equal(H.decode(hm, mc, CodecConfig(), decoder="argmax"), arg)
    # integral: sharp logits at cell (x=3, y=5) -> crop (3.5*8-0.5, 5.5*8-0.5)
    logits = np.full((1, 68, 16, 16), -100.0)
    logits[:, :, 5, 3] = 100.0
    integ = H.decode(logits, {"head": "integral", "input_size": 128})
    np.testing.assert_allclose(integ[0], np.broadcast_to([27.5, 43.5], (68, 2)), atol=1e-4)
    reg = H.decode(crop_pts, {"head": "regression", "input_size": 128})
    np.testing.assert_allclose(reg, crop_pts, atol=1e-5)


def test_decode_errors() -> None:
    with pytest.raises(H.CodecError, match="unknown head"):
        H.decode(np.zeros((1, 68, 2)), {"head": "magic", "input_size": 128})
    with pytest.raises(H.CodecError, match="unknown decoder"):
        H.decode(np.zeros((1, 68, 4, 4)), {"head": "heatmap", "input_size": 128}, {"decoder": "x"})
    with pytest.raises(H.CodecError, match="regression output"):
        H.decode(np.zeros((1, 68, 4, 4)), {"head": "regression", "input_size": 128})
    with pytest.raises(H.CodecError, match="input_size"):
        H.decode(np.zeros((1, 68, 4, 4)), {"head": "heatmap"})


def test_numpy_only_import() -> None:
    code = ("import sys, lightmark.core.codec, lightmark.core.metrics; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
