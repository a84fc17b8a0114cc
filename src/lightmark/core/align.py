"""Aligned face crops from the 68 landmarks: the FFHQ (StyleGAN) crop and the ArcFace 112x112 crop.

Both are one similarity transform (rotation, uniform scale, shift) of the photo, computed only
from the 68 points, so the same points always give the same matrix and the same pixels.

Coordinates are lightmark's (0-based pixel centres; OpenCV's ``warpAffine`` uses the same), so the
returned 2x3 matrix maps points exactly as it maps pixels:
``geometry.apply_affine(points, matrix)`` gives the points in the aligned image.

``"ffhq"``: the FFHQ data-preparation quad. From the eye centres (means of points 36-41 and 42-47)
and the mouth corners (48, 54)::

    eye_avg = (eye_l + eye_r) / 2          eye_to_eye   = eye_r - eye_l
    mouth_avg = (m_l + m_r) / 2            eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth)   (rot90(a, b) = (-b, a))
    x = x / |x| * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)
    y = rot90(x)                           centre = eye_avg + 0.1 eye_to_mouth

The quad is the square of side ``2 |x|`` around ``centre`` whose top edge runs along ``x``; its
outer edges are the outer edges of the ``size`` x ``size`` output (default 1024).

``"arcface"``: points (eye centres, nose tip 30, mouth corners 48, 54) mapped onto the standard
ArcFace five-point template by a least-squares similarity (Umeyama's method); default size 112.
Another ``size`` scales the template about the image corner.

Resampling: bilinear (``cv2.INTER_LINEAR``). When the crop shrinks the face by more than 2x the
photo is first reduced with ``cv2.INTER_AREA`` (an integer-free, deterministic box filter) so the
crop does not alias. Border: ``ffhq`` mirrors the photo (``cv2.BORDER_REFLECT_101``) like FFHQ's
reflective padding (without FFHQ's blurred feathering of the padding); ``arcface`` fills with black
(``cv2.BORDER_CONSTANT``, 0), as ArcFace recognition pipelines do.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from lightmark.core.imaging import ImageLike, as_image
from lightmark.core.errors import AlignError

STYLES = ("ffhq", "arcface")
DEFAULT_SIZE = {"ffhq": 1024, "arcface": 112}
MIN_SIZE, MAX_SIZE = 16, 4096

#: The ArcFace 5-point template for a 112x112 crop (x, y): subject's right eye (image left),
#: left eye, nose tip, right and left mouth corners.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963],
                             [73.5318, 51.5014],
                             [56.0252, 71.7366],
                             [41.5493, 92.3655],
                             [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_SIZE = 112




def check_points(points: Any) -> np.ndarray:
    """(68, 2) finite numbers -> float64 array, else :class:`AlignError`."""
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise AlignError(f"points must be a (68, 2) array of numbers, got {type(points).__name__}") from None
    if p.shape != (68, 2):
        raise AlignError(f"points must have shape (68, 2), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise AlignError("points contain NaN or infinite values")
    return p


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye, image-right eye) centres: means of points 36-41 and 42-47."""
    return points[36:42].mean(axis=0), points[42:48].mean(axis=0)


def _rot90(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]])


def ffhq_quad(points: Any) -> np.ndarray:
    """The FFHQ quad (4, 2): top-left, bottom-left, bottom-right, top-right corners (outer edges of
    the output image), in image pixels."""
    p = check_points(points)
    eye_l, eye_r = eye_centres(p)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    mouth_avg = (p[48] + p[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = math.hypot(*x)
    half = max(2.0 * math.hypot(*eye_to_eye), 1.8 * math.hypot(*eye_to_mouth))
    if norm < 1e-9 or half < 1e-9:
        raise AlignError("degenerate landmarks: the eyes and the mouth coincide, no crop can be made")
    x = x / norm * half
    y = _rot90(x)
    c = eye_avg + 0.1 * eye_to_mouth
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_matrix(points: Any, size: int = DEFAULT_SIZE["ffhq"]) -> np.ndarray:
    """2x3 image -> aligned matrix of the FFHQ crop of side ``size``."""
    size = check_size(size)
    quad = ffhq_quad(points)
    top_left, top_right = quad[0], quad[3]
    ex = top_right - top_left  # the quad's top edge, 2|x| long
    side = math.hypot(*ex)
    s = size / side
    cos, sin = ex[0] / side, ex[1] / side
    # Rotate the quad's x direction onto +u, scale, then put its top-left corner at (-0.5, -0.5),
    # the outer corner of the output's first pixel (pixel-centre coordinates).
    a = np.array([[cos * s, sin * s], [-sin * s, cos * s]])
    t = np.array([-0.5, -0.5]) - a @ top_left
    return np.hstack([a, t[:, None]])


def arcface_points(points: Any) -> np.ndarray:
    """The five points ArcFace aligns (5, 2): eye centres, nose tip 30, mouth corners 48 and 54."""
    p = check_points(points)
    eye_l, eye_r = eye_centres(p)
    return np.stack([eye_l, eye_r, p[30], p[48], p[54]])


def arcface_template(size: int = ARCFACE_SIZE) -> np.ndarray:
    """The template for a ``size`` crop: the 112 px one scaled about the image's outer corner."""
    size = check_size(size)
    return (ARCFACE_TEMPLATE + 0.5) * (size / ARCFACE_SIZE) - 0.5


def similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, no reflection) taking ``src`` (N, 2) to ``dst``:
    2x3 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var = (s0 ** 2).sum() / len(src)
    if var < 1e-12:
        raise AlignError("degenerate landmarks: the alignment points coincide")
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a mirror fits better: take the best rotation
        d[1] = -1.0
    r = u @ np.diag(d) @ vt
    scale = float((sv * d).sum() / var)
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def arcface_matrix(points: Any, size: int = ARCFACE_SIZE) -> np.ndarray:
    """2x3 image -> aligned matrix of the ArcFace crop of side ``size``."""
    return similarity_lstsq(arcface_points(points), arcface_template(size))


def alignment_matrix(points: Any, style: str = "ffhq", size: Optional[int] = None) -> np.ndarray:
    """The 2x3 image -> aligned matrix of :func:`align_face`, without warping."""
    style = check_style(style)
    size = DEFAULT_SIZE[style] if size is None else size
    return ffhq_matrix(points, size) if style == "ffhq" else arcface_matrix(points, size)


def align_face(image: ImageLike, points: Any, style: str = "ffhq",
               size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crop of the face with 68 ``points`` in ``image`` (HxWx3 uint8 RGB array or path).

    Returns ``(crop, matrix)``: the ``size`` x ``size`` x 3 uint8 crop and the float64 2x3 matrix
    from image pixels to crop pixels. ``style``: ``"ffhq"`` (default size 1024) or ``"arcface"``
    (default 112). Raises :class:`AlignError` (a ``ValueError``) on bad points, style or size and
    ``ImageError`` on a bad image.
    """
    style = check_style(style)
    size = check_size(DEFAULT_SIZE[style] if size is None else size)
    m = alignment_matrix(points, style, size)
    img = as_image(image)
    return warp(img, m, size, style), m


def warp(image: np.ndarray, m: np.ndarray, size: int, style: str = "ffhq") -> np.ndarray:
    """Resample ``image`` through the 2x3 matrix ``m`` into a ``size`` square (see the module
    docstring for the interpolation and border of each style)."""
    import cv2  # local: keeps `import lightmark.core.align` light

    m = np.asarray(m, dtype=np.float64)
    scale = math.sqrt(abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]))
    if scale < 0.5:
        # Reduce the photo first so the bilinear warp shrinks by at most 2x (no aliasing). The
        # reduced photo's pixel centres sit at (x + 0.5) * f - 0.5 of the original's.
        h, w = image.shape[:2]
        f = 2.0 * scale
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / w, nh / h
        to_small = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
        m = (np.vstack([m, [0, 0, 1]]) @ np.linalg.inv(to_small))[:2]
    border = cv2.BORDER_REFLECT_101 if style == "ffhq" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(np.ascontiguousarray(image), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=border, borderValue=(0, 0, 0))


def check_style(style: Any) -> str:
    if style not in STYLES:
        raise AlignError(f"style must be one of {STYLES}, got {style!r}")
    return str(style)


def check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
            or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise AlignError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] pixels, got {size!r}")
    return int(size)
