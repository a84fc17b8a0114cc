"""The One Euro filter and the tracker's landmark smoother (lightmark.core.smoothing)."""
from __future__ import annotations

import numpy as np
import pytest

from lightmark.core.smoothing import LandmarkSmoother, OneEuroFilter, SmoothingError, smoothing_factor

RATE = 30.0


def _run(f, xs: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Samples at RATE Hz through a filter (OneEuroFilter or LandmarkSmoother)."""
    return np.stack([f(x, k / RATE, scale) for k, x in enumerate(xs)])


def test_first_sample_passes_through_and_reset_starts_again() -> None:
    f = OneEuroFilter(1.0, 0.0)
    x = np.arange(136, dtype=np.float64).reshape(68, 2)
    assert np.array_equal(f(x, 0.0), x)
    y = f(x + 10, 1 / RATE)
    assert np.all((y > x) & (y < x + 10))  # moved part of the way
    f.reset()
    assert not f.started and np.array_equal(f(x + 10, 5.0), x + 10)


def test_noise_on_a_constant_signal_is_reduced() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.0, (300, 68, 2))
    y = _run(OneEuroFilter(min_cutoff=1.0, beta=0.0), 5.0 + noise)
    # A first-order low-pass keeps alpha / (2 - alpha) of white noise's variance.
    a = smoothing_factor(1.0, 1 / RATE)
    ratio = y[30:].var() / noise[30:].var()
    assert ratio < 0.25
    assert ratio == pytest.approx(a / (2 - a), rel=0.15)
    assert abs(y[30:].mean() - 5.0) < 0.05


@pytest.mark.parametrize("speed", [0.5, 2.0, 8.0])
def test_a_ramp_is_followed_within_the_documented_lag(speed: float) -> None:
    f = OneEuroFilter(min_cutoff=0.5, beta=2.0, d_cutoff=1.0)
    t = np.arange(200) / RATE
    x = np.zeros((200, 68, 2))
    x[..., 0] = (speed * t)[:, None]
    y = _run(f, x)
    lag = (x[150:, :, 0] - y[150:, :, 0]).mean() / speed  # seconds behind the ramp
    want = f.steady_lag(speed, RATE)
    assert lag > 0
    assert lag == pytest.approx(want, rel=0.05)
    # More beta, less lag at the same speed (the filter opens when the signal moves).
    assert OneEuroFilter(0.5, 20.0).steady_lag(speed, RATE) < want


def test_speed_modes_give_per_point_or_shared_cutoffs() -> None:
    # Point 0 moves, the others stay: with per-point speed only point 0's filter opens.
    x = np.zeros((60, 3, 2))
    x[:, 0, 0] = np.arange(60) * 0.1
    per_point = _run(OneEuroFilter(0.1, 10.0, speed="point"), x)
    shared = _run(OneEuroFilter(0.1, 10.0, speed="mean"), x)
    assert per_point[-1, 0, 0] > shared[-1, 0, 0]  # the moving point lags less on its own
    with pytest.raises(SmoothingError, match="speed"):
        OneEuroFilter(speed="sideways")


def test_bad_parameters_and_samples() -> None:
    for kw in ({"min_cutoff": 0}, {"min_cutoff": float("nan")}, {"beta": -1}, {"d_cutoff": 0}):
        with pytest.raises(SmoothingError):
            OneEuroFilter(**kw)
    f = OneEuroFilter()
    f(np.zeros((68, 2)), 0.0)
    with pytest.raises(SmoothingError, match="time must increase"):
        f(np.zeros((68, 2)), 0.0)
    with pytest.raises(SmoothingError, match="shape"):
        f(np.zeros((5, 2)), 1.0)
    with pytest.raises(SmoothingError, match="NaN"):
        f(np.full((68, 2), np.nan), 2.0)
    with pytest.raises(SmoothingError, match="scale"):
        f(np.zeros((68, 2)), 3.0, scale=0.0)


def test_landmark_smoother_moves_the_face_quickly_and_keeps_its_shape() -> None:
    rng = np.random.default_rng(1)
    shape = rng.uniform(-50, 50, (68, 2))
    n = 120
    move = np.zeros((n, 68, 2))
    move[:, :, 0] = np.arange(n)[:, None] * 5.0  # 150 px/s: a face of 100 px moving 1.5 sizes/s
    s = LandmarkSmoother(0.05, 40.0, 1.0, 0.02, 8.0)
    y = _run(s, shape + move, scale=100.0)
    err = y[60:] - (shape + move)[60:]
    # Lag of the centre: the centre filter's steady lag at this speed (in face sizes per second).
    lag_px = -err[..., 0].mean()
    assert lag_px == pytest.approx(150.0 * s.centre.steady_lag(1.5, RATE), rel=0.1)
    assert np.abs(err - err.mean(axis=1, keepdims=True)).max() < 1e-6  # the shape is untouched
    # Still face, noise moving the whole face: strongly reduced (the centre's filter stays shut).
    noise = np.repeat(rng.normal(0, 0.3, (n, 1, 2)), 68, axis=1)
    s.reset()
    y = _run(s, shape + noise, scale=100.0)
    assert (y[30:] - shape).std() < 0.5 * noise[30:].std()
    with pytest.raises(SmoothingError, match="points"):
        s(np.zeros(4), 100.0, 1.0)
