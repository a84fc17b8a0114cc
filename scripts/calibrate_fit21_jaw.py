"""Calibrate fit21's jaw to AFLW2000-3D's convention on the validation folder, then relabel.

AFLW's 21 clicks hold no jaw point but the chin, so the fitted jaw is whichever ICT vertex stands
for each jaw landmark; AFLW2000-3D's own labels put it on BFM's vertices, a little elsewhere.
This chooses, for each of the 17 jaw points, the ICT skin vertex (within ``--radius`` cm of the
substitute vertex) whose projection under each validation face's fit lies nearest ``pt3d_68``,
weighting the three yaw bins equally; it prints the 2-fold held-out error first (vertices chosen
on one half, scored on the other), so the gain is measured on faces that did not choose.

It is a choice of labelling convention made on the protocol's *validation* faces
(``aflw2000_val``); the test part of AFLW2000-3D is never read. Then every face of a
``lightmark fit21`` label folder is re-projected from its stored fit (``manifest.json``: scale,
rotation, shift, coefficients) with the chosen jaw, into a new folder (images hard-linked):

    python scripts/calibrate_fit21_jaw.py ../shared/data/aflw2000_val \
        --labels runs/aflw21_fit3d --out runs/aflw21_fit3d_cal
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from lightmark.core import files
from lightmark.core.metrics import box_size, yaw_bins
from lightmark.data.aflw21 import read_aflw2000_pt2d
from lightmark.data.formats import read_aflw_mat
from lightmark.synth import fit21, ict
from lightmark.synth.fit21_labels import _format_pts


def _bin_weights(yaw: np.ndarray) -> np.ndarray:
    """Per face: 1 / (faces in its yaw bin), so each of 0-30, 30-60, 60-90 counts equally."""
    b = np.digitize(np.minimum(np.abs(yaw), 89.999), [30.0, 60.0])
    counts = np.bincount(b, minlength=3).astype(float)
    return 1.0 / counts[b]


def choose(err: list[np.ndarray], box: np.ndarray, w: np.ndarray, rows: np.ndarray) -> list[int]:
    """Per jaw point, the candidate with the least yaw-balanced error over faces ``rows``."""
    return [int(np.argmin(((e[rows] / box[rows, None]) * w[rows, None]).sum(axis=0))) for e in err]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("val_folder", help="aflw2000_val: .mat files with pt2d and pt3d_68")
    ap.add_argument("--labels", required=True, help="a `lightmark fit21` output folder")
    ap.add_argument("--out", required=True, help="new label folder")
    ap.add_argument("--radius", type=float, default=3.0, help="candidate vertices within this many cm")
    a = ap.parse_args()

    m = ict.load_ict()
    sm = fit21.shape_model()
    base_ids = fit21.landmark_vertices(m, "substitute")
    pool = np.flatnonzero(m.vert_region == ict.FACE)
    cands = [pool[np.linalg.norm(m.neutral[pool] - m.neutral[v], axis=1) < a.radius]
             for v in base_ids[:17]]
    mats = sorted(Path(a.val_folder).glob("*.mat"))
    if not mats:
        raise SystemExit(f"{a.val_folder}: no .mat files")
    err = [np.zeros((len(mats), len(c))) for c in cands]
    box, yaw, ref = np.zeros(len(mats)), np.zeros(len(mats)), np.zeros((len(mats), 17))
    for i, f in enumerate(mats):
        g, meta = read_aflw_mat(f)
        r = fit21.fit21(read_aflw2000_pt2d(f), sm=sm)
        box[i], yaw[i] = box_size(g)[0], meta["yaw_deg"]
        ref[i] = np.linalg.norm(r.points68[:17] - g[:17], axis=1)
        for j, c in enumerate(cands):
            mean, basis = sm.sets_basis([(int(v),) for v in c])
            xy = fit21._project(mean + basis @ r.coef, r.scale, r.rot, r.trans)
            err[j][i] = np.linalg.norm(xy - g[j], axis=1)
    w = _bin_weights(yaw)
    fold = np.arange(len(mats)) % 2
    cv = np.zeros((len(mats), 17))
    for k in (0, 1):
        best = choose(err, box, w, fold == k)
        for j in range(17):
            cv[fold != k, j] = err[j][fold != k, best[j]]
    chosen = choose(err, box, w, np.ones(len(mats), bool))
    report = {}
    for name, e in (("substitute", ref), ("chosen on the other half (2-fold)", cv)):
        report[name] = {k: round(100 * v, 2) for k, v in yaw_bins(e.mean(axis=1) / box, yaw).items()
                        if not k.startswith("n_")}
    print("jaw 0-16 NME_box %:", json.dumps(report))

    ids = base_ids.copy()
    ids[:17] = [int(c[b]) for c, b in zip(cands, chosen)]
    lm_mean, lm_basis = sm.sets_basis([(int(v),) for v in ids])
    src, out = Path(a.labels), Path(a.out)
    manifest = json.loads((src / "manifest.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for face in manifest["faces"]:
        fit = face.get("fit")
        if not fit:
            continue
        rot = np.asarray(fit["rot"], np.float64).reshape(3, 3)
        xy = fit21._project(lm_mean + lm_basis @ np.asarray(fit["coef"], np.float64),
                            float(fit["scale"]), rot, np.asarray(fit["trans"], np.float64))
        image = out / face["image"]
        if not image.exists():
            os.link(src / face["image"], image)
        files.write_text(out / f"{face['name']}.pts", _format_pts(xy))
        n += 1
    files.write_text(out / "manifest.json", json.dumps(dict(
        manifest, jaw="calibrated on aflw2000_val (scripts/calibrate_fit21_jaw.py)",
        jaw_vertices=[int(v) for v in ids[:17]], relabelled_from=str(src), jaw_report=report),
        indent=0))
    print(f"{n} faces relabelled into {out}; jaw vertices {ids[:17].tolist()}")


if __name__ == "__main__":
    main()
