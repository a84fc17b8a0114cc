"""Average the weights of several checkpoints of one network into one model file.

Usage: python scripts/average_weights.py OUT CKPT CKPT [CKPT ...]
(each CKPT as NAME or NAME.safetensors, with its NAME.json; OUT is written as OUT.safetensors +
OUT.json with the last checkpoint's config). Floating-point tensors (weights and batch-norm
statistics) are averaged; integer ones (batch-norm step counts) are the last checkpoint's. The
result is one network of the same shape: one model, not an ensemble.
"""
from __future__ import annotations

import sys

from lightmark.core.errors import LightmarkError
from lightmark.models import load_model, save_model


def average(paths: list[str]):
    """(model, meta) whose tensors are the mean of ``paths``' (the last one's network and meta)."""
    if len(paths) < 2:
        raise ValueError("average_weights: give at least two checkpoints")
    loaded = [load_model(p if p.endswith(".safetensors") else f"{p}.safetensors") for p in paths]
    model, meta = loaded[-1]
    states = [m.state_dict() for m, _ in loaded]
    for p, s in zip(paths, states):
        if s.keys() != states[-1].keys() or any(s[k].shape != v.shape for k, v in states[-1].items()):
            raise ValueError(f"average_weights: {p} is not the same network as {paths[-1]}")
    mean = {k: (sum(s[k] for s in states) / len(states)) if v.is_floating_point() else v
            for k, v in states[-1].items()}
    model.load_state_dict(mean)
    return model, meta


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out, paths = argv[0], argv[1:]
    try:
        model, meta = average(paths)
    except (LightmarkError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    meta = {k: v for k, v in meta.items() if k not in ("sha256", "format")}
    meta["averaged_from"] = paths
    save_model(model, meta, out)
    print(f"wrote {out}.safetensors: the mean of {len(paths)} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
