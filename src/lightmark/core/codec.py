"""Heatmap codec: Gaussian targets and the decoders that turn network outputs into points.

numpy only (no torch), so the ONNX runtime and the API can decode without it.

Coordinates are pixel-centre based everywhere (see :mod:`lightmark.geometry`): in a heatmap of
``h x w`` the centre of the top-left cell is (0, 0). Heatmap and crop pixels relate by

    x_hm = (x_crop + 0.5) * w / S - 0.5        y_hm = (y_crop + 0.5) * h / S - 0.5

for an ``S x S`` network input, which keeps the outer edges of both grids aligned.
"""
from __future__ import annotations

import functools

import typing
from typing import Any, Optional, Union

import numpy as np
from lightmark.core.config import Convention
from lightmark.core.errors import CodecError, ConventionError

SizeLike = Union[int, tuple[int, int]]

DECODERS = ("subpixel", "argmax")
HEADS = ("heatmap", "integral", "regression")
CONVENTIONS: tuple[str, ...] = typing.get_args(Convention)


def _hw(size: SizeLike) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _check_maps(hm: np.ndarray, what: str, dtype: type = np.float64) -> np.ndarray:
    a = np.asarray(hm, dtype=dtype)
    if a.ndim != 4:
        raise CodecError(f"{what}: expected (B, K, h, w) heatmaps, got shape {a.shape}")
    if a.shape[2] < 1 or a.shape[3] < 1:
        raise CodecError(f"{what}: empty heatmaps of shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise CodecError(f"{what}: heatmaps contain NaN or infinite values")
    return a


# ----------------------------------------------------------------------------- encoding


def encode(points_hm: np.ndarray, size: SizeLike, sigma: float, peak: float = 100.0) -> np.ndarray:
    """Gaussian target maps ``(K, h, w)`` float32 for ``(K, 2)`` points in heatmap pixels.

    Each channel is ``peak * exp(-d^2 / (2 sigma^2))`` sampled at the cell centres, where ``d`` is
    the distance to the (sub-pixel) point; the continuous maximum is exactly ``peak`` at the point,
    the sampled maximum is at most ``peak``. Sampling the exact Gaussian (rather than pasting a
    Gaussian centred on the rounded cell, as many codecs do) keeps the sub-pixel position in the
    target, which :func:`decode_subpixel` recovers.

    A point outside the map's extent (``x`` not in ``[-0.5, w - 0.5]`` or ``y`` not in
    ``[-0.5, h - 0.5]``) or with NaN coordinates gets an all-zero channel: a truncated Gaussian would
    pull the target's peak to the border and teach a wrong position. Trainers should give such
    points zero weight (:func:`visible` tells which they are).
    """
    if not (np.isfinite(sigma) and sigma > 0):
        raise CodecError(f"encode: sigma must be positive, got {sigma}")
    h, w = _hw(size)
    if h < 1 or w < 1:
        raise CodecError(f"encode: heatmap size must be positive, got {(h, w)}")
    pts = np.asarray(points_hm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise CodecError(f"encode: expected (K, 2) points, got shape {pts.shape}")
    inside = visible(pts, (h, w))
    safe = np.where(inside[:, None], pts, 0.0)
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    # Separable: exp(-(dx^2 + dy^2)/2s^2) = exp(-dx^2/2s^2) * exp(-dy^2/2s^2).
    gx = np.exp(-((xs[None, :] - safe[:, 0:1]) ** 2) / (2.0 * sigma**2))  # (K, w)
    gy = np.exp(-((ys[None, :] - safe[:, 1:2]) ** 2) / (2.0 * sigma**2))  # (K, h)
    maps = peak * gy[:, :, None] * gx[:, None, :]
    maps[~inside] = 0.0
    return maps.astype(np.float32)


def visible(points_hm: np.ndarray, size: SizeLike) -> np.ndarray:
    """Boolean ``(K,)``: which points lie inside the map's extent (and are finite)."""
    h, w = _hw(size)
    p = np.asarray(points_hm, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (np.isfinite(p).all(axis=-1)
                & (p[..., 0] >= -0.5) & (p[..., 0] <= w - 0.5)
                & (p[..., 1] >= -0.5) & (p[..., 1] <= h - 0.5))


# ----------------------------------------------------------------------------- decoding


def decode_argmax(hm: np.ndarray) -> np.ndarray:
    """``(B, K, 2)`` float32 (x, y): the cell of each map's maximum (the original write-up's decoder)."""
    a = _check_maps(hm, "decode_argmax")
    b, k, h, w = a.shape
    idx = a.reshape(b, k, h * w).argmax(axis=-1)
    return np.stack([idx % w, idx // w], axis=-1).astype(np.float32)


def decode_subpixel(hm: np.ndarray, radius: int = 2, max_offset: float = 1.0) -> np.ndarray:
    """``(B, K, 2)`` float32 (x, y) in heatmap pixels, refined below the cell (DARK-style).

    Like DARK (Zhang et al., CVPR 2020) this models the *log* heatmap around the argmax cell by a
    second-order (Taylor) polynomial and steps to its maximum, ``offset = -H^-1 g``; the log of a
    Gaussian is exactly quadratic, so a clean target decodes to its sub-pixel centre up to
    rounding. Instead of DARK's blur followed by finite differences on a 3x3 stencil, the
    quadratic is fitted by weighted least squares over the ``(2 radius + 1)^2`` window, weights
    ``(m / peak)^2`` (Guo's Gaussian fit). Why: the blur needs padding at the map's border, which
    biased border points by up to a cell in our measurements, while the fit simply drops cells
    outside the map (still exact there) and averages noise as well as the blur did (mean error
    0.03 vs 0.03 cells at noise 3% of the peak, interior points, sigma 1.5).

    Negative and tiny values get (almost) no weight; if the fitted surface has no maximum (flat,
    saddle-shaped or too few positive cells) the argmax is kept; the step is clamped to
    ``max_offset`` cells per axis and the result to the map's extent.
    """
    if radius < 1:
        raise CodecError(f"decode_subpixel: radius must be >= 1, got {radius}")
    a = _check_maps(hm, "decode_subpixel")
    b, k, h, w = a.shape
    coords = decode_argmax(a).astype(np.float64)  # (B, K, 2)
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    r = np.arange(-radius, radius + 1)
    u, v = (g.ravel() for g in np.meshgrid(r, r, indexing="xy"))  # window offsets (n,)
    ix = px[..., None] + u
    iy = py[..., None] + v
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    bi = np.arange(b)[:, None, None]
    ki = np.arange(k)[None, :, None]
    vals = a[bi, ki, np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)]  # (B, K, n)
    # Relative values: the fit is then independent of the map's scale (peak 1 or 100, logits).
    peak = np.maximum(vals.max(axis=-1, keepdims=True), 1e-12)
    rel = np.where(inside, np.maximum(vals / peak, 0.0), 0.0)
    wts = rel**2
    logv = np.log(np.maximum(rel, 1e-10))
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1).astype(np.float64)
    lhs = np.einsum("bkn,ni,nj->bkij", wts, design, design)
    rhs = np.einsum("bkn,ni,bkn->bki", wts, design, logv)
    # A vanishing ridge keeps the batch solve regular when few cells carry weight.
    lhs = lhs + np.eye(6) * (1e-9 * np.trace(lhs, axis1=-2, axis2=-1) + 1e-30)[..., None, None]
    c = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    # log m ~ c0 + c1 u + c2 v + c3 u^2 + c4 u v + c5 v^2; gradient zero at the maximum.
    d, e, f = c[..., 3], c[..., 4], c[..., 5]
    det = 4.0 * d * f - e * e
    ok = (d < 0) & (det > 1e-12) & np.isfinite(c).all(axis=-1)
    safe = np.where(ok, det, 1.0)
    ou = (e * c[..., 2] - 2.0 * f * c[..., 1]) / safe
    ov = (e * c[..., 1] - 2.0 * d * c[..., 2]) / safe
    step = np.clip(np.stack([ou, ov], axis=-1), -max_offset, max_offset)
    refined = np.clip(coords + step, -0.5, np.array([w - 0.5, h - 0.5]))
    return np.where(ok[..., None], refined, coords).astype(np.float32)


@functools.lru_cache(maxsize=8)
def moment_columns(h: int, w: int) -> np.ndarray:
    """``(h*w, 3)`` float32 columns x, y, x^2 + y^2 of each cell of an ``h x w`` map, row-major,
    with coordinates centred on the map (keeps E[x^2] - E[x]^2 accurate in float32). The ONNX
    export multiplies the softmax by these same columns inside the graph (``"moments"`` output)."""
    ys, xs = np.divmod(np.arange(h * w, dtype=np.float32), w)
    xs -= (w - 1) / 2
    ys -= (h - 1) / 2
    cols = np.stack([xs, ys, xs * xs + ys * ys], axis=1)
    cols.flags.writeable = False  # shared between calls
    return cols


def softmax_moments(logits: np.ndarray) -> np.ndarray:
    """``(B, K, 3)`` float32 for integral-head logits ``(B, K, h, w)``: under each map's softmax,
    the mean of x and of y and the mean of x^2 + y^2, in cells from the map's centre
    (:func:`moment_columns`). The points and the quality score (:mod:`lightmark.core.quality`)
    are both read from these; an exported graph computes them itself (its ``"moments"`` output).
    """
    # float32 throughout, as the network computed them: a float64 copy cost a third of the time.
    a = _check_maps(logits, "softmax_moments", np.float32)
    b, k, h, w = a.shape
    flat = a.reshape(b, k, h * w)
    p = np.exp(flat - flat.max(axis=-1, keepdims=True))  # unnormalised, stable softmax
    p /= p.sum(axis=-1, keepdims=True)
    return p @ moment_columns(h, w)


def _cells(moments: np.ndarray, h: int, w: int) -> np.ndarray:
    """The mean of :func:`softmax_moments` as cell-centre indices (the moments are centred)."""
    return (moments[..., :2] + np.array([(w - 1) / 2, (h - 1) / 2], np.float32)).astype(np.float32)


def moments_to_points(moments: np.ndarray, input_size: int, hm_size: SizeLike) -> np.ndarray:
    """Crop-pixel points ``(B, K, 2)`` from :func:`softmax_moments` of ``hm_size`` maps."""
    h, w = _hw(hm_size)
    m = np.asarray(moments)
    if m.ndim != 3 or m.shape[-1] != 3:
        raise CodecError(f"moments must be (B, K, 3), got shape {m.shape}")
    return heatmap_to_crop(_cells(m, h, w), input_size, (h, w))


def soft_argmax(logits: np.ndarray) -> np.ndarray:
    """``(B, K, 2)`` float32 (x, y): expectation of cell-centre coordinates under softmax(logits).

    This is the decoder of the ``integral`` head (Sun et al., "Integral human pose regression").
    """
    h, w = np.shape(logits)[2:4]
    return _cells(softmax_moments(logits), h, w)


# ----------------------------------------------------------------------------- coordinates


def heatmap_to_crop(points: np.ndarray, input_size: int, hm_size: SizeLike) -> np.ndarray:
    """Heatmap-pixel points ``(..., 2)`` -> crop pixels of an ``input_size`` square input."""
    h, w = _hw(hm_size)
    p = np.asarray(points, dtype=np.float64)
    scale = np.array([input_size / w, input_size / h])
    return ((p + 0.5) * scale - 0.5).astype(np.float32)


def crop_to_heatmap(points: np.ndarray, input_size: int, hm_size: SizeLike) -> np.ndarray:
    """Crop-pixel points ``(..., 2)`` -> heatmap pixels (inverse of :func:`heatmap_to_crop`)."""
    h, w = _hw(hm_size)
    p = np.asarray(points, dtype=np.float64)
    scale = np.array([w / input_size, h / input_size])
    return ((p + 0.5) * scale - 0.5).astype(np.float32)


def conventions_of(model_cfg: Any) -> list[str]:
    """The conventions a model outputs, in output order (``["2d"]`` for files that predate them)."""
    return list(_field(model_cfg, "conventions", None) or ["2d"])


def check_convention(model_cfg: Any, convention: str) -> int:
    """Index of ``convention`` among the model's output sets; :class:`ConventionError` if absent."""
    names = conventions_of(model_cfg)
    if convention not in names:
        raise ConventionError(f"this model has no {convention!r} landmarks (its conventions: "
                              f"{', '.join(names)})")
    return names.index(convention)


def select_convention(output: np.ndarray, model_cfg: Any, convention: str = "2d") -> np.ndarray:
    """The part of a raw ``(B, C * K, ...)`` output that is ``convention``'s ``(B, K, ...)``.

    A model lists its conventions in ``model_cfg.conventions``; each owns ``num_points``
    consecutive output channels (maps, or rows of a regression head), in that order.
    """
    i = check_convention(model_cfg, convention)
    if len(conventions_of(model_cfg)) == 1:
        return output
    k = int(_field(model_cfg, "num_points", 68))
    return output[:, i * k:(i + 1) * k]


def _field(cfg: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a config dataclass or a plain dict (e.g. a model's JSON meta)."""
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def point_offsets(codec_cfg: Any) -> dict[str, np.ndarray]:
    """``codec.offsets`` checked: {convention: float32 (2,) crop-pixel shift}; ``{}`` for none.

    ``codec_cfg``: a :class:`~lightmark.config.CodecConfig`, a model JSON's ``codec`` dict or ``None``.
    Raises :class:`CodecError` for anything but a mapping of known conventions to two finite numbers.
    """
    raw = _field(codec_cfg, "offsets", None) or {}
    if not isinstance(raw, dict):
        raise CodecError(f"codec.offsets must be a mapping of convention -> [x, y], got {type(raw).__name__}")
    out = {}
    for name, xy in raw.items():
        if name not in CONVENTIONS:
            raise CodecError(f"codec.offsets: unknown convention {name!r} (known: {', '.join(CONVENTIONS)})")
        if not (isinstance(xy, (list, tuple)) and len(xy) == 2
                and all(isinstance(t, (int, float)) and not isinstance(t, bool) and np.isfinite(t) for t in xy)):
            raise CodecError(f"codec.offsets.{name} must be two finite numbers [x, y], got {xy!r}")
        out[name] = np.asarray(xy, np.float32)
    return out


def shift_points(points: dict[str, np.ndarray], offsets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each convention's decoded crop points with its :func:`point_offsets` shift added (in place)."""
    for name, p in points.items():
        d = offsets.get(name)
        if d is not None and p.size:
            p += d
    return points


def decode(output: np.ndarray, model_cfg: Any, codec_cfg: Any = None,
           decoder: Optional[str] = None) -> np.ndarray:
    """Any model output -> ``(B, K, 2)`` float32 points in crop pixels.

    Dispatches on ``model_cfg.head``: ``heatmap`` uses ``decoder`` (default
    ``codec_cfg.decoder``, else ``"subpixel"``; or ``"argmax"``), ``integral`` uses
    :func:`soft_argmax`, ``regression`` passes the coordinates through. ``model_cfg`` and
    ``codec_cfg`` may be :mod:`lightmark.config` dataclasses or dicts with the same keys.
    """
    head = _field(model_cfg, "head")
    if head not in HEADS:
        raise CodecError(f"decode: unknown head {head!r}; expected one of {HEADS}")
    input_size = _field(model_cfg, "input_size")
    if not input_size:
        raise CodecError("decode: model config has no input_size")
    out = np.asarray(output)
    if head == "regression":
        if out.ndim != 3 or out.shape[-1] != 2:
            raise CodecError(f"decode: regression output must be (B, K, 2), got shape {out.shape}")
        return out.astype(np.float32)
    if head == "integral":
        pts = soft_argmax(out)
    else:
        name = decoder or _field(codec_cfg, "decoder", None) or "subpixel"
        if name == "subpixel":
            pts = decode_subpixel(out)
        elif name == "argmax":
            pts = decode_argmax(out)
        else:
            raise CodecError(f"decode: unknown decoder {name!r}; expected one of {DECODERS}")
    return heatmap_to_crop(pts, int(input_size), out.shape[2:4])
