#!/usr/bin/env python
"""Video benchmark: jitter, accuracy, lag and speed of tracking; the quality score's separation.

Not a timed test: run it by hand, it prints Markdown tables (and writes them with ``--out``).

* ``still``: AFW photos as still "videos" (``--frames`` frames each, fresh Gaussian pixel noise
  of ``--noise`` grey levels per frame; variant ``shift``: the whole photo also moved by a
  sub-pixel shift that wanders as a slow random walk inside +-0.5 px in x and y (steps of 0.1 px
  sd per frame, bilinear resampling), truth moved with it). Methods:
  per-frame ``predict_all``, a fixed box (the GT landmark box, one pass), tracking, tracking +
  smoothing, and, where they import, dlib (HOG upsample 0 + 68-point shape predictor, per frame)
  and MediaPipe face mesh (video mode; its 468 vertices mapped to the 68 points by the nearest
  vertex per point, fitted on HELEN train).
* ``synth``: a clip from ``lightmark.synth`` (an ICT head on a smooth pose path with a fast
  sideways move, exact projected labels, jaw in the 300W contour convention), same metrics plus
  the lag of the face centre behind the truth.
* ``pose``: ``Face.pose`` along the synth clip against the renderer's angles (negated: the
  renderer turns the head the other way round on all three axes from AFLW2000-3D's ``Pose_Para``,
  which ``head_pose`` follows; correlations about -0.99 / -0.88 / -0.98 on yaw / pitch / roll):
  mean absolute error per angle and the mean frame-to-frame change, per frame and tracked, the
  pose fitted to the 3d set (``Face.points_3d``) or to the 2d points.
* ``speed``: frames/s at one thread tracking the synth clip's one face at 640x480, video decoding
  excluded (and measured on its own: an mp4v file of the clip read by OpenCV); beside it, in the
  same rounds, MediaPipe's face mesh in video mode and dlib's shape predictor following the face
  from its previous points, so that the ratio holds whatever the machine's load.
* ``quality``: ROC AUC of the quality score, faces against background crops and badly shifted
  crops, on AFW (and the threshold's error rates), with the threshold fitted on HELEN train.
* ``filter``: the One Euro filter alone on synthetic signals: noise reduction and lag on ramps.

Metrics, per face sequence, then averaged over sequences (all in % of sqrt(w*h) of the GT
landmark box): NME = mean point error; jitter = RMS over the 68 points of each point's spread
over the frames (sqrt of the summed x and y variance of its error; with still truth, of its
position); error jitter = mean over points and frame pairs of |e_t - e_(t-1)|, e the error vector.

    PYTHONPATH=src OMP_NUM_THREADS=1 /work/bench-venv/bin/python benchmarks/video.py \
        --out benchmarks/VIDEO_RESULTS.md
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
AFW = SHARED / "300w" / "afw"
HELEN = SHARED / "300w" / "helen_trainset"
FPS = 30.0
SECTIONS = ("still", "synth", "pose", "smoothers", "speed", "quality", "filter")


class BenchmarkError(SystemExit):
    def __init__(self, msg: str) -> None:
        super().__init__(f"video.py: error: {msg}")


# ------------------------------------------------------------------------------------------------
# metrics


def sequence_metrics(pred: np.ndarray, gt: np.ndarray, norm: float) -> dict[str, float]:
    """``pred`` (T, 68, 2) with NaN rows for frames without an answer, ``gt`` (T, 68, 2)."""
    ok = np.all(np.isfinite(pred), axis=(1, 2))
    out = {"found": float(ok.mean())}
    if ok.sum() < 2:
        return {**out, "nme": np.nan, "jitter": np.nan, "err_jitter": np.nan}
    e = (pred - gt)[ok]
    out["nme"] = float(np.linalg.norm(e, axis=-1).mean() / norm)
    out["jitter"] = float(np.sqrt(e.var(axis=0).sum(-1).mean()) / norm)
    pairs = ok[1:] & ok[:-1]
    d = (pred - gt)[1:][pairs] - (pred - gt)[:-1][pairs]
    out["err_jitter"] = float(np.linalg.norm(d, axis=-1).mean() / norm) if len(d) else np.nan
    return out


def norm_of(points: np.ndarray) -> float:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return float(np.sqrt((hi[0] - lo[0]) * (hi[1] - lo[1])))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:4], b[2:4])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    return inter / max(float(np.prod(a[2:4] - a[:2]) + np.prod(b[2:4] - b[:2])) - inter, 1e-9)


def pick(candidates: list[np.ndarray], gt: np.ndarray) -> Optional[np.ndarray]:
    """The answer whose landmark box overlaps the labelled face's best (IoU >= 0.3)."""
    from lightmark.core.geometry import landmark_box

    g = landmark_box(gt)
    best, best_iou = None, 0.3
    for p in candidates:
        iou = box_iou(landmark_box(p), g)
        if iou >= best_iou:
            best, best_iou = p, iou
    return best


def pick_face(faces: list, gt: np.ndarray) -> Optional[Any]:
    """:func:`pick` for ``Face`` objects: the face itself (its pose), or None."""
    chosen = pick([f.points for f in faces], gt)
    return next((f for f in faces if f.points is chosen), None)


# ------------------------------------------------------------------------------------------------
# methods: fn(frames, gts) -> (T, 68, 2) with NaN where the face was not found


def _stack(answers: list[Optional[np.ndarray]]) -> np.ndarray:
    return np.stack([np.full((68, 2), np.nan) if a is None else np.asarray(a, np.float64)
                     for a in answers])


def make_methods(lm: Any, peers: dict[str, Any], tracker_options: Optional[dict] = None
                 ) -> dict[str, Callable]:
    from lightmark.tracking import FaceTracker

    opts = tracker_options or {}

    def per_frame(frames, gts):
        return _stack([pick([f.points for f in lm.predict_all(fr)], g) for fr, g in zip(frames, gts)])

    def fixed_box(frames, gts):
        from lightmark.core.geometry import landmark_box

        box = landmark_box(gts[0])  # the GT box of the first frame, kept
        return _stack([lm.predict(fr, box, box_kind="landmarks") for fr in frames])

    def tracking(smooth: bool):
        def run(frames, gts):
            tr = FaceTracker(lm, smooth=smooth, fps=FPS, **opts)
            return _stack([pick([f.points for f in tr.update(fr)], g) for fr, g in zip(frames, gts)])
        return run

    methods = {"lightmark predict_all (per frame)": per_frame,
               "lightmark, fixed GT box": fixed_box,
               "lightmark track": tracking(False),
               "lightmark track + smoothing": tracking(True)}
    if "dlib" in peers:
        det, sp = peers["dlib"]

        def dlib_run(frames, gts):
            import dlib

            out = []
            for fr, g in zip(frames, gts):
                shapes = [sp(fr, dlib.rectangle(r.left(), r.top(), r.right(), r.bottom())) for r in det(fr, 0)]
                out.append(pick([np.array([[p.x, p.y] for p in s.parts()], np.float64) for s in shapes], g))
            return _stack(out)
        methods["dlib HOG + shape predictor (per frame)"] = dlib_run
    if "mediapipe" in peers:
        mp, mapping = peers["mediapipe"]

        def mp_run(frames, gts):
            mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=4)
            try:
                out = []
                for fr, g in zip(frames, gts):
                    out.append(pick(mediapipe_68(mesh, fr, mapping), g))
                return _stack(out)
            finally:
                mesh.close()
        methods["MediaPipe face mesh (video mode)"] = mp_run
    return methods


def mediapipe_68(mesh: Any, frame: np.ndarray, mapping: Optional[np.ndarray]) -> list[np.ndarray]:
    r = mesh.process(frame)
    h, w = frame.shape[:2]
    out = []
    for f in r.multi_face_landmarks or []:
        # Normalised coordinates of pixel corners -> 0-based pixel centres.
        v = np.array([[q.x * w - 0.5, q.y * h - 0.5] for q in f.landmark], np.float64)
        out.append(v if mapping is None else v[mapping])
    return out


def fit_mediapipe_mapping(mp: Any, n: int, progress: bool) -> tuple[np.ndarray, dict]:
    """Per iBUG point, the mesh vertex nearest to it on average (in face sizes) on HELEN train."""
    from lightmark.data.readers import open_dataset

    ds = open_dataset(HELEN)
    idx = np.random.default_rng(0).choice(len(ds), size=min(n, len(ds)), replace=False)
    dists, used = [], 0
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4) as mesh:
        for i in _progress(idx, progress, "fit mediapipe->68 on HELEN train"):
            s = ds[int(i)]
            # The mesh whose box overlaps the labelled face (the raw mesh spans about the same face).
            v = pick(mediapipe_68(mesh, s.image, None), s.points)
            if v is None:
                continue
            used += 1
            dists.append(np.linalg.norm(v[None, :, :] - s.points[:, None, :], axis=-1) / norm_of(s.points))
    if used < 20:
        raise BenchmarkError(f"mediapipe found only {used} HELEN faces; cannot fit its 68-point mapping")
    mean = np.mean(dists, axis=0)  # (68, 468)
    mapping = mean.argmin(axis=1)
    return mapping, {"fitted_on": "HELEN train", "faces": used,
                     "mean_distance_pct": round(float(mean.min(axis=1).mean() * 100), 2)}


def load_peers(progress: bool, skip: bool) -> tuple[dict[str, Any], dict[str, str]]:
    peers, notes = {}, {}
    if skip:
        return peers, {"peers": "skipped (--no-peers)"}
    try:
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("face_recognition_models is not installed")
        dat = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
        peers["dlib"] = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dat)))
        notes["dlib"] = f"dlib {dlib.__version__}"
    except ImportError as e:
        notes["dlib"] = f"not run ({e})"
    try:
        import mediapipe as mp

        mapping, info = fit_mediapipe_mapping(mp, 300, progress)
        peers["mediapipe"] = (mp, mapping)
        notes["mediapipe"] = (f"mediapipe {mp.__version__}; 68 points = nearest mesh vertex per point, "
                              f"fitted on {info['faces']} HELEN-train faces (mean distance "
                              f"{info['mean_distance_pct']} % of face size)")
    except ImportError as e:
        notes["mediapipe"] = f"not run ({e})"
    return peers, notes


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, file=sys.stderr, leave=False)


# ------------------------------------------------------------------------------------------------
# (a) still photos


def still_sequences(n_photos: int, n_frames: int, noise: float, shift: bool, seed: int = 0):
    """Yield (frames, gts) per AFW photo."""
    from lightmark.data.readers import open_dataset

    ds = open_dataset(AFW)
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n_photos, len(ds)), replace=False))
    for i in idx:
        s = ds[int(i)]
        rng = np.random.default_rng([seed, int(i), int(shift)])
        frames, gts = [], []
        d = rng.uniform(-0.5, 0.5, size=2)
        for _ in range(n_frames):
            img, pts = s.image, s.points.astype(np.float64)
            if shift:
                # A slow random walk inside +-0.5 px (steps of 0.1 px sd, reflected at the edges).
                d = d + rng.normal(0, 0.1, size=2)
                d = np.where(d > 0.5, 1.0 - d, np.where(d < -0.5, -1.0 - d, d))
                m = np.array([[1.0, 0, d[0]], [0, 1.0, d[1]]])
                img = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
                pts = pts + d
            noisy = img.astype(np.float32) + rng.standard_normal(img.shape, dtype=np.float32) * noise
            frames.append(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
            gts.append(pts)
        yield frames, np.stack(gts)


def run_still(methods: dict[str, Callable], n_photos: int, n_frames: int, noise: float, shift: bool,
              progress: bool) -> dict[str, dict[str, float]]:
    per: dict[str, list[dict]] = {k: [] for k in methods}
    seqs = still_sequences(n_photos, n_frames, noise, shift)
    for frames, gts in _progress(seqs, progress, f"still{' + shift' if shift else ''}"):
        norm = norm_of(gts[0])
        for name, fn in methods.items():
            per[name].append(sequence_metrics(fn(frames, gts), gts, norm))
    return {name: summarise(rows) for name, rows in per.items()}


def summarise(rows: list[dict]) -> dict[str, float]:
    out = {"sequences": len(rows)}
    for k in ("found", "nme", "jitter", "err_jitter"):
        v = np.array([r[k] for r in rows], np.float64)
        out[k] = float(np.nanmean(v)) if np.any(np.isfinite(v)) else float("nan")
    return out


# ------------------------------------------------------------------------------------------------
# (b) synthetic clip


def synth_clip(kind: str, noise: float, cache: Optional[Path], progress: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (T, 480, 640, 3), truth (T, 68, 2), pose (T, 3) yaw/pitch/roll): one ICT head,
    fixed identity and appearance, 30 fps, labels = projected 3D points with the jaw on the
    visible contour (the 300W convention).

    ``kind="motion"`` (5 s): the head sways sideways and turns (yaw +-30, pitch +-10, roll +-8
    degrees, face width 120-180 px) with a fast move of 200 px in 0.5 s from 2.0 s, and the mouth
    opens and closes from 3.2 s to 4.0 s. ``kind="mouth"`` (3 s): the head stays still (yaw 10
    degrees) while the mouth opens and closes twice (1.0 s, then 0.6 s)."""
    if kind not in ("motion", "mouth"):
        raise ValueError(f"synth_clip: unknown kind {kind!r}")
    n_frames = 150 if kind == "motion" else 90
    key = f"synth_{kind}_v3_{noise:g}.npz"
    if cache is not None and (cache / key).is_file():
        d = np.load(cache / key)
        return d["frames"], d["truth"], d["pose"]
    from lightmark.synth import faces

    size = 640
    prep = faces.prepare()
    params = faces.sample_params(np.random.default_rng(3), prep.model, size)
    params["expr"] = np.zeros_like(params["expr"])
    params.update(fov_deg=30.0, focal=size / 2 / np.tan(np.deg2rad(30.0) / 2))
    jaw = prep.model.expression_index("jawOpen")
    frames, truth, pose = [], [], []
    noise_rng = np.random.default_rng(11)
    for k in _progress(range(n_frames), progress, f"render synth clip ({kind})"):
        t = k / FPS
        expr = params["expr"].copy()
        if kind == "motion":
            u = np.clip((t - 2.0) / 0.5, 0, 1)
            x = 60 * np.sin(2 * np.pi * t / 4.0) - 100 + 200 * (u * u * (3 - 2 * u))  # smoothstep
            expr[jaw] = 0.6 * np.sin(np.pi * np.clip((t - 3.2) / 0.8, 0, 1)) ** 2
            p = dict(params, expr=expr, yaw=30 * np.sin(2 * np.pi * t / 3.0),
                     pitch=10 * np.sin(2 * np.pi * t / 2.3), roll=8 * np.sin(2 * np.pi * t / 3.7),
                     face_px=150 + 30 * np.sin(2 * np.pi * t / 5.0),
                     shift=np.array([x, 20 * np.sin(2 * np.pi * t / 2.9)]))
        else:
            expr[jaw] = (0.7 * np.sin(np.pi * np.clip((t - 0.5) / 1.0, 0, 1)) ** 2
                         + 0.7 * np.sin(np.pi * np.clip((t - 2.0) / 0.6, 0, 1)) ** 2)
            p = dict(params, expr=expr, yaw=10.0, pitch=0.0, roll=0.0, face_px=170.0,
                     shift=np.array([0.0, 0.0]))
        f = faces.render_face(np.random.default_rng(5), size, None, occluders=False, params=p, seg=False)
        img = f.image[80:560].astype(np.float32)  # 640 x 480
        img += noise_rng.standard_normal(img.shape, dtype=np.float32) * noise
        frames.append(np.clip(img + 0.5, 0, 255).astype(np.uint8))
        truth.append(f.contour.astype(np.float64) - np.array([0.0, 80.0]))
        pose.append([p["yaw"], p["pitch"], p["roll"]])
    out = np.stack(frames), np.stack(truth), np.array(pose)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache / key, frames=out[0], truth=out[1], pose=out[2])
    return out


def signal_lag_ms(pred: np.ndarray, truth: np.ndarray, lo: int, hi: int) -> float:
    """Delay (ms) of a predicted signal (T, D) behind the truth over frames [lo, hi): the shift
    (0 to 10 frames, steps of 0.05, truth interpolated) that minimises the mean distance once
    each side's mean over the window is removed (a constant offset is not lag)."""
    pred = pred.reshape(len(pred), -1)
    truth = truth.reshape(len(truth), -1)
    ok = np.all(np.isfinite(pred), axis=1)
    frames = np.arange(len(truth))
    sel = ok & (frames >= lo) & (frames < hi)
    if sel.sum() < 3:
        return float("nan")
    best, best_err = 0.0, np.inf
    p = pred[sel] - pred[sel].mean(axis=0)
    for d in np.arange(0, 10.0001, 0.05):
        g = np.stack([np.interp(frames - d, frames, truth[:, j]) for j in range(truth.shape[1])], axis=1)[sel]
        err = np.linalg.norm(p - (g - g.mean(axis=0)), axis=1).mean()
        if err < best_err:
            best, best_err = d, err
    return best * 1000 / FPS


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """(T, 1): distance between the inner lips' centres (points 62 and 66)."""
    return np.linalg.norm(points[:, 62] - points[:, 66], axis=-1)[:, None]


def run_synth(methods: dict[str, Callable], clips: dict[str, tuple]) -> dict:
    out: dict[str, dict] = {}
    fast = (int(1.9 * FPS), int(2.7 * FPS))  # the fast move and a little either side
    for name, fn in methods.items():
        if "fixed" in name:
            continue  # a fixed box cannot follow a moving face
        m: dict[str, float] = {}
        if "motion" in clips:
            frames, truth, _ = clips["motion"]
            norm = float(np.median([norm_of(g) for g in truth]))
            pred = fn(list(frames), truth)
            m.update(sequence_metrics(pred, truth, norm))
            m["nme_fast"] = sequence_metrics(pred[fast[0]:fast[1]], truth[fast[0]:fast[1]], norm)["nme"]
            m["lag_ms"] = signal_lag_ms(pred.mean(axis=1), truth.mean(axis=1), 0, len(truth))
            m["lag_fast_ms"] = signal_lag_ms(pred.mean(axis=1), truth.mean(axis=1), *fast)
        if "mouth" in clips:
            frames, truth, _ = clips["mouth"]
            norm = float(np.median([norm_of(g) for g in truth]))
            pred = fn(list(frames), truth)
            mm = sequence_metrics(pred[:, 48:], truth[:, 48:], norm)
            m["mouth_nme"] = mm["nme"]
            m["mouth_lag_ms"] = signal_lag_ms(mouth_opening(pred), mouth_opening(truth), 0, len(truth))
            m["mouth_found"] = mm["found"]
        out[name] = m
    return out


def run_pose(lm: Any, clip: tuple) -> dict:
    from lightmark import head_pose
    from lightmark.tracking import FaceTracker

    frames, truth, angles = clip
    want = -np.asarray(angles, np.float64)  # the renderer's turns, in Pose_Para's sense
    shape = frames[0].shape

    def faces_of(kind: str) -> list:
        if kind == "per frame":
            return [pick_face(lm.predict_all(fr), g) for fr, g in zip(frames, truth)]
        tr = FaceTracker(lm, smooth=kind.endswith("smoothing"), fps=FPS)
        return [pick_face(tr.update(fr), g) for fr, g in zip(frames, truth)]

    out: dict[str, dict] = {}
    for kind in ("per frame", "track", "track + smoothing"):
        faces = faces_of(kind)
        for source in ("3d set (Face.pose)", "2d points"):
            got = np.array([np.full(3, np.nan) if f is None else
                            (f.pose if source.startswith("3d") else head_pose(f.points, shape, convention="2d"))
                            for f in faces])
            ok = np.isfinite(got).all(axis=1)
            err = np.abs(got[ok] - want[ok])
            steps = np.abs(np.diff(got, axis=0))
            steps = steps[np.isfinite(steps).all(axis=1)]
            out[f"{kind}, pose from the {source}"] = {
                "found": float(ok.mean()), "mae": err.mean(axis=0).tolist(), "mean": float(err.mean()),
                "step": steps.mean(axis=0).tolist()}
    return out


# ------------------------------------------------------------------------------------------------
# smoothers compared on the same raw tracks


def smoother_candidates() -> dict[str, Callable[[], Any]]:
    """name -> factory of a filter called as f(points, t, face_size). The crops never depend on the
    smoothing, so filtering the raw tracks afterwards gives what ``smooth=True`` gives."""
    from lightmark import tracking
    from lightmark.core.smoothing import LandmarkSmoother, OneEuroFilter

    def euro(mc: float, beta: float, dc: float, speed: str) -> Callable[[], Any]:
        return lambda: OneEuroFilter(mc, beta, dc, speed=speed)  # called as f(points, t, scale)

    return {
        "none (raw tracking)": lambda: (lambda p, t, s: p),
        "One Euro per point, min_cutoff 1, beta 1": euro(1.0, 1.0, 1.0, "point"),
        "One Euro per point, min_cutoff 0.2, beta 8": euro(0.2, 8.0, 1.0, "point"),
        "One Euro per point, min_cutoff 0.05, beta 4, d_cutoff 0.5": euro(0.05, 4.0, 0.5, "point"),
        "One Euro, one speed for the face (mean), min_cutoff 0.05, beta 12": euro(0.05, 12.0, 1.0, "mean"),
        "centre + shape (the tracker's default)": lambda: LandmarkSmoother(
            tracking.MIN_CUTOFF, tracking.BETA, tracking.D_CUTOFF, tracking.SHAPE_MIN_CUTOFF,
            tracking.SHAPE_BETA),
    }


def run_smoothers(lm: Any, n_photos: int, n_frames: int, noise: float, clips: dict[str, tuple],
                  progress: bool) -> dict:
    from lightmark.tracking import FaceTracker, _face_size

    def raw_track(frames, gts):
        tr = FaceTracker(lm, smooth=False, fps=FPS)
        return _stack([pick([f.points for f in tr.update(fr)], g) for fr, g in zip(frames, gts)])

    still = [(raw_track(f, g), g) for f, g in _progress(list(still_sequences(n_photos, n_frames, noise, False)),
                                                          progress, "raw tracks")]
    motion = clips["motion"][1]
    motion_raw = raw_track(list(clips["motion"][0]), motion)
    mouth = clips["mouth"][1]
    mouth_raw = raw_track(list(clips["mouth"][0]), mouth)

    def apply(factory, P):
        f = factory()
        out = []
        for k, p in enumerate(P):
            if not np.all(np.isfinite(p)):  # a frame without the face: the tracker restarts it
                f = factory()
                out.append(p)
                continue
            out.append(f(p, k / FPS, _face_size(p)))
        return np.stack(out)

    res = {}
    fast = (int(1.9 * FPS), int(2.7 * FPS))
    norm_m = float(np.median([norm_of(g) for g in motion]))
    norm_o = float(np.median([norm_of(g) for g in mouth]))
    for name, factory in smoother_candidates().items():
        st = summarise([sequence_metrics(apply(factory, P), g, norm_of(g[0])) for P, g in still])
        pm, po = apply(factory, motion_raw), apply(factory, mouth_raw)
        res[name] = {"still_nme": st["nme"], "still_jitter": st["jitter"],
                     "motion_nme": sequence_metrics(pm, motion, norm_m)["nme"],
                     "motion_nme_fast": sequence_metrics(pm[fast[0]:fast[1]], motion[fast[0]:fast[1]], norm_m)["nme"],
                     "motion_lag_ms": signal_lag_ms(pm.mean(axis=1), motion.mean(axis=1), 0, len(motion)),
                     "mouth_nme": sequence_metrics(po[:, 48:], mouth[:, 48:], norm_o)["nme"],
                     "mouth_lag_ms": signal_lag_ms(mouth_opening(po), mouth_opening(mouth), 0, len(mouth))}
    return res


# ------------------------------------------------------------------------------------------------
# (c) speed


def peer_trackers(peers: dict[str, Any]) -> dict[str, Callable[[np.ndarray], list[float]]]:
    """Per peer, a function that follows the clip's one face and returns each frame's seconds.

    MediaPipe: its face mesh in video mode (it tracks from its previous answer and runs its
    detector only when it loses the face). dlib has no tracker: its HOG detector on the first
    frame, then the shape predictor on the box of the previous frame's 68 points (the cheapest
    tracker one can build on it).
    """
    out: dict[str, Callable[[np.ndarray], list[float]]] = {}
    if "mediapipe" in peers:
        mp = peers["mediapipe"][0]

        def mediapipe_clip(frames: np.ndarray) -> list[float]:
            mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1)
            try:
                per = []
                for fr in frames:
                    t0 = time.perf_counter()
                    mesh.process(fr)
                    per.append(time.perf_counter() - t0)
                return per
            finally:
                mesh.close()
        out["mediapipe face mesh, video mode"] = mediapipe_clip
    if "dlib" in peers:
        det, sp = peers["dlib"]

        def dlib_clip(frames: np.ndarray) -> list[float]:
            import dlib

            per, rect = [], None
            for fr in frames:
                t0 = time.perf_counter()
                if rect is None:
                    found = det(fr, 0)
                    rect = found[0] if len(found) else None
                if rect is not None:
                    s = sp(fr, rect)
                    xs = [p.x for p in s.parts()]
                    ys = [p.y for p in s.parts()]
                    rect = dlib.rectangle(min(xs), min(ys), max(xs), max(ys))
                per.append(time.perf_counter() - t0)
            return per
        out["dlib shape predictor from the previous frame's points"] = dlib_clip
    return out


def run_speed(lm: Any, frames: np.ndarray, repeats: int, detect_every: int,
              peers: Optional[dict[str, Any]] = None) -> dict:
    from lightmark.tracking import FaceTracker

    res: dict[str, Any] = {"frames": len(frames), "size": f"{frames.shape[2]}x{frames.shape[1]}",
                           "detect_every": detect_every}
    configs = (("raw", False, detect_every), ("smooth", True, detect_every),
               ("smooth_detect_when_needed", True, 0))
    runs: dict[str, list[tuple[float, float, float, list[float], int]]] = {k: [] for k, _, _ in configs}
    others = peer_trackers(peers or {})
    peer_runs: dict[str, list[tuple[float, float]]] = {k: [] for k in others}
    # Round by round, every configuration once per round: on a shared machine the load comes and
    # goes, and interleaving lets it hit each configuration alike (the best round is kept).
    for _ in range(repeats):
        for key, smooth, every in configs:
            tr = FaceTracker(lm, detect_every=every, smooth=smooth, fps=FPS)
            per = []
            w0, c0 = time.perf_counter(), time.process_time()
            for fr in frames:
                d0, t0 = tr.detections, time.perf_counter()
                tr.update(fr)
                per.append((time.perf_counter() - t0, tr.detections > d0))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            runs[key].append((wall, cpu, float(np.median([t for t, det in per if not det])),
                              [t for t, det in per if det], tr.detections))
        for name, follow in others.items():
            per_peer = follow(frames)
            peer_runs[name].append((float(np.sum(per_peer)), float(np.median(per_peer[1:]))))
    for key, _, every in configs:
        r = runs[key]
        det_times = r[-1][3]
        res[key] = {"detect_every": every, "fps_wall": len(frames) / min(x[0] for x in r),
                    "fps_wall_median_round": len(frames) / float(np.median([x[0] for x in r])),
                    "fps_cpu": len(frames) / min(x[1] for x in r),
                    "ms_tracked_frame_median": 1000 * min(x[2] for x in r),
                    "ms_detection_frame_median": 1000 * float(np.median(det_times)) if det_times else None,
                    "detections": r[-1][4]}
    # The peers in the same rounds: frames/s over the clip, and the median frame after the first.
    res["peers"] = {name: {"fps_wall": len(frames) / min(x[0] for x in r),
                           "fps_wall_median_round": len(frames) / float(np.median([x[0] for x in r])),
                           "ms_frame_median": 1000 * min(x[1] for x in r)}
                    for name, r in peer_runs.items()}
    # Decoding, on its own: the clip as an mp4v file read back by OpenCV (BGR -> RGB included).
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "clip.mp4")
        w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (frames.shape[2], frames.shape[1]))
        for fr in frames:
            w.write(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
        w.release()
        best = np.inf
        for _ in range(repeats):
            cap = cv2.VideoCapture(path)
            n, t0 = 0, time.perf_counter()
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                n += 1
            best = min(best, time.perf_counter() - t0)
            cap.release()
        res["decode_fps"] = n / best
    return res


# ------------------------------------------------------------------------------------------------
# (d) quality score


def quality_crops(path: Path, step: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Crops of each labelled face (the training crop, and one shifted/scaled by up to 10 %, as a
    tracker sees), background crops from the same photo (at most 10 % of the face box inside),
    and badly shifted face crops (by 50-80 % of the crop side)."""
    from lightmark.core import geometry
    from lightmark.data.readers import open_dataset

    ds = open_dataset(path)
    rng = np.random.default_rng(seed)
    sets: dict[str, list] = {"face": [], "face, crop off by <= 10 %": [], "background": [],
                             "face, crop shifted 50-80 %": []}
    S = 128

    def crop(img, c, side):
        return geometry.warp_image(img, geometry.crop_matrix(c, side, S), S)

    for i in range(0, len(ds), step):
        s = ds[i]
        img, b = s.image, geometry.landmark_box(s.points)
        c, side = (b[:2] + b[2:]) / 2, 1.25 * float(np.max(b[2:] - b[:2]))
        sets["face"].append(crop(img, c, side))
        sets["face, crop off by <= 10 %"].append(crop(img, c + rng.uniform(-.1, .1, 2) * side,
                                                       side * rng.uniform(.9, 1.1)))
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(.5, .8) * side
        sets["face, crop shifted 50-80 %"].append(crop(img, c + d * np.array([np.cos(a), np.sin(a)]), side))
        h, w = img.shape[:2]
        for _ in range(50):
            sd = rng.uniform(0.3, 0.6) * side
            cc = rng.uniform([sd / 2, sd / 2], [w - sd / 2, h - sd / 2])
            cb = np.r_[cc - sd / 2, cc + sd / 2]
            inter = max(0, min(cb[2], b[2]) - max(cb[0], b[0])) * max(0, min(cb[3], b[3]) - max(cb[1], b[1]))
            if inter / ((b[2] - b[0]) * (b[3] - b[1])) < 0.1:
                sets["background"].append(crop(img, cc, sd))
                break
    return {k: np.stack(v) for k, v in sets.items()}


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    allv = np.r_[pos, neg]
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):  # average ranks of ties
        m = allv == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def run_quality(lm: Any) -> dict:
    from lightmark.core.quality import DEFAULT_MIN_QUALITY, SPREAD_AT_HALF, quality_from_spread, softmax_spread

    pred = lm.predictor
    out: dict[str, Any] = {"threshold_quality": DEFAULT_MIN_QUALITY, "spread_at_half": SPREAD_AT_HALF}
    for name, path, step in (("HELEN train", HELEN, 2), ("AFW", AFW, 1)):
        sets = quality_crops(path, step)
        spread = {k: np.concatenate([softmax_spread(pred.predict_crops_raw(v[i:i + 32])[1])
                                     for i in range(0, len(v), 32)]) for k, v in sets.items()}
        q = {k: quality_from_spread(v) for k, v in spread.items()}
        pos = np.r_[q["face"], q["face, crop off by <= 10 %"]]
        res: dict[str, Any] = {"n": {k: len(v) for k, v in q.items()}}
        res["false_lost_pct"] = {k: 100 * float((q[k] < DEFAULT_MIN_QUALITY).mean())
                                 for k in ("face", "face, crop off by <= 10 %")}
        for neg in ("background", "face, crop shifted 50-80 %"):
            res[f"auc vs {neg}"] = roc_auc(pos, q[neg])
            res[f"auc_spread vs {neg}"] = roc_auc(-np.r_[spread["face"], spread["face, crop off by <= 10 %"]],
                                                  -spread[neg])
            res[f"accepted_pct {neg}"] = 100 * float((q[neg] >= DEFAULT_MIN_QUALITY).mean())
        # Youden's J on the spread: the threshold that best separates these crops.
        sp_pos = np.r_[spread["face"], spread["face, crop off by <= 10 %"]]
        sp_neg = np.r_[spread["background"], spread["face, crop shifted 50-80 %"]]
        ths = np.linspace(0.12, 0.30, 361)
        j = [(sp_pos < t).mean() - (sp_neg < t).mean() for t in ths]
        res["youden_spread"] = float(ths[int(np.argmax(j))])
        res["spread_percentiles_1_50_99"] = {k: [round(float(x), 4) for x in np.percentile(v, [1, 50, 99])]
                                             for k, v in spread.items()}
        out[name] = res
    return out


# ------------------------------------------------------------------------------------------------
# (e) the filter alone


def run_filter() -> dict:
    """The tracker's smoother (``LandmarkSmoother`` with the tracker's defaults) on synthetic
    point sets of face size 1 at 30 Hz: noise left on a still face, lag on ramps."""
    from lightmark import tracking
    from lightmark.core.smoothing import LandmarkSmoother, OneEuroFilter

    args = (tracking.MIN_CUTOFF, tracking.BETA, tracking.D_CUTOFF, tracking.SHAPE_MIN_CUTOFF,
            tracking.SHAPE_BETA)
    rng = np.random.default_rng(0)
    T = 300
    t = np.arange(T) / FPS
    base = rng.uniform(-0.5, 0.5, size=(68, 2))
    res: dict[str, Any] = {"params": dict(zip(("min_cutoff", "beta", "d_cutoff", "shape_min_cutoff",
                                               "shape_beta"), args))}

    def run(x: np.ndarray) -> np.ndarray:
        f = LandmarkSmoother(*args)
        return np.stack([f(x[k], t[k], 1.0) for k in range(T)])

    # Noise of 0.3 % of the face size: independent per point, or moving the whole face.
    own = rng.standard_normal((T, 68, 2)) * 0.003
    common = np.repeat(rng.standard_normal((T, 1, 2)) * 0.003, 68, axis=1)
    for name, n in (("independent", own), ("whole face", common)):
        y = run(base + n) - base
        res[f"still_std_ratio {name}"] = float(y[60:].std() / n[60:].std())
    ramps = {}
    for speed in (0.1, 0.25, 0.5, 1.0, 2.0, 4.0):  # face sizes per second
        move = np.zeros((T, 68, 2))
        move[:, :, 0] = (speed * t)[:, None]
        y = run(base + move + own)
        lag_move = float(np.mean((base + move)[150:, :, 0] - y[150:, :, 0]))
        # Expression-like: the lower half of the points moves down, the rest stays.
        deform = np.zeros((T, 68, 2))
        low = base[:, 1] > 0
        deform[:, low, 1] = (speed * t)[:, None]
        y = run(base + deform + own)
        err = (base + deform)[150:] - y[150:]
        lag_def = float(np.mean(err[:, low, 1]))
        ramps[speed] = {"translation_lag_ms": 1000 * lag_move / speed,
                        "translation_lag_pct": 100 * lag_move,
                        "translation_predicted_ms": 1000 * OneEuroFilter(*args[:3]).steady_lag(speed, FPS),
                        "deformation_lag_ms": 1000 * lag_def / speed,
                        "deformation_lag_pct": 100 * lag_def}
    res["ramps"] = ramps
    return res


# ------------------------------------------------------------------------------------------------
# report


def _p(x: Optional[float], nd: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{nd}f}"


def markdown(res: dict) -> str:
    L: list[str] = [f"Command: `{res['command']}`  ", f"Machine: {res['machine']}; load: {res['load']}\n"]
    for note in res.get("peers", {}).values():
        L.append(f"- {note}")
    L.append("")
    for key, title in (("still", "Still photos, fresh noise"), ("still_shift", "Still photos, fresh noise + sub-pixel shifts")):
        if key not in res:
            continue
        c = res["config"]
        L.append(f"### {title} ({c['photos']} AFW photos x {c['frames']} frames, noise sigma {c['noise']:g})\n")
        L.append("| method | found % | NME % | jitter % | error jitter % |")
        L.append("|---|---|---|---|---|")
        for name, m in res[key].items():
            L.append(f"| {name} | {100 * m['found']:.1f} | {_p(m['nme'])} | {_p(m['jitter'], 3)} | "
                     f"{_p(m['err_jitter'], 3)} |")
        L.append("")
    if "synth" in res:
        L.append(f"### Synthetic clips (640x480, 30 fps, noise sigma {res['config']['noise']:g}; "
                 "exact labels from lightmark.synth)\n")
        L.append("Moving head (150 frames): NME, jitter of the error, error jitter, NME during the fast "
                 "move (1.9-2.7 s), lag of the face centre over the whole clip and in the fast move. "
                 "Still head, mouth opening and closing (90 frames): NME of the 20 mouth points, lag of "
                 "the mouth opening (inner lip centres).\n")
        L.append("| method | NME % | jitter of error % | error jitter % | NME % fast move | lag ms | "
                 "lag ms fast move | mouth NME % | mouth lag ms |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for name, m in res["synth"].items():
            ms = lambda v: "n/a" if v is None or not np.isfinite(v) else f"{v:.0f}"  # noqa: E731
            L.append(f"| {name} | {_p(m.get('nme'))} | {_p(m.get('jitter'), 3)} | {_p(m.get('err_jitter'), 3)} | "
                     f"{_p(m.get('nme_fast'))} | {ms(m.get('lag_ms'))} | {ms(m.get('lag_fast_ms'))} | "
                     f"{_p(m.get('mouth_nme'))} | {ms(m.get('mouth_lag_ms'))} |")
        L.append("")
    if "pose" in res:
        L.append("### Head pose along the moving synthetic clip (150 frames; the renderer's angles, negated)\n")
        L.append("| method | found % | MAE yaw / pitch / roll deg | MAE mean deg | mean frame-to-frame change "
                 "yaw / pitch / roll deg |")
        L.append("|---|---|---|---|---|")
        for name, m in res["pose"].items():
            L.append(f"| {name} | {100 * m['found']:.1f} | {' / '.join(f'{v:.2f}' for v in m['mae'])} | "
                     f"{m['mean']:.2f} | {' / '.join(f'{v:.3f}' for v in m['step'])} |")
        L.append("")
    if "smoothers" in res:
        c = res["config"]
        L.append(f"### Smoothers on the same raw tracks (still: {c['photos']} AFW photos x {c['frames']} "
                 f"frames, noise sigma {c['noise']:g}; the two synthetic clips)\n")
        L.append("| smoother | still NME % | still jitter % | moving NME % | fast move NME % | moving lag ms | "
                 "mouth NME % | mouth lag ms |")
        L.append("|---|---|---|---|---|---|---|---|")
        for name, m in res["smoothers"].items():
            L.append(f"| {name} | {_p(m['still_nme'])} | {_p(m['still_jitter'], 3)} | {_p(m['motion_nme'])} | "
                     f"{_p(m['motion_nme_fast'])} | {m['motion_lag_ms']:.0f} | {_p(m['mouth_nme'])} | "
                     f"{m['mouth_lag_ms']:.0f} |")
        L.append("")
    if "speed" in res:
        s = res["speed"]
        L.append(f"### Speed: one face, {s['size']}, one thread, {s['frames']} frames, "
                 f"detect_every={s['detect_every']} (video decoding excluded)\n")
        L.append("| | frames/s, all frames (wall, best round) | (wall, median round) | frames/s, all "
                 "frames (process CPU time) | ms, median tracked frame | frames/s, tracked frames "
                 "(1000 / median) | ms, median detection frame |")
        L.append("|---|---|---|---|---|---|---|")
        for key, label in (("raw", "track"), ("smooth", "track + smoothing"),
                           ("smooth_detect_when_needed", "track + smoothing, detect_every=0 (first frame "
                                                         "and when lost)")):
            m = s[key]
            det = "n/a" if m["ms_detection_frame_median"] is None else f"{m['ms_detection_frame_median']:.2f}"
            med = m.get("fps_wall_median_round")
            L.append(f"| {label} | {m['fps_wall']:.0f} | {'n/a' if med is None else f'{med:.0f}'} | {m['fps_cpu']:.0f} | "
                     f"{m['ms_tracked_frame_median']:.2f} | {1000 / m['ms_tracked_frame_median']:.0f} | {det} |")
        for name, m in s.get("peers", {}).items():
            L.append(f"| {name} | {m['fps_wall']:.0f} | {m['fps_wall_median_round']:.0f} | | "
                     f"{m['ms_frame_median']:.2f} | {1000 / m['ms_frame_median']:.0f} | |")
        if s.get("peers"):
            ours = 1000 / s["smooth"]["ms_tracked_frame_median"]
            L.append("\nTracked frames with smoothing against each peer's median frame, same rounds: "
                     + "; ".join(f"{ours * m['ms_frame_median'] / 1000:.2f}x {name}"
                                 for name, m in s["peers"].items()) + ".")
        L.append(f"\nDecoding the same clip (mp4v, OpenCV, BGR->RGB), on its own: "
                 f"{s['decode_fps']:.0f} frames/s.\n")
    if "quality" in res:
        q = res["quality"]
        L.append(f"### Quality score (threshold: quality {q['threshold_quality']}, "
                 f"i.e. spread {q['spread_at_half']})\n")
        L.append("| data | faces (+ off by <= 10 %) | AUC vs background | AUC vs shifted 50-80 % | "
                 "faces called lost % (exact / off <= 10 %) | background accepted % | shifted accepted % | "
                 "Youden spread |")
        L.append("|---|---|---|---|---|---|---|---|")
        for name in ("HELEN train", "AFW"):
            r = q[name]
            n = r["n"]
            L.append(f"| {name} | {n['face']} + {n['face, crop off by <= 10 %']} | "
                     f"{r['auc vs background']:.4f} | {r['auc vs face, crop shifted 50-80 %']:.4f} | "
                     f"{r['false_lost_pct']['face']:.2f} / {r['false_lost_pct']['face, crop off by <= 10 %']:.2f} | "
                     f"{r['accepted_pct background']:.2f} | {r['accepted_pct face, crop shifted 50-80 %']:.2f} | "
                     f"{r['youden_spread']:.3f} |")
        L.append("")
    if "filter" in res:
        f = res["filter"]
        pr = ", ".join(f"{k} {v:g}" for k, v in f["params"].items())
        L.append(f"### The tracker's smoother alone ({pr}; 30 Hz; face size 1)\n")
        L.append(f"Still face, noise of 0.3 % of the face size: output std / input std = "
                 f"{f['still_std_ratio independent']:.3f} for noise independent per point, "
                 f"{f['still_std_ratio whole face']:.3f} for noise moving the whole face.\n")
        L.append("| ramp speed (face sizes/s) | face moving: lag ms | (steady_lag of the centre filter) | "
                 "lag, % of face size | lower half deforming: lag ms | lag, % of face size |")
        L.append("|---|---|---|---|---|---|")
        for sp, r in f["ramps"].items():
            L.append(f"| {sp} | {r['translation_lag_ms']:.1f} | {r['translation_predicted_ms']:.1f} | "
                     f"{r['translation_lag_pct']:.2f} | {r['deformation_lag_ms']:.1f} | "
                     f"{r['deformation_lag_pct']:.2f} |")
        L.append("")
    return "\n".join(L)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else round(float(x), 6)
    if isinstance(x, np.integer):
        return int(x)
    return x


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/video.py", description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--noise", type=float, default=3.0,
                    help="pixel noise sigma, grey levels (3 reproduces the issue's per-frame and "
                         "fixed-box jitter)")
    ap.add_argument("--repeats", type=int, default=3, help="speed: rounds (each configuration once per round), the best kept")
    ap.add_argument("--detect-every", type=int, default=30, help="speed: the tracker's detector period")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "lightmark_video_bench"),
                    help="folder for the rendered synth clip ('' for none)")
    ap.add_argument("--no-peers", action="store_true", help="skip dlib and MediaPipe")
    ap.add_argument("--out", help="write the Markdown here (and the numbers beside it as .json)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        raise BenchmarkError(f"--only: unknown section(s) {bad}; choose from {SECTIONS}")
    if any(s in only for s in ("still", "quality")) and not AFW.is_dir():
        raise BenchmarkError(f"{AFW}: AFW not found (needed by 'still' and 'quality')")

    from lightmark import Landmarker
    from lightmark import tracking

    progress = not args.quiet
    lm = Landmarker(threads=1)
    t_start, load0 = time.perf_counter(), os.getloadavg()
    res: dict[str, Any] = {"command": f"PYTHONPATH=src OMP_NUM_THREADS=1 {sys.executable} benchmarks/video.py "
                                      + " ".join(argv if argv is not None else sys.argv[1:]),
                           "config": {"photos": args.photos, "frames": args.frames, "noise": args.noise,
                                      "tracker": {"min_cutoff": tracking.MIN_CUTOFF, "beta": tracking.BETA,
                                                  "d_cutoff": tracking.D_CUTOFF,
                                                  "shape_min_cutoff": tracking.SHAPE_MIN_CUTOFF,
                                                  "shape_beta": tracking.SHAPE_BETA,
                                                  "crop_deadband": tracking.CROP_DEADBAND}}}
    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    res["machine"] = f"{cpu}, {os.cpu_count()} logical CPUs"
    peers, notes = load_peers(progress, args.no_peers or not any(s in only for s in ("still", "synth", "speed")))
    res["peers"] = notes
    methods = make_methods(lm, peers)
    if "still" in only:
        res["still"] = run_still(methods, args.photos, args.frames, args.noise, False, progress)
        res["still_shift"] = run_still(methods, args.photos, args.frames, args.noise, True, progress)
    clips = {}
    cache = Path(args.cache) if args.cache else None
    if any(s in only for s in ("synth", "pose", "speed", "smoothers")):
        clips["motion"] = synth_clip("motion", args.noise, cache, progress)
    if any(s in only for s in ("synth", "smoothers")):
        clips["mouth"] = synth_clip("mouth", args.noise, cache, progress)
    if "synth" in only:
        res["synth"] = run_synth(methods, clips)
    if "pose" in only:
        res["pose"] = run_pose(lm, clips["motion"])
    if "smoothers" in only:
        res["smoothers"] = run_smoothers(lm, args.photos, args.frames, args.noise, clips, progress)
    if "speed" in only:
        res["speed"] = run_speed(lm, clips["motion"][0], args.repeats, args.detect_every, peers)
    if "quality" in only:
        res["quality"] = run_quality(lm)
    if "filter" in only:
        res["filter"] = run_filter()
    res["load"] = (f"load average {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
                   f"{time.perf_counter() - t_start:.0f} s")
    text = markdown(res)
    print(text)
    if args.out:
        from lightmark.core.files import write_text

        write_text(args.out, text + "\n")
        write_text(Path(args.out).with_suffix(".json"), json.dumps(_json_safe(res), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
