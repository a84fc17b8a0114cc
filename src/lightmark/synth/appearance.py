"""Procedural appearance: skin, lips, brows, hair, eyes, backgrounds and occluders.

The ICT light model has no albedo, so colour is made per vertex from a random skin tone, smooth
noise fixed to the face (so it moves with the head), and region weights computed once on the
neutral mesh: lips and brows from the 68 landmarks, the scalp above a random hairline, the pupil
around the pupil vertex.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lightmark.synth import ict

# Skin tones from dark to light (RGB, 0-255); a draw interpolates along this ramp.
_SKIN_RAMP = np.array([[62, 40, 30], [105, 70, 50], [150, 105, 78], [195, 148, 118],
                       [226, 186, 160], [242, 208, 188]], dtype=np.float64)
_HAIR = np.array([[20, 16, 14], [45, 30, 22], [85, 60, 40], [140, 105, 70], [190, 160, 110],
                  [150, 150, 150], [110, 45, 25]], dtype=np.float64)
_IRIS = np.array([[60, 35, 20], [95, 60, 30], [70, 100, 140], [80, 110, 80], [40, 30, 25]],
                 dtype=np.float64)


# Face and head vertices come first in the ICT layout: [0, 11248).
SKIN_VERTS = 11248


@dataclass
class RegionWeights:
    """Per-vertex weights in [0, 1] on the neutral mesh, computed once."""

    lips: np.ndarray
    upper_lip: np.ndarray  # bool: above the mouth line (for segmentation)
    brows: np.ndarray
    brow_right: np.ndarray  # bool: subject's right brow side (x < 0)
    pupil: np.ndarray
    skin: np.ndarray  # bool: face + head region


def _frontal_map_sample(verts: np.ndarray, draw, res: float = 0.05,
                        blur_cm: float = 0.12) -> np.ndarray:
    """Draw a mask in the model's frontal (x, y) plane with ``draw(img, to_px)`` and sample it at
    the vertices: a cheap way to paint landmark-shaped regions onto the mesh."""
    import cv2

    x0, x1, y0, y1 = -10.0, 10.0, -14.0, 16.0
    w, h = int((x1 - x0) / res), int((y1 - y0) / res)
    img = np.zeros((h, w), np.float32)

    def to_px(p: np.ndarray) -> np.ndarray:
        return np.stack([(p[:, 0] - x0) / res, (y1 - p[:, 1]) / res], axis=1)

    draw(img, to_px)
    k = int(blur_cm / res * 3) * 2 + 1
    img = cv2.GaussianBlur(img, (k, k), blur_cm / res)
    px = np.clip(to_px(verts).round().astype(int), 0, [w - 1, h - 1])
    return img[px[:, 1], px[:, 0]]


@functools.lru_cache(maxsize=2)
def region_weights(model_path: str) -> RegionWeights:
    import cv2

    m = ict.load_ict(model_path)
    v = m.neutral
    lm = v[m.landmarks68]
    front = m.vert_region == ict.FACE

    def lips_draw(img, to_px):
        cv2.fillPoly(img, [to_px(lm[48:60]).round().astype(np.int32)], 1.0)

    lips = _frontal_map_sample(v, lips_draw) * front * (v[:, 2] > lm[48:60, 2].min() - 1.0)

    def brows_draw(img, to_px):
        for a, b in ((17, 22), (22, 27)):
            pts = to_px(lm[a:b]).round().astype(np.int32)
            for i in range(len(pts) - 1):
                # Thicker towards the inner end, like a real brow.
                inner = (i + 1) / (len(pts) - 1) if a == 17 else 1 - i / (len(pts) - 1)
                cv2.line(img, tuple(map(int, pts[i])), tuple(map(int, pts[i + 1])), 1.0,
                         thickness=int(6 + 6 * inner))

    brows = _frontal_map_sample(v, brows_draw, blur_cm=0.1) * front * (v[:, 2] > lm[17:27, 2].min() - 1.5)
    mouth_y = lm[[60, 64], 1].mean()
    pupil = np.zeros(len(v))
    for pv, (a, b) in zip(m.pupils, (ict._IRIS_RIGHT, ict._IRIS_LEFT)):
        d = np.linalg.norm(v[a:b] - v[pv], axis=1)
        pupil[a:b] = np.clip((0.32 - d) / 0.08, 0, 1)  # ~3 mm pupil with a soft edge
    return RegionWeights(lips=lips.astype(np.float32), upper_lip=v[:, 1] > mouth_y,
                         brows=brows.astype(np.float32), brow_right=v[:, 0] < 0,
                         pupil=pupil.astype(np.float32),
                         skin=np.isin(m.vert_region, [ict.FACE, ict.HEAD]))


def _smooth_noise(rng: np.random.Generator, pts: np.ndarray, wavelengths: tuple[float, float],
                  n: int = 6) -> np.ndarray:
    """Sum of random 3D sinusoids at the points: low-frequency blotches, roughly in [-1, 1]."""
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelengths, size=n)
    ph = rng.uniform(0, 2 * np.pi, size=n)
    arg = pts.astype(np.float32) @ (dirs * k[:, None]).T.astype(np.float32) + ph.astype(np.float32)
    return np.sin(arg, out=arg).sum(axis=1) / np.float32(np.sqrt(n / 2))


def vertex_albedo(rng: np.random.Generator, model: ict.ICTModel, w: RegionWeights,
                  neutral: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-vertex RGB albedo in [0, 1] and a hair weight per vertex, plus what was drawn."""
    t = rng.uniform(0, 1) * (len(_SKIN_RAMP) - 1)
    i = min(int(t), len(_SKIN_RAMP) - 2)
    skin = _SKIN_RAMP[i] + (t - i) * (_SKIN_RAMP[i + 1] - _SKIN_RAMP[i])
    skin = skin * rng.normal(1.0, 0.05, size=3)
    nv = len(neutral)
    col = np.tile(skin / 255.0, (nv, 1))
    # Blotchy low-frequency variation (redder cheeks, darker patches) fixed to the face.
    ns = SKIN_VERTS  # face + head: the only vertices the noise and hair touch
    sk = neutral[:ns]
    col[:ns] *= (1.0 + 0.07 * _smooth_noise(rng, sk, (4.0, 14.0)))[:, None]
    col[:ns, 0] *= 1.0 + 0.04 * _smooth_noise(rng, sk, (5.0, 12.0))
    lip_col = skin / 255.0 * np.array([0.78, 0.55, 0.58]) * rng.uniform(0.8, 1.05)
    col += w.lips[:, None] * (lip_col - col)
    hair_col = _HAIR[rng.integers(len(_HAIR))] / 255.0 * rng.uniform(0.8, 1.2)
    brow_col = np.minimum(hair_col, skin / 255.0 * 0.45) if rng.uniform() < 0.7 else hair_col * 0.8
    col += (w.brows * rng.uniform(0.5, 0.95))[:, None] * (brow_col - col)
    # Scalp hair above a random hairline (bald one time in five); the line is lower behind.
    x, y, z = sk[:, 0], sk[:, 1], sk[:, 2]
    hair = np.zeros(nv, dtype=np.float32)
    bald = rng.uniform() < 0.2
    if not bald:
        brow_y = neutral[model.landmarks68[17:27], 1].mean()
        front = brow_y + rng.uniform(2.5, 6.0)
        line = np.interp(z, [-10.0, -2.0, 4.0, 8.0], [rng.uniform(-12, -3), 5.0, front + 1.0, front])
        line = line + 0.6 * _smooth_noise(rng, sk, (2.0, 5.0), n=4)
        hair[:ns] = np.clip((y - line) / 0.6, 0, 1)
        strands = 1.0 + 0.15 * np.sin(x * rng.uniform(15, 30) + 0.5 * _smooth_noise(rng, sk, (1, 3)))
        col[:ns] += hair[:ns, None] * (hair_col * strands[:, None] - col[:ns])
    # Eyes and mouth interior.
    reg = model.vert_region
    sclera = np.array([0.86, 0.82, 0.78]) * rng.uniform(0.85, 1.0)
    col[reg == ict.SCLERA] = sclera
    iris = _IRIS[rng.integers(len(_IRIS))] / 255.0 * rng.uniform(0.7, 1.2)
    isi = reg == ict.IRIS
    col[isi] = iris * (1 - w.pupil[isi, None]) + 0.02 * w.pupil[isi, None]
    col[reg == ict.MOUTH] = np.array([0.30, 0.10, 0.10]) * rng.uniform(0.6, 1.1)
    col[reg == ict.GUMS] = np.array([0.55, 0.25, 0.25])
    col[reg == ict.TEETH] = np.array([0.85, 0.82, 0.72]) * rng.uniform(0.8, 1.0)
    col[reg == ict.SOCKET] = skin / 255.0 * 0.5
    info = {"skin_rgb": [round(float(c), 1) for c in skin], "bald": bool(bald)}
    return np.clip(col, 0, 1).astype(np.float32), hair.astype(np.float32), info


# ------------------------------------------------------------------------------------------
# backgrounds


class BackgroundPool:
    """Random background patches: crops of real photos far from the labelled face (HELEN train
    corners; never AFW, the validation set), or procedural textures when no photos are given."""

    def __init__(self, photo_dir: Optional[str] = None, max_cache: int = 64) -> None:
        self.records = []
        self.photo_dir = photo_dir
        if photo_dir and Path(photo_dir).is_dir():
            from lightmark.data.readers import open_dataset

            self.records = open_dataset(photo_dir, skip_bad=True).records
        self._cache: dict[int, np.ndarray] = {}
        self._max = max_cache

    def _photo(self, i: int) -> np.ndarray:
        from lightmark.core.imaging import load_image

        img = self._cache.get(i)
        if img is None:
            img = load_image(self.records[i].image_path)
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = img
        return img

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
        if self.records and rng.uniform() < 0.6:
            patch = self._photo_patch(rng, size)
            if patch is not None:
                return patch, "photo"
        return procedural_background(rng, size), "procedural"

    def _photo_patch(self, rng: np.random.Generator, size: int) -> Optional[np.ndarray]:
        import cv2

        i = int(rng.integers(len(self.records)))
        img = self._photo(i)
        h, w = img.shape[:2]
        pts = self.records[i].points
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = 0.08 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        for _ in range(8):
            s = max(16, int(rng.uniform(0.12, 0.3) * min(h, w)))
            x, y = int(rng.integers(0, max(1, w - s))), int(rng.integers(0, max(1, h - s)))
            # Keep only squares that miss the (padded) face box entirely.
            if x + s < lo[0] or x > hi[0] or y + s < lo[1] or y > hi[1]:
                patch = cv2.resize(img[y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_LINEAR)
                if rng.uniform() < 0.5:
                    patch = patch[:, ::-1]
                return np.ascontiguousarray(patch)
        return None


def procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradients, smooth colour noise, clutter shapes or stripes."""
    import cv2

    kind = int(rng.integers(4))
    base = rng.uniform(0, 255, size=3)
    if kind == 0:  # linear gradient
        a = rng.uniform(0, 2 * np.pi)
        g = np.linspace(-1, 1, size)
        ramp = np.cos(a) * g[None, :] + np.sin(a) * g[:, None]
        c2 = rng.uniform(0, 255, size=3)
        img = base + (ramp[..., None] + 1) / 2 * (c2 - base)
    else:
        cells = int(rng.integers(2, 12))
        low = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.float32)
        img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float64)
        if kind == 2:  # clutter
            for _ in range(int(rng.integers(3, 12))):
                col = tuple(float(c) for c in rng.uniform(0, 255, size=3))
                p = rng.integers(0, size, size=2)
                if rng.uniform() < 0.5:
                    q = rng.integers(0, size, size=2)
                    cv2.rectangle(img, tuple(map(int, p)), tuple(map(int, q)), col, -1)
                else:
                    ax = rng.integers(4, size // 3, size=2)
                    cv2.ellipse(img, tuple(map(int, p)), tuple(map(int, ax)), float(rng.uniform(0, 180)),
                                0, 360, col, -1)
        elif kind == 3:  # stripes
            a = rng.uniform(0, np.pi)
            yy, xx = np.mgrid[:size, :size]
            s = np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi / rng.uniform(6, 40))
            img = img * (1 + 0.25 * s[..., None])
    # Real scenes are far less saturated than uniform random colours.
    grey = img.mean(axis=2, keepdims=True)
    img = grey + rng.uniform(0.15, 0.7) * (img - grey)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(1, 6)
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# occluders

OCCLUDER_KINDS = ("hand", "strands", "glasses")


def draw_occluders(rng: np.random.Generator, image: np.ndarray, seg: np.ndarray,
                   points: np.ndarray, seg_value: dict[str, int], skin_rgb: np.ndarray) -> list[str]:
    """Paint 0-2 occluders over the face in place: skin-coloured blobs (hands), hair-like strands,
    glasses-like bars over the eyes. Returns what was drawn."""
    import cv2

    drawn: list[str] = []
    if rng.uniform() > 0.45:
        return drawn
    lo, hi = points.min(axis=0), points.max(axis=0)
    wh = np.maximum(hi - lo, 8.0)
    for _ in range(int(rng.integers(1, 3))):
        kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
        layer = np.zeros(image.shape[:2], np.uint8)
        if kind == "hand":
            c = lo + rng.uniform(0, 1, size=2) * wh
            n = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(0.15, 0.4) * wh.mean() * rng.uniform(0.6, 1.4, n)
            poly = c + np.stack([np.cos(ang) * rad, np.sin(ang) * rad], axis=1)
            cv2.fillPoly(layer, [poly.round().astype(np.int32)], 255)
            col = skin_rgb * rng.normal(1.0, 0.12, size=3)
            # Fingers: a few thick strokes leaving the blob.
            for _f in range(int(rng.integers(0, 4))):
                a = rng.uniform(0, 2 * np.pi)
                q = c + np.array([np.cos(a), np.sin(a)]) * rad.mean() * rng.uniform(1.3, 2.0)
                cv2.line(layer, tuple(map(int, c.round())), tuple(map(int, q.round())), 255,
                         thickness=max(2, int(rad.mean() * 0.35)))
        elif kind == "strands":
            col = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.7, 1.2)
            for _s in range(int(rng.integers(5, 25))):
                p0 = lo + rng.uniform([0, -0.1], [1, 0.5]) * wh
                pts = [p0]
                d = np.array([rng.normal(0, 0.4), 1.0])
                for _k in range(6):
                    d = d + rng.normal(0, 0.25, size=2)
                    pts.append(pts[-1] + d / np.linalg.norm(d) * wh[1] * rng.uniform(0.03, 0.09))
                cv2.polylines(layer, [np.array(pts).round().astype(np.int32)], False, 255,
                              thickness=int(rng.integers(1, 3)))
        else:  # glasses: a frame around each eye and a bridge
            col = rng.uniform(0, 80, size=3) if rng.uniform() < 0.7 else rng.uniform(0, 255, size=3)
            t = max(1, int(round(wh[0] * rng.uniform(0.012, 0.035))))
            centres = [points[36:42].mean(axis=0), points[42:48].mean(axis=0)]
            ew = max(3.0, float(np.linalg.norm(centres[1] - centres[0])) * rng.uniform(0.3, 0.45))
            ang = float(np.degrees(np.arctan2(*(centres[1] - centres[0])[::-1])))
            for c in centres:
                cv2.ellipse(layer, tuple(map(int, c.round())), (int(ew), int(ew * rng.uniform(0.55, 0.8))),
                            ang, 0, 360, 255, t)
            cv2.line(layer, tuple(map(int, centres[0].round())), tuple(map(int, centres[1].round())), 255, t)
        m = layer > 0
        if not m.any():
            continue
        shade = 1.0 + 0.15 * (np.linspace(-1, 1, image.shape[0])[:, None] * rng.uniform(-1, 1))
        fill = np.broadcast_to(np.clip(col[None, None, :] * shade[..., None], 0, 255), image.shape)
        image[m] = fill[m].astype(np.uint8)
        seg[m] = seg_value["glasses" if kind == "glasses" else "facewear"]
        drawn.append(kind)
    return drawn
