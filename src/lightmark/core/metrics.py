"""Landmark accuracy metrics (numpy only): NME, failure rate, AUC, CED curves, yaw bins.

Units: the per-image functions return NME as a *fraction* of the normaliser (0.035 = 3.5%);
thresholds passed to :func:`failure_rate`, :func:`auc` and :func:`ced_curve` are in the same units
as the errors. :func:`summarize` reports NME and failure rates in *percent* and AUC in [0, 1], the
way the literature quotes them.

An image whose prediction is missing (NaN points, e.g. no face detected) has error ``inf``: it
counts as a failure and adds nothing to the AUC, and is left out of mean NMEs (reported apart as
``n_missed``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from lightmark.core.files import atomic_path
from lightmark.core.errors import MetricsError

#: Outer eye corners in the 68-point markup (0-based): the "inter-ocular" normaliser of 300W.
OUTER_EYE_CORNERS = (36, 45)

#: |yaw| bins of the AFLW2000-3D protocol, degrees; the last bin also takes |yaw| > 90.
YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))




def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if g.ndim == 2:
        g = g[None]
    if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 2:
        raise MetricsError(f"pred {np.shape(pred)} and gt {np.shape(gt)} must both be (N, K, 2)")
    if not np.all(np.isfinite(g)):
        bad = np.where(~np.isfinite(g).all(axis=(1, 2)))[0]
        raise MetricsError(f"ground truth has NaN/inf points in image(s) {bad[:10].tolist()}")
    return p, g


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N, K)`` Euclidean distances in pixels."""
    p, g = _pair(pred, gt)
    return np.linalg.norm(p - g, axis=-1)


def _nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, what: str) -> np.ndarray:
    p, g = _pair(pred, gt)
    bad = np.where(~(norm > 0))[0]
    if len(bad):
        raise MetricsError(f"{what} normaliser is zero in image(s) {bad[:10].tolist()}")
    err = np.linalg.norm(p - g, axis=-1).mean(axis=-1) / norm
    return np.where(np.isfinite(err), err, np.inf)  # a missing prediction is a failure


def box_size(gt: np.ndarray) -> np.ndarray:
    """``(N,)`` sqrt(w * h) of each ground-truth landmark box."""
    g = np.asarray(gt, dtype=np.float64)
    g = g[None] if g.ndim == 2 else g
    wh = g.max(axis=1) - g.min(axis=1)
    return np.sqrt(wh[:, 0] * wh[:, 1])


def nme_box(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N,)`` mean point error / sqrt(w * h) of the ground-truth landmark box (fraction)."""
    _, g = _pair(pred, gt)
    return _nme(pred, gt, box_size(g), "landmark-box")


def nme_io(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N,)`` mean point error / outer-eye-corner distance (points 36 and 45; fraction)."""
    _, g = _pair(pred, gt)
    if g.shape[1] <= max(OUTER_EYE_CORNERS):
        raise MetricsError(f"inter-ocular NME needs the 68-point markup, got {g.shape[1]} points")
    a, b = OUTER_EYE_CORNERS
    return _nme(pred, gt, np.linalg.norm(g[:, a] - g[:, b], axis=-1), "inter-ocular")


def _errors(errors: np.ndarray) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    return np.where(np.isnan(e), np.inf, e)


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of images with error > ``threshold`` (misses included). NaN for no images."""
    e = _errors(errors)
    return float(np.mean(e > threshold)) if e.size else float("nan")


def auc(errors: np.ndarray, threshold: float) -> float:
    """Area under the CED curve on [0, threshold], divided by ``threshold`` (so in [0, 1]).

    Integrated exactly: the empirical CED is a step function, and the area its step at ``e_i``
    contributes is ``max(0, threshold - e_i)``, so ``AUC = mean(clip(1 - e_i / threshold, 0, 1))``.
    (Trapezoid sums over a fine threshold grid, as many papers use, converge to this value.)
    """
    if threshold <= 0:
        raise MetricsError(f"AUC threshold must be positive, got {threshold}")
    e = _errors(errors)
    if not e.size:
        return float("nan")
    return float(np.mean(np.clip(1.0 - e / threshold, 0.0, 1.0)))


def ced_curve(errors: np.ndarray, threshold: float, steps: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: ``x`` (``steps`` values on [0, threshold]) and the fraction
    of images with error <= x."""
    e = np.sort(_errors(errors))
    x = np.linspace(0.0, threshold, steps)
    y = np.searchsorted(e, x, side="right") / max(len(e), 1)
    return x, y


def ced_plot(errors_by_name: Mapping[str, np.ndarray], path: Union[str, Path], threshold: float,
             title: Optional[str] = None, xlabel: str = "NME") -> Path:
    """Write a PNG of the CED curves (one per name, AUC in the legend) atomically to ``path``.

    Errors are fractions; the x axis shows percent.
    """
    # Lazy and backend-free: a Figure with an Agg canvas touches no global pyplot state, so this
    # works headless and inside programs that use another backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, errs in errors_by_name.items():
        x, y = ced_curve(errs, threshold)
        ax.plot(x * 100, y, label=f"{name} (AUC@{threshold * 100:g}% = {auc(errs, threshold):.3f})")
    ax.set_xlim(0, threshold * 100)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{xlabel} (%)")
    ax.set_ylabel("fraction of images")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if errors_by_name:
        ax.legend(loc="lower right", fontsize=8)
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def yaw_bins(errors: np.ndarray, yaw_deg: np.ndarray) -> dict:
    """Mean error per |yaw| bin [0, 30), [30, 60), [60, 90] and their balanced mean.

    |yaw| above 90 falls in the last bin (AFLW2000-3D has a few). Means are over images with a
    prediction (finite errors); the balanced mean is the mean of the non-empty bins' means, so each
    pose range weighs the same whatever its share of the data. Keys: ``yaw_0_30``, ``yaw_30_60``,
    ``yaw_60_90``, ``yaw_balanced`` (NaN when empty) and ``n_yaw_0_30`` ... (image counts).
    """
    e = _errors(errors)
    yaw = np.abs(np.asarray(yaw_deg, dtype=np.float64).reshape(-1))
    if yaw.shape != e.shape:
        raise MetricsError(f"{e.size} errors but {yaw.size} yaw angles")
    if not np.all(np.isfinite(yaw)):
        raise MetricsError("yaw angles contain NaN/inf")
    out: dict = {}
    means = []
    for i, (lo, hi) in enumerate(YAW_BINS):
        last = i == len(YAW_BINS) - 1
        sel = (yaw >= lo) & ((yaw < hi) | last)
        fin = e[sel & np.isfinite(e)]
        key = f"yaw_{lo:g}_{hi:g}"
        out[key] = float(fin.mean()) if fin.size else float("nan")
        out[f"n_{key}"] = int(sel.sum())
        if fin.size:
            means.append(out[key])
    out["yaw_balanced"] = float(np.mean(means)) if means else float("nan")
    return out


def summarize(pred: np.ndarray, gt: np.ndarray, yaw_deg: Optional[np.ndarray] = None) -> dict:
    """Summary numbers of a prediction run.

    Keys: ``n``, ``n_missed`` (images with NaN predictions), ``nme_box`` and ``nme_io`` (mean, in
    percent, over images with a prediction), ``fr_8_box``, ``fr_10_box``, ``fr_8_io``, ``fr_10_io``
    (failure rates in percent at NME 8% / 10%, misses count), ``auc_8_box``, ``auc_10_box``,
    ``auc_8_io``, ``auc_10_io`` (in [0, 1]), and with ``yaw_deg`` the box-NME yaw bins in percent
    (``nme_box_yaw_0_30`` ..., ``nme_box_yaw_balanced``, ``n_yaw_0_30`` ...).
    """
    p, g = _pair(pred, gt)
    out: dict = {"n": int(len(g))}
    errs = {"box": nme_box(p, g), "io": nme_io(p, g)}
    found = np.isfinite(errs["box"])
    out["n_missed"] = int((~found).sum())
    for name, e in errs.items():
        out[f"nme_{name}"] = float(e[found].mean() * 100) if found.any() else float("nan")
    for name, e in errs.items():
        for t in (8, 10):
            out[f"fr_{t}_{name}"] = failure_rate(e, t / 100) * 100
            out[f"auc_{t}_{name}"] = auc(e, t / 100)
    if yaw_deg is not None:
        for key, value in yaw_bins(errs["box"], yaw_deg).items():
            out[key if key.startswith("n_") else f"nme_box_{key}"] = \
                value if key.startswith("n_") else value * 100
    return out
