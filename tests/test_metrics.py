"""Metrics against hand-computed values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightmark.core import metrics as M


def _face() -> np.ndarray:
    """68 points in a 100 x 25 box (sqrt(w h) = 50) with outer eye corners 40 px apart."""
    rng = np.random.default_rng(0)
    g = np.column_stack([rng.uniform(1, 99, 68), rng.uniform(1, 24, 68)])
    g[0], g[1] = (0, 0), (100, 25)
    g[36], g[45] = (20, 10), (60, 10)
    return g


def test_nme_box_and_io_hand_computed() -> None:
    gt = _face()
    pred = gt + [3.0, 4.0]  # every point 5 px off
    assert M.nme_box(pred, gt) == pytest.approx([5 / 50])
    assert M.nme_io(pred, gt) == pytest.approx([5 / 40])
    # Batch: the second image is twice as large and has the same pixel error -> half the NME.
    batch_gt = np.stack([gt, gt * 2])
    batch_pred = batch_gt + [3.0, 4.0]
    np.testing.assert_allclose(M.nme_box(batch_pred, batch_gt), [0.1, 0.05])
    np.testing.assert_allclose(M.nme_io(batch_pred, batch_gt), [0.125, 0.0625])
    # Only one point off by 68 px: mean error 1 px.
    one = gt.copy()
    one[10, 0] += 68
    assert M.nme_box(one, gt)[0] == pytest.approx(1 / 50)
    assert M.point_errors(one, gt)[0, 10] == pytest.approx(68)


def test_missing_prediction_is_inf() -> None:
    gt = np.stack([_face(), _face()])
    pred = gt.copy()
    pred[1] = np.nan
    e = M.nme_box(pred, gt)
    assert e[0] == 0 and np.isinf(e[1])


def test_bad_inputs() -> None:
    gt = _face()
    with pytest.raises(M.MetricsError, match="must both be"):
        M.nme_box(gt[:60], gt)
    flat = gt.copy()
    flat[:, 1] = 5.0  # zero-height box
    with pytest.raises(M.MetricsError, match="landmark-box normaliser is zero in image"):
        M.nme_box(flat, flat)
    same_eyes = gt.copy()
    same_eyes[45] = same_eyes[36]
    with pytest.raises(M.MetricsError, match="inter-ocular"):
        M.nme_io(same_eyes, same_eyes)
    with pytest.raises(M.MetricsError, match="NaN"):
        M.nme_box(gt, np.full_like(gt, np.nan))


def test_failure_rate_and_auc() -> None:
    e = np.array([0.05, 0.08, 0.12, np.inf])
    assert M.failure_rate(e, 0.08) == 0.5  # 0.08 itself is not a failure
    assert M.failure_rate(e, 0.10) == 0.5
    assert M.failure_rate(e, 0.04) == 1.0
    assert M.failure_rate([0.01, np.nan], 0.1) == 0.5  # NaN counts as a miss
    # AUC@0.08 = mean(clip(1 - e/0.08)) = mean(1, 0.5, 0, 0) for e = 0, 0.04, 0.08, 0.2
    e2 = np.array([0.0, 0.04, 0.08, 0.2])
    assert M.auc(e2, 0.08) == pytest.approx(0.375)
    # The exact integral agrees with a fine trapezoid sum over the CED curve.
    x, y = M.ced_curve(e2, 0.08, steps=100001)
    assert np.trapezoid(y, x) / 0.08 == pytest.approx(0.375, abs=1e-4)
    assert M.auc([0.0, 0.0], 0.1) == 1.0 and M.auc([0.5, np.inf], 0.1) == 0.0
    with pytest.raises(M.MetricsError, match="positive"):
        M.auc(e2, 0.0)


def test_ced_curve_values() -> None:
    x, y = M.ced_curve([0.01, 0.03], 0.04, steps=5)
    np.testing.assert_allclose(x, [0, 0.01, 0.02, 0.03, 0.04])
    np.testing.assert_allclose(y, [0, 0.5, 0.5, 1.0, 1.0])


def test_yaw_bins() -> None:
    e = [0.01, 0.02, 0.03, 0.04, 0.05, np.inf, 0.06, 0.07]
    yaw = [10, -20, 45, -70, 95, 5, 30, -60]  # 30 -> middle bin, 60 and 95 -> last bin
    b = M.yaw_bins(e, yaw)
    assert b["n_yaw_0_30"] == 3 and b["n_yaw_30_60"] == 2 and b["n_yaw_60_90"] == 3
    assert b["yaw_0_30"] == pytest.approx(0.015)  # the miss is left out of the mean
    assert b["yaw_30_60"] == pytest.approx(0.045)
    assert b["yaw_60_90"] == pytest.approx((0.04 + 0.05 + 0.07) / 3)
    assert b["yaw_balanced"] == pytest.approx((0.015 + 0.045 + 0.16 / 3) / 3)
    empty = M.yaw_bins([0.02], [10])
    assert np.isnan(empty["yaw_60_90"]) and empty["yaw_balanced"] == pytest.approx(0.02)
    with pytest.raises(M.MetricsError, match="yaw"):
        M.yaw_bins([0.1, 0.2], [10])


def test_summarize() -> None:
    gt = np.stack([_face()] * 4)
    pred = gt.copy()
    pred[1] += [3.0, 4.0]  # box NME 10%, io 12.5%
    pred[2] += [0.6, 0.8]  # box NME 2%, io 2.5%
    pred[3] = np.nan  # missed
    s = M.summarize(pred, gt, yaw_deg=[0, 40, 80, 10])
    assert s["n"] == 4 and s["n_missed"] == 1
    assert s["nme_box"] == pytest.approx((0 + 10 + 2) / 3)
    assert s["nme_io"] == pytest.approx((0 + 12.5 + 2.5) / 3)
    assert s["fr_8_box"] == pytest.approx(50.0) and s["fr_10_box"] == pytest.approx(25.0)
    assert s["fr_10_io"] == pytest.approx(50.0)
    assert s["auc_10_box"] == pytest.approx((1 + 0 + 0.8 + 0) / 4)
    assert s["auc_8_io"] == pytest.approx((1 + 0 + (1 - 2.5 / 8) + 0) / 4)
    assert s["nme_box_yaw_0_30"] == pytest.approx(0.0) and s["n_yaw_0_30"] == 2
    assert s["nme_box_yaw_30_60"] == pytest.approx(10.0)
    assert s["nme_box_yaw_balanced"] == pytest.approx(4.0)
    assert "nme_box_yaw_0_30" not in M.summarize(pred, gt)


def test_ced_plot_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "ced.png"
    M.ced_plot({"a": [0.01, 0.05, 0.2], "b": [0.03, np.inf]}, out, 0.1, title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in out.parent.iterdir()] == ["ced.png"]  # no temp file left behind
