"""evaluate(): fake predictors and detectors with known answers on a few labelled images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lightmark.core import geometry
from lightmark.core.boxmap import BoxMapping
from lightmark.evaluate import EvaluationError, evaluate, match_detection, write_report

S = 64  # a small input keeps the crops cheap

# Data: 300W-style faces from the tiny generated set (conftest.tiny_faces, no shared data needed);
# the AFLW2000-3D sample (yaw, the seeded split) from the shared data, or the test is skipped.


@pytest.fixture
def aflw(shared_data) -> Path:
    return shared_data("aflw2000_sample")


def _open(path: Path, limit: int | None = None):
    from lightmark.data.readers import open_dataset

    return open_dataset(path, limit=limit, seed=0)


class ScriptedPredictor:
    """Predictor protocol double: for the k-th crop it is given, returns ``expected[k]`` mapped
    into the crop by ``matrices[k]`` (computed by the test, independently of evaluate), plus
    ``offset`` crop pixels. It also checks the crops it receives."""

    def __init__(self, points: list[np.ndarray], matrices: list[np.ndarray],
                 offset: tuple[float, float] = (0.0, 0.0), crop_scale: float = 1.25) -> None:
        self.input_size = S
        self.crop_scale = crop_scale
        self.meta = {"name": "scripted", "sha256": "ab" * 32, "model": {"head": "integral"}}
        self.points, self.matrices, self.offset = points, matrices, np.asarray(offset)
        self.calls: list[int] = []
        self.k = 0

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        assert crops.dtype == np.uint8 and crops.shape[1:] == (S, S, 3)
        assert crops.reshape(len(crops), -1).std(axis=1).min() > 5  # real image content, not blank
        self.calls.append(len(crops))
        out = []
        for _ in crops:
            out.append(geometry.apply_affine(self.points[self.k], self.matrices[self.k]) + self.offset)
            self.k += 1
        return np.asarray(out, np.float32)


def _gt_crops(ds, crop_scale: float = 1.25) -> tuple[list, list]:
    pts = [r.points for r in ds.records]
    mats = [geometry.crop_matrix_from_box(geometry.landmark_box(p), S, crop_scale) for p in pts]
    return pts, mats


def test_gt_boxes_oracle_gives_zero_nme(tiny_faces: Path) -> None:
    ds = _open(tiny_faces, limit=5)
    pts, mats = _gt_crops(ds, 1.4)
    pred = ScriptedPredictor(pts, mats, crop_scale=1.4)
    rep = evaluate(pred, ds, batch_size=2, progress=False)
    assert pred.calls == [2, 2, 1]  # batched as asked, every image once
    s = rep["summary"]
    assert s["n"] == 5 and s["n_missed"] == 0
    assert s["nme_box"] < 1e-3 and s["nme_io"] < 1e-3  # percent: float32 rounding only
    assert s["fr_8_box"] == 0 and s["auc_10_box"] > 0.999
    assert [r["file"] for r in rep["per_image"]] == ds.relative_names()
    assert rep["model"]["name"] == "scripted" and rep["model"]["sha256"] == "ab" * 32
    assert rep["data"]["split"] == "all" and rep["box_source"] == "gt"
    assert "nme_box_yaw_0_30" not in s  # .pts files carry no yaw


def test_known_offset_gives_predictable_nme(tiny_faces: Path) -> None:
    ds = _open(tiny_faces, limit=5)
    pts, mats = _gt_crops(ds)
    d = np.array([1.5, 2.0])  # 2.5 crop pixels
    rep = evaluate(ScriptedPredictor(pts, mats, offset=tuple(d)), ds, progress=False)
    want_box, want_io = [], []
    for p in pts:
        box = geometry.landmark_box(p)
        w, h = box[2] - box[0], box[3] - box[1]
        err_img = 2.5 * 1.25 * max(w, h) / S  # crop pixels -> image pixels
        want_box.append(err_img / np.sqrt(w * h))
        want_io.append(err_img / np.linalg.norm(p[36] - p[45]))
    got_box = [r["nme_box"] for r in rep["per_image"]]
    got_io = [r["nme_io"] for r in rep["per_image"]]
    np.testing.assert_allclose(got_box, want_box, rtol=1e-4)
    np.testing.assert_allclose(got_io, want_io, rtol=1e-4)
    assert rep["summary"]["nme_box"] == pytest.approx(np.mean(want_box) * 100, rel=1e-4)


def test_split_and_yaw_bins_on_aflw(aflw: Path) -> None:
    ds = _open(aflw)
    pts, mats = _gt_crops(ds)
    idx = {n: i for i, n in enumerate(ds.relative_names())}
    parts = {}
    for split in ("val", "test"):
        from lightmark.data.protocol import select_split

        sub = select_split(ds, split, seed=3)
        order = [idx[n] for n in sub.relative_names()]
        pred = ScriptedPredictor([pts[i] for i in order], [mats[i] for i in order], offset=(0.5, 0))
        rep = evaluate(pred, ds, split=split, seed=3, progress=False)
        parts[split] = rep["data"]["files"]
        assert rep["data"]["seed"] == 3 and rep["summary"]["n"] == len(order)
        assert all("yaw_deg" in r for r in rep["per_image"])
    assert len(parts["val"]) == 1 and len(parts["test"]) == 3  # 10% of 4, at least one
    assert sorted(parts["val"] + parts["test"]) == ds.relative_names()
    rep = evaluate(ScriptedPredictor(pts, mats), ds, progress=False)
    s = rep["summary"]
    # yaws of the sample: 0.9, 17.9, -54.7, 4.7 degrees
    assert (s["n_yaw_0_30"], s["n_yaw_30_60"], s["n_yaw_60_90"]) == (3, 1, 0)
    assert s["nme_box_yaw_0_30"] < 1e-3


class FakeDetector:
    """Boxes 1.2x the landmark box (about its centre); optionally misses some images."""

    box_mapping = BoxMapping(side_ratio=1 / 1.2, crop_shift=(0.0, 0.0))  # crop = the 1.25x landmark crop

    def __init__(self, ds, miss: set[int] = frozenset(), decoy: set[int] = frozenset()) -> None:
        self.boxes = []
        for p in (r.points for r in ds.records):
            b = geometry.landmark_box(p)
            c, half = (b[:2] + b[2:]) / 2, (b[2:] - b[:2]) / 2 * 1.2
            self.boxes.append(np.concatenate([c - half, c + half]))
        self.miss, self.decoy, self.k = miss, decoy, 0

    def detect(self, image: np.ndarray) -> np.ndarray:
        k, self.k = self.k, self.k + 1
        far = np.array([[0, 0, 5, 5, 0.99]], np.float32)  # a face elsewhere: no overlap
        if k in self.miss:
            return np.zeros((0, 5), np.float32)
        if k in self.decoy:
            return far
        return np.vstack([far, np.append(self.boxes[k], 0.9)[None]]).astype(np.float32)


def test_detector_boxes_and_misses(tiny_faces: Path, tmp_path: Path) -> None:
    ds = _open(tiny_faces, limit=5)
    det = FakeDetector(ds, miss={1}, decoy={3})
    pts = [r.points for r in ds.records]
    # The test's own expectation of the crop: detector box, scale crop_scale * 1.3 / 1.25.
    mats = [geometry.crop_matrix_from_box(det.boxes[i], S, det.box_mapping.side_ratio * 1.3)
            for i in (0, 2, 4)]
    pred = ScriptedPredictor([pts[i] for i in (0, 2, 4)], mats, crop_scale=1.3)
    rep = evaluate(pred, ds, box_source="detector", detector=det, progress=False)
    s = rep["summary"]
    assert s["n"] == 5 and s["n_missed"] == 2
    assert s["nme_box"] < 1e-3  # over the three faces found
    assert s["fr_8_box"] == pytest.approx(40.0) and s["fr_10_io"] == pytest.approx(40.0)
    assert s["auc_8_box"] == pytest.approx(0.6, abs=1e-4)
    missed = [r["missed"] for r in rep["per_image"]]
    assert missed == [False, True, False, True, False]
    assert rep["per_image"][1]["nme_box"] is None and rep["per_image"][3]["detection"] is None
    assert rep["per_image"][0]["detection"][4] == pytest.approx(0.9)
    assert rep["detector"]["crop_scale"] == pytest.approx(det.box_mapping.side_ratio * 1.3)

    paths = write_report(rep, tmp_path / "rep.json", plot_path=tmp_path / "ced.png")
    data = json.loads((tmp_path / "rep.json").read_text())  # strict JSON: no NaN/Infinity
    assert data["summary"]["n_missed"] == 2 and data["per_image"][1]["nme_io"] is None
    assert data["data"]["file_list"] == "rep.all.txt" and data["plot"] == "ced.png"
    from lightmark.data.protocol import read_file_list

    assert read_file_list(paths["file_list"]) == ds.relative_names()
    assert (tmp_path / "ced.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ced.png", "rep.all.txt", "rep.json"]


def test_write_report_file_lists_dir(aflw: Path, tmp_path: Path) -> None:
    ds = _open(aflw)
    pts, mats = _gt_crops(ds)
    rep = evaluate(ScriptedPredictor(pts, mats), ds, progress=False, store_points=True)
    np.testing.assert_allclose(rep["per_image"][0]["points"], pts[0], atol=0.01)
    lists = tmp_path / "lists"
    paths = write_report(rep, tmp_path / "out" / "r.json", file_lists_dir=lists)
    assert paths["file_list"] == lists / "r.all.txt" and paths["file_list"].is_file()
    data = json.loads(paths["json"].read_text())
    assert data["data"]["path"] == str(aflw) and data["data"]["kind"] == "aflw2000"
    assert "plot" not in data


def test_match_detection() -> None:
    gt = np.array([10.0, 10, 50, 50])
    dets = np.array([[12, 12, 52, 52, 0.5], [0, 0, 30, 30, 0.99], [200, 200, 220, 220, 1.0]])
    assert match_detection(dets, gt, 0.3)[4] == 0.5  # best overlap wins, not best score
    assert match_detection(dets[1:2], gt, 0.5) is None  # IoU 400/2800 is too low
    assert match_detection(np.zeros((0, 5)), gt, 0.3) is None


def test_bad_arguments(tiny_faces: Path) -> None:
    ds = _open(tiny_faces)
    pts, mats = _gt_crops(ds)
    with pytest.raises(EvaluationError, match="box_source"):
        evaluate(ScriptedPredictor(pts, mats), ds, box_source="magic", progress=False)
    with pytest.raises(EvaluationError, match="needs a detector"):
        evaluate(ScriptedPredictor(pts, mats), ds, box_source="detector", progress=False)

    class Wrong(ScriptedPredictor):
        def predict_crops(self, crops: np.ndarray) -> np.ndarray:
            return np.zeros((len(crops), 5, 2), np.float32)

    with pytest.raises(EvaluationError, match="returned shape"):
        evaluate(Wrong(pts, mats), ds, progress=False)
