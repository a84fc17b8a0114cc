"""Helpers shared by the test files (importable as ``helpers``: tests/conftest.py puts tests/ on
sys.path): tiny model configs and weights, tiny ONNX models, where the shared data is, and a tiny
labelled data set made from the package's own files. Nothing heavy on import: torch, onnx and
onnxruntime are imported by the helpers that need them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import lightmark
from lightmark.core.config import ModelConfig
from lightmark.core.files import sha256

S = 32  # crop size of the tiny ONNX models


def tiny(**kw: Any) -> ModelConfig:
    """A small, fast torch model config (64-pixel input, integral head by default)."""
    base = dict(width=0.5, input_size=64, head="integral", head_channels=16, heatmap_size=8,
                upsample_strides=[2, 2], backbone="shufflenet_v2_noconv5")
    base.update(kw)
    return ModelConfig(**base)


def randomize(model: Any, seed: int = 0) -> Any:
    """Non-trivial weights and BN statistics, so comparisons of outputs mean something."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def tiny_points(radius: tuple[float, float] = (13.0, 12.0), n: int = 68) -> np.ndarray:
    """The constant part of the tiny regression model's output: a ring of points in crop pixels.

    The default ring spans 26 of 32 pixels, i.e. about 1 / 1.25 of the crop, like a real face.
    """
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([(S - 1) / 2 + radius[0] * np.cos(a), (S - 1) / 2 + radius[1] * np.sin(a)],
                    axis=1).astype(np.float32)


def write_tiny_model(folder: Path, name: str = "tiny", batch: int | str = "N", head: str = "regression",
                     gain: float = 1.0, meta_extra: dict | None = None,
                     radius: tuple[float, float] = (13.0, 12.0)) -> Path:
    """Write NAME.onnx + NAME.json: output[n] = tiny_points + gain * mean(input[n]).

    ``head="regression"``: (N, 68, 2) points. ``head="integral"``: (N, 68, 4, 4) logits that peak at
    cell (1, 2) for every point (the input term is added everywhere, so it cancels in softmax).
    Built with the `onnx` helper API (no torch needed).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if head == "regression":
        const = tiny_points(radius)[None]
        out_shape = [batch, 68, 2]
        red_shape = np.array([-1, 1, 1], np.int64)
    else:
        const = np.zeros((1, 68, 4, 4), np.float32)
        const[..., 2, 1] = 20.0  # row y=2, column x=1
        out_shape = [batch, 68, 4, 4]
        red_shape = np.array([-1, 1, 1, 1], np.int64)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["m", "shape"], ["m2"]),
        helper.make_node("Mul", ["m2", "gain"], ["g"]),
        helper.make_node("Add", ["g", "const"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, S, S])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(red_shape, "shape"),
                     numpy_helper.from_array(np.array(gain, np.float32), "gain"),
                     numpy_helper.from_array(const.astype(np.float32), "const")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # old enough for any onnxruntime >= 1.17
    onnx.checker.check_model(model)
    path = Path(folder) / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    meta = {"model": {"head": head, "input_size": S, "heatmap_size": 4, "num_points": 68},
            "codec": {"decoder": "subpixel"}, "crop_scale": 1.25, "onnx_sha256": sha256(path)}
    meta.update(meta_extra or {})
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


# ---------------------------------------------------------------------------------------------
# shared data (../shared/data, or $LIGHTMARK_DATA): where it is, without skipping

def shared_path(sub: str = "") -> Path:
    """``sub`` inside the shared data folder (:func:`lightmark.core.paths.data_root`), without
    checking that it exists (for a module-level constant). Tests get their paths through the
    ``shared_data`` fixture of conftest.py, which skips the test when the path is missing."""
    from lightmark.core.paths import data_root

    return data_root() / sub


# ---------------------------------------------------------------------------------------------
# a tiny 300W-style data set made from what ships in the package

#: The bundled example photo (in the package, installed or not): three rendered faces, 960 x 320.
EXAMPLE_PHOTO = Path(lightmark.__file__).resolve().parent / "assets" / "example.jpg"

#: One image per (variant, face): (crop side as a multiple of the landmark box's larger side,
#: angle in degrees, mirrored, centre shift as a fraction of that side, width, height). The images
#: are not square (the EXIF test in test_cli tells portrait from landscape).
TINY_VARIANTS: list[tuple[float, float, bool, tuple[float, float], int, int]] = [
    (1.9, 0.0, False, (0.0, 0.0), 168, 200),
    (1.9, 0.0, True, (0.03, -0.02), 200, 176),
    (2.1, 12.0, False, (-0.04, 0.03), 184, 184),
    (1.8, -9.0, True, (0.02, 0.04), 160, 192),
    (2.3, 5.0, False, (0.05, -0.03), 208, 176),
]
TINY_FACES = 3  # faces in the example photo
TINY_COUNT = TINY_FACES * len(TINY_VARIANTS)


def format_pts(points0: np.ndarray) -> str:
    """A 300W ``.pts`` file for 0-based points: the file is 1-based (x + 1, y + 1)."""
    rows = "".join(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in np.asarray(points0, np.float64))
    return f"version: 1\nn_points:  {len(points0)}\n{{\n{rows}}}\n"


def write_tiny_faces(folder: Path) -> Path:
    """Write ``TINY_COUNT`` labelled 300W-style images (``tiny_<variant><face>.jpg`` + ``.pts``).

    The labels are the bundled ONNX model's 68 points on the bundled example photo; each image is
    a crop of one face (scaled, turned, shifted, some mirrored) made with
    :func:`lightmark.core.geometry.crop_matrix` and :func:`~lightmark.core.geometry.warp_image`, and
    its points are moved through the same matrix (mirrored ones relabelled left <-> right), so
    labels and pixels agree exactly. Sorted by name, the first ``TINY_FACES`` images are the three
    faces upright and unmirrored. Offline and fast (about a second): no shared data needed.
    """
    from PIL import Image

    from lightmark.api import Landmarker
    from lightmark.core import geometry
    from lightmark.core.imaging import load_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photo = load_image(EXAMPLE_PHOTO)
    faces = sorted(Landmarker().predict_all(photo), key=lambda f: float(f.box[0]))
    assert len(faces) == TINY_FACES, f"{EXAMPLE_PHOTO}: expected {TINY_FACES} faces, found {len(faces)}"
    for v, (scale, angle, flip, shift, w, h) in enumerate(TINY_VARIANTS):
        for k, face in enumerate(faces):
            pts = face.points.astype(np.float64)
            box = geometry.landmark_box(pts)
            side = scale * float(max(box[2] - box[0], box[3] - box[1]))
            centre = (box[:2] + box[2:]) / 2 + np.asarray(shift) * side
            size = max(w, h)
            m = geometry.crop_matrix(centre, side, size, angle_deg=angle, flip=flip)
            square = geometry.warp_image(photo, m, size, border_value=(118, 118, 118))
            x0, y0 = (size - w) // 2, (size - h) // 2
            image = square[y0:y0 + h, x0:x0 + w]
            moved = geometry.apply_affine(pts, m) - (x0, y0)
            if flip:
                moved = geometry.flip_points_in_crop(moved)
            assert (moved.min(0) > 2).all() and (moved.max(0) < (w - 3, h - 3)).all(), (v, k)
            name = f"tiny_{v}{k}"
            Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{name}.jpg", quality=95)
            (folder / f"{name}.pts").write_text(format_pts(moved))
    return folder
