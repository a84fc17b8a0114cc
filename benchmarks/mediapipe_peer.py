"""mediapipe's face mesh (0.10.21, the legacy ``mp.solutions`` API: offline, its models ship in the
wheel) with its own face detector, turned into the 68 iBUG points by a fitted 468 -> 68 map.

The map (``mediapipe_68.json``, made by ``fit_mediapipe_map.py`` on HELEN train) gives each iBUG
point as a weighted sum of a few mesh vertices, the weights summing to one: a point follows the
mesh under any shift, scale and rotation of the face.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from common import BENCH, BenchmarkError, match
from methods import Method

DEFAULT_MAP = BENCH / "mediapipe_68.json"
NUM_VERTICES = 468
#: Faces per image: AFW photos show neighbours beside the labelled face; the labelled one is picked
#: by the matching rule, as for the other detectors.
MAX_FACES = 4
#: The shipped models the legacy FaceMesh runs (refine_landmarks=False: no iris/attention model).
MODEL_FILES = ("face_detection/face_detection_short_range.tflite", "face_landmark/face_landmark.tflite")


def _mediapipe() -> Any:
    try:
        import mediapipe
    except ImportError:
        raise BenchmarkError("mediapipe is not installed (pip install -r benchmarks/requirements.txt)") from None
    return mediapipe


class MeshMap:
    """468 mesh vertices -> 68 iBUG points: point k = sum_j weights[k][j] * vertex[vertices[k][j]]."""

    def __init__(self, vertices: list[list[int]], weights: list[list[float]], info: Optional[dict] = None) -> None:
        if len(vertices) != 68 or len(weights) != 68:
            raise BenchmarkError(f"a 468 -> 68 map needs 68 points, got {len(vertices)}")
        k = max(len(v) for v in vertices)
        # Padded to one width (weight 0 on vertex 0) so applying the map is one gather.
        self.index = np.zeros((68, k), np.int64)
        self.weight = np.zeros((68, k), np.float64)
        for i, (v, w) in enumerate(zip(vertices, weights)):
            if len(v) != len(w) or not v or abs(sum(w) - 1.0) > 1e-6 or not all(0 <= j < NUM_VERTICES for j in v):
                raise BenchmarkError(f"468 -> 68 map, point {i}: bad vertices {v} / weights {w}")
            self.index[i, :len(v)], self.weight[i, :len(w)] = v, w
        self.vertices, self.weights, self.info = vertices, weights, info or {}

    def __call__(self, mesh: np.ndarray) -> np.ndarray:
        """(..., 468, 2) -> (..., 68, 2)."""
        return np.einsum("...kjc,kj->...kc", mesh[..., self.index, :], self.weight)

    @classmethod
    def load(cls, path: Path = DEFAULT_MAP) -> "MeshMap":
        if not path.is_file():
            raise BenchmarkError(f"{path}: no 468 -> 68 map (make it with benchmarks/fit_mediapipe_map.py)")
        d = json.loads(path.read_text())
        pts = d["points"]
        return cls([p["vertices"] for p in pts], [p["weights"] for p in pts],
                   {k: v for k, v in d.items() if k != "points"})


class MediapipeMesh:
    """FaceMesh on still photos: its detector on every call, then the mesh on each face found."""

    def __init__(self, max_faces: int = MAX_FACES, static: bool = True) -> None:
        mp = _mediapipe()
        self.version = mp.__version__
        self.root = Path(mp.__file__).parent / "modules"
        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=max_faces,
                                                    refine_landmarks=False)

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        """Each face's (468, 2) vertices in 0-based pixel centres of ``image`` (RGB uint8)."""
        res = self.mesh.process(image)
        if not res.multi_face_landmarks:
            return []
        h, w = image.shape[:2]
        # mediapipe's x, y are fractions of the image's width and height, 0 and 1 at its outer
        # edges: pixel-centre coordinates are half a pixel less than fraction * size.
        scale = np.array([w, h], np.float64)
        return [np.array([(p.x, p.y) for p in f.landmark], np.float64) * scale - 0.5
                for f in res.multi_face_landmarks]

    def close(self) -> None:
        self.mesh.close()


def pick_face(meshes: list[np.ndarray], lm_box: np.ndarray, box_of: Any) -> Optional[int]:
    """Index of the mesh that is the labelled face (``box_of(mesh)`` its box), or None."""
    if not meshes:
        return None
    boxes = np.array([box_of(m) for m in meshes], np.float64)
    d = match(boxes, lm_box)
    return None if d is None else int(np.argmin(np.abs(boxes - d).sum(axis=1)))


class MediapipePeer:
    """mediapipe end to end (detector + mesh + map), and a tracking copy for the mesh's own cost."""

    def __init__(self, map_path: Path = DEFAULT_MAP) -> None:
        from lightmark.core import geometry

        self.map = MeshMap.load(map_path)
        self.map_path = map_path
        self.mesh = MediapipeMesh()
        # Video mode with one face: once it holds a face, the next call crops from the previous
        # landmarks and skips the detector, so timing it on a repeated photo gives the mesh alone.
        self.tracker = MediapipeMesh(max_faces=1, static=False)
        self._blank = np.zeros((64, 64, 3), np.uint8)
        self.version = self.mesh.version
        self._box = geometry.landmark_box

    def faces(self, image: np.ndarray) -> list[np.ndarray]:
        """Every face's 68 points."""
        return [self.map(m).astype(np.float32) for m in self.mesh(image)]

    def labelled_face(self, image: np.ndarray, lm_box: np.ndarray) -> Optional[np.ndarray]:
        faces = self.faces(image)
        j = pick_face(faces, lm_box, self._box)
        return None if j is None else faces[j]

    def track(self, image: np.ndarray) -> list[np.ndarray]:
        """68 points from the tracker: after :meth:`prime` on the same photo, the mesh alone."""
        return [self.map(m) for m in self.tracker(image)]

    def prime(self, image: np.ndarray) -> None:
        """Make the tracker hold this photo's face: a blank frame drops whatever it tracked (else
        it would crop the new photo where the last face was), then one detector + mesh pass."""
        self.tracker(self._blank)
        self.tracker(image)

    def methods(self) -> list[Method]:
        return [Method("mediapipe/mesh", f"mediapipe {self.version} face mesh, 468 -> 68 map (fit on HELEN train)",
                       "own detector (short range), static image mode", self.labelled_face)]

    def model_bytes(self) -> int:
        return sum((self.mesh.root / f).stat().st_size for f in MODEL_FILES)

    def info(self) -> dict[str, Any]:
        return {"version": self.version, "max_faces": MAX_FACES, "refine_landmarks": False,
                "models": list(MODEL_FILES), "map": str(self.map_path.relative_to(BENCH.parent))
                if self.map_path.is_relative_to(BENCH.parent) else str(self.map_path),
                "map_info": self.map.info}
