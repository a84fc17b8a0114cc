"""Copy a trained checkpoint into the package as the bundled default model, and export its ONNX.

Usage: python scripts/bundle_model.py runs/default/best [NOTE] [--name accurate]
Writes src/lightmark/assets/model/lightmark.{safetensors,onnx,json} (with --name NAME: the files
of the bundled model of that name in lightmark.api.BUNDLED_MODELS); NOTE goes into
the JSON (e.g. "interim: epoch 6 of 40"), so a bundled model always says what it is.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lightmark.api import BUNDLED_MODELS
from lightmark.export import export_onnx
from lightmark.core.files import write_text
from lightmark.models import load_model, save_model

ASSET_DIR = Path("src/lightmark/assets/model")


def main(checkpoint: str, note: str = "", name: str = "default") -> None:
    if name not in BUNDLED_MODELS:
        sys.exit(f"--name {name!r}: not a bundled model (lightmark.api.BUNDLED_MODELS: "
                 f"{', '.join(BUNDLED_MODELS)})")
    # The file name the package loads that name from; written into the repository's asset folder.
    asset = ASSET_DIR / BUNDLED_MODELS[name].stem
    model, meta = load_model(checkpoint if checkpoint.endswith(".safetensors") else f"{checkpoint}.safetensors")
    meta = {k: v for k, v in meta.items() if k not in ("sha256", "format")}
    meta["source_checkpoint"] = checkpoint
    meta["note"] = note
    save_model(model, meta, asset)
    export_onnx(f"{asset}.safetensors", f"{asset}.onnx")
    final = json.loads(Path(f"{asset}.json").read_text())
    write_text(Path(f"{asset}.json"), json.dumps(final, indent=1))
    print(f"bundled {checkpoint} (epoch {final.get('epoch')}) as {asset}.onnx/.safetensors")


if __name__ == "__main__":
    args = sys.argv[1:]
    name = "default"
    if "--name" in args:
        i = args.index("--name")
        name = args[i + 1]
        del args[i:i + 2]
    main(*args, name=name)
