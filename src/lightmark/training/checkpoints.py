"""Training checkpoints: a model file loadable alone, plus the optimiser state and progress.

A checkpoint is a *set* of files that belong together (``TAG.safetensors`` + ``TAG.json``, the
model; ``TAG_state.safetensors`` + ``TAG_state.json``, optimiser and progress, for ``last``), and
the set is switched atomically as a whole::

    OUT/checkpoints/last.000007/   the set of epoch 7: its files and MANIFEST.json (sha256 of each)
    OUT/checkpoints/last -> last.000007          the pointer: one symlink, replaced in one rename
    OUT/last.safetensors -> checkpoints/last/last.safetensors    (and the set's other files)

A new set is written into a new folder, flushed to disk, given its manifest last, and only then
is the pointer replaced; the previous set is removed after that. A process killed at any moment
therefore leaves the previous complete set or the new one, never a mix, and ``OUT/last.*`` /
``OUT/best.*`` are always a loadable model. Resume reads the pointer's set, or else the newest set
whose manifest checks out. Where the file system has no symlinks the user-facing files are plain
copies (written after the set, each atomically; resume still reads the sets).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from lightmark.core import files
from lightmark.core.config import Config, to_dict
from lightmark.core.errors import ModelFileError
from lightmark.core.files import sha256, write_step, write_text
from lightmark.core.modelfile import model_paths
from lightmark.models import load_model, save_model

#: Folder (inside the run's output folder) holding the checkpoint sets.
SETS = "checkpoints"
MANIFEST = "MANIFEST.json"


def model_meta(cfg: Config, **extra: Any) -> dict:
    return {"name": cfg.name, "model": to_dict(cfg.model), "codec": to_dict(cfg.codec),
            "crop_scale": cfg.crop_scale, **extra}


# --------------------------------------------------------------------------------------------
# checkpoint sets


def _set_names(tag: str) -> list[str]:
    return [f"{tag}.safetensors", f"{tag}.json", f"{tag}_state.safetensors", f"{tag}_state.json"]


def _generations(sets: Path, tag: str) -> list[tuple[int, Path]]:
    """``(N, folder)`` of every ``TAG.N`` folder, newest first."""
    pat = re.compile(rf"^{re.escape(tag)}\.(\d+)$")
    try:
        names = os.listdir(sets)
    except OSError:
        return []
    found = [(int(m.group(1)), sets / n) for n in names if (m := pat.match(n)) and (sets / n).is_dir()]
    return sorted(found, reverse=True)


def _verify(folder: Path) -> Optional[dict]:
    """The set's manifest if every file it lists is there with its checksum, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        listed = manifest["files"]
        for name, digest in listed.items():
            if sha256(folder / name) != digest:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _link(link: Path, target: str) -> bool:
    """Make ``link`` a symlink to ``target`` (replacing what is there in one rename); False when
    the file system cannot hold symlinks."""
    if link.is_symlink() and os.readlink(link) == target:
        return True
    tmp = link.with_name(files.temp_name(link) + "link.tmp")
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
    except (OSError, NotImplementedError):
        return False
    write_step()
    os.replace(tmp, link)
    write_step()
    return True


def commit_set(out: Path, tag: str, write: Any) -> Path:
    """Write a new checkpoint set with ``write(folder)`` and switch ``OUT/TAG.*`` to it atomically.

    ``write`` puts the set's files (named ``TAG...``) into the folder it is given. Returns the
    set's folder.
    """
    out = Path(out)
    sets = out / SETS
    sets.mkdir(parents=True, exist_ok=True)
    files.clean_stale_temporaries(sets)  # pointer links of a killed run
    gens = _generations(sets, tag)
    n = (gens[0][0] + 1) if gens else 1
    folder = sets / f"{tag}.{n:06d}"
    if folder.exists():  # left by a run killed before its manifest: never pointed to
        shutil.rmtree(folder)
    folder.mkdir()
    write(folder)
    listed = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            _fsync(p)
            listed[p.name] = sha256(p)
    # The manifest is written last: a set without one (or with a file that does not match it) is
    # incomplete and is never used.
    files.write_text(folder / MANIFEST, json.dumps({"tag": tag, "generation": n, "files": listed},
                                                   indent=1) + "\n", fsync=True)
    # The user-facing names link through the pointer, so they are made first (on the first save
    # they dangle until the pointer exists): then the whole set appears in the one switch below.
    linked = all(_link(out / name, f"{SETS}/{tag}/{name}") for name in listed if name != MANIFEST)
    if linked:
        _link(sets / tag, folder.name)
    else:  # no symlinks here: plain copies, each replaced atomically; resume reads the sets
        for name in listed:
            if name != MANIFEST:
                with files.atomic_path(out / name) as tmp:
                    shutil.copyfile(folder / name, tmp)
    # Only now is the previous set no longer needed.
    for m, old in gens:
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
            write_step()
    return folder


def find_set(stem: Path) -> Optional[Path]:
    """The folder of the newest complete set for ``OUT/TAG`` (the pointer's when it checks out)."""
    sets, tag = stem.parent / SETS, stem.name
    pointer = sets / tag
    if pointer.is_dir() and _verify(pointer) is not None:
        return pointer.resolve()
    for _, folder in _generations(sets, tag):
        if _verify(folder) is not None:
            return folder
    return None


# --------------------------------------------------------------------------------------------
# saving and loading


def save_model_set(out: Path, tag: str, model: torch.nn.Module, meta: dict) -> Path:
    """A model alone (``TAG.safetensors`` + ``TAG.json``) as an atomic set (the ``best`` model)."""
    return commit_set(out, tag, lambda folder: save_model(model, meta, folder / tag))


def save_checkpoint(out: Path, tag: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    cfg: Config, state: dict) -> Path:
    """``TAG.safetensors/.json`` (the model, loadable alone) + ``TAG_state.*`` (optimiser,
    progress), written as one atomic set (see the module docstring). Returns the set's folder."""
    from safetensors.torch import save_file

    opt_state = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous()
               for i, s in opt_state["state"].items() for k, v in s.items() if torch.is_tensor(v)}

    def write(folder: Path) -> None:
        save_model(model, model_meta(cfg, epoch=state["epoch"], history=state["history"]), folder / tag)
        with files.atomic_path(folder / f"{tag}_state.safetensors") as tmp:
            save_file(tensors, str(tmp))
        full = dict(state, param_groups=opt_state["param_groups"], config=to_dict(cfg),
                    model_sha256=sha256(folder / f"{tag}.safetensors"))
        write_text(folder / f"{tag}_state.json", json.dumps(full, indent=1))

    return commit_set(out, tag, write)


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore model and optimiser from ``path`` (``.../last`` or ``.../last.safetensors``).

    Reads the newest complete checkpoint set of that tag; a folder written before checkpoint sets
    existed (plain ``last*`` files) is read as it is.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    stem = model_paths(path).stem
    found = find_set(stem)
    if found is not None:
        stem = found / stem.name
    elif (stem.parent / SETS).is_dir() and _generations(stem.parent / SETS, stem.name):
        raise ModelFileError(f"{stem.parent / SETS}: no complete checkpoint set for {stem.name!r} "
                             "(every one fails its manifest)")
    state_json = stem.parent / f"{stem.name}_state.json"
    if not state_json.is_file():
        raise FileNotFoundError(f"{state_json}: no training state beside {stem}.safetensors "
                                f"(resume needs the _state files a training run writes)")
    try:
        state = json.loads(state_json.read_text())
        want = state["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{state_json}: unreadable training state ({type(e).__name__}: {e})") from None
    if sha256(f"{stem}.safetensors") != want:
        raise ModelFileError(f"{stem}.safetensors does not match {state_json} (interrupted write?)")
    loaded, _ = load_model(f"{stem}.safetensors")
    model.load_state_dict(loaded.state_dict())
    try:
        tensors = load_file(str(stem.parent / f"{stem.name}_state.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{stem}_state.safetensors: cannot read optimiser state ({e})") from None
    opt_state: dict = {"state": {}, "param_groups": state["param_groups"]}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        opt_state["state"].setdefault(int(i), {})[name] = v
    opt.load_state_dict(opt_state)
    return state
