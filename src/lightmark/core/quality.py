"""A per-face quality score from the landmark model's own output: is there a face in this crop?

The integral head gives, per point, a softmax over the heatmap cells whose mean is the point. On a
face the 68 distributions are concentrated; on background, or on a crop that has slid off the
face, they spread out over the map. The score uses the spread, the root of the summed x and y
variance of each softmax, as a fraction of the map side, averaged over the 68 points::

    spread  = mean_k sqrt(var_x + var_y) / map_side
    quality = 1 / (1 + exp((spread - SPREAD_AT_HALF) / SPREAD_WIDTH))      (in (0, 1))

so ``quality`` 0.5 is the decision threshold (``DEFAULT_MIN_QUALITY``). Its separation of faces
from non-faces on AFW (ROC AUC, error rates at the threshold), and how the constants were chosen,
are in docs/VIDEO.md (``benchmarks/video.py --only quality``). The constants were fitted for the
bundled model; another model may spread its maps differently.

Only the ``integral`` head has a score; other heads give ``None`` (the tracker then relies on the
detector to notice a lost face).
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import numpy as np

#: The spread (fraction of the map side) at which quality is 0.5. See docs/VIDEO.md.
SPREAD_AT_HALF = 0.18
#: How sharply quality falls around SPREAD_AT_HALF (fraction of the map side).
SPREAD_WIDTH = 0.01
#: Below this quality a tracked face counts as lost.
DEFAULT_MIN_QUALITY = 0.5


def model_head(model_cfg: Any) -> Optional[str]:
    """The ``head`` of a model config given as a dict (a model's JSON) or a dataclass."""
    return model_cfg.get("head") if isinstance(model_cfg, dict) else getattr(model_cfg, "head", None)


@functools.lru_cache(maxsize=8)
def _columns(h: int, w: int) -> np.ndarray:
    """(h*w, 4) float32: 1, x, y, x^2 + y^2 of each cell, coordinates centred on the map (keeps
    E[x^2] - E[x]^2 accurate in float32)."""
    ys, xs = np.divmod(np.arange(h * w, dtype=np.float32), w)
    xs -= (w - 1) / 2
    ys -= (h - 1) / 2
    cols = np.stack([np.ones_like(xs), xs, ys, xs * xs + ys * ys], axis=1)
    cols.flags.writeable = False
    return cols


def _moments(logits: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    a = np.asarray(logits, dtype=np.float32)
    if a.ndim != 4 or a.shape[2] < 1 or a.shape[3] < 1:
        raise ValueError(f"{what}: expected (B, K, h, w) logits, got shape {a.shape}")
    b, k, h, w = a.shape
    flat = a.reshape(b, k, h * w)
    p = np.exp(flat - flat.max(axis=-1, keepdims=True))  # unnormalised, stable softmax
    m = p @ _columns(h, w)  # (B, K, 4): sum, first moments, second moment
    mean = m[..., 1:3] / m[..., :1]
    var = m[..., 3] / m[..., 0] - (mean ** 2).sum(-1)
    spread = (np.sqrt(np.maximum(var, 0.0)) / np.sqrt(h * w)).mean(axis=1).astype(np.float32)
    return mean, spread, (h, w)


def softmax_spread(logits: np.ndarray) -> np.ndarray:
    """``(B,)`` mean over points of each softmax's spread, as a fraction of the map side, for
    integral-head logits ``(B, K, h, w)``."""
    return _moments(logits, "softmax_spread")[1]


def integral_points_and_quality(logits: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in crop pixels ``(B, K, 2)`` (the soft-argmax, as ``heatmap.decode`` gives them, to
    float32 rounding) and quality ``(B,)`` from one softmax: the tracker's per-frame decode."""
    from lightmark.core.codec import heatmap_to_crop

    mean, spread, (h, w) = _moments(logits, "integral_points_and_quality")
    cells = mean + np.array([(w - 1) / 2, (h - 1) / 2], np.float32)  # back to cell-centre indices
    return heatmap_to_crop(cells, int(input_size), (h, w)), quality_from_spread(spread)


def quality_from_spread(spread: np.ndarray) -> np.ndarray:
    """Map spread to quality in (0, 1); 0.5 at :data:`SPREAD_AT_HALF`."""
    z = (np.asarray(spread, dtype=np.float64) - SPREAD_AT_HALF) / SPREAD_WIDTH
    return (1.0 / (1.0 + np.exp(np.clip(z, -50, 50)))).astype(np.float32)


def face_quality(output: np.ndarray, model_cfg: Any) -> Optional[np.ndarray]:
    """``(B,)`` quality for a raw model output, or ``None`` when the head has no score."""
    if model_head(model_cfg) != "integral":
        return None
    return quality_from_spread(softmax_spread(output))
