"""Write the bundled 3D mean face for head pose: src/lightmark/assets/mean_face68.json.

The 68 iBUG/Multi-PIE landmark vertices of the ICT-FaceKit light face model's neutral shape
(MIT licence, USC Institute for Creative Technologies), in the model's own frame and units.
``lightmark.core.pose`` reads only this small file at run time, never the 70 MB model.

Usage: python scripts/make_mean_face.py [--model PATH/ict_face_model.npz] [--out PATH.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lightmark.core.files import sha256, write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "ict_face_model" / "ict_face_model.npz"
DEFAULT_OUT = ROOT / "src" / "lightmark" / "assets" / "mean_face68.json"


def mean_face(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """(68, 3) float64 neutral-shape landmark vertices and their (68,) vertex indices."""
    d = np.load(model)
    idx = d["landmarks68"].astype(np.int64)
    if idx.shape != (68,):
        raise SystemExit(f"{model}: landmarks68 has shape {idx.shape}, expected (68,)")
    return d["neutral"].astype(np.float64)[idx], idx


def _format(doc: dict) -> str:
    """JSON with the index list on one line and one point per line (readable diffs)."""
    head = {k: v for k, v in doc.items() if k not in ("vertex_indices", "points")}
    text = json.dumps(head, indent=1)[:-2]  # drop the closing brace
    rows = ",\n  ".join(json.dumps(p) for p in doc["points"])
    return (f'{text},\n "vertex_indices": {json.dumps(doc["vertex_indices"])},\n'
            f' "points": [\n  {rows}\n ]\n}}\n')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    pts, idx = mean_face(args.model)
    doc = {
        "format": "lightmark-mean-face/1",
        "description": "3D positions of the 68 iBUG/Multi-PIE landmarks on the ICT-FaceKit light "
                       "face model's neutral (mean) shape; jaw points 0-16 are the model's 3D jaw "
                       "vertices, not a visible contour",
        "source": {"file": "ict_face_model.npz (ICT-FaceKit light face model, arrays 'neutral' "
                           "and 'landmarks68')",
                   "sha256": sha256(args.model),
                   "project": "https://github.com/ICT-VGL/ICT-FaceKit",
                   "licence": "MIT",
                   "copyright": "Copyright (c) 2020 USC Institute for Creative Technologies"},
        "generator": "scripts/make_mean_face.py",
        "units": "cm",
        "axes": "x to the subject's left (image right when frontal), y up, z out of the face "
                "towards a frontal viewer (right-handed)",
        "vertex_indices": idx.tolist(),
        "points": np.round(pts, 5).tolist(),
    }
    write_text(args.out, _format(doc))
    print(f"wrote {args.out} (68 points from {args.model.name})")


if __name__ == "__main__":
    main()
