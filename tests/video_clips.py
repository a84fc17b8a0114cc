"""Small generated clips for the tracking and video tests: the bundled example photo's rendered
faces (no real person) cut out and moved over a plain, slightly noisy background."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from lightmark.core.imaging import load_image

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "lightmark" / "assets" / "example.jpg"
# Landmark-box centres and sides of the example's three faces (from predict_all, rounded).
_FACES = ((469.5, 185.5, 133.0), (162.0, 156.5, 137.0), (805.0, 145.5, 151.0))
PATCH = 128  # side of a face patch in the clips; the face's landmark box is about 80 px of it


@lru_cache(maxsize=4)
def face_patch(i: int) -> np.ndarray:
    """Face ``i`` of the example photo as a PATCH x PATCH RGB square (1.6x its landmark box)."""
    img = load_image(EXAMPLE)
    cx, cy, side = _FACES[i]
    half = 0.8 * side
    m = np.array([[PATCH / (2 * half), 0, 0], [0, PATCH / (2 * half), 0]])
    m[:, 2] = PATCH / 2 - 0.5 - m[:, :2] @ np.array([cx, cy])
    return cv2.warpAffine(img, m, (PATCH, PATCH), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def background(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((h, w, 3), (96, 110, 120), np.float32)
    base += np.linspace(-20, 20, w, dtype=np.float32)[None, :, None]
    return base + rng.normal(0, 2, (h, w, 3)).astype(np.float32)


def render(w: int, h: int, placements: list[tuple[int, float, float]], seed: int) -> np.ndarray:
    """A frame with face patches (index, x, y of the patch's top-left corner), later ones on top;
    fresh pixel noise per ``seed``."""
    frame = background(w, h, 0)
    for i, x, y in placements:
        p = face_patch(i).astype(np.float32)
        m = np.array([[1.0, 0, x], [0, 1.0, y]])
        mask = cv2.warpAffine(np.ones((PATCH, PATCH), np.float32), m, (w, h))[..., None]
        moved = cv2.warpAffine(p, m, (w, h))
        frame = frame * (1 - mask) + moved * mask
    frame += np.random.default_rng(seed + 1).normal(0, 2, frame.shape).astype(np.float32)
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def moving_clip(n: int = 20, w: int = 480, h: int = 320, step: float = 4.0) -> list[np.ndarray]:
    """One face moving right by ``step`` px a frame."""
    return [render(w, h, [(0, 60 + step * k, 90)], k) for k in range(n)]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0, fourcc: str = "mp4v") -> Path:
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert wr.isOpened(), f"cannot write {path}"
    for f in frames:
        wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    wr.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
