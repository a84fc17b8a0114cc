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

from typing import Any, Optional

import numpy as np

from lightmark.core.codec import softmax_moments

#: The spread (fraction of the map side) at which quality is 0.5. See docs/VIDEO.md.
SPREAD_AT_HALF = 0.18
#: How sharply quality falls around SPREAD_AT_HALF (fraction of the map side).
SPREAD_WIDTH = 0.01
#: Below this quality a tracked face counts as lost.
DEFAULT_MIN_QUALITY = 0.5


def model_head(model_cfg: Any) -> Optional[str]:
    """The ``head`` of a model config given as a dict (a model's JSON) or a dataclass."""
    return model_cfg.get("head") if isinstance(model_cfg, dict) else getattr(model_cfg, "head", None)


def spread_from_moments(moments: np.ndarray, hm_size: tuple[int, int]) -> np.ndarray:
    """``(B,)`` mean over points of each softmax's spread, as a fraction of the map side, from
    :func:`lightmark.core.codec.softmax_moments` (or an exported graph's ``"moments"``)."""
    m = np.asarray(moments, dtype=np.float32)
    h, w = hm_size
    var = m[..., 2] - m[..., 0] ** 2 - m[..., 1] ** 2
    return (np.sqrt(np.maximum(var, 0.0)) / np.sqrt(h * w)).mean(axis=1).astype(np.float32)


def softmax_spread(logits: np.ndarray) -> np.ndarray:
    """``(B,)`` mean over points of each softmax's spread, as a fraction of the map side, for
    integral-head logits ``(B, K, h, w)``."""
    a = np.asarray(logits)
    if a.ndim != 4:
        raise ValueError(f"softmax_spread: expected (B, K, h, w) logits, got shape {a.shape}")
    return spread_from_moments(softmax_moments(a), a.shape[2:4])


def quality_from_spread(spread: np.ndarray) -> np.ndarray:
    """Map spread to quality in (0, 1); 0.5 at :data:`SPREAD_AT_HALF`."""
    z = (np.asarray(spread, dtype=np.float64) - SPREAD_AT_HALF) / SPREAD_WIDTH
    return (1.0 / (1.0 + np.exp(np.clip(z, -50, 50)))).astype(np.float32)


def face_quality(output: np.ndarray, model_cfg: Any) -> Optional[np.ndarray]:
    """``(B,)`` quality for a raw model output, or ``None`` when the head has no score."""
    if model_head(model_cfg) != "integral":
        return None
    return quality_from_spread(softmax_spread(output))
