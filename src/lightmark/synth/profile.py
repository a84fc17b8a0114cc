"""3D face profiling of real photos (300W-LP style): fit the ICT model to a face's 68 landmarks,
turn the head in yaw, render it back textured from the photo, and warp the background around it.

(Over 400 lines on purpose: fit, render and the folder driver share the FitResult and the
model's arrays, and each step is read top to bottom in the order it runs.)

Fitting. A weak-perspective camera (scale, rotation, 2D shift) and the model's first identity
components and a few expressions are fitted by alternating (a) a Gauss-Newton pose fit and (b) a
bounded, ridge-regularised linear least squares for the shape. Real 300W-style labels put the jaw
on the *visible* contour, not on fixed 3D points, so jaw points are matched each round to the
silhouette vertex of the current fit on the landmark's image row ("landmark marching"), not to
fixed vertices.

Rendering. Each output pixel of the rotated face takes its colour from where its surface point
was in the photo (barycentric interpolation of the vertices' original projections, then one
``cv2.remap``): full-resolution texture without a texture map. Surface that the photo did not
see takes the colour of its mirror-image vertex. The background (hair, ears, neck, scene) is
warped piecewise-affinely from anchors on the head that move with it to fixed anchors around it.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from lightmark.core import files
from lightmark.synth import camera, ict
from lightmark.synth.faces import JAW_SIDE, check_count, contour_jaw, write_sample
from lightmark.synth.raster import interpolate, rasterize
from lightmark.core.errors import ProfileError

MAX_YAW_DELTA = 60.0
ID_COMPONENTS = 20
FIT_EXPRESSIONS = ("jawOpen", "mouthSmile_L", "mouthSmile_R", "mouthFunnel", "mouthPucker",
                   "mouthStretch_L", "mouthStretch_R", "mouthLowerDown_L", "mouthLowerDown_R",
                   "mouthUpperUp_L", "mouthUpperUp_R", "eyeBlink_L", "eyeBlink_R",
                   "browInnerUp_L", "browInnerUp_R", "browDown_L", "browDown_R")
# Ridge weights (in cm^2 of landmark residual per unit coefficient^2): the prior on the shape.
ID_PRIOR = 0.08
EXPR_PRIOR = 0.02
NON_JAW = np.arange(17, 68)
JAW = np.array([i for i in range(17) if i != 8])




@dataclass
class FitResult:
    id_coeffs: np.ndarray  # (ID_COMPONENTS,)
    expr: np.ndarray  # (E,) full expression weight vector of the model
    scale: float  # pixels per cm
    rot: np.ndarray  # (3, 3) model-space rotation (camera.rotation convention)
    trans: np.ndarray  # (2,) pixel shift
    vertex_ids: np.ndarray  # (68,) model vertex matched to each landmark (jaw: contour vertices)
    points: np.ndarray  # (68, 2) reprojection of the matched vertices
    error_px: float  # mean point-to-point reprojection error over the 68 points
    error_nonjaw_px: float  # the same over points 17-67 (what the default fit uses)
    image_size: tuple[int, int]  # (width, height)

    @property
    def yaw_pitch_roll(self) -> tuple[float, float, float]:
        return camera.angles(self.rot)


@dataclass
class Profiled:
    image: np.ndarray  # (H, W, 3) uint8
    points: np.ndarray  # (68, 2) float32, 3D convention
    contour: np.ndarray  # (68, 2) float32, jaw on the visible contour
    pupils: np.ndarray  # (2, 2) float32
    info: dict = field(default_factory=dict)


def _check_points(points: np.ndarray, name: str = "points68") -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (68, 2):
        raise ProfileError(f"{name} must have shape (68, 2), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ProfileError(f"{name} has NaN or infinite values")
    if np.ptp(p[:, 0]) < 4 or np.ptp(p[:, 1]) < 4:
        raise ProfileError(f"{name} spans less than 4 pixels: not a face")
    return p


def _check_size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ProfileError(f"image_size must be (width, height), got {image_size!r}") from None
    if w < 16 or h < 16:
        raise ProfileError(f"image_size must be at least 16x16, got {w}x{h}")
    return w, h


@dataclass
class _FitModel:
    neutral: np.ndarray  # (V, 3)
    basis: np.ndarray  # (V, 3, K + E): identity then fit expressions
    expr_index: np.ndarray  # (E,) indices into the model's expression list
    candidates: np.ndarray  # vertices that may carry a contour jaw point
    mirror: np.ndarray  # (V,) index of each vertex's mirror image (x -> -x)
    n_id: int


@functools.lru_cache(maxsize=2)
def _fit_model(model_path: str) -> _FitModel:
    from scipy.spatial import cKDTree

    m = ict.load_ict(model_path)
    ei = np.array([m.expression_index(n) for n in FIT_EXPRESSIONS])
    v = m.n_verts
    idb = m.id_basis[:ID_COMPONENTS].reshape(ID_COMPONENTS, v, 3)
    exb = m.ex_basis[ei].reshape(len(ei), v, 3)
    basis = np.concatenate([idb, exb]).transpose(1, 2, 0).astype(np.float32)
    n = m.neutral
    eye_y = n[m.landmarks68[[36, 45]], 1].mean()
    narrow = np.zeros(v, bool)
    narrow[np.unique(m.tris[m.narrow_face])] = True
    cand = np.flatnonzero(narrow & (n[:, 1] < eye_y))
    mirror = cKDTree(n).query(n * np.array([-1.0, 1.0, 1.0]))[1]
    return _FitModel(n, basis, ei, cand, mirror.astype(np.int64), ID_COMPONENTS)


def _project(x3: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Weak perspective: rotate, drop z, flip y (model y up, image y down), scale, shift."""
    r = x3 @ rot.T
    return np.stack([r[:, 0], -r[:, 1]], axis=1) * s + t


def _rodrigues(w: np.ndarray) -> np.ndarray:
    th = np.linalg.norm(w)
    if th < 1e-12:
        return np.eye(3)
    k = w / th
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * kx + (1 - np.cos(th)) * kx @ kx


def _pose_init(x3: np.ndarray, p2: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Affine camera by least squares, made a scaled rotation (SVD)."""
    a = np.hstack([x3, np.ones((len(x3), 1))])
    sol, *_ = np.linalg.lstsq(a, p2, rcond=None)  # (4, 2)
    r1, r2 = sol[:3, 0], -sol[:3, 1]
    u, sv, vt = np.linalg.svd(np.stack([r1, r2]), full_matrices=False)
    rr = u @ vt
    rot = np.vstack([rr, np.cross(rr[0], rr[1])])
    return float(sv.mean()), rot, sol[3]


def _pose_refine(x3: np.ndarray, p2: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray,
                 iters: int = 8) -> tuple[float, np.ndarray, np.ndarray]:
    """Gauss-Newton on (log scale, small rotation, shift) with numeric Jacobians (7 unknowns)."""
    for _ in range(iters):
        def res(q):
            return (_project(x3, s * np.exp(q[0]), _rodrigues(q[1:4]) @ rot, t + q[4:6]) - p2).ravel()

        r0 = res(np.zeros(6))
        jac = np.empty((r0.size, 6))
        for k in range(6):
            dq = np.zeros(6)
            dq[k] = 1e-5 if k < 4 else 1e-3
            jac[:, k] = (res(dq) - r0) / dq[k]
        step, *_ = np.linalg.lstsq(jac, -r0, rcond=None)
        s, rot, t = s * np.exp(step[0]), _rodrigues(step[1:4]) @ rot, t + step[4:6]
        if np.abs(step).max() < 1e-7:
            break
    return s, rot, t


def _march_jaw(fm: _FitModel, shape_c: np.ndarray, p2: np.ndarray, s: float, rot: np.ndarray,
               t: np.ndarray, base_ids: np.ndarray) -> np.ndarray:
    """Vertex for each jaw landmark: the contour candidate that is outermost, on the landmark's
    side, among those projecting near the landmark's image row."""
    proj = _project(shape_c, s, rot, t)
    ids = base_ids.copy()
    band = max(1.0, 0.025 * np.ptp(p2[:, 1]))
    sx = np.sign(rot[0, 0]) or 1.0  # where model +x goes on screen
    for i in JAW:
        near = np.abs(proj[:, 1] - p2[i, 1]) < band
        if not near.any():
            continue
        d = JAW_SIDE[i] * sx
        k = np.argmax(proj[near, 0] * d)
        ids[i] = fm.candidates[np.flatnonzero(near)[k]]
    return ids


def fit_ict(points68_2d: np.ndarray, image_size: Sequence[int], iters: int = 6,
            use_jaw: bool = False, model_path: Optional[str] = None) -> FitResult:
    """Fit identity (first 20 components), 17 expressions and a weak-perspective pose to a face's
    68 landmarks (0-based pixel centres; jaw on the visible contour, as 300W labels it).

    By default only points 17-67 drive the fit (their 3D vertices are fixed); the jaw is then
    matched to the fitted face's silhouette. ``use_jaw`` also fits the jaw through that matching
    from the second round on: it helps little and can drift with many rounds, so it is off."""
    p2 = _check_points(points68_2d)
    size = _check_size(image_size)
    m = ict.load_ict(model_path)
    fm = _fit_model(m.path)
    k_all = fm.basis.shape[2]
    coef = np.zeros(k_all)
    ids = m.landmarks68.astype(np.int64).copy()
    shape_of = lambda vid: fm.neutral[vid] + fm.basis[vid] @ coef  # noqa: E731
    s, rot, t = _pose_init(shape_of(ids[NON_JAW]), p2[NON_JAW])
    s, rot, t = _pose_refine(shape_of(ids[NON_JAW]), p2[NON_JAW], s, rot, t)
    from scipy.optimize import lsq_linear

    lo = np.concatenate([np.full(fm.n_id, -3.0), np.zeros(k_all - fm.n_id)])
    hi = np.concatenate([np.full(fm.n_id, 3.0), np.ones(k_all - fm.n_id)])
    prior = np.sqrt(np.concatenate([np.full(fm.n_id, ID_PRIOR), np.full(k_all - fm.n_id, EXPR_PRIOR)]))
    for it in range(iters):
        if use_jaw and it > 0:  # the jaw joins once the pose is roughly right
            ids = _march_jaw(fm, shape_of(fm.candidates), p2, s, rot, t, m.landmarks68.astype(np.int64))
        use = np.arange(68) if use_jaw and it > 0 else NON_JAW
        # Shape: linear in the coefficients for a fixed pose; residuals in cm (divided by s).
        b = fm.basis[ids[use]]  # (n, 3, K)
        rb = np.einsum("ij,njk->nik", rot, b)
        a_mat = np.concatenate([rb[:, 0, :], -rb[:, 1, :]], axis=0)  # x rows, then y rows
        base = _project(fm.neutral[ids[use]], s, rot, t)
        target = np.concatenate([(p2[use, 0] - base[:, 0]) / s, (p2[use, 1] - base[:, 1]) / s])
        a_aug = np.vstack([a_mat, np.diag(prior)])
        y_aug = np.concatenate([target, np.zeros(k_all)])
        coef = lsq_linear(a_aug, y_aug, bounds=(lo, hi), method="bvls").x
        s, rot, t = _pose_refine(shape_of(ids[use]), p2[use], s, rot, t, iters=4)
    ids = _march_jaw(fm, shape_of(fm.candidates), p2, s, rot, t, m.landmarks68.astype(np.int64))
    pts = _project(shape_of(ids), s, rot, t)
    expr = np.zeros(len(m.expression_names), np.float32)
    expr[fm.expr_index] = coef[fm.n_id:]
    return FitResult(id_coeffs=coef[: fm.n_id].astype(np.float32), expr=expr, scale=float(s),
                     rot=rot, trans=np.asarray(t, np.float64), vertex_ids=ids,
                     points=pts.astype(np.float32),
                     error_px=float(np.linalg.norm(pts - p2, axis=1).mean()),
                     error_nonjaw_px=float(np.linalg.norm(pts - p2, axis=1)[NON_JAW].mean()),
                     image_size=size)


# ------------------------------------------------------------------------------------------
# profiling


def _weak_raster(verts: np.ndarray, tris: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray,
                 w: int, h: int):
    xy = _project(verts, s, rot, t)
    depth = 1e4 - (verts @ rot.T)[:, 2] * s  # nearer (larger model z) = smaller depth
    return xy, depth, rasterize(xy, depth, tris, h, w)


def _piecewise_affine_map(src: np.ndarray, dst: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Backward maps (for cv2.remap) of the piecewise-affine warp taking anchors ``src`` to ``dst``
    (Delaunay triangles of ``dst``)."""
    from scipy.spatial import Delaunay

    tri = Delaunay(dst).simplices
    # The triangles are few and large: our rasteriser finds each pixel's triangle and barycentrics.
    r = rasterize(dst, np.ones(len(dst)), tri, h, w, cull="none")
    yy, xx = np.mgrid[:h, :w]
    mapped = interpolate(r, tri, src.astype(np.float32))
    mx = np.where(r.mask, mapped[..., 0], xx).astype(np.float32)
    my = np.where(r.mask, mapped[..., 1], yy).astype(np.float32)
    return mx, my


def _outline(mask: np.ndarray, centre: np.ndarray, rays: np.ndarray, reach: float) -> np.ndarray:
    """Distance from ``centre`` along each unit ray to the last pixel of ``mask`` (0: none)."""
    h, w = mask.shape
    steps = np.arange(1, int(reach) + 1, dtype=np.float64)
    pts = centre[None, None] + rays[:, None] * steps[None, :, None]  # (K, R, 2)
    xi = np.round(pts[..., 0]).astype(int)
    yi = np.round(pts[..., 1]).astype(int)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    hit = np.zeros(xi.shape, bool)
    hit[inside] = mask[yi[inside], xi[inside]]
    last = np.where(hit.any(axis=1), hit.shape[1] - 1 - np.argmax(hit[:, ::-1], axis=1), -1)
    return np.where(last >= 0, steps[np.maximum(last, 0)], 0.0)


def profile(image: np.ndarray, points68: np.ndarray, yaw_delta_deg: float,
            fit: Optional[FitResult] = None, model_path: Optional[str] = None) -> Profiled:
    """Turn the face in ``image`` by ``yaw_delta_deg`` (|delta| <= 60; + turns it towards image
    right). Returns the new image and its landmarks in both jaw conventions."""
    import cv2

    from lightmark.core.imaging import to_rgb8

    img = to_rgb8(image)
    h, w = img.shape[:2]
    p2 = _check_points(points68)
    if not np.isfinite(yaw_delta_deg) or abs(yaw_delta_deg) > MAX_YAW_DELTA:
        raise ProfileError(f"yaw_delta_deg must be within +-{MAX_YAW_DELTA}, got {yaw_delta_deg!r}")
    m = ict.load_ict(model_path)
    fm = _fit_model(m.path)
    if fit is None:
        fit = fit_ict(p2, (w, h), model_path=m.path)
    verts = m.shape(fit.id_coeffs, fit.expr)
    yaw, pitch, roll = fit.yaw_pitch_roll
    rot1 = camera.rotation(yaw + yaw_delta_deg, pitch, roll)
    # Turn about the head's centre (landmark centroid), keeping its image position.
    c3 = verts[m.landmarks68].mean(axis=0)
    t1 = _project(c3[None], fit.scale, fit.rot, fit.trans)[0] - _project(c3[None], fit.scale, rot1, np.zeros(2))[0]
    s = fit.scale
    # Rendered part: the narrow face area (no ears, no neck), eyeballs and mouth interior; the rest
    # of the head (ears, scalp, neck) stays in the warped background, where the photo's hair is.
    keep = m.narrow_face | np.isin(m.tri_region, [ict.MOUTH, ict.SCLERA, ict.IRIS, ict.TEETH])
    tris = m.tris[keep]
    narrow = m.narrow_face[keep]
    xy0, d0, r0 = _weak_raster(verts, tris, s, fit.rot, fit.trans, w, h)
    xy1, d1, r1 = _weak_raster(verts, tris, s, rot1, t1, w, h)
    # Which vertices the photo saw: in the image, front-facing and not hidden (z-buffer).
    xi = np.clip(np.round(xy0).astype(int), [0, 0], [w - 1, h - 1])
    seen = np.zeros(len(verts), bool)
    tv = np.unique(tris)
    inside = (xy0[tv, 0] >= 0) & (xy0[tv, 0] <= w - 1) & (xy0[tv, 1] >= 0) & (xy0[tv, 1] <= h - 1)
    zb = r0.depth[xi[tv, 1], xi[tv, 0]]
    seen[tv] = inside & (d0[tv] <= zb + 0.4 * s)  # 4 mm: the z-buffer is sampled at pixel centres
    src = xy0.copy()
    hidden = ~seen & seen[fm.mirror]
    src[hidden] = xy0[fm.mirror[hidden]]  # mirror-image texture for what the photo did not see
    # Per-pixel source position in the photo -> one remap gives the textured face.
    mapxy = interpolate(r1, tris, src.astype(np.float32))
    face = cv2.remap(img, mapxy[..., 0], mapxy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # Background: a radial warp. Along rays from the head's centre, the old face outline moves to
    # the new one (so what was beside the face stays beside it, and the region the face left is
    # filled by stretching its surroundings); a ring further out and the image border stay.
    narrow0 = r0.mask & narrow[np.maximum(r0.tri, 0)]
    narrow1 = r1.mask & narrow[np.maximum(r1.tri, 0)]
    centre = _project(c3[None], s, fit.rot, fit.trans)[0]
    extent = max(np.ptp(p2[:, 0]), np.ptp(p2[:, 1]))
    ang = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    rays = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    src_o, dst_o = _outline(narrow0, centre, rays, 1.2 * extent), _outline(narrow1, centre, rays, 1.2 * extent)
    ok = (src_o > 2) & (dst_o > 2)
    ring = centre + 1.7 * extent * rays
    border = np.array([[x, y] for x in np.linspace(0, w - 1, 5) for y in np.linspace(0, h - 1, 5)
                       if x in (0, w - 1) or y in (0, h - 1)])
    fixed = np.vstack([ring, border])
    src_pts = np.vstack([centre + rays[ok] * src_o[ok, None], fixed])
    dst_pts = np.vstack([centre + rays[ok] * dst_o[ok, None], fixed])
    mx, my = _piecewise_affine_map(src_pts, dst_pts, w, h)
    bg = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # Outside the render the "face" layer is the background too, so the soft edge blends cleanly.
    face = np.where(r1.mask[..., None], face, bg)
    alpha = cv2.GaussianBlur(r1.mask.astype(np.float32), (5, 5), 1.0)[..., None]
    out = np.clip(bg * (1 - alpha) + face * alpha + 0.5, 0, 255).astype(np.uint8)

    # Landmarks. Non-jaw: the fitted vertex's move plus the label's own residual (the fit is not
    # exact; the labels are). Jaw, 3D convention: the jaw vertices; contour: the new outline.
    lm_old = _project(verts[m.landmarks68], s, fit.rot, fit.trans)
    lm_new = _project(verts[m.landmarks68], s, rot1, t1)
    pts = lm_new.copy()
    pts[NON_JAW] += p2[NON_JAW] - lm_old[NON_JAW]
    face_mask = r1.mask & narrow[np.maximum(r1.tri, 0)]
    sx = np.sign(rot1[0, 0]) or 1.0
    contour = contour_jaw(pts.astype(np.float32), face_mask, (JAW_SIDE * sx).astype(np.int64))
    pupils = _project(verts[m.pupils], s, rot1, t1)
    info = {"yaw_fit": round(yaw, 2), "pitch_fit": round(pitch, 2), "roll_fit": round(roll, 2),
            "yaw_delta": round(float(yaw_delta_deg), 2), "yaw": round(yaw + float(yaw_delta_deg), 2),
            "fit_error_px": round(fit.error_px, 3)}
    return Profiled(out, pts.astype(np.float32), contour, pupils.astype(np.float32), info)


def profile_face(image: np.ndarray, points68: np.ndarray, yaw_delta_deg: float,
                 fit: Optional[FitResult] = None,
                 model_path: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(new_image, new_points68)`` (3D jaw convention); see :func:`profile` for the rest."""
    r = profile(image, points68, yaw_delta_deg, fit=fit, model_path=model_path)
    return r.image, r.points


@functools.lru_cache(maxsize=2)
def _source(data: str, seed: int):
    """``(data set, order, relative names)`` of a profiling run: the faces in the order the run
    uses them (a permutation drawn from ``seed``)."""
    from lightmark.data.readers import open_dataset, require_68

    ds = require_68(open_dataset(data, skip_bad=True), "profile")
    return ds, np.random.default_rng(seed).permutation(len(ds)), ds.relative_names()


def profile_slice(images: range, data: str, out: str, seed: int, max_yaw: float,
                  jaw: str) -> tuple[list[dict], list[float], list[str]]:
    """Profile and write images ``images`` (indices into the run) of a :func:`profile_main` run,
    already validated; returns their manifest entries, fit errors and skipped-sample messages. A
    failure raises :class:`ProfileError` naming the image and its source. Module level so worker
    processes can run it."""
    from lightmark.data.readers import DataError

    ds, order, names = _source(data, seed)
    outp = Path(out)
    entries, errors, skipped = [], [], []
    for i in images:
        idx = int(order[i % len(order)])
        try:
            smp = ds[idx]
        except DataError as e:
            skipped.append(str(e))
            continue
        name = f"{i:06d}"
        try:
            rng = np.random.default_rng([seed, i])  # image i's draws depend on nothing else
            h, w = smp.image.shape[:2]
            fit = fit_ict(smp.points, (w, h))
            yaw = fit.yaw_pitch_roll[0]
            away = np.sign(yaw) if abs(yaw) > 3 else (1.0 if rng.uniform() < 0.5 else -1.0)
            delta = away * rng.uniform(15.0, max_yaw)
            if abs(yaw + delta) > 90:
                delta = float(np.clip(delta, -90 - yaw, 90 - yaw))
            r = profile(smp.image, smp.points, float(delta), fit=fit)
            write_sample(outp, name, r.image, r.points, r.contour, r.pupils, jaw)
        except Exception as e:
            raise ProfileError(f"image {i} ({outp / name}.png, source {names[idx]}): "
                               f"{type(e).__name__}: {e}") from e
        errors.append(fit.error_px)
        entries.append({"name": name, "source": names[idx], **r.info})
    return entries, errors, skipped


def profile_main(data: str, out: str, n: int, seed: int = 0, max_yaw: float = 60.0,
                 jaw: str = "3d", workers: int = 1) -> dict:
    """CLI entry (``lightmark profile``): ``n`` profiled faces from the data set at ``data`` (any
    format :func:`lightmark.data.readers.open_dataset` reads; e.g. HELEN train, UTKFace) written to
    ``out`` in the FaceSynthetics format, with a manifest. Each face turns away from the camera by
    a random 15..``max_yaw`` degrees (final |yaw| <= 90), or the other way when that is impossible.
    Image ``i`` draws from ``np.random.default_rng([seed, i])``, so ``workers`` > 1 (0: one per
    CPU core) profiles contiguous slices in that many processes with byte-identical files and the
    same manifest apart from its speed record (``seconds``, ``images_per_s``, ``workers``)."""
    from lightmark.synth.faces import MANIFEST, check_jaw
    from lightmark.synth.parallel import check_workers, run_slices, split

    n = check_count(n)
    jaw = check_jaw(jaw)
    workers = check_workers(workers)
    if not np.isfinite(max_yaw) or not 15.0 <= max_yaw <= MAX_YAW_DELTA:
        raise ProfileError(f"max_yaw must be in [15, {MAX_YAW_DELTA}] degrees, got {max_yaw!r}")
    ds, _, _ = _source(str(data), int(seed))
    if not len(ds):
        raise ProfileError(f"{data}: no samples")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    task = functools.partial(profile_slice, data=str(data), out=str(outp), seed=int(seed),
                             max_yaw=float(max_yaw), jaw=jaw)
    slices = split(0, n, workers)
    images, errors, skipped = [], [], []
    for part_images, part_errors, part_skipped in run_slices(task, slices, workers):
        images += part_images
        errors += part_errors
        skipped += part_skipped
    secs = time.perf_counter() - t0
    stats = {"format": "facesynthetics", "generator": "lightmark.synth.profile", "kind": "profiled",
             "data": str(data), "seed": int(seed), "n": len(images), "max_yaw": float(max_yaw),
             "jaw": jaw, "fit_error_px_mean": round(float(np.mean(errors)), 3) if errors else None,
             "landmarks": "0-based pixel centres; 68 points then right, left pupil (subject's)",
             "seconds": round(secs, 3), "images_per_s": round(len(images) / max(secs, 1e-9), 2),
             "workers": workers, "skipped": skipped, "images": images}
    files.write_text(outp / MANIFEST, json.dumps(stats, indent=1))
    return {k2: v for k2, v in stats.items() if k2 != "images"}
