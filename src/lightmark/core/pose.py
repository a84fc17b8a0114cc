"""Head pose (yaw, pitch, roll) from 68 landmarks: a rigid 3D mean face fitted to the 2D points.

Convention: AFLW2000-3D's ``Pose_Para`` (degrees here, radians there). The rotation taking the
mean face (x to the subject's left, y up, z out of the face) to the camera's view is
``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)`` with ``Rx(a) = [[1,0,0],[0,c,s],[0,-s,c]]``,
``Ry(a) = [[c,0,-s],[0,1,0],[s,0,c]]``, ``Rz(a) = [[c,s,0],[-s,c,0],[0,0,1]]``. Seen in the image:

- ``yaw > 0``: the face turns towards image left (the subject turns to their right);
- ``pitch > 0``: the face tilts up;
- ``roll > 0``: the face turns clockwise on screen.

Camera: scaled orthographic (weak perspective), the camera AFLW2000-3D's labels were fitted with:
image point = ``scale * (R X)[x, -y] + translation``. No focal length is needed, so
``image_shape`` serves only to check the input (it stays in the signature so that a perspective
camera could be added without changing callers).

Points used, by the points' landmark convention (``convention=``): for ``"3d"`` points (projected
3D points, every one a fixed point of the face) all 68. For ``"2d"`` points (300W's) the chin (8),
the nose (27-35), the eyes (36-47) and the outer lip contour (48-59): jaw points 0-16 but the chin
follow the visible contour there, not fixed 3D points (on a turned face they slide across the
cheek; the chin sits on the midline in both conventions), and the brows (17-26) and inner lips
(60-67) move with expression more than the rest. Each set gave the lowest error of the sets tried
from a model's points of its convention on AFLW2000-3D's validation faces (docs/POSE_AND_ALIGN.md).

Fit: the least-squares reprojection error over rotation, scale and translation. Translation and
scale are solved in closed form for a given rotation, so the cost depends on the rotation only
through two small moment matrices of the face; the rotation then comes from an affine start
(made orthonormal) and Newton steps on the exact Hessian, each step at most ``MAX_STEP``
radians, until a step is under ``TOL`` (typically 4-6 steps).
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from lightmark.core.errors import PoseError

MEAN_FACE_PATH = Path(__file__).resolve().parents[1] / "assets" / "mean_face68.json"

#: Indices of the points the fit uses, by the points' landmark convention (see above).
POSE_POINTS: dict[str, np.ndarray] = {"2d": np.r_[8, 27:60], "3d": np.arange(68)}
#: Newton iterations at most, step limit (radians) and the step size that ends the iteration.
MAX_ITERS = 20
MAX_STEP = 0.3
TOL = 1e-7




@dataclass
class PoseFit:
    """One face's fitted pose: ``angles`` (yaw, pitch, roll) in degrees, ``rotation`` (3x3,
    mean face -> view), ``scale`` (image pixels per cm of the mean face), ``translation`` (image
    pixels), ``rms_px`` (root-mean-square reprojection error over the fitted points)."""

    angles: np.ndarray
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    rms_px: float

    def project(self, points3d: np.ndarray | None = None) -> np.ndarray:
        """Image positions (N, 2) of 3D points in the mean face's frame (default: its 68)."""
        x = load_mean_face() if points3d is None else np.asarray(points3d, dtype=np.float64)
        return project(x, self.rotation, self.scale, self.translation)


# ---------------------------------------------------------------------------------------------
# the mean face and the rotation convention


@functools.lru_cache(maxsize=1)
def load_mean_face() -> np.ndarray:
    """The bundled (68, 3) mean face, cm, read-only (``assets/mean_face68.json``)."""
    try:
        doc = json.loads(MEAN_FACE_PATH.read_text(encoding="utf-8"))
        pts = np.asarray(doc["points"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as e:
        raise PoseError(f"{MEAN_FACE_PATH}: cannot read the bundled mean face ({e})") from None
    if pts.shape != (68, 3) or not np.all(np.isfinite(pts)):
        raise PoseError(f"{MEAN_FACE_PATH}: expected 68 finite 3D points, got shape {pts.shape}")
    pts.setflags(write=False)
    return pts


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation for (yaw, pitch, roll) in degrees, in the convention of the module docstring."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rx @ ry @ rz


def euler_angles(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of a rotation (3, 3) or of a batch (..., 3, 3); inverse of
    :func:`rotation_matrix` for |yaw| < 90."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = np.arcsin(np.clip(-r[..., 0, 2], -1.0, 1.0))
    pitch = np.arctan2(r[..., 1, 2], r[..., 2, 2])
    roll = np.arctan2(r[..., 0, 1], r[..., 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def project(points3d: np.ndarray, rotation: np.ndarray, scale: float,
            translation: Sequence[float]) -> np.ndarray:
    """Scaled orthographic projection of (N, 3) mean-face-frame points to image pixels (N, 2)."""
    v = np.asarray(points3d, dtype=np.float64) @ np.asarray(rotation, dtype=np.float64).T
    return scale * np.stack([v[:, 0], -v[:, 1]], axis=1) + np.asarray(translation, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# public entry points


def head_pose(points: Any, image_shape: Sequence[int], convention: str = "2d") -> np.ndarray:
    """(yaw, pitch, roll) in degrees, float64 (3,), of one face's (68, 2) points (0-based image
    pixels, as :meth:`lightmark.Landmarker.predict` returns them) in an image of ``image_shape``
    ((H, W) or (H, W, C), e.g. ``image.shape``); ``convention``: the points' (``"2d"``, ``"3d"``:
    which of them the fit trusts). Raises :class:`PoseError` on bad input."""
    p = _check_points(points, batch=False)
    _check_image_shape(image_shape)
    r, _, _ = _fit_one(p, _check_convention(convention))
    # The Euler angles of euler_angles(), on floats (numpy's per-call cost would dominate).
    yaw = math.asin(max(-1.0, min(1.0, -r[2])))
    pitch = math.atan2(r[5], r[8])
    roll = math.atan2(r[1], r[0])
    return np.degrees(np.array([yaw, pitch, roll]))


def head_pose_batch(points: Any, image_shape: Sequence[int], convention: str = "2d") -> np.ndarray:
    """:func:`head_pose` for (N, 68, 2) points of faces in images of one ``image_shape`` (the
    frames of a video): float64 (N, 3), vectorised over the faces. Each face's answer is the one
    :func:`head_pose` gives (to rounding: the batch runs numpy's sin/cos, one face Python's)."""
    p = _check_points(points, batch=True)
    _check_image_shape(image_shape)
    convention = _check_convention(convention)
    if len(p) == 0:
        return np.zeros((0, 3))
    return euler_angles(_fit_many(p, convention)[0])


def fit_head_pose(points: Any, image_shape: Sequence[int], convention: str = "2d") -> PoseFit:
    """The whole fit for one face: angles, rotation, scale, translation and residual."""
    p = _check_points(points, batch=False)
    _check_image_shape(image_shape)
    idx = POSE_POINTS[_check_convention(convention)]
    r_list, num, den = _fit_one(p, convention)
    r = np.array(r_list, dtype=np.float64).reshape(3, 3)
    s = float(num / den)
    _, mean, _, _, _ = _constants(convention)
    q_mean = p[idx].mean(axis=0)
    # fitting coordinates (x, -y): q = s (R X)[:2] + t_q; in the image t = mean - s (R mean)[x, -y]
    t = q_mean - s * np.array([1.0, -1.0]) * (r @ mean)[:2]
    res = project(load_mean_face()[idx], r, s, t) - p[idx]
    return PoseFit(angles=euler_angles(r), rotation=r, scale=s, translation=t,
                   rms_px=float(np.sqrt((res ** 2).sum(axis=1).mean())))


# ---------------------------------------------------------------------------------------------
# the fit
#
# For a rotation R the best scale and shift are closed-form, and what is left of the cost is
#     f(R) = -num^2 / den,  num = tr(E R B),  den = tr(E R C0 R^T E),  E = diag(1, 1, 0),
# with B = Xc^T q / n (3x2, the face's points against the centred mean face; centring q is not
# needed as Xc sums to zero) and C0 = Xc^T Xc / n (3x3, the mean face's second moments). So each
# Newton step costs a few hundred multiplications, whatever the number of points. The kernel is
# written with arithmetic operators only, so the same code runs on Python floats (one face: no
# per-call numpy overhead) and on numpy arrays of shape (N,) (a batch).


def _check_convention(convention: str) -> str:
    if convention not in POSE_POINTS:
        raise PoseError(f"convention must be one of {sorted(POSE_POINTS)}, got {convention!r}")
    return convention


@functools.lru_cache(maxsize=4)
def _constants(convention: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """(centred fitted points of the mean face Xc (n, 3), their mean (3,), Xc^T / n (3, n),
    C0 as 9 floats, C0^-1 as 9 floats), computed once per convention's point set."""
    x = load_mean_face()[POSE_POINTS[convention]]
    mean = x.mean(axis=0)
    xc = x - mean
    c0 = xc.T @ xc / len(xc)
    return (xc, mean, np.ascontiguousarray(xc.T / len(xc)), tuple(c0.ravel().tolist()),
            tuple(np.linalg.inv(c0).ravel().tolist()))


def _fit_one(p: np.ndarray, convention: str) -> tuple[list, float, float]:
    """One face (68, 2): (R's 9 entries row-major, num, den); scale = num / den."""
    _, _, xt, c0, c0i = _constants(convention)
    b00, b01, b10, b11, b20, b21 = (xt @ p[POSE_POINTS[convention]]).ravel().tolist()
    # fitting coordinates are (x, -y): flip the sign of B's second column
    return _solve([b00, -b01, b10, -b11, b20, -b21], c0, c0i, _SCALAR)


def _fit_many(points: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces (N, 68, 2): rotations (N, 3, 3), scales (N,) and image translations (N, 2)."""
    _, mean, xt, c0, c0i = _constants(convention)
    sel = points[:, POSE_POINTS[convention]]
    b = np.einsum("in,bnj->bij", xt, sel) * np.array([1.0, -1.0])  # (N, 3, 2)
    r, num, den = _solve(list(b.reshape(-1, 6).T), c0, c0i, _ARRAY)
    rot = np.stack(r, axis=1).reshape(-1, 3, 3)
    scale = num / den
    trans = sel.mean(axis=1) - scale[:, None] * np.array([1.0, -1.0]) * (rot @ mean)[:, :2]
    return rot, scale, trans


class _Ops:
    """The few non-arithmetic operations of the kernel, for floats or for numpy arrays."""

    def __init__(self, sqrt: Any, sin: Any, cos: Any, where: Any, all_: Any) -> None:
        self.sqrt, self.sin, self.cos, self.where, self.all = sqrt, sin, cos, where, all_


_SCALAR = _Ops(math.sqrt, math.sin, math.cos, lambda c, a, b: a if c else b, bool)
_ARRAY = _Ops(np.sqrt, np.sin, np.cos, np.where, lambda c: bool(np.all(c)))


def _solve(b: list, c0: tuple[float, ...], c0i: tuple[float, ...], ops: _Ops) -> tuple[list, Any, Any]:
    """Newton iteration on f(R). ``b``: B's 6 entries (row-major 3x2), floats or (N,) arrays.
    Returns (R's 9 entries row-major, num, den) at the optimum; scale = num / den.

    Straight-line arithmetic on named entries: in Python this is several times faster than
    loops over small lists, and numpy's per-call cost would dominate a single face."""
    b00, b01, b10, b11, b20, b21 = b
    k00, k01, k02, _, k11, k12, _, _, k22 = c0
    # Start: the affine camera M^T = (C0^-1 B)^T (2x3), made orthonormal by its polar factor
    # S^-1/2 M^T (S = M^T M): the nearest pair of orthonormal rows.
    i00, i01, i02, _, i11, i12, _, _, i22 = c0i
    m00, m01, m02 = i00 * b00 + i01 * b10 + i02 * b20, i01 * b00 + i11 * b10 + i12 * b20, \
        i02 * b00 + i12 * b10 + i22 * b20
    m10, m11, m12 = i00 * b01 + i01 * b11 + i02 * b21, i01 * b01 + i11 * b11 + i12 * b21, \
        i02 * b01 + i12 * b11 + i22 * b21
    s00 = m00 * m00 + m01 * m01 + m02 * m02
    s11 = m10 * m10 + m11 * m11 + m12 * m12
    s01 = m00 * m10 + m01 * m11 + m02 * m12
    sdet = ops.sqrt(s00 * s11 - s01 * s01)
    tnorm = ops.sqrt(s00 + s11 + 2 * sdet)
    # sqrt(S) = (S + sqrt(det S) I) / tnorm, and its inverse by the 2x2 formula
    q00, q11, q01 = (s00 + sdet) / tnorm, (s11 + sdet) / tnorm, s01 / tnorm
    qdet = q00 * q11 - q01 * q01
    p00, p11, p01 = q11 / qdet, q00 / qdet, -q01 / qdet
    r00, r01, r02 = p00 * m00 + p01 * m10, p00 * m01 + p01 * m11, p00 * m02 + p01 * m12
    r10, r11, r12 = p01 * m00 + p11 * m10, p01 * m01 + p11 * m11, p01 * m02 + p11 * m12
    r20, r21, r22 = r01 * r12 - r02 * r11, r02 * r10 - r00 * r12, r00 * r11 - r01 * r10
    done: Any = False
    for _ in range(MAX_ITERS):
        # a = R B (3x2); c = R C0 R^T (symmetric), from u_i = C0 r_i
        a00, a01 = r00 * b00 + r01 * b10 + r02 * b20, r00 * b01 + r01 * b11 + r02 * b21
        a10, a11 = r10 * b00 + r11 * b10 + r12 * b20, r10 * b01 + r11 * b11 + r12 * b21
        a20, a21 = r20 * b00 + r21 * b10 + r22 * b20, r20 * b01 + r21 * b11 + r22 * b21
        u00, u01, u02 = k00 * r00 + k01 * r01 + k02 * r02, k01 * r00 + k11 * r01 + k12 * r02, \
            k02 * r00 + k12 * r01 + k22 * r02
        u10, u11, u12 = k00 * r10 + k01 * r11 + k02 * r12, k01 * r10 + k11 * r11 + k12 * r12, \
            k02 * r10 + k12 * r11 + k22 * r12
        u20, u21, u22 = k00 * r20 + k01 * r21 + k02 * r22, k01 * r20 + k11 * r21 + k12 * r22, \
            k02 * r20 + k12 * r21 + k22 * r22
        c00 = r00 * u00 + r01 * u01 + r02 * u02
        c11 = r10 * u10 + r11 * u11 + r12 * u12
        c22 = r20 * u20 + r21 * u21 + r22 * u22
        c01 = r00 * u10 + r01 * u11 + r02 * u12
        c02 = r00 * u20 + r01 * u21 + r02 * u22
        c12 = r10 * u20 + r11 * u21 + r12 * u22
        num = a00 + a11
        den = c00 + c11
        # First and second derivatives of num and den along R -> exp([w]x) R (second-order
        # expansion of exp; see docs/POSE_AND_ALIGN.md).
        dn0, dn1, dn2 = -a21, a20, a01 - a10
        n00, n11, n22, n01, n02, n12 = -a11, -a00, -num, (a10 + a01) / 2, a20 / 2, a21 / 2
        dd0, dd1 = -2 * c12, 2 * c02  # (dd2 = 0: a turn in the image plane keeps den)
        e00, e11, e01, e02, e12 = 2 * (c22 - c11), 2 * (c22 - c00), 2 * c01, -c02, -c12  # e22 = 0
        # f = -num^2 / den: gradient and Hessian by the quotient rule
        iden = 1.0 / den
        uu = num * iden
        vv = uu * uu
        g0, g1, g2 = -2 * uu * dn0 + vv * dd0, -2 * uu * dn1 + vv * dd1, -2 * uu * dn2
        t2, t3 = 2 * iden, 2 * uu * iden
        h00 = -t2 * (dn0 * dn0 + num * n00) + t3 * 2 * dn0 * dd0 - vv * (t2 * dd0 * dd0 - e00)
        h11 = -t2 * (dn1 * dn1 + num * n11) + t3 * 2 * dn1 * dd1 - vv * (t2 * dd1 * dd1 - e11)
        h22 = -t2 * (dn2 * dn2 + num * n22)
        h01 = -t2 * (dn0 * dn1 + num * n01) + t3 * (dn0 * dd1 + dd0 * dn1) - vv * (t2 * dd0 * dd1 - e01)
        h02 = -t2 * (dn0 * dn2 + num * n02) + t3 * dd0 * dn2 + vv * e02
        h12 = -t2 * (dn1 * dn2 + num * n12) + t3 * dd1 * dn2 + vv * e12
        # Far from the optimum the Hessian may be indefinite: then shift it past its Gershgorin
        # lower bound (Sylvester's criterion tells).
        pd = (h00 > 0) & (h00 * h11 - h01 * h01 > 0) & \
            (h00 * (h11 * h22 - h12 * h12) - h01 * (h01 * h22 - h12 * h02) + h02 * (h01 * h12 - h11 * h02) > 0)
        ga, gb, gc = h00 - abs(h01) - abs(h02), h11 - abs(h01) - abs(h12), h22 - abs(h02) - abs(h12)
        low = ops.where(ga < gb, ga, gb)
        low = ops.where(gc < low, gc, low)
        shift = ops.where(pd, 0.0, ops.where(low < 0, -low, 0.0) + 1e-6 * (abs(h00) + abs(h11) + abs(h22)))
        h00, h11, h22 = h00 + shift, h11 + shift, h22 + shift
        # w = -H^-1 g (adjugate of the symmetric 3x3)
        ca, cb, cc = h11 * h22 - h12 * h12, h02 * h12 - h01 * h22, h01 * h12 - h02 * h11
        cd, ce, cf = h00 * h22 - h02 * h02, h01 * h02 - h00 * h12, h00 * h11 - h01 * h01
        det = h00 * ca + h01 * cb + h02 * cc
        w0 = -(ca * g0 + cb * g1 + cc * g2) / det
        w1 = -(cb * g0 + cd * g1 + ce * g2) / det
        w2 = -(cc * g0 + ce * g1 + cf * g2) / det
        th2 = w0 * w0 + w1 * w1 + w2 * w2
        th = ops.sqrt(th2)
        # A bounded step keeps Newton in the basin it started in (the cost is far from quadratic
        # a few tenths of a radian away). Finished faces (batch lanes) stay put.
        f = ops.where(done, 0.0, ops.where(th > MAX_STEP, MAX_STEP / (th + 1e-300), 1.0))
        w0, w1, w2 = ops.where(done, 0.0, w0 * f), ops.where(done, 0.0, w1 * f), ops.where(done, 0.0, w2 * f)
        th, th2 = th * f, th2 * f * f
        small = abs(w0) + abs(w1) + abs(w2) < TOL
        # R <- exp([w]x) R (Rodrigues; sin(t)/t and (1 - cos(t))/t^2 with their limits at 0)
        tiny = th < 1e-12
        sa = ops.where(tiny, 1.0, ops.sin(th) / ops.where(tiny, 1.0, th))
        sb = ops.where(tiny, 0.5, (1.0 - ops.cos(th)) / ops.where(tiny, 1.0, th2))
        e_00, e_01, e_02 = 1 - sb * (w1 * w1 + w2 * w2), -sa * w2 + sb * w0 * w1, sa * w1 + sb * w0 * w2
        e_10, e_11, e_12 = sa * w2 + sb * w0 * w1, 1 - sb * (w0 * w0 + w2 * w2), -sa * w0 + sb * w1 * w2
        e_20, e_21, e_22 = -sa * w1 + sb * w0 * w2, sa * w0 + sb * w1 * w2, 1 - sb * (w0 * w0 + w1 * w1)
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = (
            e_00 * r00 + e_01 * r10 + e_02 * r20, e_00 * r01 + e_01 * r11 + e_02 * r21,
            e_00 * r02 + e_01 * r12 + e_02 * r22, e_10 * r00 + e_11 * r10 + e_12 * r20,
            e_10 * r01 + e_11 * r11 + e_12 * r21, e_10 * r02 + e_11 * r12 + e_12 * r22,
            e_20 * r00 + e_21 * r10 + e_22 * r20, e_20 * r01 + e_21 * r11 + e_22 * r21,
            e_20 * r02 + e_21 * r12 + e_22 * r22)
        # f cannot tell R from a half turn about the view axis with a negative scale: keep the
        # positive scale.
        sign = ops.where((r00 * b00 + r01 * b10 + r02 * b20) + (r10 * b01 + r11 * b11 + r12 * b21) < 0,
                         -1.0, 1.0)
        r00, r01, r02, r10, r11, r12 = r00 * sign, r01 * sign, r02 * sign, r10 * sign, r11 * sign, r12 * sign
        done = done | small
        if ops.all(done):
            break
    num = (r00 * b00 + r01 * b10 + r02 * b20) + (r10 * b01 + r11 * b11 + r12 * b21)
    den = (r00 * (k00 * r00 + k01 * r01 + k02 * r02) + r01 * (k01 * r00 + k11 * r01 + k12 * r02)
           + r02 * (k02 * r00 + k12 * r01 + k22 * r02) + r10 * (k00 * r10 + k01 * r11 + k02 * r12)
           + r11 * (k01 * r10 + k11 * r11 + k12 * r12) + r12 * (k02 * r10 + k12 * r11 + k22 * r12))
    return [r00, r01, r02, r10, r11, r12, r20, r21, r22], num, den


# ---------------------------------------------------------------------------------------------
# input checks


def _check_points(points: Any, batch: bool) -> np.ndarray:
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise PoseError(f"points must be an array of numbers, got {type(points).__name__}") from None
    if batch:
        if p.ndim != 3 or p.shape[1:] != (68, 2):
            raise PoseError(f"points must have shape (N, 68, 2), got {p.shape}")
    elif p.shape != (68, 2):
        raise PoseError(f"points must have shape (68, 2), got {p.shape}")
    if not batch:  # the common case, kept to a few numpy calls
        if not np.isfinite(p).all():
            raise PoseError("points contain NaN or infinite values")
        if (p.max(axis=0) - p.min(axis=0)).min() < 1e-3:
            raise PoseError("points are degenerate: they do not span two dimensions")
        return p
    ok = np.isfinite(p).all(axis=(1, 2))
    if not ok.all():
        raise PoseError(f"points contain NaN or infinite values (face {int(np.flatnonzero(~ok)[0])})")
    flat = (p.max(axis=1) - p.min(axis=1)).min(axis=1) < 1e-3
    if flat.any():
        raise PoseError(f"points are degenerate: they do not span two dimensions "
                        f"(face {int(np.flatnonzero(flat)[0])})")
    return p


def _check_image_shape(image_shape: Any) -> tuple[int, int]:
    try:
        dims = tuple(image_shape)
    except TypeError:
        raise PoseError(f"image_shape must be (H, W) or (H, W, C), got {image_shape!r}") from None
    if len(dims) not in (2, 3) or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                           and d > 0 for d in dims):
        raise PoseError(f"image_shape must be (H, W) or (H, W, C) positive integers, got {image_shape!r}")
    return int(dims[0]), int(dims[1])
