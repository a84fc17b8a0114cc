"""How much of fit21's jaw error on AFLW2000-3D is a fixed convention offset (which ICT vertex
stands for each jaw point), and how much is not: a diagnostic, not a tuning step.

For each of the 17 jaw points, the ICT skin vertex (within --radius cm of the point's substitute
vertex) whose projection under each face's fit lies nearest ``pt3d_68`` is chosen on one half of
the folder and scored on the other half (2-fold, halves by sorted file order, even / odd), so the
reported NME is never measured on the faces that chose the vertices. Nothing here changes the
labels: fit21 keeps the model's documented vertices.

    python scripts/jaw_convention_cv.py /work/shared/data/aflw2000_val
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lightmark.core.metrics import box_size, yaw_bins
from lightmark.data.aflw21 import read_aflw2000_pt2d
from lightmark.data.formats import read_aflw_mat
from lightmark.synth import fit21, ict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--radius", type=float, default=3.0)
    a = ap.parse_args()
    m = ict.load_ict()
    sm = fit21.shape_model()
    base_ids = fit21.landmark_vertices(m, "substitute")[:17]
    pool = np.flatnonzero(m.vert_region == ict.FACE)
    cands = [pool[np.linalg.norm(m.neutral[pool] - m.neutral[v], axis=1) < a.radius] for v in base_ids]
    files = sorted(Path(a.folder).glob("*.mat"))
    err = [np.zeros((len(files), len(c))) for c in cands]  # per jaw point: face x candidate, pixels
    box, yaw, ref = np.zeros(len(files)), np.zeros(len(files)), np.zeros((len(files), 17))
    for i, f in enumerate(files):
        g, meta = read_aflw_mat(f)
        r = fit21.fit21(read_aflw2000_pt2d(f), sm=sm)
        box[i], yaw[i] = box_size(g)[0], meta["yaw_deg"]
        ref[i] = np.linalg.norm(r.points68[:17] - g[:17], axis=1)
        for j, c in enumerate(cands):
            mean, basis = sm.sets_basis([(int(v),) for v in c])
            xy = fit21._project(mean + basis @ r.coef, r.scale, r.rot, r.trans)
            err[j][i] = np.linalg.norm(xy - g[j], axis=1)
    fold = np.arange(len(files)) % 2
    cv = np.zeros((len(files), 17))
    for k in (0, 1):
        for j in range(17):
            best = int(np.argmin((err[j][fold == k] / box[fold == k, None]).mean(axis=0)))
            cv[fold != k, j] = err[j][fold != k, best]
    out = {}
    for name, e in (("substitute (as labelled)", ref), ("chosen on the other half", cv)):
        out[name] = {k: round(100 * v, 2) for k, v in yaw_bins(e.mean(axis=1) / box, yaw).items()
                     if not k.startswith("n_")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
