"""Training checkpoints: a model file loadable alone, plus the optimiser state and progress."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lightmark.core.config import Config, to_dict
from lightmark.core.files import atomic_path, sha256, write_text
from lightmark.core.modelfile import model_paths
from lightmark.models import load_model, save_model


def model_meta(cfg: Config, **extra: Any) -> dict:
    return {"name": cfg.name, "model": to_dict(cfg.model), "codec": to_dict(cfg.codec),
            "crop_scale": cfg.crop_scale, **extra}


def save_checkpoint(out: Path, tag: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    cfg: Config, state: dict) -> None:
    """``tag.safetensors/.json`` (the model, loadable alone) + ``tag_state.*`` (optimiser, progress).

    The state JSON is written last and names the model's checksum, so a run stopped between the
    two writes is detected at resume instead of silently mixing two epochs.
    """
    from safetensors.torch import save_file

    save_model(model, model_meta(cfg, epoch=state["epoch"], history=state["history"]), out / tag)
    opt_state = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous()
               for i, s in opt_state["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    with atomic_path(out / f"{tag}_state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    state = dict(state, param_groups=opt_state["param_groups"], config=to_dict(cfg),
                 model_sha256=sha256(out / f"{tag}.safetensors"))
    write_text(out / f"{tag}_state.json", json.dumps(state, indent=1))


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore model and optimiser from ``path`` (``.../last`` or ``.../last.safetensors``)."""
    from safetensors.torch import load_file

    stem = model_paths(path).stem
    state_json = stem.parent / f"{stem.name}_state.json"
    if not state_json.is_file():
        raise FileNotFoundError(f"{state_json}: no training state beside {stem}.safetensors "
                                f"(resume needs the _state files a training run writes)")
    state = json.loads(state_json.read_text())
    if sha256(f"{stem}.safetensors") != state["model_sha256"]:
        raise ValueError(f"{stem}.safetensors does not match {state_json} (interrupted write?)")
    loaded, _ = load_model(f"{stem}.safetensors")
    model.load_state_dict(loaded.state_dict())
    tensors = load_file(str(stem.parent / f"{stem.name}_state.safetensors"))
    opt_state: dict = {"state": {}, "param_groups": state["param_groups"]}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        opt_state["state"].setdefault(int(i), {})[name] = v
    opt.load_state_dict(opt_state)
    return state
