"""Helpers shared by the test files (importable as ``helpers``: tests/conftest.py puts tests/ on
sys.path). Nothing heavy on import: torch and onnx are imported by the helpers that need them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

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
