"""The ICT-FaceKit light face model, prepared once for fast rendering and fitting.

Model space (as stored): x to the subject's left (image right when frontal), y up, z out of the
face towards a frontal viewer, units of centimetres. Only the parts worth rendering are kept (face,
head and neck, mouth socket, eye sockets, gums, teeth, eyeballs); eyelashes, lacrimal fluid and the
translucent eye blend/occlusion shells are dropped. Their vertex ranges come from the ICT README.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from lightmark.synth.raster import quads_to_triangles
from lightmark.core.errors import FaceModelError
from lightmark.core.paths import shared_models_root

ENV_VAR = "LIGHTMARK_ICT_MODEL"

# Vertex count kept: everything before the lacrimal fluid meshes (index 24591).
N_VERTS = 24591

# Region codes (per triangle and per vertex), with the ICT polygon / vertex ranges (end exclusive).
FACE, HEAD, MOUTH, SOCKET, GUMS, TEETH, SCLERA, IRIS = 1, 2, 3, 4, 5, 6, 7, 8
REGION_NAMES = {FACE: "face", HEAD: "head", MOUTH: "mouth", SOCKET: "eye_socket", GUMS: "gums",
                TEETH: "teeth", SCLERA: "sclera", IRIS: "iris"}
_POLY_RANGES = [
    (FACE, 0, 9230), (HEAD, 9230, 11144), (MOUTH, 11144, 13226), (SOCKET, 13226, 14034),
    (GUMS, 14034, 17006), (TEETH, 17006, 21496),
    (SCLERA, 21496, 22296), (IRIS, 22296, 23094), (SCLERA, 23094, 23894), (IRIS, 23894, 24692),
]
_VERT_RANGES = [
    (FACE, 0, 9409), (HEAD, 9409, 11248), (MOUTH, 11248, 13294), (SOCKET, 13294, 14062),
    (GUMS, 14062, 17039), (TEETH, 17039, 21451),
    (SCLERA, 21451, 22221), (IRIS, 22221, 23021), (SCLERA, 23021, 23791), (IRIS, 23791, 24591),
]
# Polygons [0, 6560) form the "narrow face area" of the ICT README.
NARROW_FACE_POLYS = 6560
# Iris vertex ranges: subject's right eye first (image left when frontal; FaceSynthetics' first
# pupil, beside points 36-41), then the subject's left.
_IRIS_RIGHT = (23791, 24591)
_IRIS_LEFT = (22221, 23021)
_SCLERA_RIGHT = (23021, 23791)
_SCLERA_LEFT = (21451, 22221)

# Jaw-line substitutes from the ICT README ("extended jawline", 17 vertices each side, from the
# ear down to the chin): candidates for the visible-contour jaw of 300W-style labels.
RIGHT_JAW_EXTENDED = [1280, 1278, 1275, 1272, 1248, 12, 820, 1834, 1902, 243, 844, 781, 1673, 2199,
                      801, 1447, 800]
LEFT_JAW_EXTENDED = [3041, 3661, 3042, 4390, 3880, 3022, 3085, 2484, 4102, 4036, 3061, 2253, 3466,
                     3490, 3493, 3496, 3498]




def default_model_path() -> Path:
    """``$LIGHTMARK_ICT_MODEL``, else ``shared/models/ict_face_model/ict_face_model.npz`` beside
    the repository (the project's shared-data layout)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return shared_models_root() / "ict_face_model" / "ict_face_model.npz"


@dataclass
class ICTModel:
    neutral: np.ndarray  # (V, 3) float32
    id_basis: np.ndarray  # (K, V*3) float32; coefficients ~ N(0, 1)
    ex_basis: np.ndarray  # (E, V*3) float32; weights in [0, 1]
    expression_names: list[str]
    tris: np.ndarray  # (T, 3) int32, counter-clockwise seen from outside
    tri_region: np.ndarray  # (T,) int8
    tri_poly: np.ndarray  # (T,) int32: the ICT polygon each triangle comes from
    vert_region: np.ndarray  # (V,) int8
    landmarks68: np.ndarray  # (68,) vertex indices (3D convention)
    pupils: np.ndarray  # (2,) vertex indices: subject's right, then left pupil
    path: str

    @property
    def narrow_face(self) -> np.ndarray:
        """(T,) bool: triangles of the ICT "narrow face area" (no ears, no neck): the region whose
        outline is the face contour of 300W-style labels."""
        return self.tri_poly < NARROW_FACE_POLYS

    @property
    def n_verts(self) -> int:
        return self.neutral.shape[0]

    def shape(self, id_coeffs: Optional[np.ndarray] = None,
              ex_weights: Optional[np.ndarray] = None) -> np.ndarray:
        """Vertices (V, 3) for identity coefficients (K',) and expression weights (E',);
        shorter vectors use the leading components."""
        v = self.neutral.reshape(-1).astype(np.float32, copy=True)
        if id_coeffs is not None and len(id_coeffs):
            c = np.asarray(id_coeffs, dtype=np.float32)
            v += np.einsum("k,kn->n", c, self.id_basis[: len(c)])  # einsum: no BLAS threads
        if ex_weights is not None and len(ex_weights):
            w = np.asarray(ex_weights, dtype=np.float32)
            nz = np.flatnonzero(w)  # expressions are sparse
            if nz.size:
                v += np.einsum("k,kn->n", w[nz], self.ex_basis[nz])
        return v.reshape(-1, 3)

    def expression_index(self, name: str) -> int:
        try:
            return self.expression_names.index(name)
        except ValueError:
            raise FaceModelError(f"no expression {name!r} in the ICT model") from None


def _regions(ranges: list[tuple[int, int, int]], n: int) -> np.ndarray:
    r = np.zeros(n, dtype=np.int8)
    for code, a, b in ranges:
        r[a:b] = code
    return r


def _pupil(neutral: np.ndarray, iris: tuple[int, int], sclera: tuple[int, int]) -> int:
    """The iris vertex furthest along the eye's axis (eyeball centre -> iris centre): the pupil."""
    centre = neutral[sclera[0]:sclera[1]].mean(axis=0)
    iv = neutral[iris[0]:iris[1]]
    axis = iv.mean(axis=0) - centre
    axis /= np.linalg.norm(axis)
    return iris[0] + int(np.argmax((iv - centre) @ axis))


@functools.lru_cache(maxsize=2)
def load_ict(path: Union[str, Path, None] = None) -> ICTModel:
    """Load and prepare the ICT model (cached per path)."""
    p = Path(path) if path is not None else default_model_path()
    if not p.is_file():
        raise FaceModelError(f"{p}: ICT face model not found (set ${ENV_VAR} or pass its path)")
    try:
        d = np.load(p)
        neutral = d["neutral"].astype(np.float32)[:N_VERTS]
        idd = d["identity_deltas"][:, :N_VERTS].astype(np.float32)
        exd = d["expression_deltas"][:, :N_VERTS].astype(np.float32)
        names = [str(s) for s in d["expression_names"]]
        faces = d["faces"]
        lm = d["landmarks68"].astype(np.int64)
    except KeyError as e:
        raise FaceModelError(f"{p}: missing array {e} in the ICT model file") from None
    if lm.shape != (68,):
        raise FaceModelError(f"{p}: landmarks68 has shape {lm.shape}, expected (68,)")
    poly_region = _regions(_POLY_RANGES, len(faces))
    keep = poly_region > 0
    tris = quads_to_triangles(faces[keep])
    reg = poly_region[keep]
    is_quad = faces[keep][:, 3] >= 0
    tri_region = np.concatenate([reg, reg[is_quad]]).astype(np.int8)
    kept = np.nonzero(keep)[0]
    tri_poly = np.concatenate([kept, kept[is_quad]]).astype(np.int32)
    if tris.max() >= N_VERTS:
        raise FaceModelError(f"{p}: kept polygons reference vertices beyond {N_VERTS}")
    pupils = np.array([_pupil(neutral, _IRIS_RIGHT, _SCLERA_RIGHT),
                       _pupil(neutral, _IRIS_LEFT, _SCLERA_LEFT)])
    return ICTModel(neutral=neutral, id_basis=idd.reshape(len(idd), -1),
                    ex_basis=exd.reshape(len(exd), -1), expression_names=names, tris=tris,
                    tri_region=tri_region, tri_poly=tri_poly, vert_region=_regions(_VERT_RANGES, N_VERTS),
                    landmarks68=lm, pupils=pupils, path=str(p))
