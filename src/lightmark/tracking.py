"""Face landmark tracking over video frames.

    tracker = FaceTracker(Landmarker())          # or Landmarker().track(frames)
    for frame in frames:                          # RGB uint8 (H, W, 3)
        faces = tracker.update(frame)             # list of Face with track_id and quality

Per frame:

1. **Track.** Each live face is cropped from its own landmarks of the previous frame (their tight
   box -> the training crop, ``crop_scale`` x the larger side), moved by the face's recent
   velocity; all faces go through the model in one batch, one pass, no refinement. The model's
   quality score (:mod:`lightmark.core.quality`) below ``min_quality`` means the face is lost. Two
   tracks that end up on the same face (their crops overlap by IoU > ``DUPLICATE_IOU``) are one
   too many: the one that moved less since the last frame keeps the face (a track that jumped
   onto a neighbour is the impostor).
2. **Detect** on the first frame, every ``detect_every`` frames, on a frame where a face was
   lost, every frame while there is no face, and every ``redetect_every`` frames while a lost
   face is remembered. Detections are matched to tracks by the IoU of their crops (the detection's
   crop from the fitted box mapping); a match only confirms the track (its points stay the
   tracked ones, which come from a better crop than the detector's). An unmatched detection
   starts a face: three passes (the detector's crop, its landmarks' crop, and once more so the
   first frame is cut like the next ones), kept if its quality passes. A new face where a lost
   one was expected (its last crop moved on by its velocity) gets the lost face's id back, so
   ids survive a short occlusion such as two faces crossing.
3. **Smooth** (``smooth=True``) each face's points: One Euro filters on the face's centre and on
   its shape (:class:`lightmark.core.smoothing.LandmarkSmoother`), speeds in face sizes per second.

The crop is cut from the raw (unsmoothed) points and stays put while the face moves less than
``crop_deadband`` of its size: most of the model's jitter comes from its crop moving, so a still
face cut the same way every frame jitters about as little as with a fixed box. Smoothing does not
feed back into the crops. Measurements (jitter, lag, frames/s) are in docs/VIDEO.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from lightmark.core import geometry
from lightmark.core.types import Face
from lightmark.core.smoothing import LandmarkSmoother
from lightmark.core.imaging import to_rgb8
from lightmark.core.quality import DEFAULT_MIN_QUALITY
from lightmark.core.errors import TrackingError

#: Crops of two tracks overlapping more than this (IoU) are taken to be on the same face.
DUPLICATE_IOU = 0.5
#: Smoothing defaults (Hz; betas per face size per second), for the face's centre and for its
#: shape (``core.smoothing.LandmarkSmoother``); chosen on the benchmarks in docs/VIDEO.md.
MIN_CUTOFF = 0.05
BETA = 40.0
D_CUTOFF = 1.0
SHAPE_MIN_CUTOFF = 0.02
SHAPE_BETA = 8.0
#: The crop stays where it was while the face's landmark box moved (centre, side) by less than
#: this fraction of its side: a still face is then cut the same way frame after frame.
CROP_DEADBAND = 0.06
#: Weight of the newest frame-to-frame motion in the velocity estimate.
VELOCITY_GAIN = 0.5




@dataclass
class _Track:
    id: int
    points: np.ndarray  # float64 (68, 2): the model's answer on the latest frame
    shown: np.ndarray  # float64 (68, 2): what is reported (smoothed or raw)
    score: float  # detector score of the detection that last matched this face
    quality: Optional[float]
    velocity: np.ndarray  # (2,) pixels per frame, of the landmark box centre
    last_frame: int
    filter: Optional[LandmarkSmoother]
    crop: Optional[np.ndarray] = None  # the box the last crop was cut from
    box: Optional[np.ndarray] = None  # _box(points), kept beside them
    points_3d: Optional[np.ndarray] = None  # float64 (68, 2): the 3d set of the same pass, if any

    def __post_init__(self) -> None:
        if self.box is None:
            self.box = _box(self.points)

    def crop_square(self, predict: bool = True, deadband: float = 0.0) -> np.ndarray:
        """x1, y1, x2, y2 of the box the next crop is cut from (before the crop scale)."""
        # Plain floats: this runs per face and frame, and numpy's per-call cost on four numbers
        # was most of its time (the same float64 operations, so the same results).
        x0, y0, x1, y1 = self.box.tolist()
        if predict:
            vx, vy = self.velocity.tolist()
            x0, y0, x1, y1 = x0 + vx, y0 + vy, x1 + vx, y1 + vy
        if self.crop is not None and deadband > 0:
            c0, c1, c2, c3 = self.crop.tolist()
            side = max(x1 - x0, y1 - y0)
            old = max(c2 - c0, c3 - c1)
            moved = max(abs((x0 + x1) - (c0 + c2)), abs((y0 + y1) - (c1 + c3))) / 2
            if moved < deadband * side and abs(side / old - 1) < deadband:
                return self.crop
        self.crop = np.array([x0, y0, x1, y1])
        return self.crop


def _square(box: np.ndarray, scale: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    c, side = geometry.square_from_box(box, scale, shift)
    return np.concatenate([c - side / 2, c + side / 2])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes (N, 4) and (M, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def _greedy_match(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taken best IoU first, each row and column at most once."""
    pairs = []
    if iou.size == 0:
        return pairs
    used_r, used_c = set(), set()
    for flat in np.argsort(-iou, axis=None):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < min_iou:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


def _box(points: np.ndarray) -> np.ndarray:
    """Tight box of the points, at least 2 px a side (a collapsed answer cannot make an empty box)."""
    x0, y0, x1, y1 = geometry.landmark_box(points).tolist()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = max((x1 - x0) / 2, 1.0), max((y1 - y0) / 2, 1.0)
    return np.array([cx - hx, cy - hy, cx + hx, cy + hy])


def _face_size(points: np.ndarray) -> float:
    x0, y0, x1, y1 = geometry.landmark_box(points).tolist()
    return math.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0))


class FaceTracker:
    """Tracks faces over frames with one :class:`~lightmark.api.Landmarker` (its model and detector).

    ``detect_every``: detector period in frames (``0``: only when needed). ``smooth``: One Euro
    filters on the face's centre (``min_cutoff`` Hz, ``beta`` per face size per second,
    ``d_cutoff`` Hz) and on its shape (``shape_min_cutoff``, ``shape_beta``). ``fps``: frame
    rate for frames given without a time. ``min_quality``: below it a face is lost.
    ``max_faces``: most faces tracked at once (best detector score first). ``match_iou``: least
    crop IoU for a detection to match a track. ``keep_lost``: frames a lost face's id is kept for
    re-finding; ``redetect_every``: detector period meanwhile. ``predict_motion``: move each crop
    by the face's velocity. ``crop_deadband``: keep the crop while the face moved less than this
    fraction of its size. ``convention``: the landmark set tracked (``"2d"``, or ``"3d"`` for
    models that have it: the better input for ``Face.pose``).
    """

    def __init__(self, landmarker: Any, detect_every: int = 30, smooth: bool = True,
                 fps: float = 30.0, min_quality: float = DEFAULT_MIN_QUALITY,
                 max_faces: Optional[int] = None, min_cutoff: float = MIN_CUTOFF, beta: float = BETA,
                 d_cutoff: float = D_CUTOFF, shape_min_cutoff: float = SHAPE_MIN_CUTOFF,
                 shape_beta: float = SHAPE_BETA, match_iou: float = 0.3, keep_lost: int = 30,
                 redetect_every: int = 3, predict_motion: bool = True,
                 crop_deadband: float = CROP_DEADBAND, convention: str = "2d") -> None:
        def whole(name: str, v: Any, lo: int) -> int:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise TrackingError(f"{name} must be an integer >= {lo}, got {v!r}")
            return int(v)

        self.landmarker = landmarker
        if convention not in landmarker.conventions:
            raise TrackingError(f"convention {convention!r}: this model has "
                                f"{', '.join(landmarker.conventions)}")
        self.convention = convention
        # A model with a 3d set gives it from the same pass: the faces carry it as points_3d
        # (smoothed by the 2d points' correction) and their pose is fitted to it.
        self._sets = (convention,) + (("3d",) if convention != "3d" and "3d" in landmarker.conventions else ())
        self.detect_every = whole("detect_every", detect_every, 0)
        self.keep_lost = whole("keep_lost", keep_lost, 0)
        self.redetect_every = whole("redetect_every", redetect_every, 1)
        self.max_faces = None if max_faces is None else whole("max_faces", max_faces, 1)
        if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
            raise TrackingError(f"fps must be a positive number, got {fps!r}")
        if not 0.0 <= float(min_quality) < 1.0:
            raise TrackingError(f"min_quality must be in [0, 1), got {min_quality!r}")
        if not 0.0 < float(match_iou) <= 1.0:
            raise TrackingError(f"match_iou must be in (0, 1], got {match_iou!r}")
        self.fps = float(fps)
        self.min_quality = float(min_quality)
        self.match_iou = float(match_iou)
        self.smooth = bool(smooth)
        self.predict_motion = bool(predict_motion)
        self.crop_deadband = float(crop_deadband)
        # Built once to check the parameters now rather than at the first face.
        self._filter_args = (float(min_cutoff), float(beta), float(d_cutoff), float(shape_min_cutoff),
                             float(shape_beta))
        LandmarkSmoother(*self._filter_args)
        self.reset()

    def reset(self) -> None:
        """Forget all faces (e.g. at a cut); the next frame is a detection frame."""
        self._tracks: list[_Track] = []
        self._lost: list[_Track] = []
        self._next_id = 0
        self._frame = 0
        self._last_detect: Optional[int] = None
        self._last_t: Optional[float] = None
        #: Frames on which the detector ran (for statistics and tests).
        self.detections = 0

    @property
    def frame_index(self) -> int:
        """Index of the next frame :meth:`update` will see."""
        return self._frame

    def run(self, frames: Iterable[Any], timestamps: Optional[Iterable[float]] = None
            ) -> Iterator[list[Face]]:
        """:meth:`update` over ``frames``, yielding each frame's faces."""
        times = iter(timestamps) if timestamps is not None else None
        for i, frame in enumerate(frames):
            t = None
            if times is not None:
                try:
                    t = next(times)
                except StopIteration:
                    raise TrackingError(f"timestamps ran out at frame {i}: give one per frame") from None
            yield self.update(frame, t)

    # --------------------------------------------------------------------------------------------

    def update(self, frame: Any, t: Optional[float] = None) -> list[Face]:
        """Faces in the next frame (RGB uint8 (H, W, 3)) taken at ``t`` seconds (default:
        frame index / fps). Faces are listed by track id."""
        k = self._frame
        img = to_rgb8(frame, f"frame {k}")
        t = k / self.fps if t is None else float(t)
        if not np.isfinite(t) or (self._last_t is not None and t <= self._last_t):
            raise TrackingError(f"frame {k}: time {t} must be finite and after the previous "
                                f"frame's {self._last_t}")
        lost_now = self._track_step(img, k)
        self._lost = [tr for tr in self._lost if k - tr.last_frame <= self.keep_lost]
        if self._needs_detection(k, lost_now):
            self._detect_step(img, k)
        faces = []
        for tr in sorted(self._tracks, key=lambda x: x.id):
            if tr.filter is not None:
                tr.shown = tr.filter(tr.points, t, scale=_face_size(tr.points))
            # The 3d set comes from the same crop and pass, so it shares the 2d set's noise: it
            # gets the same per-point correction the filter made (one filter, no second lag).
            shown_3d = None if tr.points_3d is None else (tr.points_3d + (tr.shown - tr.points)).astype(np.float32)
            faces.append(Face(box=geometry.landmark_box(tr.shown).astype(np.float32),
                              score=tr.score, points=tr.shown.astype(np.float32), track_id=tr.id,
                              convention=self.convention, quality=tr.quality, points_3d=shown_3d))
        self._frame += 1
        self._last_t = t
        return faces

    def _needs_detection(self, k: int, lost_now: list[_Track]) -> bool:
        if self._last_detect is None or not self._tracks or lost_now:
            return True
        since = k - self._last_detect
        if self.detect_every and since >= self.detect_every:
            return True
        return bool(self._lost) and since >= self.redetect_every

    # --------------------------------------------------------------------------------------------

    def _model(self, img: np.ndarray, squares: np.ndarray, scale: float, shift: tuple[float, float]
               ) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """Points (N, 68, 2) in image pixels, the 3d set's (or None) and quality (N,) (or None)
        for crops of boxes."""
        lm = self.landmarker
        crops, mats = geometry.crops_from_boxes(img, squares, lm.input_size, scale, shift)
        pred = lm.predictor
        if hasattr(pred, "predict_crops_quality"):  # one pass for the points and the quality
            sets, q = pred.predict_crops_quality(crops, self._sets)
        elif hasattr(pred, "predict_crops_sets"):  # no quality: the detector decides when a face is lost
            sets, q = pred.predict_crops_sets(crops, self._sets), None
        else:
            sets, q = {self.convention: pred.predict_crops(crops)}, None
        main = sets[self.convention]
        other = sets.get("3d") if self.convention != "3d" else None
        if other is None:
            return geometry.points_to_image(main, mats).astype(np.float64), None, q
        # Both sets through the same matrices in one call (the mapping is per point).
        both = geometry.points_to_image(np.concatenate([main, other], axis=1), mats).astype(np.float64)
        k = main.shape[1]
        return both[:, :k], both[:, k:], q

    def _track_step(self, img: np.ndarray, k: int) -> list[_Track]:
        """One pass over the live faces; returns the faces lost on this frame."""
        if not self._tracks:
            return []
        boxes = np.stack([tr.crop_square(self.predict_motion, self.crop_deadband) for tr in self._tracks])
        pts, pts3, q = self._model(img, boxes, self.landmarker.crop_scale, (0.0, 0.0))
        keep, lost = [], []
        new_3d = {}
        for i, tr in enumerate(self._tracks):
            qi = None if q is None else float(q[i])
            if pts3 is not None:
                new_3d[tr.id] = pts3[i]
            (lost if qi is not None and qi < self.min_quality else keep).append((tr, pts[i], qi))
        keep, dup = self._drop_duplicates(keep)
        for tr, p, qi in keep:
            old_c, new_c = tr.box, _box(p)
            move = ((new_c[:2] + new_c[2:]) - (old_c[:2] + old_c[2:])) / 2
            tr.velocity = VELOCITY_GAIN * move + (1 - VELOCITY_GAIN) * tr.velocity
            tr.points, tr.box, tr.quality, tr.last_frame = p, new_c, qi, k
            tr.points_3d = new_3d.get(tr.id)
            if tr.filter is None:
                tr.shown = p
        lost_tracks = [tr for tr, _, _ in lost] + dup
        self._tracks = [tr for tr, _, _ in keep]
        self._lost.extend(lost_tracks)  # as they were on their last good frame
        return lost_tracks

    def _drop_duplicates(self, items: list[tuple[_Track, np.ndarray, Optional[float]]]
                         ) -> tuple[list[tuple[_Track, np.ndarray, Optional[float]]], list[_Track]]:
        if len(items) < 2:
            return items, []
        squares = np.stack([_square(_box(p), 1.0) for _, p, _ in items])
        iou = _iou(squares, squares)
        # Motion since the last frame, in face sizes: the continuous track keeps the face.
        moved = [np.abs(p - tr.points).mean() / _face_size(tr.points) for tr, p, _ in items]
        drop: set[int] = set()
        order = sorted(range(len(items)), key=lambda i: (moved[i], items[i][0].id))
        for a_pos, i in enumerate(order):
            if i in drop:
                continue
            for j in order[a_pos + 1:]:
                if j not in drop and iou[i, j] > DUPLICATE_IOU:
                    drop.add(j)
        return ([it for i, it in enumerate(items) if i not in drop],
                [items[i][0] for i in sorted(drop)])

    def _detect_step(self, img: np.ndarray, k: int) -> None:
        lm = self.landmarker
        self._last_detect = k
        self.detections += 1
        dets = lm.detect(img)
        if self.max_faces is not None:
            dets = dets[: max(self.max_faces * 2, self.max_faces + 2)]  # best first; spares for misses
        scale, shift = lm.face_box_mapping()
        det_sq = np.stack([_square(d[:4], scale, shift) for d in dets]) if len(dets) else np.zeros((0, 4))
        lm_scale = lm.crop_scale
        tr_sq = np.stack([_square(tr.box, lm_scale) for tr in self._tracks]) \
            if self._tracks else np.zeros((0, 4))
        matched_t, matched_d = set(), set()
        for ti, di in _greedy_match(_iou(tr_sq, det_sq), self.match_iou):
            self._tracks[ti].score = float(dets[di, 4])
            matched_t.add(ti)
            matched_d.add(di)
        # Without a quality score only the detector can tell that a face is gone.
        gone = [tr for i, tr in enumerate(self._tracks) if i not in matched_t and tr.quality is None]
        if gone:
            self._tracks = [tr for tr in self._tracks if tr not in gone]
            self._lost.extend(gone)
        new = [i for i in range(len(dets)) if i not in matched_d]
        if not new:
            return
        # New faces: the detector's crop, then the crop of the landmarks found there.
        p1, _, _ = self._model(img, dets[new, :4].astype(np.float64), scale, shift)
        boxes2 = np.stack([_box(p) for p in p1])
        p2, _, _ = self._model(img, boxes2, lm_scale, (0.0, 0.0))
        # A third pass, cut the way the following frames will be, so the first frame's answer
        # comes from the same crop as the next ones (the crop is kept within the dead band):
        # otherwise the step from the detection's crop to the tracking crop shows as jitter.
        boxes3 = np.stack([_box(p) for p in p2])
        pts, pts3, q = self._model(img, boxes3, lm_scale, (0.0, 0.0))
        cands = [(float(dets[d, 4]), pts[i], None if q is None else float(q[i]), boxes3[i],
                  None if pts3 is None else pts3[i]) for i, d in enumerate(new)]
        cands = [c for c in cands if c[2] is None or c[2] >= self.min_quality]
        for score, p, qi, crop, p3 in sorted(cands, key=lambda c: -c[0]):
            if self.max_faces is not None and len(self._tracks) >= self.max_faces:
                break
            sq = _square(_box(p), lm_scale)
            live = np.stack([_square(tr.box, lm_scale) for tr in self._tracks]) \
                if self._tracks else np.zeros((0, 4))
            if len(live) and _iou(sq, live).max() > DUPLICATE_IOU:
                continue  # a second detection of a face already tracked
            self._tracks.append(self._start(p, score, qi, k, sq))
            self._tracks[-1].crop = crop
            self._tracks[-1].points_3d = p3

    def _start(self, points: np.ndarray, score: float, quality: Optional[float], k: int,
               square: np.ndarray) -> _Track:
        """A new face, with a lost face's id if it appears where that one was expected."""
        tid = None
        if self._lost:
            expected = []
            for tr in self._lost:
                gap = k - tr.last_frame
                b = tr.box + np.concatenate([tr.velocity, tr.velocity]) * gap
                expected.append(_square(b, self.landmarker.crop_scale))
            iou = _iou(square, np.stack(expected))[0]
            j = int(np.argmax(iou))
            if iou[j] >= self.match_iou:
                tid = self._lost.pop(j).id
        if tid is None:
            tid = self._next_id
            self._next_id += 1
        filt = LandmarkSmoother(*self._filter_args) if self.smooth else None
        return _Track(id=tid, points=points, shown=points, score=score, quality=quality,
                      velocity=np.zeros(2), last_frame=k, filter=filt)
