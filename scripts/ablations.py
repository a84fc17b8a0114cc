"""Short, equal-budget training runs that answer the design questions, written to docs/ABLATIONS.md.

    python scripts/ablations.py heads      # heatmap (seed) vs integral vs regression vs attention
    python scripts/ablations.py synth      # the same model with and without generated data
    python scripts/ablations.py synth_long # the same, 4x the training steps

Each run trains `configs/ablation.yaml` (a small model, a fixed number of steps) with overrides,
then evaluates on AFW with ground-truth boxes, split into frontal and large-pose faces by the yaw
of an ICT-model fit to the ground-truth landmarks (|yaw| >= 30 degrees = large pose), and on the
AFLW2000-3D samples. Budgets are small (2 CPU cores): compare rows with each other, not with the
shipped model.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from lightmark.core.config import DataSource, load_config
from lightmark.data.readers import open_dataset
from lightmark.evaluate import evaluate
from lightmark.core.files import write_text
from lightmark.models import TorchPredictor, load_model
from lightmark.core.config import apply_overrides
from lightmark.training.loop import train

AFW = "../shared/data/300w/afw"
AFLW = "../shared/data/aflw2000_sample"
OUT = Path("runs/ablations")

HEADS = {
    "heatmap (seed: MSE on peak-100 Gaussians, 32x32, sub-pixel decode)":
        ["model.head=heatmap", "model.heatmap_size=32", "model.upsample_strides=[4,2]",
         "train.loss=mse", "codec.sigma=1.5"],
    "integral (soft-argmax, L1)": ["model.head=integral"],
    "regression (direct, L1)": ["model.head=regression"],
    "integral + coordinate attention": ["model.head=integral", "model.attention=coord"],
}
SYNTH = {
    "real data only": [],
    "real + generated (ICT synthetic + HELEN profiled)": ["+synth"],
}
#: The same comparison with a 4x longer budget (2,000 steps), for differences above the noise.
LONGER = ["train.epochs=20", "train.steps_per_epoch=100"]
SYNTH_LONG = {f"{name}, 2000 steps": overrides + LONGER for name, overrides in SYNTH.items()}


def afw_yaw() -> dict[str, float]:
    """|yaw| in degrees per AFW file, from an ICT fit to its ground-truth landmarks (cached)."""
    cache = OUT / "afw_yaw.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from lightmark.synth import fit_ict

    ds = open_dataset(AFW)
    yaw = {}
    for rec in ds.records:
        from PIL import Image

        with Image.open(rec.image_path) as im:
            size = im.size
        yaw[rec.image_path.name] = abs(float(fit_ict(rec.points, size).yaw_pitch_roll[0]))
    write_text(cache, json.dumps(yaw))
    return yaw


def run(name: str, overrides: list[str], tag: str) -> dict:
    cfg = load_config("configs/ablation.yaml")
    extra = [o for o in overrides if not o.startswith("+")]
    cfg = apply_overrides(cfg, extra)
    if "+synth" in overrides:
        cfg.train_data = cfg.train_data + [DataSource(path="runs/synth/ict", weight=1.0),
                                           DataSource(path="runs/synth/helen_profiled", weight=1.0)]
    cfg = dataclasses.replace(cfg, out_dir=str(OUT / tag), val_data=None)
    t0 = time.time()
    train(cfg, log=lambda m: print(m, flush=True))
    minutes = (time.time() - t0) / 60
    model, meta = load_model(Path(cfg.out_dir) / "last.safetensors")
    predictor = TorchPredictor(model, meta)
    afw = evaluate(predictor, AFW, progress=False)
    yaw = afw_yaw()
    errs = {r["file"]: r["nme_io"] for r in afw["per_image"]}
    frontal = [e for f, e in errs.items() if yaw[Path(f).name] < 30]
    large = [e for f, e in errs.items() if yaw[Path(f).name] >= 30]
    aflw = evaluate(predictor, AFLW, progress=False)["summary"]
    return {"name": name, "minutes": round(minutes, 1),
            "afw_nme_io": afw["summary"]["nme_io"], "afw_nme_box": afw["summary"]["nme_box"],
            "afw_frontal_nme_io": 100 * float(np.mean(frontal)), "n_frontal": len(frontal),
            "afw_large_nme_io": 100 * float(np.mean(large)), "n_large": len(large),
            "aflw_nme_box": aflw["nme_box"]}


def table(rows: list[dict]) -> str:
    lines = ["| variant | AFW NME_io % | AFW NME_box % | frontal NME_io % (n) | large-pose NME_io % (n) "
             "| AFLW2000 samples NME_box % | train minutes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['afw_nme_io']:.2f} | {r['afw_nme_box']:.2f} | "
                     f"{r['afw_frontal_nme_io']:.2f} ({r['n_frontal']}) | "
                     f"{r['afw_large_nme_io']:.2f} ({r['n_large']}) | {r['aflw_nme_box']:.2f} | "
                     f"{r['minutes']} |")
    return "\n".join(lines)


def main(which: str) -> None:
    variants = {"heads": HEADS, "synth": SYNTH, "synth_long": SYNTH_LONG}[which]
    rows = [run(name, ov, f"{which}{i}") for i, (name, ov) in enumerate(variants.items())]
    text = table(rows)
    print(text)
    write_text(OUT / f"{which}.json", json.dumps(rows, indent=1))
    write_text(OUT / f"{which}.md", text + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "heads")
