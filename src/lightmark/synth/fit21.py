"""68-point labels in the 3D convention for AFLW's 21 clicked points, by fitting the ICT face model.

AFLW2000-3D made its 68 labels this way (a 3DMM fitted to the 21 AFLW points, then the model's 68
landmark vertices projected): :func:`fit21` does the same with the ICT-FaceKit model, so that the
8,398 large-pose AFLW faces (``aflw_21pt``) get labels in the convention of the AFLW2000-3D test.

Model. A weak-perspective camera (scale, rotation, 2D shift), the first :data:`ID_COMPONENTS`
identity components and a few expressions (:data:`FIT_EXPRESSIONS`). Each of the 21 points is
one model vertex (or the mean of a few): the 14 that coincide with iBUG points
(:data:`lightmark.data.aflw21.AFLW21_TO_IBUG68`) use the model's own 68 landmark vertices, the
other 7 (eye centres, nose wings, mouth centre, ears) the vertices in :data:`AFLW21_VERTICES`,
chosen by :func:`choose_vertices` on AFLW training faces (never on AFLW2000-3D).

Fitting (:func:`fit21`). Invisible points (NaN) are left out. The pose starts from the affine
solution and several yaws (weak perspective has near-mirror solutions when few points are seen);
each start is refined by Levenberg-Marquardt with the mean shape, and the best one then alternates
a bounded ridge least squares for the shape with a Levenberg-Marquardt pose refinement. Residuals
get Huber weights, so a single badly clicked point pulls less than the rest. The jaw is *not*
matched to the visible contour (unlike :func:`lightmark.synth.profile.fit_ict`): in the 3D
convention the jaw is on fixed vertices, by default the ICT README's jaw-line substitutes
(:data:`JAW_CHOICES`).

Measurements (accuracy against AFLW2000-3D, speed) are in docs/LARGE_POSE_DATA.md.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from lightmark.core.errors import ProfileError
from lightmark.data.aflw21 import AFLW21_TO_IBUG68, NUM_POINTS_AFLW21
from lightmark.synth import camera, ict

ID_COMPONENTS = 10
FIT_EXPRESSIONS = ("jawOpen", "mouthSmile_L", "mouthSmile_R", "mouthPucker", "mouthStretch_L",
                   "mouthStretch_R", "browInnerUp_L", "browInnerUp_R", "browDown_L", "browDown_R")
# Ridge weights on the shape coefficients, in cm^2 of (weighted) point residual per unit
# coefficient^2: with ~10 visible points per face the prior has to carry much of the shape.
ID_PRIOR = 0.5
EXPR_PRIOR = 0.1
# Huber threshold on a point's residual, in cm on the face (a few millimetres: click noise).
HUBER_CM = 0.5
# Yaw starts (degrees) of the pose search, besides the affine initialisation.
YAW_STARTS = (-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0)
ROUNDS = 4
#: Output jaw conventions: ``"substitute"`` puts jaw points 0-7 and 9-16 on the ICT README's
#: "jawline substitutes" (the jaw bone's line, lower and further back than ``landmarks68``'s
#: cheek line); ``"landmarks68"`` keeps the model's landmark vertices. Compared in
#: docs/LARGE_POSE_DATA.md.
JAW_CHOICES = ("substitute", "landmarks68")
RIGHT_JAW_SUBSTITUTE = (1278, 1272, 12, 1834, 243, 781, 2199, 1447)
LEFT_JAW_SUBSTITUTE = (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496)
MIN_VISIBLE = 4

#: Vertex sets of the 7 AFLW points that are not iBUG points (a point is the mean of its set).
#: "left" = picture left = the subject's right = model x < 0. Chosen by :func:`choose_vertices`
#: (see docs/LARGE_POSE_DATA.md for the command and the training faces it used).
AFLW21_VERTICES: dict[int, tuple[int, ...]] = {
    7: (24574,),  # left eye centre: on the subject's right iris, 3 mm above and inside the pupil
    10: (23004,),  # right eye centre (mirror)
    12: (7896,),  # left ear: where the lobe meets the cheek
    13: (4855,),  # nose left: the alar wing
    15: (5314,),  # nose right (mirror)
    16: (7169,),  # right ear (mirror)
    18: (5532,),  # mouth centre: between the lips, on the midline
}


def _vertex_sets(model: ict.ICTModel, chosen: Optional[dict[int, tuple[int, ...]]] = None) -> list[tuple[int, ...]]:
    """The vertex set of each of the 21 points: iBUG landmark vertices for the 14 shared ones."""
    chosen = AFLW21_VERTICES if chosen is None else chosen
    sets: list[tuple[int, ...]] = []
    for k in range(NUM_POINTS_AFLW21):
        if k in AFLW21_TO_IBUG68:
            sets.append((int(model.landmarks68[AFLW21_TO_IBUG68[k]]),))
        elif k in chosen:
            sets.append(tuple(int(v) for v in chosen[k]))
        else:
            raise ProfileError(f"no model vertex for AFLW point {k}")
    return sets


@dataclass
class ShapeModel:
    """The fit's linear model restricted to the vertices it needs (cheap to evaluate)."""

    neutral: np.ndarray  # (V, 3) float64, the full neutral mesh (vertex search only)
    id_basis: np.ndarray  # (K, V, 3) float32 view of the model's identity basis
    ex_basis: np.ndarray  # (E, V, 3) float32, the fit expressions
    n_id: int
    n_ex: int
    points_mean: np.ndarray  # (21, 3)
    points_basis: np.ndarray  # (21, 3, K + E)
    lm_mean: np.ndarray  # (68, 3)
    lm_basis: np.ndarray  # (68, 3, K + E)
    prior: np.ndarray  # (K + E,) sqrt of the ridge weights
    lo: np.ndarray
    hi: np.ndarray

    def sets_basis(self, sets: Sequence[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """(mean (P, 3), basis (P, 3, K + E)) of points that are means of vertex sets."""
        mean = np.stack([self.neutral[list(s)].mean(axis=0) for s in sets])
        basis = np.stack([np.concatenate([self.id_basis[:, list(s)].mean(axis=1),
                                          self.ex_basis[:, list(s)].mean(axis=1)]).T for s in sets])
        return mean.astype(np.float64), basis.astype(np.float64)

    def with_points(self, sets: Sequence[tuple[int, ...]]) -> "ShapeModel":
        mean, basis = self.sets_basis(sets)
        return ShapeModel(**{**self.__dict__, "points_mean": mean, "points_basis": basis})


def landmark_vertices(model: ict.ICTModel, jaw: str = "substitute") -> np.ndarray:
    """The 68 output vertices: the model's ``landmarks68``, with the jaw (0-7, 9-16) on the ICT
    README's substitute jaw-line vertices for ``jaw="substitute"`` (see :data:`JAW_CHOICES`)."""
    if jaw not in JAW_CHOICES:
        raise ProfileError(f"jaw must be one of {JAW_CHOICES}, got {jaw!r}")
    ids = model.landmarks68.astype(np.int64).copy()
    if jaw == "substitute":
        ids[0:8], ids[9:17] = RIGHT_JAW_SUBSTITUTE, LEFT_JAW_SUBSTITUTE
    return ids


@functools.lru_cache(maxsize=8)
def shape_model(model_path: Optional[str] = None, n_id: int = ID_COMPONENTS,
                id_prior: float = ID_PRIOR, expr_prior: float = EXPR_PRIOR,
                jaw: str = "substitute") -> ShapeModel:
    """The prepared fit model (cached): the 21 points, the 68 landmarks, the prior."""
    m = ict.load_ict(model_path)
    v = m.n_verts
    ei = [m.expression_index(n) for n in FIT_EXPRESSIONS]
    idb = m.id_basis[:n_id].reshape(n_id, v, 3)
    exb = m.ex_basis[ei].reshape(len(ei), v, 3)
    k = n_id + len(ei)
    base = ShapeModel(neutral=m.neutral.astype(np.float64), id_basis=idb, ex_basis=exb, n_id=n_id,
                      n_ex=len(ei), points_mean=np.zeros((0, 3)), points_basis=np.zeros((0, 3, k)),
                      lm_mean=np.zeros((0, 3)), lm_basis=np.zeros((0, 3, k)),
                      prior=np.sqrt(np.concatenate([np.full(n_id, id_prior), np.full(len(ei), expr_prior)])),
                      lo=np.concatenate([np.full(n_id, -3.0), np.zeros(len(ei))]),
                      hi=np.concatenate([np.full(n_id, 3.0), np.ones(len(ei))]))
    lm_mean, lm_basis = base.sets_basis([(int(i),) for i in landmark_vertices(m, jaw)])
    base.lm_mean, base.lm_basis = lm_mean, lm_basis
    return base.with_points(_vertex_sets(m))


# ------------------------------------------------------------------------------------------
# weak-perspective pose


def _project(x3: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rotate, drop z, flip y (model y up, image y down), scale, shift (as synth.profile)."""
    r = x3 @ rot[:2].T
    r[:, 1] *= -1.0
    return r * s + t


def _rodrigues(w: np.ndarray) -> np.ndarray:
    th = math.sqrt(float(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]))
    if th < 1e-12:
        return np.eye(3)
    kx = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / th
    return np.eye(3) + math.sin(th) * kx + (1 - math.cos(th)) * (kx @ kx)


def _pose_cost(x3: np.ndarray, p2: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray,
               huber_cm: float) -> tuple[float, np.ndarray, np.ndarray]:
    """(Huber cost in pixels^2, residuals, IRLS weights) of a pose."""
    res = _project(x3, s, rot, t) - p2
    r2 = np.einsum("ij,ij->i", res, res)
    r = np.sqrt(r2)
    c = huber_cm * s  # the threshold in pixels
    inside = r <= c
    w = np.where(inside, 1.0, c / np.maximum(r, 1e-12))
    cost = np.where(inside, r2, 2 * c * r - c * c).sum()
    return float(cost), res, w


def _pose_gn(x3: np.ndarray, p2: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray,
             iters: int, huber_cm: float) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Robust Levenberg-Marquardt (analytic Jacobian, IRLS weights) on log scale, rotation,
    shift. Returns the pose and its Huber cost in pixels^2. A step is kept only if it lowers the
    cost, so a degenerate view cannot run off (to a vanishing scale, say)."""
    n = len(x3)
    cost, res, w = _pose_cost(x3, p2, s, rot, t, huber_cm)
    lam = 1e-3
    jac = np.zeros((n, 2, 6))
    jac[:, 0, 4], jac[:, 1, 5] = 1.0, 1.0
    for _ in range(iters):
        y = (x3 @ rot.T) * s
        sw = np.sqrt(w)
        jac[:, 0, 0], jac[:, 1, 0] = y[:, 0], -y[:, 1]
        # d(R x) / dw = -[y]_x for R <- exp([w]) R; the y row is negated by the image flip.
        jac[:, 0, 2], jac[:, 0, 3] = y[:, 2], -y[:, 1]
        jac[:, 1, 1], jac[:, 1, 3] = y[:, 2], -y[:, 0]
        jw = (jac * sw[:, None, None]).reshape(-1, 6)
        g = jw.T @ (res * sw[:, None]).reshape(-1)
        h = jw.T @ jw
        hdiag = h.diagonal().copy() + 1e-9
        for _ in range(8):
            hd = h.copy()
            hd.flat[::7] += lam * hdiag
            step = -np.linalg.solve(hd, g)
            s1 = s * math.exp(min(max(float(step[0]), -0.5), 0.5))
            r1, t1 = _rodrigues(step[1:4]) @ rot, t + step[4:6]
            c1, res1, w1 = _pose_cost(x3, p2, s1, r1, t1, huber_cm)
            if c1 <= cost:
                break
            lam *= 10.0
        else:
            break  # no step lowers the cost: converged (or stuck)
        small = cost - c1 <= 1e-10 * max(cost, 1e-12) or np.abs(step).max() < 1e-7
        s, rot, t, cost, res, w = s1, r1, t1, c1, res1, w1
        lam = max(lam / 10.0, 1e-7)
        if small:
            break
    return s, rot, t, cost


def _affine_init(x3: np.ndarray, p2: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Affine camera by least squares, made a scaled rotation (SVD); the translation refitted."""
    a = np.hstack([x3, np.ones((len(x3), 1))])
    sol, *_ = np.linalg.lstsq(a, p2, rcond=None)
    r1, r2 = sol[:3, 0], -sol[:3, 1]
    u, sv, vt = np.linalg.svd(np.stack([r1, r2]), full_matrices=False)
    rr = u @ vt
    rot = np.vstack([rr, np.cross(rr[0], rr[1])])
    return float(sv.mean()), rot, _shift(x3, p2, float(sv.mean()), rot)


def _shift(x3: np.ndarray, p2: np.ndarray, s: float, rot: np.ndarray) -> np.ndarray:
    return (p2 - _project(x3, s, rot, np.zeros(2))).mean(axis=0)


def _start(x3: np.ndarray, p2: np.ndarray, yaw: float, roll: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Pose at a given yaw and roll, pitch 0, scale and shift by least squares."""
    rot = camera.rotation(yaw, 0.0, roll)
    u = _project(x3, 1.0, rot, np.zeros(2))
    uc, pc = u - u.mean(axis=0), p2 - p2.mean(axis=0)
    s = float((uc * pc).sum() / max((uc ** 2).sum(), 1e-12))
    s = s if s > 0 else float(np.sqrt((pc ** 2).sum() / max((uc ** 2).sum(), 1e-12)))
    return s, rot, _shift(x3, p2, s, rot)


# ------------------------------------------------------------------------------------------
# the fit


@dataclass
class Fit21Result:
    points68: np.ndarray  # (68, 2) float32: the model's 68 landmark vertices projected (3D convention)
    points21: np.ndarray  # (21, 2) float32: the 21 point vertices projected (invisible ones too)
    coef: np.ndarray  # (K + E,) identity coefficients then expression weights (FIT_EXPRESSIONS)
    scale: float  # pixels per cm
    rot: np.ndarray  # (3, 3) model-space rotation (camera.rotation convention)
    trans: np.ndarray  # (2,) pixel shift
    visible: np.ndarray  # (21,) bool: the points the fit used
    error_px: float  # mean distance of the visible points to their fitted vertices, pixels
    error_box: float  # error_px / sqrt(w * h) of the fitted 68-point box (a fraction, like NME)

    @property
    def yaw_pitch_roll(self) -> tuple[float, float, float]:
        """Degrees; yaw > 0 turns the face towards image right (:mod:`lightmark.synth.camera`)."""
        return camera.angles(self.rot)


def _check21(points21: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points21, dtype=np.float64)
    if p.shape != (NUM_POINTS_AFLW21, 2):
        raise ProfileError(f"points21 must have shape (21, 2), got {p.shape}")
    vis = np.isfinite(p).all(axis=1)
    if np.isinf(p[vis]).any():
        raise ProfileError("points21 has infinite values")
    if vis.sum() < MIN_VISIBLE:
        raise ProfileError(f"points21 has {int(vis.sum())} visible points; the fit needs at least {MIN_VISIBLE}")
    q = p[vis]
    if max(np.ptp(q[:, 0]), np.ptp(q[:, 1])) < 4:
        raise ProfileError("the visible points21 span less than 4 pixels: not a face")
    return p, vis


def _solve_shape(a: np.ndarray, b: np.ndarray, sm: ShapeModel) -> np.ndarray:
    from scipy.optimize import lsq_linear

    k = a.shape[1]
    a_aug = np.vstack([a, np.diag(sm.prior)])
    y_aug = np.concatenate([b, np.zeros(k)])
    return lsq_linear(a_aug, y_aug, bounds=(sm.lo, sm.hi), method="bvls").x


def fit21(points21: np.ndarray, model_path: Optional[str] = None, rounds: int = ROUNDS,
          huber_cm: float = HUBER_CM, sm: Optional[ShapeModel] = None,
          use: Optional[np.ndarray] = None, jaw: str = "substitute") -> Fit21Result:
    """Fit the ICT model to AFLW's 21 points ((21, 2) pixels, NaN = not visible) and return its 68
    landmark vertices projected (3D convention; ``jaw``: see :data:`JAW_CHOICES`) with the pose.
    ``use`` (21 bools) leaves further points out (held-out tests); ``sm`` overrides the prepared
    model (vertex choice, prior, jaw)."""
    p, vis = _check21(points21)
    if use is not None:
        vis = vis & np.asarray(use, bool)
        if vis.sum() < MIN_VISIBLE:
            raise ProfileError(f"only {int(vis.sum())} points left to fit; need {MIN_VISIBLE}")
    sm = sm or shape_model(model_path, jaw=jaw)
    q = p[vis]
    x_mean, x_basis = sm.points_mean[vis], sm.points_basis[vis]
    coef = np.zeros(x_basis.shape[2])

    # Pose search with the mean shape: affine start, then fixed yaws at the affine start's roll.
    s0, r0, t0 = _affine_init(x_mean, q)
    roll0 = camera.angles(r0)[2]
    starts = [(s0, r0, t0)] + [_start(x_mean, q, y, roll0) for y in YAW_STARTS]
    best = min((_pose_gn(x_mean, q, s, r, t, 12, huber_cm) for s, r, t in starts), key=lambda z: z[3])
    s, rot, t, _ = best
    for _ in range(rounds):
        # Shape: linear in the coefficients for a fixed pose; residuals in cm (divided by s).
        w = np.sqrt(_pose_cost(x_mean + x_basis @ coef, q, s, rot, t, huber_cm)[2])
        rb = np.einsum("ij,njk->nik", rot, x_basis)
        a = np.concatenate([rb[:, 0, :] * w[:, None], -rb[:, 1, :] * w[:, None]], axis=0)
        base = _project(x_mean, s, rot, t)
        b = np.concatenate([(q[:, 0] - base[:, 0]) / s * w, (q[:, 1] - base[:, 1]) / s * w])
        coef = _solve_shape(a, b, sm)
        s, rot, t, _ = _pose_gn(x_mean + x_basis @ coef, q, s, rot, t, 6, huber_cm)
    p21 = _project(sm.points_mean + sm.points_basis @ coef, s, rot, t)
    p68 = _project(sm.lm_mean + sm.lm_basis @ coef, s, rot, t)
    err = float(np.linalg.norm(p21[vis] - q, axis=1).mean())
    wh = p68.max(axis=0) - p68.min(axis=0)
    return Fit21Result(points68=p68.astype(np.float32), points21=p21.astype(np.float32), coef=coef,
                       scale=float(s), rot=rot, trans=np.asarray(t, np.float64), visible=vis,
                       error_px=err, error_box=err / float(np.sqrt(max(wh[0] * wh[1], 1e-12))))


# ------------------------------------------------------------------------------------------
# choosing the vertices of the 7 points that are not iBUG points

# Where the choice starts: a pupil, iBUG 31 / 35, a vertex beside each ear, between the lips
# (round 1 does not use them: it fits the 14 iBUG points alone).
