"""Model files: ``NAME.safetensors`` (weights, no pickle) + ``NAME.json`` (config and checksum).

The rules every saved (and exported) model obeys, checked by :func:`check_model_rules`:

* **one network**: a :class:`~lightmark.models.LandmarkModel` whose only children are one
  ``backbone`` and one ``head``, holding exactly the tensors (names and shapes) that
  ``build_model(model.cfg)`` creates. Ensembles, extra branches, a ModuleList of backbones or a
  wrapper around several models all fail this;
* **float32 only**: every parameter and buffer is float32. Exempt: BatchNorm's int64
  ``num_batches_tracked`` counters. They are not saved at all: they only matter for BN with
  ``momentum=None`` (a cumulative average), which lightmark never uses, and play no part in
  inference;
* **size**: the saved tensors take at most :data:`MAX_MODEL_BYTES` (15 MB = 15e6 bytes) as float32.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from lightmark.core import files
from lightmark.core.config import model_config_from_dict, to_dict
from lightmark.core.errors import ModelConfigError, ModelFileError, ModelRuleError
from lightmark.core.modelfile import FORMAT, model_paths, read_meta
from lightmark.models.factory import EXEMPT_SUFFIX, LandmarkModel, build_model, saved_state

#: Largest allowed float32 size of a model's saved tensors, in bytes (15 MB, decimal).
MAX_MODEL_BYTES = 15_000_000

PathLike = Union[str, Path]




def check_model_rules(model: nn.Module, what: str = "model") -> None:
    """Raise :class:`ModelRuleError` if ``model`` breaks a rule (see the module docstring)."""
    if not isinstance(model, LandmarkModel):
        raise ModelRuleError(f"{what}: must be a single LandmarkModel (one backbone, one head), "
                             f"got {type(model).__name__}")
    children = [name for name, _ in model.named_children()]
    if children != ["backbone", "head"]:
        raise ModelRuleError(f"{what}: a model has exactly the submodules ['backbone', 'head'], "
                             f"got {children}")
    state = model.state_dict()
    for name, t in state.items():
        if name.endswith(EXEMPT_SUFFIX):
            continue
        if t.dtype != torch.float32:
            raise ModelRuleError(f"{what}: tensor {name!r} is {t.dtype}; only float32 is allowed")
    size = sum(t.numel() for t in saved_state(model).values()) * 4
    if size > MAX_MODEL_BYTES:
        raise ModelRuleError(f"{what}: {size / 1e6:.2f} MB as float32 is over the "
                             f"{MAX_MODEL_BYTES / 1e6:g} MB limit")
    # Rebuild the architecture from the config without allocating memory; any extra or missing
    # tensor means the module tree is not the one network its config describes.
    with torch.device("meta"):
        ref = saved_state(build_model(model.cfg))
    got = saved_state(model)
    extra, missing, bad_shape = _compare_tensors(got, ref)
    if extra or missing:
        raise ModelRuleError(f"{what}: not the single network its config describes "
                             f"(extra tensors {extra[:5]}, missing {missing[:5]})")
    if bad_shape:
        k = bad_shape[0]
        raise ModelRuleError(f"{what}: tensor {k!r} has shape {tuple(got[k].shape)}, "
                             f"the config gives {tuple(ref[k].shape)}")


def _compare_tensors(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]
                     ) -> tuple[list[str], list[str], list[str]]:
    """Names in ``got`` but not ``ref``, in ``ref`` but not ``got``, and in both with other shapes."""
    extra = sorted(set(got) - set(ref))
    missing = sorted(set(ref) - set(got))
    bad_shape = [k for k, t in got.items() if k in ref and tuple(t.shape) != tuple(ref[k].shape)]
    return extra, missing, bad_shape


def _plain(value: Any) -> Any:
    """Dataclasses (configs) -> dicts, so the meta can be written as JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    return value


def save_model(model: nn.Module, meta: dict, path: PathLike) -> None:
    """Write ``NAME.safetensors`` and ``NAME.json`` atomically (weights first, then the JSON that
    vouches for them). ``meta`` must hold ``codec`` and ``crop_scale``; ``model`` is filled from
    ``model.cfg`` (and must agree with it if given). Refuses models breaking the rules."""
    paths = model_paths(path)
    weights_path, json_path = paths.safetensors, paths.json
    check_model_rules(model, str(weights_path))
    out = {k: _plain(v) for k, v in meta.items()}
    cfg = to_dict(model.cfg)
    if "model" in out and out["model"] != cfg:
        raise ValueError(f"{json_path}: meta['model'] {out['model']} does not match the model's "
                         f"config {cfg}")
    out["model"] = cfg
    for key in ("codec", "crop_scale"):
        if key not in out:
            raise ValueError(f"{json_path}: meta needs a {key!r} entry to make a usable model file")
    out["format"] = FORMAT

    from safetensors.torch import save

    # Clone: safetensors refuses views sharing storage, and the file must not alias live weights.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in saved_state(model).items()}
    data = save(tensors, metadata={"format": "pt"})
    out["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        text = json.dumps(out, indent=2, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"{json_path}: meta is not JSON-serialisable ({e})") from None
    files.write_bytes(weights_path, data)
    files.write_text(json_path, text + "\n")


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> tuple[nn.Module, dict]:
    """Read a model written by :func:`save_model`: ``(model in eval mode, meta)``.

    Verifies the weights' sha256 against the JSON, rebuilds the network from ``meta['model']`` and
    requires the file to hold exactly its tensors (names, shapes, float32).
    """
    paths = model_paths(path)
    weights_path, json_path = paths.safetensors, paths.json
    meta = read_meta(json_path, require_format=True)
    if not weights_path.is_file():
        raise ModelFileError(f"{weights_path}: missing weights file (named in {json_path.name})")
    digest = files.sha256(weights_path)
    if digest != meta["sha256"]:
        raise ModelFileError(f"{weights_path}: checksum mismatch (file {digest[:12]}..., "
                             f"{json_path.name} says {str(meta['sha256'])[:12]}...): "
                             "the weights were changed or belong to another model")
    try:
        cfg = model_config_from_dict(meta["model"], f"{json_path}: model")
        model = build_model(cfg)
    except ModelConfigError as e:
        raise ModelFileError(f"{json_path}: {e}") from None

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{weights_path}: cannot read safetensors ({e})") from None
    expected = saved_state(model)
    extra, missing, bad_shape = _compare_tensors(tensors, expected)
    if extra or missing:
        raise ModelFileError(f"{weights_path}: tensors do not match the config in {json_path.name} "
                             f"(unexpected {extra[:5]}, missing {missing[:5]})")
    for k, t in tensors.items():
        if t.dtype != torch.float32:
            raise ModelFileError(f"{weights_path}: tensor {k!r} is {t.dtype}, expected float32")
    if bad_shape:
        k = bad_shape[0]
        raise ModelFileError(f"{weights_path}: tensor {k!r} has shape {tuple(tensors[k].shape)}, "
                             f"the config gives {tuple(expected[k].shape)}")
    # strict=False only for the exempt num_batches_tracked counters, checked absent above.
    model.load_state_dict(tensors, strict=False)
    return model.to(device).eval(), meta
