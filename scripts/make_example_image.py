"""Render the bundled example photo: three synthetic ICT-model faces side by side.

The example must be free to redistribute, so it is rendered from the MIT-licensed ICT face model
(no photo of a real person; the procedural background uses no photo either).
Usage: python scripts/make_example_image.py [OUT.jpg]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lightmark.core.files import atomic_path
from lightmark.synth.faces import prepare, render_face, sample_params


#: Three of the first 24 draws, chosen because the bundled detector boxes them cleanly (the example
#: is a demonstration, not a measurement).
SEEDS = (23, 20, 6)


def main(out: str = "src/lightmark/assets/example.jpg") -> None:
    tiles = []
    for s in SEEDS:
        rng = np.random.default_rng([2026, s])
        params = sample_params(rng, prepare().model, 320)
        # near-frontal, mild expression: an ordinary snapshot
        params.update(yaw=float(rng.uniform(-25, 25)), pitch=float(rng.uniform(-8, 5)),
                      roll=float(rng.uniform(-8, 8)))
        params["expr"] = params["expr"] * 0.3
        tiles.append(render_face(rng, size=320, params=params, occluders=False, seg=False).image)
    image = np.concatenate(tiles, axis=1)
    with atomic_path(out) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=90)
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]})")


if __name__ == "__main__":
    main(*sys.argv[1:])
