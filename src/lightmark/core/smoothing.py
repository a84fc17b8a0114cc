"""Temporal smoothing of landmark sets: the One Euro filter (Casiez, Roussel, Vogel, CHI 2012).

A first-order low-pass filter whose cut-off frequency rises with the signal's speed::

    cutoff = min_cutoff + beta * |dx/dt| / scale
    alpha  = 1 / (1 + 1 / (2 pi cutoff dt))
    x_hat  = alpha * x + (1 - alpha) * x_hat_prev

A still face gets the low ``min_cutoff`` (noise averaged over many frames), a moving one a high
cut-off (little lag). The speed ``dx/dt`` is itself low-passed at ``d_cutoff`` so that noise does
not open the filter. Here the filter runs on a whole array at once (e.g. ``(68, 2)`` points),
and ``speed`` says whose speed sets the cut-off: ``"element"``, each number's own; ``"point"``,
each point's (the norm of its (x, y) velocity, shared by its two coordinates); ``"mean"``, the
whole set's (the norm of the mean velocity of all points: one cut-off for the face, from a speed
estimate that averages the points' independent noise away). ``scale`` divides the speed (the
tracker passes the face size): ``beta`` is then in face sizes per second, the same for small and
large faces. Measured noise reduction and lag for the tracker's defaults are in docs/VIDEO.md.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from lightmark.core.errors import SmoothingError




def smoothing_factor(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """The exponential smoothing factor ``alpha`` of a first-order low-pass filter at ``cutoff`` Hz
    sampled every ``dt`` seconds."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over an array of any shape; call it with each new sample and its time.

    ``min_cutoff`` (Hz): cut-off when still (lower: less jitter, more lag when slow).
    ``beta``: how fast the cut-off rises with speed (higher: less lag when fast).
    ``d_cutoff`` (Hz): cut-off of the speed estimate.
    ``speed``: ``"point"`` (norm over the last axis), ``"mean"`` (one speed for the whole array:
    the norm of the mean velocity, vectors along the last axis) or ``"element"``.
    """

    SPEEDS = ("element", "point", "mean")

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0,
                 speed: str = "point") -> None:
        for name, v, positive in (("min_cutoff", min_cutoff, True), ("beta", beta, False),
                                  ("d_cutoff", d_cutoff, True)):
            if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) \
                    or (v <= 0 if positive else v < 0):
                raise SmoothingError(f"OneEuroFilter: {name} must be a finite number "
                                     f"{'> 0' if positive else '>= 0'}, got {v!r}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        if speed not in self.SPEEDS:
            raise SmoothingError(f"OneEuroFilter: speed must be one of {self.SPEEDS}, got {speed!r}")
        self.speed_mode = speed
        self.reset()

    def __repr__(self) -> str:
        return (f"OneEuroFilter(min_cutoff={self.min_cutoff}, beta={self.beta}, "
                f"d_cutoff={self.d_cutoff}, speed={self.speed_mode!r})")

    def reset(self) -> None:
        """Forget the past: the next sample is passed through unchanged and starts a new run."""
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    @property
    def started(self) -> bool:
        return self._x is not None

    @property
    def speed(self) -> Optional[np.ndarray]:
        """The filtered derivative (units of the input per second), ``None`` before two samples."""
        return None if self._dx is None else self._dx.copy()

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filter sample ``x`` taken at time ``t`` (seconds, increasing); returns a new float64
        array of ``x``'s shape."""
        a = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise SmoothingError("OneEuroFilter: sample contains NaN or infinite values")
        t = float(t)
        if not math.isfinite(t):
            raise SmoothingError(f"OneEuroFilter: time must be finite, got {t}")
        if not (math.isfinite(scale) and scale > 0):
            raise SmoothingError(f"OneEuroFilter: scale must be positive, got {scale}")
        if self._x is not None and a.shape != self._x.shape:
            raise SmoothingError(f"OneEuroFilter: sample shape {a.shape} differs from the first "
                                 f"sample's {self._x.shape}; call reset() for a new signal")
        if self._t is not None and t <= self._t:
            raise SmoothingError(f"OneEuroFilter: time must increase, got {t} after {self._t}")
        return self._update(a, t, scale)

    def _update(self, a: np.ndarray, t: float, scale: float) -> np.ndarray:
        """The filter step on a checked sample (the tracker's per-frame path skips the checks
        its caller has made)."""
        if self._x is None:
            self._x, self._dx, self._t = a.copy(), np.zeros_like(a), t
            return a.copy()
        dt = t - self._t
        ad = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * self.d_cutoff * dt))
        self._dx = ad * (a - self._x) / dt + (1.0 - ad) * self._dx
        dx = self._dx
        if self.speed_mode == "element":
            speed = np.abs(dx)
        elif self.speed_mode == "point":
            speed = np.sqrt((dx * dx).sum(axis=-1, keepdims=True))
        else:
            mean = dx.reshape(-1, dx.shape[-1]).mean(axis=0) if dx.ndim else dx
            speed = float(np.sqrt((mean * mean).sum()))
        cutoff = self.min_cutoff + self.beta * speed / scale
        alpha = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))  # smoothing_factor, inlined
        self._x = alpha * a + (1.0 - alpha) * self._x
        self._t = t
        return self._x.copy()

    def steady_lag(self, speed: float, rate: float) -> float:
        """Lag in seconds behind a ramp of constant ``speed`` (input units per second, already
        divided by ``scale``) sampled at ``rate`` Hz, once the filter has settled (no noise).

        With a constant ``alpha`` the output trails a ramp by ``(1 - alpha) / alpha`` samples. The
        speed estimate is taken against the previous *output* (as in Casiez et al.), so it
        settles at ``speed * (1 + lag * rate)``, a little above the true speed, which opens the
        filter further; the lag is the fixed point of the two, found by bisection. (The lag in
        input units is ``speed * steady_lag``.)
        """
        if not (rate > 0 and math.isfinite(rate)):
            raise SmoothingError(f"steady_lag: rate must be positive, got {rate}")
        v, dt = abs(float(speed)), 1.0 / rate

        def lag_for(lag: float) -> float:  # the lag that a given lag's speed estimate produces
            a = float(smoothing_factor(self.min_cutoff + self.beta * v * (1.0 + lag / dt), dt))
            return (1.0 - a) / a * dt

        lo, hi = 0.0, lag_for(0.0)  # lag_for decreases with its argument: one crossing in [lo, hi]
        for _ in range(60):
            mid = (lo + hi) / 2
            if mid < lag_for(mid):
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2


class LandmarkSmoother:
    """Smoothing for one face's ``(K, 2)`` points: the face's position and its shape apart.

    The points are split into their centre (the mean point) and the shape around it (points
    minus centre), and each part gets its own One Euro filter. Why: most of a tracked face's noise
    moves all points together (the crop moved a little), and the centre's speed, averaged over
    all points, is a much quieter motion signal than any one point's, so the centre's filter can
    open fast (high ``beta``) without noise opening it. The shape's filter sees expressions and
    turns of the head, per point, and is kept slow (low ``shape_beta``) so that per-point noise
    stays filtered. ``scale`` (the face size in pixels) makes both betas per face size per second.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float, shape_min_cutoff: float,
                 shape_beta: float) -> None:
        self.centre = OneEuroFilter(min_cutoff, beta, d_cutoff, speed="point")
        self.shape = OneEuroFilter(shape_min_cutoff, shape_beta, d_cutoff, speed="point")

    def __repr__(self) -> str:
        return f"LandmarkSmoother(centre={self.centre!r}, shape={self.shape!r})"

    @property
    def started(self) -> bool:
        return self.centre.started

    def reset(self) -> None:
        self.centre.reset()
        self.shape.reset()

    def __call__(self, points: np.ndarray, t: float, scale: float) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
            raise SmoothingError(f"LandmarkSmoother: expected (K, 2) points, got shape {p.shape}")
        t = float(t)
        c = p.mean(axis=0)
        if not (self.centre.started and self.shape.started):  # the first sample: full checks
            self.reset()
            return self.centre(c, t, scale) + self.shape(p - c, t, scale)
        # Checked once here rather than in each filter: this runs for every face and frame.
        self._check(p, t, scale)
        return self.centre._update(c, t, scale) + self.shape._update(p - c, t, scale)

    def _check(self, p: np.ndarray, t: float, scale: float) -> None:
        if not np.all(np.isfinite(p)):
            raise SmoothingError("LandmarkSmoother: points contain NaN or infinite values")
        if p.shape != self.shape._x.shape:
            raise SmoothingError(f"LandmarkSmoother: {p.shape} points after {self.shape._x.shape}; "
                                 "reset() for a new face")
        if not (math.isfinite(scale) and scale > 0):
            raise SmoothingError(f"LandmarkSmoother: scale must be positive, got {scale}")
        if not (math.isfinite(t) and t > self.shape._t):
            raise SmoothingError(f"LandmarkSmoother: time must increase, got {t} after {self.shape._t}")
