"""Filter a table of dlib pseudo-labels by agreement with a second teacher, mediapipe's face mesh.

Usage (the benchmark venv, which has mediapipe 0.10.21):

    PYTHONPATH=src /work/bench-venv/bin/python scripts/filter_pseudo_labels.py \
        ../shared/data/utkface_dlib68 runs/utk_agree [--drop 0.10]

Each image (padded by 60 black pixels: the detector misses faces that fill the photo) goes
through mediapipe's detector and mesh; the 468 vertices become 68 points by the map of
``benchmarks/mediapipe_68.json`` (fitted on HELEN train). The two teachers' disagreement is
their mean point distance over sqrt(w*h) of dlib's landmark box. The ``--drop`` share of images
with the largest disagreement (and those mediapipe finds no face in) is left out; ``OUT`` gets
the kept rows of the table, unchanged, an ``images`` link to the source's images and
``agreement.npz`` (names, both label sets, the disagreement).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
PAD = 60


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="a folder with dlib68.csv and images/")
    ap.add_argument("out", type=Path)
    ap.add_argument("--drop", type=float, default=0.10, help="share of images to leave out")
    args = ap.parse_args()
    if not 0.0 <= args.drop < 1.0:
        ap.error(f"--drop must be in [0, 1), got {args.drop}")
    import cv2
    from mediapipe_peer import MediapipePeer
    from lightmark.core.files import write_text
    from lightmark.core.imaging import load_image

    table = args.source / "dlib68.csv"
    with open(table, newline="") as f:
        header, *rows = list(csv.reader(f))
    peer = MediapipePeer()
    dlib = np.array([r[1:] for r in rows], np.float64).reshape(len(rows), 68, 2)
    mesh = np.full_like(dlib, np.nan)
    for k, r in enumerate(rows):
        img = load_image(args.source / "images" / r[0])
        faces = peer.faces(cv2.copyMakeBorder(img, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=0))
        if faces:  # the face whose centre is nearest dlib's
            c = dlib[k].mean(0) + PAD
            mesh[k] = faces[int(np.argmin([np.abs(p.mean(0) - c).sum() for p in faces]))] - PAD
        if k % 2000 == 0:
            print(f"{k}/{len(rows)}", flush=True)
    wh = dlib.max(1) - dlib.min(1)
    disagreement = np.linalg.norm(dlib - mesh, axis=-1).mean(1) / np.sqrt(wh[:, 0] * wh[:, 1])
    found = np.isfinite(disagreement)
    cut = float(np.quantile(disagreement[found], 1.0 - args.drop)) if args.drop else np.inf
    keep = found & (disagreement <= cut)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(r) for r, k in zip(rows, keep) if k]
    write_text(args.out / table.name, "\n".join(lines) + "\n")
    link = args.out / "images"
    if not link.exists():
        link.symlink_to((args.source / "images").resolve(), target_is_directory=True)
    np.savez_compressed(args.out / "agreement.npz", names=np.array([r[0] for r in rows]), dlib=dlib,
                        mesh=mesh, disagreement=disagreement)
    pct = np.percentile(disagreement[found] * 100, [10, 50, 90, 95])
    print(f"mediapipe found {found.mean() * 100:.2f} % of {len(rows)}; disagreement % at 10/50/90/95 %: "
          + " / ".join(f"{v:.2f}" for v in pct) + f"; kept {keep.sum()} (cut {cut * 100:.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
