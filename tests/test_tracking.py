"""Face tracking over frames (lightmark.tracking, Landmarker.track) and the quality score, on
small generated clips of the bundled example's rendered faces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightmark.api import Face, Landmarker
from lightmark.core.geometry import landmark_box
from lightmark.core.imaging import ImageError
from lightmark.core.quality import DEFAULT_MIN_QUALITY, face_quality, softmax_spread
from lightmark.tracking import FaceTracker, TrackingError

import video_clips as vc

AFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "300w" / "afw"


@pytest.fixture(scope="module")
def lm() -> Landmarker:
    return Landmarker()


def _size(points: np.ndarray) -> float:
    b = landmark_box(points)
    return float(np.sqrt((b[2] - b[0]) * (b[3] - b[1])))


def test_face_keeps_working_without_the_new_fields() -> None:
    f = Face(box=np.zeros(4, np.float32), score=0.9, points=np.zeros((68, 2), np.float32))
    assert f.track_id is None and f.quality is None
    # pose is fitted when read: collapsed points are a clear error, a set pose is kept
    from lightmark.core.errors import LightmarkError

    with pytest.raises(LightmarkError):
        f.pose
    f.pose = [1.0, 2.0, 3.0]
    assert f.pose.tolist() == [1.0, 2.0, 3.0]


def test_track_follows_a_moving_face_with_one_detection(lm) -> None:
    frames = vc.moving_clip(n=20, step=4.0)
    ref = lm.predict_all(frames[0])
    assert len(ref) == 1
    tracker = FaceTracker(lm, detect_every=30, smooth=False)
    out = [tracker.update(f) for f in frames]
    assert tracker.detections == 1  # frames 1-19 were cut from the previous landmarks
    size = _size(ref[0].points)
    for k, faces in enumerate(out):
        assert len(faces) == 1 and faces[0].track_id == 0
        assert faces[0].quality is not None and faces[0].quality > DEFAULT_MIN_QUALITY
        want = ref[0].points + np.array([4.0 * k, 0.0])
        err = np.linalg.norm(faces[0].points - want, axis=1).mean() / size
        assert err < 0.05, f"frame {k}: mean error {err:.3f} of the face size"
        assert np.allclose(faces[0].box, landmark_box(faces[0].points), atol=1e-3)


def test_tracked_faces_carry_the_3d_set_and_fit_the_pose_to_it(lm) -> None:
    from lightmark import head_pose

    frames = [vc.render(480, 320, [(0, 100, 90)], k) for k in range(6)]
    runs = {}
    for smooth in (False, True):
        runs[smooth] = faces = [f[0] for f in lm.track(frames, smooth=smooth)]
        for k, face in enumerate(faces):
            assert face.points_3d is not None and face.points_3d.shape == (68, 2)
            # Inner points (brows, eyes, nose, mouth) of the two sets agree; the jaw may not.
            gap = np.abs(face.points_3d[17:] - face.points[17:]).mean() / _size(face.points)
            assert gap < 0.05, gap
            np.testing.assert_allclose(face.pose, head_pose(face.points_3d, frames[k].shape, convention="3d"),
                                       atol=1e-6)
    # The crops come from the raw points either way, so the model's answers are the same, and the
    # smoothed 3d set is moved by exactly the 2d set's correction.
    for raw, smoothed in zip(runs[False], runs[True]):
        np.testing.assert_allclose(smoothed.points_3d - smoothed.points, raw.points_3d - raw.points, atol=1e-3)
    assert not np.allclose(runs[True][-1].points, runs[False][-1].points, atol=1e-3)  # it did smooth
    # Tracking the 3d set itself: no second set beside it.
    assert all(f[0].points_3d is None for f in lm.track(frames[:2], convention="3d"))


def test_landmarker_track_yields_per_frame_and_detects_periodically(lm) -> None:
    frames = [vc.render(480, 320, [(0, 100, 90)], k) for k in range(12)]
    tracker = FaceTracker(lm, detect_every=5)
    for f in frames:
        tracker.update(f)
    assert tracker.detections == 3  # frames 0, 5, 10
    gen = lm.track(iter(frames[:3]), detect_every=5)
    first = next(gen)  # a generator: frames are processed as they come
    assert len(first) == 1 and first[0].track_id == 0
    assert [len(x) for x in gen] == [1, 1]


def test_smoothing_reduces_jitter_on_a_still_face(lm) -> None:
    frames = [vc.render(480, 320, [(0, 100, 90)], k) for k in range(20)]
    spread = {}
    for smooth in (False, True):
        pts = np.stack([f[0].points for f in lm.track(frames, smooth=smooth)])
        spread[smooth] = float(np.sqrt(pts.var(axis=0).sum(-1).mean()))
    assert spread[True] < 0.5 * spread[False], spread


def test_ids_survive_two_faces_crossing(lm) -> None:
    # Face A moves right, B left, 12 px a frame; B passes behind A (hidden for a few frames).
    def pos(k: int) -> tuple[float, float]:
        return 40 + 12 * k, 470 - 12 * k

    frames = [vc.render(640, 320, [(1, pos(k)[0], 60), (0, pos(k)[1], 120)], k) for k in range(40)]
    ids: dict[str, set[int]] = {"A": set(), "B": set()}
    both_at = []
    for k, faces in enumerate(lm.track(frames)):
        xa, xb = pos(k)
        centres = {"A": np.array([xa + vc.PATCH / 2, 60 + vc.PATCH / 2]),
                   "B": np.array([xb + vc.PATCH / 2, 120 + vc.PATCH / 2])}
        for f in faces:
            c = f.points.mean(axis=0)
            who = min(centres, key=lambda n: np.linalg.norm(c - centres[n]))
            assert np.linalg.norm(c - centres[who]) < 25, f"frame {k}: a face where no face is"
            ids[who].add(f.track_id)
        if len(faces) == 2:
            both_at.append(k)
    assert len(ids["A"]) == 1 and len(ids["B"]) == 1 and ids["A"] != ids["B"], ids
    assert both_at[0] == 0 and both_at[-1] == 39  # both found before and after the crossing


def test_a_lost_face_is_lost_and_found_again(lm) -> None:
    frames = ([vc.render(480, 320, [(0, 80, 90)], k) for k in range(8)]
              + [vc.render(480, 320, [], k) for k in range(8, 14)]
              + [vc.render(480, 320, [(2, 260, 100)], k) for k in range(14, 22)])
    out = list(lm.track(frames))
    assert all(len(f) == 1 for f in out[:8])
    assert all(len(f) == 0 for f in out[8:14]), [len(f) for f in out[8:14]]
    assert all(len(f) == 1 for f in out[14:])  # found on the first frame it is back
    # It came back elsewhere after 6 frames: a new face, so a new id.
    assert out[14][0].track_id != out[0][0].track_id


def test_max_faces_and_quality_threshold(lm) -> None:
    frame = vc.render(640, 320, [(1, 40, 60), (0, 400, 120)], 0)
    assert len(FaceTracker(lm).update(frame)) == 2
    assert len(FaceTracker(lm, max_faces=1).update(frame)) == 1


def test_bad_arguments_and_frames(lm) -> None:
    for kw in ({"detect_every": -1}, {"fps": 0}, {"min_quality": 1.5}, {"max_faces": 0},
               {"match_iou": 0}, {"min_cutoff": -1.0}, {"detect_every": 2.5}):
        with pytest.raises(TrackingError if "min_cutoff" not in kw else ValueError):
            FaceTracker(lm, **kw)
    with pytest.raises(TrackingError):
        lm.track([], detect_every=-3)  # fails at the call, not at the first frame
    tr = FaceTracker(lm)
    with pytest.raises(ImageError, match="frame 0"):
        tr.update(np.zeros((10, 10, 7), np.uint8))
    frame = vc.render(320, 240, [(0, 80, 60)], 0)
    tr.update(frame, t=1.0)
    with pytest.raises(TrackingError, match="after the previous"):
        tr.update(frame, t=1.0)
    with pytest.raises(TrackingError, match="timestamps ran out"):
        list(lm.track([frame, frame], timestamps=[0.0]))


def test_quality_separates_a_face_from_background(lm) -> None:
    pred = lm.predictor
    face = vc.render(320, 240, [(0, 96, 56)], 0)
    empty = vc.render(320, 240, [], 0)
    box = landmark_box(lm.predict_all(face)[0].points)
    from lightmark.core.geometry import crops_from_boxes

    crops = np.concatenate([crops_from_boxes(img, box[None], lm.input_size, lm.crop_scale)[0]
                            for img in (face, empty)])
    pts, raw = pred.predict_crops_raw(crops)
    assert np.allclose(pts, pred.predict_crops(crops), atol=1e-4)  # the sibling gives the same points
    q = face_quality(raw, pred.meta["model"])
    fast, fast_q = pred.predict_crops_quality(crops, ("2d", "3d"))  # the tracker's one pass (graph moments)
    assert np.allclose(fast["2d"], pts, atol=1e-3) and np.allclose(fast_q, q, atol=1e-5)
    assert np.allclose(fast["3d"], pred.predict_crops(crops, convention="3d"), atol=1e-3)
    assert pred.predict_crops_raw(crops, decode_points=False)[0] is None
    assert q[0] > 0.8 and q[1] < 0.2, q
    assert softmax_spread(raw)[0] < softmax_spread(raw)[1]
    assert face_quality(np.zeros((1, 68, 2)), {"head": "regression"}) is None


def test_quality_auc_on_afw_faces_against_background(lm) -> None:
    if not AFW.is_dir():
        pytest.skip(f"shared data missing: {AFW}")
    import importlib.util

    # The benchmark's own crop sets and AUC, loaded by path (benchmarks/ is not a package).
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "video.py"
    spec = importlib.util.spec_from_file_location("lightmark_video_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    sets = bench.quality_crops(AFW, step=17)  # 20 photos
    q = {k: face_quality(lm.predictor.predict_crops_raw(v)[1], lm.predictor.meta["model"])
         for k, v in sets.items()}
    assert bench.roc_auc(q["face"], q["background"]) > 0.95
    assert bench.roc_auc(q["face"], q["face, crop shifted 50-80 %"]) > 0.95
    assert np.mean(q["face"] >= DEFAULT_MIN_QUALITY) > 0.9


def test_torch_predictor_raw_outputs_match_its_points() -> None:
    pytest.importorskip("torch")
    weights = (Path(__file__).resolve().parents[1] / "src" / "lightmark" / "assets" / "model"
               / "lightmark.safetensors")
    if not weights.is_file():
        pytest.skip(f"no bundled torch weights at {weights}")
    lm_t = Landmarker(model=weights, backend="torch")
    frames = [vc.render(320, 240, [(0, 96, 56)], k) for k in range(3)]
    faces = [f for f in lm_t.track(frames)]
    assert all(len(f) == 1 and f[0].quality > DEFAULT_MIN_QUALITY for f in faces)
    crops = np.zeros((2, lm_t.input_size, lm_t.input_size, 3), np.uint8)
    pts, raw = lm_t.predictor.predict_crops_raw(crops)
    assert np.allclose(pts, lm_t.predictor.predict_crops(crops), atol=1e-5) and raw.ndim == 4
    q_pts, q = lm_t.predictor.predict_crops_quality(crops)
    assert np.array_equal(q_pts["2d"], pts) and q.shape == (2,)
