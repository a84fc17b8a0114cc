#!/usr/bin/env python
"""Fit the 468 -> 68 map that turns mediapipe's face mesh into the iBUG 68 points, on HELEN train.

For each of the 68 points: the mesh vertex, or affine combination (weights summing to one) of up
to ``--max-vertices`` vertices, that best matches the human labels. Vertices are added greedily
(the one that lowers the least-squares error most, among the ``--candidates`` vertices nearest the
point on average); how many a point keeps is chosen by ``--folds``-fold cross-validation on HELEN
(one more while it lowers the held-out error by 1 %; weights within +-3). Coordinates are normalised per face
(centre and sqrt(w·h) of the GT landmark box), so every face weighs the same whatever its size and
the errors read as NME_box. Fit on training data only: never on AFW or AFLW2000-3D.

    python benchmarks/fit_mediapipe_map.py      # writes benchmarks/mediapipe_68.json
"""
from __future__ import annotations

import timing  # noqa: F401  (first: one thread in the numeric libraries)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import numpy as np  # noqa: E402

from common import DATA, progress  # noqa: E402
from mediapipe_peer import DEFAULT_MAP, MediapipeMesh, pick_face  # noqa: E402

#: A point takes one more vertex only while that lowers its cross-validated error by this share.
TOLERANCE = 0.01
#: Largest |weight| a combination may have: a point far outside its vertices (large weights of
#: opposite signs) multiplies the mesh's own noise, which cross-validation on HELEN's mostly frontal
#: faces does not show.
MAX_WEIGHT = 3.0


def collect(helen: Path, limit: Optional[int], show: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Mesh (M, 468, 2) and labels (M, 68, 2) of the HELEN faces the mesh found, normalised per
    face; and the number of faces read."""
    from lightmark.core import geometry
    from lightmark.data.readers import open_dataset

    ds = open_dataset(helen, limit=limit)
    mesh = MediapipeMesh()
    meshes, labels = [], []
    for i in progress(range(len(ds)), show, f"mediapipe on {ds.name}"):
        s = ds[i]
        found = mesh(s.image)
        # The raw mesh reaches the forehead, so its box is taller than the landmark box; the
        # matching rule (IoU >= 0.3) is loose enough for that.
        j = pick_face(found, geometry.landmark_box(s.points), geometry.landmark_box)
        if j is None:
            continue
        lb = geometry.landmark_box(s.points)
        centre, size = (lb[:2] + lb[2:]) / 2, float(np.sqrt(np.prod(lb[2:] - lb[:2])))
        meshes.append((found[j] - centre) / size)
        labels.append((s.points - centre) / size)
    mesh.close()
    return np.asarray(meshes), np.asarray(labels), len(ds)


def solve(v: np.ndarray, g: np.ndarray, chosen: list[int]) -> np.ndarray:
    """Least-squares weights (summing to one) of vertices ``chosen`` of ``v`` (M, 468, 2) for the
    points ``g`` (M, 2); the same weights for x and y, so the map commutes with rotations."""
    last = v[:, chosen[-1]]
    if len(chosen) == 1:
        return np.ones(1)
    a = np.stack([(v[:, j] - last).reshape(-1) for j in chosen[:-1]], axis=1)
    w, *_ = np.linalg.lstsq(a, (g - last).reshape(-1), rcond=None)
    return np.r_[w, 1.0 - w.sum()]


def error(v: np.ndarray, g: np.ndarray, chosen: list[int], w: np.ndarray) -> float:
    """Mean point-to-label distance (fraction of the box size)."""
    return float(np.linalg.norm(np.einsum("mjc,j->mc", v[:, chosen], w) - g, axis=1).mean())


def greedy(v: np.ndarray, g: np.ndarray, max_vertices: int, candidates: int) -> list[tuple[list[int], np.ndarray]]:
    """Nested vertex sets of 1..max_vertices vertices and their weights, fitted on (v, g)."""
    single = np.linalg.norm(v - g[:, None], axis=2).mean(axis=0)
    pool = [int(j) for j in np.argsort(single)[:candidates]]
    chosen: list[int] = []
    out = []
    for _ in range(max_vertices):
        fits = [(chosen + [j], solve(v, g, chosen + [j])) for j in pool if j not in chosen]
        fits = [(c, w) for c, w in fits if np.abs(w).max() <= MAX_WEIGHT]
        if not fits:  # no vertex can be added within the weight bound: repeat the last fit
            out.append(out[-1])
            continue
        chosen, w = min(fits, key=lambda cw: error(v, g, *cw))
        out.append((chosen, w))
    return out


def fit_point(v: np.ndarray, g: np.ndarray, folds: np.ndarray, max_vertices: int,
              candidates: int) -> dict:
    """One iBUG point: cross-validated errors per vertex count, and the final fit on all faces."""
    cv = np.zeros((folds.max() + 1, max_vertices))
    held = np.zeros((max_vertices,) + g.shape)  # held-out predictions per vertex count
    for f in range(folds.max() + 1):
        tr, te = folds != f, folds == f
        for m, (chosen, w) in enumerate(greedy(v[tr], g[tr], max_vertices, candidates)):
            cv[f, m] = error(v[te], g[te], chosen, w)
            held[m, te] = np.einsum("mjc,j->mc", v[te][:, chosen], w)
    mean_cv = cv.mean(axis=0)
    keep = 1
    while keep < max_vertices and mean_cv[keep] < mean_cv[keep - 1] * (1 - TOLERANCE):
        keep += 1
    chosen, w = greedy(v, g, keep, candidates)[-1]
    head = [round(float(x), 5) for x in w[:-1]]  # rounded; the last weight takes the rest
    return {"vertices": chosen, "weights": head + [round(1.0 - sum(head), 5)],
            "cv_error_box_pct": round(float(mean_cv[keep - 1]) * 100, 3),
            "cv_error_box_pct_by_vertices": [round(float(x) * 100, 3) for x in mean_cv],
            "held_out": held[keep - 1]}


def write(path: Path, header: dict, points: list[dict]) -> None:
    """The map as JSON: the header, then one line per iBUG point."""
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items()]
    lines.append('  "points": [')
    lines += [f"    {json.dumps(p)}{',' if i < len(points) - 1 else ''}" for i, p in enumerate(points)]
    lines += ["  ]", "}"]
    path.write_text("\n".join(lines) + "\n")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--helen", default=str(DATA / "300w" / "helen_trainset"), help="training set (300W .pts)")
    ap.add_argument("--out", default=str(DEFAULT_MAP))
    ap.add_argument("--max-vertices", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=24, help="vertices nearest each point tried")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--limit", type=int, help="a seeded subset of HELEN (for a quick try)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    from lightmark.core import metrics

    v, g, n_read = collect(Path(args.helen), args.limit, not args.quiet)
    folds = np.random.default_rng(0).permutation(len(g)) % args.folds
    points, held = [], np.zeros_like(g)
    for k in progress(range(68), not args.quiet, "fit 68 points"):
        p = fit_point(v, g[:, k], folds, args.max_vertices, args.candidates)
        held[:, k] = p.pop("held_out")
        points.append({"ibug": k, **p})
    header = {
        "what": "mediapipe face mesh (468 vertices) -> iBUG 68 points: point = sum(weights * vertices)",
        "fitted_on": Path(args.helen).name, "faces_read": n_read, "faces_matched": len(g),
        "mediapipe": __import__("mediapipe").__version__, "max_vertices": args.max_vertices,
        "candidates": args.candidates, "folds": args.folds, "tolerance": TOLERANCE, "max_weight": MAX_WEIGHT,
        # Cross-validated on HELEN (each face predicted by a map fitted without it).
        "cv_nme_box_pct": round(float(np.mean(metrics.nme_box(held, g))) * 100, 3),
        "cv_nme_io_pct": round(float(np.mean(metrics.nme_io(held, g))) * 100, 3),
        "date": dt.date.today().isoformat(),
        "command": "python benchmarks/fit_mediapipe_map.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    write(Path(args.out), header, points)
    print(f"{args.out}: {len(g)} of {n_read} faces matched; cross-validated NME_box "
          f"{header['cv_nme_box_pct']:.2f} %, NME_io {header['cv_nme_io_pct']:.2f} %; vertices per point: "
          f"{np.bincount([len(p['vertices']) for p in points], minlength=args.max_vertices + 1)[1:].tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
