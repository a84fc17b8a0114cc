"""Crop geometry: the one place where image coordinates meet network-input coordinates.

Convention used everywhere in lightmark: a point is (x, y) in 0-based pixel-centre coordinates,
so the centre of the top-left pixel is (0, 0) and its outer corner is (-0.5, -0.5). OpenCV's
``warpAffine`` uses the same convention, so a 2x3 matrix moves pixels and points identically.

Training, evaluation and prediction all build their crop with :func:`crop_matrix`; geometric
augmentation only perturbs its arguments (centre, side, angle, flip), so labels can never drift
from the pixels.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from lightmark.core.errors import GeometryError

NUM_POINTS = 68

#: Side of the square crop, as a multiple of the larger side of the landmark box.
LANDMARK_CROP_SCALE = 1.25

# Left/right mirror of the 68-point iBUG layout (0-based): FLIP_PERMUTATION[i] is the index of the
# point that lands on point i after a horizontal flip.
_PAIRS = (
    [(i, 16 - i) for i in range(8)]  # jaw
    + [(17 + i, 26 - i) for i in range(5)]  # brows
    + [(31, 35), (32, 34)]  # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (60, 64), (61, 63), (67, 65), (59, 55), (58, 56)]  # mouth
)
FLIP_PERMUTATION = np.arange(NUM_POINTS)
for _a, _b in _PAIRS:
    FLIP_PERMUTATION[_a], FLIP_PERMUTATION[_b] = _b, _a
del _a, _b


def as_box(box: Sequence[float]) -> np.ndarray:
    """Validate a face box (x1, y1, x2, y2) and return it as float64."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise GeometryError(f"a box is four finite numbers x1, y1, x2, y2; got {_shown(box)}")
    if b[2] <= b[0] or b[3] <= b[1]:
        raise GeometryError(f"box {_shown(b)} is empty: need x2 > x1 and y2 > y1")
    return b


def _shown(values: object) -> str:
    """Numbers for a message: plain Python floats (numpy 2 would print np.float64(...))."""
    try:
        return str(tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)))
    except (TypeError, ValueError):
        return repr(values)


def landmark_box(points: np.ndarray) -> np.ndarray:
    """Tight box (x1, y1, x2, y2) around a set of points."""
    p = np.asarray(points, dtype=np.float64)
    return np.concatenate([p.min(axis=0), p.max(axis=0)])


def square_from_box(box: Sequence[float], scale: float = 1.0,
                    shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, float]:
    """Centre and side of a square crop around ``box``.

    ``side = scale * max(w, h)``; ``shift`` moves the centre by fractions of (w, h). Detector boxes
    and landmark boxes differ by such a shift and scale (see ``runtime.detector``).
    """
    b = as_box(box)
    w, h = b[2] - b[0], b[3] - b[1]
    centre = np.array([(b[0] + b[2]) / 2 + shift[0] * w, (b[1] + b[3]) / 2 + shift[1] * h])
    return centre, float(scale * max(w, h))


def crop_matrix(centre: Sequence[float], side: float, out_size: int, angle_deg: float = 0.0,
                flip: bool = False) -> np.ndarray:
    """2x3 similarity matrix from image to crop coordinates.

    The square of side ``side`` centred on ``centre`` fills the ``out_size`` x ``out_size`` crop
    edge to edge; with ``angle_deg`` the image content appears turned counter-clockwise (as seen on
    screen) by that angle in the crop. With ``flip`` the crop
    is mirrored left-right; the caller must also permute labels with :data:`FLIP_PERMUTATION`.
    """
    if not (math.isfinite(side) and side > 0):
        raise GeometryError(f"crop side must be a positive finite number, got {float(side)}")
    # Plain floats: numpy's per-call cost on 2x2 arrays was most of this function's time.
    s = out_size / side
    a = math.radians(angle_deg)
    # y points down in images, so this matrix turns content counter-clockwise on screen.
    r00, r01, r10, r11 = math.cos(a) * s, math.sin(a) * s, -math.sin(a) * s, math.cos(a) * s
    if flip:
        r00, r01 = -r00, -r01
    half = (out_size - 1) / 2.0  # the crop's centre in pixel-centre coordinates
    cx, cy = (float(v) for v in np.asarray(centre, dtype=np.float64).reshape(2))
    return np.array([[r00, r01, half - (r00 * cx + r01 * cy)],
                     [r10, r11, half - (r10 * cx + r11 * cy)]])


def crop_matrix_from_box(box: Sequence[float], out_size: int, scale: float = LANDMARK_CROP_SCALE,
                         shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    centre, side = square_from_box(box, scale, shift)
    return crop_matrix(centre, side, out_size)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix, or of a batch ``(B, 2, 3)`` of them."""
    m = np.asarray(m, dtype=np.float64)
    try:
        lin = np.linalg.inv(m[..., :2])
    except np.linalg.LinAlgError:
        raise GeometryError("affine matrix is singular: it has no inverse") from None
    return np.concatenate([lin, -(lin @ m[..., 2:])], axis=-1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``outer(inner(x))``."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Move (N, 2) points, or a batch (B, N, 2) with a batch of matrices (B, 2, 3)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 3:
        return np.einsum("bij,bnj->bni", m[:, :, :2], p) + m[:, None, :, 2]
    return p @ m[:, :2].T + m[:, 2]


def warp_image(image: np.ndarray, m: np.ndarray, out_size: int,
               border_value: int | tuple[int, ...] = 0, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Resample ``image`` into the ``out_size`` square crop given by ``m``.

    ``out``: an optional ``(out_size, out_size, channels)`` array of the image's type to write the
    crop into (it is returned); :func:`crops_from_boxes` fills its batch this way, without a stack.
    """
    import cv2  # local: keeps `import lightmark.core.geometry` light

    m = np.asarray(m, dtype=np.float64)
    # Plain floats for the checks: numpy's per-call cost on six numbers is most of their time.
    vals = m.ravel().tolist() if m.shape == (2, 3) else [0.0] * 6
    det = vals[0] * vals[4] - vals[1] * vals[3]
    if not (all(map(math.isfinite, vals)) and math.isfinite(det) and det != 0):
        raise GeometryError(f"crop matrix must be a finite, invertible 2x3 matrix, got {m.tolist()}")
    # Shrinking by more than 2x with bilinear sampling aliases; pre-blur with a Gaussian whose
    # width follows the scale so large photos and small crops give the same kind of input.
    scale = math.sqrt(abs(det))
    if scale < AREA_SHRINK_BELOW:
        # The Gaussian would grow with the shrink (a 1e9-pixel box: a kernel of 1e9 taps). Area-
        # average the region first down to a residual shrink of 4x, so the work is bounded by the
        # photo's pixels plus what the crop can show.
        image, m = _area_shrink(image, m, out_size, 0.25 / scale)
        scale = math.sqrt(abs(float(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])))
        # Still that small: the photo has collapsed to about a pixel; nothing is left to blur.
        scale = max(scale, 0.5)
    blur = scale < 0.5
    if blur:
        sigma = 0.5 / scale * 0.5
        k = int(2 * round(3 * sigma) + 1)
    if blur and scale < BOX_SHRINK_BELOW:
        region, m, sigma, k = _box_shrink(image, m, out_size, scale, sigma)
        if region is not None:
            region = cv2.GaussianBlur(region, (k, k), sigma)
            blur = False
    if blur or scale >= 0.5:
        # Work on the part of the photo the crop reads. Blurring the whole photo cost tens of ms
        # per face on a 12-megapixel image; the region reaches k // 2 + 2 pixels past what
        # bilinear sampling touches, so each pixel read was blurred from the same neighbours as in
        # the whole photo (at the photo's own edges both reflect alike).
        region, m = _region_read(image, m, out_size, k // 2 + 2 if blur else 2)
        if blur:
            region = cv2.GaussianBlur(region, (k, k), sigma)
    if region.ndim == 3 and region.shape[2] == 3 and region.dtype == np.uint8:
        # OpenCV's bilinear warp has vector code for 4 channels, not for 3: padding the region to
        # RGBA and dropping the 4th channel after is about twice as fast for a 128 px crop.
        region = cv2.cvtColor(region, cv2.COLOR_RGB2RGBA)
        if not np.isscalar(border_value):
            border_value = tuple(border_value)[:3] + (0,)
        crop = cv2.warpAffine(region, m, (out_size, out_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)
        # Contiguous: a [..., :3] view copies slowly.
        if out is None:
            return cv2.cvtColor(crop, cv2.COLOR_RGBA2RGB)
        got = cv2.cvtColor(crop, cv2.COLOR_RGBA2RGB, dst=out)
        if got is not out:  # an OpenCV that would not write into this array
            out[...] = got
        return out
    crop = cv2.warpAffine(region, m, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)
    if out is None:
        return crop
    out[...] = crop.reshape(out.shape)
    return out


#: Crops that shrink the photo more than 4x (scale below this) first average f x f pixel blocks
#: (an exact box filter, OpenCV's INTER_AREA at an integer factor) and blur what is left: the
#: Gaussian of a face filling a 12-megapixel photo was 37 pixels wide (timed in docs/SPEED.md). Crops
#: shrinking less (every face in AFW, aflw2000_val and 640x480 photos of one face) never take
#: this path, so their pixels are what they always were.
BOX_SHRINK_BELOW = 0.25


def _box_shrink(image: np.ndarray, m: np.ndarray, out_size: int, scale: float,
                sigma: float) -> tuple[Optional[np.ndarray], np.ndarray, float, int]:
    """The crop's region averaged by f x f blocks (f = floor(0.5 / scale), so 0.25 < scale * f <= 0.5),
    ``m`` moved onto it, and the Gaussian (sigma, kernel) that brings the total blur to ``sigma``
    photo pixels (a box of f has variance (f^2 - 1) / 12). ``None`` when the region is too small."""
    import cv2

    f = int(0.5 / scale)
    sigma2 = math.sqrt(max(sigma * sigma - (f * f - 1) / 12.0, 0.25)) / f
    k = int(2 * round(3 * sigma2) + 1)
    region, moved = _region_read(image, m, out_size, f * (k // 2 + 3))
    hh, ww = region.shape[0] // f * f, region.shape[1] // f * f
    if hh < 2 * f or ww < 2 * f:
        return None, m, sigma, int(2 * round(3 * sigma) + 1)
    small = cv2.resize(region[:hh, :ww], (ww // f, hh // f), interpolation=cv2.INTER_AREA)
    # Block (i, j) of the small image is centred on photo pixel f * i + (f - 1) / 2.
    moved = moved.copy()
    moved[:, 2] += moved[:, :2] @ np.array([(f - 1) / 2.0, (f - 1) / 2.0])
    moved[:, :2] *= f
    return small, moved, sigma2, k


#: Below this scale (crop pixels per photo pixel) :func:`warp_image` area-averages before blurring.
AREA_SHRINK_BELOW = 1.0 / 16


def _area_shrink(image: np.ndarray, m: np.ndarray, out_size: int,
                 factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The region the crop reads, area-averaged ``factor`` times smaller, and ``m`` moved onto it."""
    import cv2

    # Past the region: the blur that follows reaches at most 6 of the smaller pixels.
    region, m = _region_read(image, m, out_size, int(min(math.ceil(8 * factor), 1 << 40)))
    h, w = region.shape[:2]
    dw, dh = max(1, round(w / factor)), max(1, round(h / factor))
    fx, fy = w / dw, h / dh
    small = cv2.resize(region, (dw, dh), interpolation=cv2.INTER_AREA)
    if small.ndim < region.ndim:  # cv2 drops a single channel axis
        small = small[..., None]
    # Pixel centres: the small pixel i averages big pixels [i*fx, (i+1)*fx), centred at i*fx + (fx-1)/2.
    return small, compose_affine(m, np.array([[fx, 0.0, (fx - 1) / 2], [0.0, fy, (fy - 1) / 2]]))


def _region_read(image: np.ndarray, m: np.ndarray, out_size: int,
                 reach: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` that the crop ``m`` reads, ``reach`` pixels wider on every side, and
    ``m`` moved onto it. The results of warping either pair are the same up to warpAffine's
    fixed-point rounding of the shifted matrix (1 of 255 on a rare pixel, tested)."""
    h, w = image.shape[:2]
    (a, b, c), (d, e, f) = m.tolist()  # plain floats: a few numpy calls would cost more
    det = a * e - b * d
    if det == 0 or not math.isfinite(det):
        raise GeometryError("crop matrix is singular")
    xs, ys = [], []
    for u in (-0.5, out_size - 0.5):  # the crop's corners, back in the photo
        for v in (-0.5, out_size - 0.5):
            xs.append((e * (u - c) - b * (v - f)) / det)
            ys.append((a * (v - f) - d * (u - c)) / det)
    x0, y0 = max(math.floor(min(xs)) - reach, 0), max(math.floor(min(ys)) - reach, 0)
    x1, y1 = min(math.ceil(max(xs)) + reach + 1, w), min(math.ceil(max(ys)) + reach + 1, h)
    if x0 >= x1 or y0 >= y1:  # the crop misses the photo: all border
        return image[:1, :1], m + np.array([[0, 0, 1e6], [0, 0, 1e6]])
    moved = m.copy()
    moved[0, 2] += a * x0 + b * y0
    moved[1, 2] += d * x0 + e * y0
    return image[y0:y1, x0:x1], moved


def flip_points_in_crop(points: np.ndarray) -> np.ndarray:
    """Relabel points after a mirrored crop: left eye becomes right eye, and so on."""
    return np.asarray(points)[..., FLIP_PERMUTATION, :]


def crop_matrices_from_boxes(boxes: np.ndarray, out_size: int, scale: float = LANDMARK_CROP_SCALE,
                             shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``(N, 2, 3)`` crop matrices for ``(N, 4)`` boxes: :func:`crop_matrix_from_box` row by row,
    bit for bit (the same float64 operations in the same order), in one numpy pass.

    Raises ``ValueError`` naming the first box that is not finite or is empty.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wh = b[:, 2:] - b[:, :2]
    if not (np.isfinite(b).all() and (wh > 0).all()):
        bad = ~np.isfinite(b).all(axis=1) | ~(wh > 0).all(axis=1)
        as_box(b[int(np.argmax(bad))])  # raises the message for that box
    # Column pairs (x, y) at once: the same float64 operations per element as crop_matrix_from_box
    # (fewer numpy calls: their fixed cost was most of the time for the tracker's one face).
    centre = (b[:, :2] + b[:, 2:]) / 2 + np.array(shift, dtype=np.float64) * wh
    side = float(scale) * wh.max(axis=1)
    if not (np.isfinite(side).all() and (side > 0).all()):
        raise ValueError(f"crop side must be positive, got {side[~(side > 0) | ~np.isfinite(side)][0]}")
    s = out_size / side
    half = (out_size - 1) / 2.0
    m = np.zeros((len(b), 2, 3))
    # crop_matrix at angle 0: r00 = r11 = s, r01 = 0, r10 = -0; the zero terms add nothing.
    m[:, 0, 0] = s
    m[:, 1, 0] = -0.0
    m[:, 1, 1] = s
    m[:, :, 2] = half - s[:, None] * centre
    return m


def crops_from_boxes(image: np.ndarray, boxes: np.ndarray, out_size: int,
                     scale: float = LANDMARK_CROP_SCALE,
                     shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Crop every box of one image: ``(N, S, S, 3)`` uint8 crops and their ``(N, 2, 3)`` matrices."""
    mats = crop_matrices_from_boxes(boxes, out_size, scale, shift)
    crops = np.empty((len(mats), out_size, out_size) + image.shape[2:], image.dtype)
    for m, crop in zip(mats, crops):
        warp_image(image, m, out_size, out=crop)
    return crops, mats


def points_to_image(points_crop: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Map ``(N, 68, 2)`` crop-pixel points back through each crop's matrix to image pixels."""
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    p = np.asarray(points_crop).reshape(len(m), -1, 2)
    s = m[:, 0, 0]
    if not m[:, [0, 1], [1, 0]].any() and (m[:, 1, 1] == s).all() and s.all() and np.isfinite(s).all():
        # The crops of boxes (crop_matrices_from_boxes) are unrotated squares, x_crop = s x + t.
        # This is what invert_affine + apply_affine compute for such a matrix, operation for
        # operation (LAPACK's inverse of diag(s, s) is diag(1 / s), the zero terms add nothing),
        # so the result is bit-identical, without np.linalg.inv's per-call cost. Bit for bit
        # matters: the refinement pass crops again from these points, and a last-bit change can
        # move a pixel of that crop by one grey level (docs/SPEED.md).
        inv = (1.0 / s)[:, None, None]
        return (inv * p.astype(np.float64) - inv * m[:, None, :, 2]).astype(np.float32)
    inv = invert_affine(m)
    return apply_affine(p, inv).astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of two sets of x1, y1, x2, y2 boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)



def match_detection(dets: np.ndarray, lm_box: np.ndarray, min_iou: float) -> Optional[np.ndarray]:
    """The detection that belongs to the labelled face: highest IoU with its landmark box."""
    if len(dets) == 0:
        return None
    iou = box_iou(lm_box, dets[:, :4])[0]
    j = int(np.argmax(iou))
    return dets[j] if iou[j] >= min_iou else None
