"""Copy a trained checkpoint into the package as the bundled default model, and export its ONNX.

Usage: python scripts/bundle_model.py runs/default/best [NOTE]
Writes src/lightmark/assets/model/lightmark.{safetensors,onnx,json}; NOTE goes into the JSON
(e.g. "interim: epoch 6 of 40"), so a bundled model always says what it is.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lightmark.export import export_onnx
from lightmark.core.files import write_text
from lightmark.models import load_model, save_model

ASSET = Path("src/lightmark/assets/model/lightmark")


def main(checkpoint: str, note: str = "") -> None:
    model, meta = load_model(checkpoint if checkpoint.endswith(".safetensors") else f"{checkpoint}.safetensors")
    meta = {k: v for k, v in meta.items() if k not in ("sha256", "format")}
    meta["source_checkpoint"] = checkpoint
    meta["note"] = note
    save_model(model, meta, ASSET)
    export_onnx(f"{ASSET}.safetensors", f"{ASSET}.onnx")
    final = json.loads(Path(f"{ASSET}.json").read_text())
    write_text(Path(f"{ASSET}.json"), json.dumps(final, indent=1))
    print(f"bundled {checkpoint} (epoch {final.get('epoch')}) as {ASSET}.onnx/.safetensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
