"""Random synthetic faces from the ICT model, written in the FaceSynthetics format.

Each image draws an identity (100 PCA coefficients ~ N(0, 1)), a sparse expression, a head pose
(yaw uniform in +-90, pitch +-40, roll +-30 degrees), a perspective camera, Lambert + ambient +
a little specular lighting, a procedural skin/hair/eye albedo, a background and occluders. The
landmarks are the projected 3D landmark vertices (the FaceSynthetics / AFLW2000-3D convention); a
300W-style "contour" jaw, following the visible face outline, is computed from the rendered
silhouette and written beside them.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from lightmark.core import files
from lightmark.synth import appearance, camera, ict
from lightmark.synth.raster import interpolate, rasterize, vertex_normals
from lightmark.core.errors import SynthError
from lightmark.core.paths import data_root

MIN_SIZE = 64
MAX_SIZE = 2048
JAW_CONVENTIONS = ("3d", "contour")
MANIFEST = "manifest.json"

# FaceSynthetics segmentation classes (the subset this renderer produces).
SEG = {"background": 0, "skin": 1, "right_eye": 3, "left_eye": 4, "right_brow": 5, "left_brow": 6,
       "mouth_interior": 9, "top_lip": 10, "bottom_lip": 11, "neck": 12, "hair": 13,
       "glasses": 16, "facewear": 18}

# Jaw points 0-7 are on the subject's right (model x < 0), 9-16 on the left; 8 is the chin.
JAW_SIDE = np.array([-1] * 8 + [0] + [1] * 8)




@dataclass
class RenderedFace:
    image: np.ndarray  # (S, S, 3) uint8
    points: np.ndarray  # (68, 2) float32, projected 3D landmarks
    contour: np.ndarray  # (68, 2) float32, jaw 0-16 moved to the visible contour
    pupils: np.ndarray  # (2, 2) float32: subject's right, then left pupil
    seg: np.ndarray  # (S, S) uint8, FaceSynthetics classes
    face_mask: np.ndarray  # (S, S) bool: the narrow face area as rendered (the contour's silhouette)
    head_mask: np.ndarray  # (S, S) bool: everything rendered
    params: dict = field(default_factory=dict)


def check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise SynthError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] pixels, got {size!r}")
    return int(size)


def check_jaw(jaw: str) -> str:
    if jaw not in JAW_CONVENTIONS:
        raise SynthError(f"jaw must be one of {JAW_CONVENTIONS}, got {jaw!r}")
    return jaw


# ------------------------------------------------------------------------------------------
# parameters


def sample_expression(rng: np.random.Generator, model: ict.ICTModel) -> np.ndarray:
    """Sparse blendshape weights: a few random shapes, symmetric pairs often together."""
    names = model.expression_names
    w = np.zeros(len(names), dtype=np.float32)
    usable = [i for i, n in enumerate(names) if not n.startswith("PupilDilate")]
    for i in rng.choice(usable, size=min(int(rng.poisson(2.5)), 8), replace=False):
        w[i] = rng.uniform(0.2, 1.0)
        n = names[i]
        if n.endswith(("_L", "_R")) and rng.uniform() < 0.7:
            twin = n[:-1] + ("R" if n.endswith("L") else "L")
            if twin in names:
                w[names.index(twin)] = np.clip(w[i] + rng.normal(0, 0.1), 0, 1)
    if rng.uniform() < 0.35:
        w[model.expression_index("jawOpen")] = rng.uniform(0.05, 0.8)
    return w


def sample_params(rng: np.random.Generator, model: ict.ICTModel, size: int) -> dict:
    fov = rng.uniform(12.0, 55.0)
    return {
        "id": np.clip(rng.normal(0, 1, size=model.id_basis.shape[0]), -3, 3).astype(np.float32),
        "expr": sample_expression(rng, model),
        "yaw": float(rng.uniform(-90, 90)),
        "pitch": float(rng.uniform(-40, 40)),
        "roll": float(rng.uniform(-30, 30)),
        "fov_deg": float(fov),
        "focal": float(size / 2 / np.tan(np.deg2rad(fov) / 2)),
        "face_px": float(rng.uniform(0.32, 0.58) * size),  # frontal face width on screen
        "shift": rng.uniform(-0.07, 0.07, size=2) * size,
        "light": _light_dir(rng),
        "ambient": float(rng.uniform(0.25, 0.6)),
        "diffuse": float(rng.uniform(0.4, 0.9)),
        "specular": float(rng.uniform(0.0, 0.25)),
        "shininess": float(rng.uniform(8, 40)),
        "light_rgb": rng.normal(1.0, 0.06, size=3).clip(0.8, 1.2),
    }


def _light_dir(rng: np.random.Generator) -> np.ndarray:
    """Unit vector from the surface towards the light, in camera space (-z faces the camera)."""
    d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.6), -rng.uniform(0.2, 1.2)])
    return d / np.linalg.norm(d)


# ------------------------------------------------------------------------------------------
# rendering


@dataclass
class _Prepared:
    model: ict.ICTModel
    weights: appearance.RegionWeights
    tris_closed: np.ndarray  # without teeth and gums (hidden behind closed lips)
    tris_open: np.ndarray
    narrow_closed: np.ndarray
    narrow_open: np.ndarray
    vert_seg: np.ndarray  # (V,) base segmentation class per vertex


@functools.lru_cache(maxsize=2)
def prepare(model_path: Optional[str] = None) -> _Prepared:
    m = ict.load_ict(model_path)
    w = appearance.region_weights(m.path)
    inner = np.isin(m.tri_region, [ict.GUMS, ict.TEETH])
    socket = m.tri_region == ict.SOCKET  # behind the eyeballs and lids: never seen, never drawn
    seg = np.full(m.n_verts, SEG["skin"], dtype=np.uint8)
    reg = m.vert_region
    x = m.neutral[:, 0]
    seg[np.isin(reg, [ict.SCLERA, ict.IRIS]) & (x < 0)] = SEG["right_eye"]
    seg[np.isin(reg, [ict.SCLERA, ict.IRIS]) & (x >= 0)] = SEG["left_eye"]
    seg[np.isin(reg, [ict.MOUTH, ict.GUMS, ict.TEETH])] = SEG["mouth_interior"]
    chin_y = m.neutral[m.landmarks68[8], 1]
    seg[w.skin & (m.neutral[:, 1] < chin_y - 1.0) & (m.neutral[:, 2] < m.neutral[m.landmarks68[8], 2])] = SEG["neck"]
    seg[(w.brows > 0.5) & w.brow_right] = SEG["right_brow"]
    seg[(w.brows > 0.5) & ~w.brow_right] = SEG["left_brow"]
    seg[(w.lips > 0.5) & w.upper_lip] = SEG["top_lip"]
    seg[(w.lips > 0.5) & ~w.upper_lip] = SEG["bottom_lip"]
    return _Prepared(m, w, m.tris[~inner & ~socket], m.tris[~socket], m.narrow_face[~inner & ~socket],
                     m.narrow_face[~socket], seg)


def pose_camera(verts: np.ndarray, model: ict.ICTModel, rot: np.ndarray, focal: float,
                face_px: float, shift: np.ndarray) -> np.ndarray:
    """Translation putting the landmarks' centre at image centre + ``shift`` with a frontal face
    width of about ``face_px`` pixels."""
    lm = verts[model.landmarks68]
    width_cm = float(lm[16, 0] - lm[0, 0])
    dist = focal * width_cm / face_px
    c = (lm.mean(axis=0) @ rot.T) * camera.FLIP
    return np.array([shift[0] * dist / focal - c[0], shift[1] * dist / focal - c[1], dist - c[2]])


def contour_jaw(points: np.ndarray, face_mask: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """300W-style jaw: each jaw point 0-16 except the chin moves along its image row to the
    outermost pixel of the rendered face (``face_mask``) on its side (``directions``: -1 left,
    +1 right, 0 keep). Points on rows without face pixels stay where they are."""
    out = np.array(points, dtype=np.float32, copy=True)
    h, w = face_mask.shape
    for i in range(17):
        d = directions[i]
        row = int(round(float(points[i, 1])))
        if d == 0 or not 0 <= row < h:
            continue
        cols = np.flatnonzero(face_mask[row])
        if cols.size:
            out[i, 0] = cols.max() if d > 0 else cols.min()
    return out


def jaw_directions(verts: np.ndarray, model: ict.ICTModel, rot: np.ndarray, trans: np.ndarray,
                   focal: float, centre: tuple[float, float]) -> np.ndarray:
    """Image x direction (-1/+1) in which each jaw point's side of the face lies (0: chin)."""
    lm = verts[model.landmarks68[:17]]
    a = camera.project(camera.to_camera(lm, rot, trans), focal, centre)
    b = camera.project(camera.to_camera(lm + np.array([1.0, 0, 0]), rot, trans), focal, centre)
    dx = b[:, 0] - a[:, 0]  # where model +x (the subject's left) goes on screen
    sx = np.where(np.abs(dx) > 1e-6, np.sign(dx), 1.0)
    return (JAW_SIDE * sx).astype(np.int64)


def render_face(rng: np.random.Generator, size: int = 256,
                backgrounds: Optional[appearance.BackgroundPool] = None,
                model_path: Optional[str] = None, occluders: bool = True,
                params: Optional[dict] = None, seg: bool = True) -> RenderedFace:
    """One random face. ``params`` (from :func:`sample_params`) overrides the draw; ``seg=False``
    skips the segmentation labels (left all zero) to save time."""
    import cv2

    size = check_size(size)
    prep = prepare(model_path)
    m = prep.model
    p = params if params is not None else sample_params(rng, m, size)
    verts = m.shape(p["id"], p["expr"])
    rot = camera.rotation(p["yaw"], p["pitch"], p["roll"])
    focal = p["focal"]
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    trans = pose_camera(verts, m, rot, focal, p["face_px"], p["shift"])
    cam = camera.to_camera(verts, rot, trans)
    xy = camera.project(cam, focal, centre)
    mouth_open = p["expr"][m.expression_index("jawOpen")] > 0.02 or p["expr"].max() > 0.5
    tris = prep.tris_open if mouth_open else prep.tris_closed
    narrow = prep.narrow_open if mouth_open else prep.narrow_closed
    r = rasterize(xy, cam[:, 2], tris, size, size)

    # Shading per vertex (Gouraud): normals in camera space.
    normals = vertex_normals(verts, tris) @ rot.T * camera.FLIP
    albedo, hair, info = appearance.vertex_albedo(rng, m, prep.weights, m.neutral)
    l = p["light"]
    lam = np.clip(normals @ l, 0, None)
    view = -cam / np.linalg.norm(cam, axis=1, keepdims=True)
    half = view + l
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = np.clip((normals * half).sum(axis=1), 0, None) ** p["shininess"]
    spec *= p["specular"] * (1.0 - 0.8 * hair)  # hair is matte
    shade = (p["ambient"] + p["diffuse"] * lam)[:, None] * albedo + spec[:, None]
    shade *= p["light_rgb"][None, :]
    colour = interpolate(r, tris, shade.astype(np.float32))

    bg, bg_kind = (backgrounds.sample(rng, size) if backgrounds is not None
                   else (appearance.procedural_background(rng, size), "procedural"))
    mask = r.mask
    # A slightly soft edge (the render is not anti-aliased).
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0.6)[..., None]
    img = bg.astype(np.float32) * (1 - alpha) + np.clip(colour * 255.0, 0, 255) * alpha
    # Per-pixel segmentation: class of the vertex with the largest barycentric weight.
    seg_img = np.zeros((size, size), np.uint8)
    if seg:
        t = tris[r.tri[mask]]
        nearest = t[np.arange(len(t)), np.argmax(r.bary[mask], axis=1)]
        vs = prep.vert_seg[nearest].copy()
        vs[(hair[nearest] > 0.5) & (vs == SEG["skin"])] = SEG["hair"]
        seg_img[mask] = vs

    pts = xy[m.landmarks68].astype(np.float32)
    face_mask = mask & narrow[np.maximum(r.tri, 0)]
    contour = contour_jaw(pts, face_mask, jaw_directions(verts, m, rot, trans, focal, centre))
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    drawn = appearance.draw_occluders(rng, image, seg_img, pts, SEG, np.array(info["skin_rgb"])) if occluders else []
    if rng.uniform() < 0.3:
        s = rng.uniform(0.3, 1.1)
        image = cv2.GaussianBlur(image, (0, 0), s)
    noise = rng.uniform(0, 5)
    if noise > 1:
        image = np.clip(image + rng.standard_normal(image.shape, dtype=np.float32) * noise, 0, 255).astype(np.uint8)
    meta = {"yaw": round(p["yaw"], 3), "pitch": round(p["pitch"], 3), "roll": round(p["roll"], 3),
            "fov_deg": round(p["fov_deg"], 2), "background": bg_kind, "occluders": drawn, **info}
    return RenderedFace(image=image, points=pts, contour=contour,
                        pupils=xy[m.pupils].astype(np.float32), seg=seg_img, face_mask=face_mask,
                        head_mask=mask, params=meta)


# ------------------------------------------------------------------------------------------
# the FaceSynthetics format


def format_points(points: np.ndarray, pupils: np.ndarray) -> str:
    """70 lines ``x y``: 68 points then the two pupils, 0-based pixel centres (the convention the
    FaceSynthetics reader in lightmark.data.readers uses: no shift)."""
    p = np.concatenate([np.asarray(points, np.float64).reshape(68, 2),
                        np.asarray(pupils, np.float64).reshape(2, 2)])
    return "".join(f"{x:.3f} {y:.3f}\n" for x, y in p)


def write_sample(out_dir: Path, name: str, image: np.ndarray, points3d: np.ndarray,
                 contour: np.ndarray, pupils: np.ndarray, jaw: str,
                 seg: Optional[np.ndarray] = None) -> None:
    """``name.png``, ``name_ldmks.txt`` (the ``jaw`` convention), the other convention beside it
    (``name_ldmks_contour.txt`` or ``name_ldmks_3d.txt``) and optionally ``name_seg.png``; each file
    written atomically, the image last so a reader never finds an image without labels."""
    import cv2

    main, other, other_suffix = ((points3d, contour, "contour") if jaw == "3d"
                                 else (contour, points3d, "3d"))
    files.write_text(out_dir / f"{name}_ldmks.txt", format_points(main, pupils))
    files.write_text(out_dir / f"{name}_ldmks_{other_suffix}.txt", format_points(other, pupils))
    if seg is not None:
        ok, buf = cv2.imencode(".png", seg)
        files.write_bytes(out_dir / f"{name}_seg.png", buf.tobytes())
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise SynthError(f"{out_dir / name}.png: PNG encoding failed")
    files.write_bytes(out_dir / f"{name}.png", buf.tobytes())


def default_background_dir() -> Optional[str]:
    """HELEN train (never AFW: it is the validation set) from the shared data, if present."""
    p = data_root() / "300w" / "helen_trainset"
    return str(p) if p.is_dir() else None


def check_count(n: int) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise SynthError(f"n (number of images) must be a positive integer, got {n!r}")
    return int(n)


@functools.lru_cache(maxsize=2)
def _backgrounds(background_dir: Optional[str]) -> appearance.BackgroundPool:
    return appearance.BackgroundPool(background_dir)


def render_slice(images: range, out_dir: Union[str, Path], seed: int, size: int, jaw: str,
                 seg: bool, background_dir: Optional[str], model_path: Optional[str],
                 occluders: bool) -> list[dict]:
    """Render and write images ``images`` (indices into the run) of a :func:`render_dataset` run,
    already validated; returns their manifest entries. A failure raises :class:`SynthError` naming
    the image. Module level so worker processes can run it."""
    out = Path(out_dir)
    pool = _backgrounds(background_dir)
    entries = []
    for i in images:
        name = f"{i:06d}"
        try:
            f = render_face(np.random.default_rng([seed, i]), size, pool, model_path,
                            occluders=occluders, seg=seg)
            write_sample(out, name, f.image, f.points, f.contour, f.pupils, jaw, f.seg if seg else None)
        except Exception as e:
            raise SynthError(f"image {i} ({out / name}.png): {type(e).__name__}: {e}") from e
        entries.append({"name": name, **f.params})
    return entries


def render_dataset(out_dir: Union[str, Path], n: int, seed: int = 0, size: int = 256,
                   jaw: str = "3d", seg: bool = False, start: int = 0,
                   background_dir: Optional[str] = "default", model_path: Optional[str] = None,
                   occluders: bool = True, progress: bool = False, workers: int = 1) -> dict:
    """Render ``n`` random faces into ``out_dir`` (FaceSynthetics layout) and a manifest.

    Image ``i`` uses its own generator seeded by ``(seed, i)``, so any slice (``start``) of a run
    renders the same images as the whole run. ``workers`` > 1 renders contiguous slices of the
    range in that many processes (0: one per CPU core), with byte-identical files and the same
    manifest apart from its speed record (``seconds``, ``images_per_s``, ``workers``). Returns the
    run statistics (also in the manifest).
    """
    from lightmark.synth.parallel import check_workers, run_slices, split

    n = check_count(n)
    size = check_size(size)
    jaw = check_jaw(jaw)
    workers = check_workers(workers)
    if not isinstance(start, (int, np.integer)) or start < 0:
        raise SynthError(f"start must be a non-negative integer, got {start!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bdir = default_background_dir() if background_dir == "default" else background_dir
    prep = prepare(model_path)
    t0 = time.perf_counter()
    task = functools.partial(render_slice, out_dir=str(out), seed=int(seed), size=size, jaw=jaw,
                             seg=bool(seg), background_dir=bdir, model_path=prep.model.path,
                             occluders=bool(occluders))
    slices = split(start, n, workers) if workers > 1 or progress else [range(start, start + n)]
    images = [e for part in run_slices(task, slices, workers, "synth" if progress else None) for e in part]
    secs = time.perf_counter() - t0
    stats = {"format": "facesynthetics", "generator": "lightmark.synth.faces", "kind": "synthetic",
             "seed": int(seed), "n": n, "start": int(start), "size": size, "jaw": jaw, "seg": bool(seg),
             "occluders": bool(occluders), "model": prep.model.path, "backgrounds": bdir,
             "landmarks": "0-based pixel centres; 68 points then right, left pupil (subject's)",
             "pose_convention": "degrees; +yaw turns the face to image right, +pitch looks down, "
                                "+roll turns counter-clockwise on screen",
             "seconds": round(secs, 3), "images_per_s": round(n / max(secs, 1e-9), 2),
             "workers": workers, "images": images}
    files.write_text(out / MANIFEST, json.dumps(stats, indent=1))
    return {k: v for k, v in stats.items() if k != "images"}


def synth_main(out: str, n: int, seed: int = 0, size: int = 256, seg: bool = False,
               jaw: str = "3d", workers: int = 1) -> dict:
    """CLI entry (``lightmark synth``): render ``n`` faces to ``out`` with ``workers`` processes
    (0: one per CPU core); returns the run statistics."""
    return render_dataset(out, n, seed=seed, size=size, jaw=jaw, seg=seg, workers=workers)
