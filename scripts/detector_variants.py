"""How the bundled face detector's recall changes with what it is shown, per labelled face.

Usage: python scripts/detector_variants.py ../shared/data/aflw2000_val
For each face: the best detector score among boxes overlapping its landmark box (IoU >= 0.3) on
the photo as it is, its mirror image, a larger detector input (min_face=40) and the photo padded
by 30 % grey on every side; then how many faces pass 0.7 per variant, and every face the plain
pass misses. docs/MODEL_CARD.md ("Detector: the mirror pass") quotes its output.
"""
from __future__ import annotations

import sys

import cv2
import numpy as np

from lightmark.core import geometry
from lightmark.data.readers import open_dataset
from lightmark.runtime.detector import FaceDetector


def best_score(dets: np.ndarray, lm_box: np.ndarray) -> float:
    if len(dets) == 0:
        return 0.0
    iou = geometry.box_iou(dets[:, :4], lm_box[None])[:, 0]
    return float(dets[iou >= 0.3, 4].max()) if (iou >= 0.3).any() else 0.0


def main(data: str) -> None:
    ds = open_dataset(data)
    names = ds.relative_names()
    plain = FaceDetector(score_threshold=0.05)
    big = FaceDetector(score_threshold=0.05, min_face=40)
    rows = []
    for i in range(len(ds)):
        s = ds[i]
        img, lb = s.image, geometry.landmark_box(s.points)
        h, w = img.shape[:2]
        mirrored = plain.detect(np.ascontiguousarray(img[:, ::-1]))
        mirrored[:, [0, 2]] = w - mirrored[:, [2, 0]]
        pad = int(0.3 * max(h, w))
        padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        on_pad = plain.detect(padded)
        on_pad[:, :4] -= pad
        rows.append((names[i], {"plain": best_score(plain.detect(img), lb),
                                "mirror": best_score(mirrored, lb),
                                "min_face_40": best_score(big.detect(img), lb),
                                "padded": best_score(on_pad, lb)}))
    scores = {k: np.array([r[k] for _, r in rows]) for k in rows[0][1]}
    for k, v in scores.items():
        print(f"{k}: {(v >= 0.7).sum()} of {len(v)} faces at 0.7")
    either = np.maximum(scores["plain"], scores["mirror"])
    print(f"plain or mirror: {(either >= 0.7).sum()} of {len(either)}")
    for name, r in rows:
        if r["plain"] < 0.7:
            print(name, {k: round(v, 2) for k, v in r.items()})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
