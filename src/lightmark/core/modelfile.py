"""Model files on disk, shared by the torch side and the torch-free side (no torch here).

A model is ``NAME.json`` (``{"model": ModelConfig, "codec": ..., "crop_scale": ..., ...}``) beside
its network: ``NAME.safetensors`` (weights, ``"sha256"``; :mod:`lightmark.models.checkpoint`) and/or
``NAME.onnx`` (``"onnx_sha256"``; :mod:`lightmark.export`, :mod:`lightmark.runtime.onnx`).
This module is the one home of their paths (:func:`model_paths`) and of reading the JSON
(:func:`read_meta`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union
from lightmark.core.codec import DECODERS, HEADS, point_offsets
from lightmark.core.errors import CodecError, ModelFileError
from lightmark.core.geometry import LANDMARK_CROP_SCALE, NUM_POINTS

PathLike = Union[str, Path]

#: ``format`` written into every model JSON by ``save_model``.
FORMAT = "lightmark-model/1"
#: Keys a model JSON written by ``save_model`` must hold (besides what callers add).
REQUIRED_KEYS = ("format", "model", "codec", "crop_scale", "sha256")
#: The suffixes :func:`model_paths` strips (case-insensitively); any other suffix is part of NAME.
MODEL_SUFFIXES = (".safetensors", ".onnx", ".json")




@dataclass(frozen=True)
class ModelPaths:
    """The files of one model: ``stem`` (``NAME``) and ``NAME.safetensors`` / ``.onnx`` / ``.json``."""

    stem: Path
    safetensors: Path
    onnx: Path
    json: Path


def model_paths(path: PathLike) -> ModelPaths:
    """``NAME`` or ``NAME.safetensors`` / ``.onnx`` / ``.json`` -> the model's :class:`ModelPaths`.

    Only those suffixes are stripped, so ``model.v2`` stays ``model.v2.safetensors``.
    """
    p = Path(path)
    stem = p.with_suffix("") if p.suffix.lower() in MODEL_SUFFIXES else p
    name = stem.name
    return ModelPaths(stem=stem, safetensors=stem.with_name(name + ".safetensors"),
                      onnx=stem.with_name(name + ".onnx"), json=stem.with_name(name + ".json"))


def read_meta(json_path: PathLike, require_format: bool = False) -> dict[str, Any]:
    """Read and check a model's JSON: a JSON object whose ``model`` mapping has ``head`` and
    ``input_size``. ``require_format``: also require ``format`` == :data:`FORMAT` and every key of
    :data:`REQUIRED_KEYS` (a model JSON written by ``save_model``). Errors name the file."""
    p = Path(json_path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model metadata file (the model JSON is missing; "
                             "every model needs NAME.json beside it)")
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise ModelFileError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{p}: expected a JSON object, got {type(meta).__name__}")
    if require_format:
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{p}: format is {meta.get('format')!r}, expected {FORMAT!r}")
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise ModelFileError(f"{p}: missing key(s) {missing}")
    model = meta.get("model")
    if not isinstance(model, dict) or "head" not in model or "input_size" not in model:
        raise ModelFileError(f"{p}: metadata must hold a 'model' mapping with 'head' and 'input_size'")
    # Checked here, at load time, so a bad file fails when it is opened, not at the first predict.
    if not isinstance(model["head"], str) or model["head"] not in HEADS:
        raise ModelFileError(f"{p}: unknown head {model['head']!r} (known: {', '.join(HEADS)})")
    size, crop_scale = model["input_size"], meta.get("crop_scale", LANDMARK_CROP_SCALE)
    if not _is_int(size) or not 8 <= size <= 4096:
        raise ModelFileError(f"{p}: 'model.input_size' must be a whole number from 8 to 4096, got {size!r}")
    if isinstance(crop_scale, bool) or not isinstance(crop_scale, (int, float)) \
            or not (math.isfinite(crop_scale) and 0 < crop_scale <= 100):
        raise ModelFileError(f"{p}: 'crop_scale' must be a positive number, got {crop_scale!r}")
    # What the runtime reads besides: checked now, not found wrong at the first prediction.
    if model.get("num_points", NUM_POINTS) != NUM_POINTS or isinstance(model.get("num_points"), bool):
        raise ModelFileError(f"{p}: 'model.num_points' is {model.get('num_points')!r}; lightmark "
                             f"models predict {NUM_POINTS} points")
    hm = model.get("heatmap_size", 1)
    if not _is_int(hm) or hm < 1:
        raise ModelFileError(f"{p}: 'model.heatmap_size' must be a positive whole number, got {hm!r}")
    codec = meta.get("codec")
    if codec is not None and not isinstance(codec, dict):
        raise ModelFileError(f"{p}: 'codec' must be a mapping, got {type(codec).__name__}")
    decoder = (codec or {}).get("decoder")
    if decoder is not None and decoder not in DECODERS:
        raise ModelFileError(f"{p}: unknown codec.decoder {decoder!r} (known: {', '.join(DECODERS)})")
    try:
        point_offsets(codec)
    except CodecError as e:
        raise ModelFileError(f"{p}: {e}") from None
    return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
