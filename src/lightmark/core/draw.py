"""Drawing landmarks and boxes on a copy of an image (OpenCV; no torch)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from lightmark.core.imaging import ImageLike, as_image

# Polylines of the 68-point iBUG layout: (first, last, closed).
CONTOURS: tuple[tuple[int, int, bool], ...] = (
    (0, 16, False),  # jaw
    (17, 21, False), (22, 26, False),  # brows
    (27, 30, False), (31, 35, False),  # nose bridge, nostrils
    (36, 41, True), (42, 47, True),  # eyes
    (48, 59, True), (60, 67, True),  # outer and inner lips
)

_SHIFT = 4  # OpenCV fixed-point bits: points are drawn at 1/16 pixel, not rounded to whole pixels


def _as_point_sets(faces_or_points: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """-> (list of (K, 2) point arrays, list of boxes taken from Face objects)."""
    if hasattr(faces_or_points, "points"):  # one Face
        faces_or_points = [faces_or_points]
    if isinstance(faces_or_points, (list, tuple)) and faces_or_points and hasattr(faces_or_points[0], "points"):
        pts = [np.asarray(f.points, dtype=np.float64) for f in faces_or_points]
        boxes = [np.asarray(f.box, dtype=np.float64)[:4] for f in faces_or_points if getattr(f, "box", None) is not None]
        return pts, boxes
    if isinstance(faces_or_points, (list, tuple)):
        arrs = [np.asarray(p, dtype=np.float64) for p in faces_or_points]
        if arrs and all(a.ndim == 2 and a.shape[-1] == 2 for a in arrs):
            return arrs, []
        if not arrs:
            return [], []
        faces_or_points = np.asarray(faces_or_points, dtype=np.float64)
    a = np.asarray(faces_or_points, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 2:
        return [a], []
    if a.ndim == 3 and a.shape[2] == 2:
        return list(a), []
    raise ValueError(f"draw_landmarks: expected Face objects, (K, 2) or (N, K, 2) points; got shape {a.shape}")


def draw_landmarks(image: ImageLike, faces_or_points: Any, boxes: Optional[Sequence[Sequence[float]]] = None,
                   color: tuple[int, int, int] = (0, 255, 0), box_color: tuple[int, int, int] = (255, 64, 0),
                   lines: bool = True) -> np.ndarray:
    """An annotated uint8 RGB copy of ``image`` (array or path); the input is never modified.

    ``faces_or_points``: a ``Face`` / list of ``Face`` (their boxes are drawn too), or points
    ``(68, 2)`` / ``(N, 68, 2)`` / a list of ``(K, 2)``. ``boxes``: extra x1, y1, x2, y2[, score]
    rows to draw. Dot radius and line width follow each face's size, so a small face in a big photo
    stays readable and a close-up is not smothered. Non-68-point sets get dots only.
    """
    import cv2

    out = as_image(image).copy()
    point_sets, face_boxes = _as_point_sets(faces_or_points)
    all_boxes = list(face_boxes)
    if boxes is not None:
        b = np.asarray(boxes, dtype=np.float64)
        if b.size:
            b = b.reshape(-1, b.shape[-1])
            if b.shape[1] not in (4, 5):
                raise ValueError(f"draw_landmarks: boxes must be (N, 4) or (N, 5), got shape {b.shape}")
            all_boxes += [row[:4] for row in b]
    ref = max(out.shape[:2])
    for box in all_boxes:
        if not np.all(np.isfinite(box)):
            continue
        size = max(box[2] - box[0], box[3] - box[1])
        t = max(1, int(round(size / 120)))
        p1 = tuple(int(round(v * (1 << _SHIFT))) for v in box[:2])
        p2 = tuple(int(round(v * (1 << _SHIFT))) for v in box[2:4])
        cv2.rectangle(out, p1, p2, box_color, t, cv2.LINE_AA, _SHIFT)
    for pts in point_sets:
        finite = np.all(np.isfinite(pts), axis=1)
        if not np.any(finite):
            continue
        lo, hi = pts[finite].min(axis=0), pts[finite].max(axis=0)
        size = float(np.sqrt(max((hi - lo).prod(), 1.0)))  # geometric mean of the face box sides
        radius = max(1.0, min(size / 60.0, ref / 50.0))
        thick = max(1, int(round(size / 200)))
        fixed = np.round(np.nan_to_num(pts) * (1 << _SHIFT)).astype(np.int32)
        if lines and len(pts) == 68:
            for a, z, closed in CONTOURS:
                seg = slice(a, z + 1)
                if np.all(finite[seg]):
                    cv2.polylines(out, [fixed[seg]], closed, color, thick, cv2.LINE_AA, _SHIFT)
        r = int(round(radius * (1 << _SHIFT)))
        for (x, y), ok in zip(fixed, finite):
            if ok:
                cv2.circle(out, (int(x), int(y)), r, color, -1, cv2.LINE_AA, _SHIFT)
    return out
