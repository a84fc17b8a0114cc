"""Measure, and optionally store, a model's crop-pixel offset for one convention on a training set.

Usage: python scripts/calibrate_offsets.py MODEL --data FOLDER [--convention 2d] [--skip-bad] [--write]

A network trained with mirrored crops can only learn the mirror-symmetric part of where people
click. 300W's annotators put points a little right of that (docs/MODEL_CARD.md, "Offsets"), so the
mean residual on a training set of that convention is a constant the network cannot learn.
``--write`` adds it to ``codec.offsets`` in MODEL's JSON (shared by its .onnx, .c8.onnx and
.safetensors), which every backend then adds to that convention's points. Run it on training
data only: the validation sets judge the result.
"""
from __future__ import annotations

import argparse
import json
import sys

from lightmark.api import Landmarker
from lightmark.core.errors import LightmarkError
from lightmark.core.files import write_text
from lightmark.core.modelfile import model_paths
from lightmark.data.readers import open_dataset
from lightmark.evaluate import mean_crop_residual


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="NAME.json, NAME.onnx or NAME.safetensors")
    ap.add_argument("--data", required=True, help="a labelled training folder")
    ap.add_argument("--convention", default="2d", choices=["2d", "3d"])
    ap.add_argument("--skip-bad", action="store_true", help="leave out labels the reader refuses")
    ap.add_argument("--write", action="store_true", help="add the residual to codec.offsets")
    args = ap.parse_args(argv)
    try:
        json_path = model_paths(args.model).json
        lm = Landmarker(model=str(json_path.with_suffix(".onnx")), threads=2)
        data = open_dataset(args.data, skip_bad=args.skip_bad)
        residual, n = mean_crop_residual(lm.predictor, data, args.convention, skip_bad=args.skip_bad)
    except LightmarkError as e:
        print(f"calibrate_offsets: {e}", file=sys.stderr)
        return 2
    old = lm.predictor.point_offsets.get(args.convention)
    new = residual + (old if old is not None else 0.0)
    print(f"{args.data}: {n} faces; mean residual ({args.convention}, crop px) "
          f"x {residual[0]:+.4f}, y {residual[1]:+.4f}; offset would be [{new[0]:.4f}, {new[1]:.4f}]")
    if args.write:
        meta = json.loads(json_path.read_text())
        meta.setdefault("codec", {}).setdefault("offsets", {})[args.convention] = [round(float(v), 4) for v in new]
        meta["offsets_calibrated_on"] = {**meta.get("offsets_calibrated_on", {}), args.convention: args.data}
        write_text(json_path, json.dumps(meta, indent=1) + "\n")
        print(f"wrote codec.offsets.{args.convention} into {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
