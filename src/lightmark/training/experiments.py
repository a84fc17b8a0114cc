"""The original write-up's experiment table, reproduced on the data at hand.

The original write-up trained on FaceSynthetics and reported four rows: 10k samples without augmentation, all
(100k) samples without augmentation, grayscale only, and all augmentations (colour jitter, random
erasing, grayscale). Here every row trains that recipe (``configs/baseline.yaml``) for ``--epochs``
epochs (learning-rate milestones scaled from 25 epochs), then evaluates on each evaluation folder
with ground-truth boxes. "10k of 100k" becomes "10% of the training folder".
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from lightmark.core.config import AugmentConfig, Config, DataSource, load_config
from lightmark.core.paths import data_root

#: (row name, fraction of the training data, augmentation that the row keeps from the recipe)
ROWS = (
    ("10% of samples, no augmentation", 0.1, "none"),
    ("all samples, no augmentation", 1.0, "none"),
    ("grayscale only", 1.0, "grayscale"),
    ("all augmentations", 1.0, "all"),
)


def row_config(base: Config, fraction: float, augmentation: str, n_train: int, epochs: int,
               out_dir: Path, data: list[str]) -> Config:
    """The original write-up's recipe for one row of the table."""
    if augmentation == "none":
        aug = AugmentConfig()
    elif augmentation == "grayscale":
        aug = AugmentConfig(grayscale=base.augment.grayscale or 0.5)
    else:
        aug = base.augment
    limit = None if fraction >= 1 else max(1, round(n_train * fraction / len(data)))
    milestones = sorted({max(1, round(m * epochs / 25)) for m in base.train.milestones})
    train = dataclasses.replace(base.train, epochs=epochs, milestones=milestones)
    return dataclasses.replace(base, augment=aug, train=train, val_data=None, out_dir=str(out_dir),
                               train_data=[DataSource(path=p, limit=limit) for p in data])


def baseline_table(base: Config, data: list[str], eval_data: list[str], epochs: int,
               out: Path, log: Any = print, eval_split: str = "auto") -> list[dict]:
    """Train and evaluate the four rows; returns one dict per row. ``eval_split="auto"`` scores
    the protocol's test part of an AFLW2000-3D folder and all of any other; ``"all"``: all."""
    from lightmark.data.readers import open_dataset
    from lightmark.evaluate import evaluate
    from lightmark.models import TorchPredictor, load_model
    from lightmark.training.loop import train

    n_train = sum(len(open_dataset(p)) for p in data)
    rows = []
    for i, (name, fraction, augmentation) in enumerate(ROWS):
        cfg = row_config(base, fraction, augmentation, n_train, epochs, out / f"row{i + 1}", data)
        log(f"== row {i + 1}: {name}")
        state = train(cfg, log=log)
        model, meta = load_model(Path(cfg.out_dir) / "last.safetensors")
        predictor = TorchPredictor(model, meta)
        row: dict[str, Any] = {"row": name, "n_train": round(n_train * min(fraction, 1.0)),
                               "epochs": epochs, "final_loss": state["history"][-1]["loss"]}
        for folder in eval_data:
            ds = open_dataset(folder)
            split = "test" if ds.kind == "aflw2000" and eval_split == "auto" else "all"
            s = evaluate(predictor, ds, split=split, progress=False)["summary"]
            row[Path(folder).name] = {"split": split, "n": s["n"], "nme_box": s["nme_box"],
                                      "nme_io": s["nme_io"],
                                      "nme_box_balanced": s.get("nme_box_yaw_balanced")}
        rows.append(row)
    return rows


def format_table(rows: list[dict], eval_names: list[str]) -> str:
    # AFLW2000-3D folders also get the yaw-balanced NME_box (the mean of the three bins).
    balanced = [n for n in eval_names if rows and rows[0][n].get("nme_box_balanced") is not None]
    head = "| row | train samples | epochs | " + " | ".join(
        f"{n} NME_box % | {n} NME_io %" + (f" | {n} NME_box balanced %" if n in balanced else "")
        for n in eval_names) + " |"
    sep = "|" + "---|" * (3 + 2 * len(eval_names) + len(balanced))
    lines = [head, sep]
    for r in rows:
        cells = [r["row"], str(r["n_train"]), str(r["epochs"])]
        for n in eval_names:
            cells += [f"{r[n]['nme_box']:.2f}", f"{r[n]['nme_io']:.2f}"]
            if n in balanced:
                cells.append(f"{r[n]['nme_box_balanced']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def baseline_table_main(args: argparse.Namespace) -> int:
    from lightmark.core.files import write_text
    from lightmark.core.config import apply_overrides

    base = apply_overrides(load_config(args.config), args.overrides)
    data = list(args.data) if args.data else [s.path for s in base.train_data]
    eval_data: list[str] = args.eval_data or [p for p in (base.val_data, str(data_root() / "300w" / "afw"))
                                              if p and Path(p).exists()]
    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")
    rows = baseline_table(base, data, eval_data, args.epochs, Path(args.out),
                          eval_split=args.eval_split)
    names = [Path(p).name for p in eval_data]
    table = format_table(rows, names)
    print(table)
    if args.json:
        write_text(args.json, json.dumps({"rows": rows, "config": args.config, "data": data,
                                          "eval": eval_data, "table": table}, indent=1))
    return 0

