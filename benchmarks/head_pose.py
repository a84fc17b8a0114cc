#!/usr/bin/env python
"""Head pose accuracy of ``lightmark.core.pose.head_pose`` on AFLW2000-3D, and its speed.

Angles are compared with each face's ``Pose_Para`` (AFLW2000-3D's own labels, the 3DMM fit the
data set was made with). Three sources of points:

  (a) the ground-truth ``pt3d_68`` x, y (AFLW2000-3D's 3D-convention points);
  (b) the model's points on the ground-truth landmark box (its 3D-convention set when it has one)
      (``Landmarker().predict(img, box, box_kind="landmarks")``, box = tight box around (a));
  (c) end to end: ``Landmarker().predict_all(img)``, the face whose detector box overlaps the
      ground-truth landmark box most (IoU >= 0.3, ``lightmark.evaluate``'s rule); a face without
      such a detection is a miss, left out of the means and counted.

By default faces with any |angle| > 99 degrees are left out, the usual AFLW2000-3D protocol
(``--all`` keeps them). Errors: mean absolute error of each Euler angle, their mean, and the mean
geodesic (rotation) error. The only pose-labelled set at hand is ``aflw2000_val`` (the protocol's
validation 10%): the method was chosen on it, so these are validation numbers, not a test.

    PYTHONPATH=src python benchmarks/head_pose.py [--data ../shared/data/aflw2000_val] [--json OUT]
        [--ablation] [--aflw21 ../shared/data/aflw_21pt --aflw21-n 1500]

``--ablation`` adds the method-selection table: other point sets (same solver) and a perspective
camera (OpenCV ``solvePnP``, iterative, focal length = k x image width, principal point at the
image centre). ``--aflw21`` adds the model's yaw on a seeded sample of AFLW faces with yaw labels
(``aflw_21pt``, |yaw| >= 30 degrees, AFLW's own pose labels, no AFLW2000-3D face): an independent
look at how the model's points turn at large yaw.

Prints Markdown; not a test.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import numpy as np  # noqa: E402

from lightmark.core import pose  # noqa: E402
from lightmark.core.paths import data_root  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = data_root() / "aflw2000_val"
YAW_BINS = ((0, 30), (30, 60), (60, 99))


def geodesic_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation angle (degrees) between the rotations of two (N, 3) yaw, pitch, roll arrays."""
    ra = np.stack([pose.rotation_matrix(*v) for v in a])
    rb = np.stack([pose.rotation_matrix(*v) for v in b])
    tr = np.einsum("bij,bij->b", ra, rb)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1)))


def summary(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict:
    e = np.abs(pred[mask] - gt[mask])
    return {"n": int(mask.sum()), "yaw": float(e[:, 0].mean()), "pitch": float(e[:, 1].mean()),
            "roll": float(e[:, 2].mean()), "mean": float(e.mean()),
            "geodesic": float(geodesic_deg(pred[mask], gt[mask]).mean())}


def pose_convention(lm) -> str:
    """The model's 3D-convention points when it has them (the mean face is 3D), else its 2d."""
    return "3d" if "3d" in lm.conventions else "2d"


def collect(data: Path, progress: bool, model: Optional[str] = None) -> dict:
    """Points of the three sources and the labels for every face of ``data``."""
    from lightmark import Landmarker
    from lightmark.data.readers import open_dataset
    from lightmark.core.geometry import landmark_box
    from lightmark.core.geometry import match_detection

    ds = open_dataset(data)
    if ds.kind != "aflw2000":
        raise SystemExit(f"{data}: expected an AFLW2000-3D folder, got kind {ds.kind!r}")
    lm = Landmarker(model=model)
    conv = pose_convention(lm)
    out: dict = {"names": [], "labels": [], "shape": [], "a": [], "b": [], "c": [], "convention": conv}
    for i in range(len(ds)):
        s = ds[i]
        gt = s.points.astype(np.float64)
        box = landmark_box(gt)
        out["names"].append(ds.records[i].image_path.name)
        out["labels"].append([s.meta["yaw_deg"], s.meta["pitch_deg"], s.meta["roll_deg"]])
        out["shape"].append(s.image.shape)
        out["a"].append(gt)
        out["b"].append(lm.predict(s.image, box, box_kind="landmarks", convention=conv))
        faces = lm.predict_all(s.image)
        dets = np.array([np.r_[f.box, f.score] for f in faces]).reshape(-1, 5)
        d = match_detection(dets, box, 0.3)
        hit = None if d is None else next(f for f in faces if np.array_equal(np.r_[f.box, f.score], d))
        # the points Face.pose is fitted to: points_3d when the model has them
        out["c"].append(np.full((68, 2), np.nan) if hit is None else
                        hit.points if hit.points_3d is None else hit.points_3d)
        if progress and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(ds)} images", file=sys.stderr)
    return {k: (np.array(v) if k not in ("names", "convention") else v) for k, v in out.items()}


POINT_SETS = {
    "all 68": np.arange(68),
    "no jaw (17-67)": np.arange(17, 68),
    "chin + 17-67": np.r_[8, 17:68],
    "chin + 27-67 (no brows)": np.r_[8, 27:68],
    "chin + 17-59 (no inner lips)": np.r_[8, 17:60],
    "chin + 27-59 (no brows, no inner lips)": np.r_[8, 27:60],
    "chin + 27-47, 48, 54 (no brows, mouth corners)": np.r_[8, 27:48, 48, 54],
}


def with_points(idx: np.ndarray, points: np.ndarray, shape: tuple) -> np.ndarray:
    """head_pose_batch with another point set: the same solver, its constants recomputed."""
    saved = dict(pose.POSE_POINTS)
    try:
        pose.POSE_POINTS["2d"] = idx
        pose._constants.cache_clear()
        return pose.head_pose_batch(points, shape, "2d")
    finally:
        pose.POSE_POINTS.update(saved)
        pose._constants.cache_clear()


def pnp(points: np.ndarray, shape: tuple, focal_widths: float, idx: np.ndarray) -> np.ndarray:
    """(N, 3) angles from cv2.solvePnP with a pinhole camera of focal = focal_widths * width."""
    import cv2

    h, w = shape[:2]
    k = np.array([[focal_widths * w, 0, (w - 1) / 2], [0, focal_widths * w, (h - 1) / 2], [0, 0, 1.0]])
    flip = np.diag([1.0, -1.0, -1.0])  # mean-face axes (y up, z to the viewer) -> OpenCV camera
    obj = pose.load_mean_face()[idx] @ flip
    out = []
    for p in points:
        ok, rvec, _ = cv2.solvePnP(obj, p[idx].astype(np.float64), k, None, flags=cv2.SOLVEPNP_ITERATIVE)
        r = cv2.Rodrigues(rvec)[0] if ok else np.full((3, 3), np.nan)
        out.append(pose.euler_angles(flip @ r @ flip))
    return np.array(out)


def ablation(d: dict, keep: np.ndarray) -> None:
    labels, shape = d["labels"], tuple(d["shape"][0])
    print("\n### Method selection (same faces; mean absolute error yaw / pitch / roll, **mean**)\n")
    print("| fit | (a) ground-truth points | (b) model, GT box | (c) model, detector |")
    print("|---|---|---|---|")
    def used_by(idx: np.ndarray) -> str:
        names = [c for c, i in pose.POSE_POINTS.items() if np.array_equal(i, idx)]
        return f" **(head_pose, {' and '.join(names)} points)**" if names else ""

    chosen = next(n for n, i in POINT_SETS.items() if np.array_equal(i, pose.POSE_POINTS["2d"]))
    variants = [(f"orthographic, {name}" + used_by(idx),
                 lambda p, idx=idx: with_points(idx, p, shape)) for name, idx in POINT_SETS.items()]
    variants += [(f"solvePnP f = {k} x width, {chosen}",
                  lambda p, k=k: pnp(p, shape, k, pose.POSE_POINTS["2d"])) for k in (1, 3, 10)]
    for name, fn in variants:
        cells = []
        for key in "abc":
            found = ~np.isnan(d[key][:, 0, 0])
            pred = np.full((len(labels), 3), np.nan)
            pred[found] = fn(d[key][found])
            r = summary(pred, labels, keep & found)
            cells.append(f"{r['yaw']:.2f} / {r['pitch']:.2f} / {r['roll']:.2f}, **{r['mean']:.2f}**")
        print(f"| {name} | " + " | ".join(cells) + " |")


def aflw21(folder: Path, n: int, model: Optional[str] = None) -> None:
    """The model's fitted yaw on aflw_21pt faces (detector + landmarks), by labelled |yaw|."""
    import csv

    from lightmark import Landmarker
    from lightmark.core.imaging import load_image

    with open(folder / "aflw21.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    pick = np.sort(np.random.default_rng(0).choice(len(rows), size=min(n, len(rows)), replace=False))
    lm = Landmarker(model=model)
    fitted, labels, missed = [], [], 0
    for i in pick:
        img = load_image(folder / "images" / rows[i][0])
        faces = lm.predict_all(img)
        if not faces:
            missed += 1
            continue
        # one face per crop: take the largest detection
        face = max(faces, key=lambda f: float(np.prod(f.box[2:] - f.box[:2])))
        fitted.append(face.pose[0])
        labels.append(float(rows[i][1]))
    fitted, labels = np.array(fitted), np.array(labels)
    print(f"\n### Model's yaw on aflw_21pt ({len(pick)} seeded faces, {missed} without a detection)\n")
    print("| labelled \\|yaw\\| | n | median fitted \\|yaw\\| | mean signed error (towards larger \\|yaw\\|) | MAE |")
    print("|---|---:|---:|---:|---:|")
    for lo, hi in ((30, 45), (45, 60), (60, 75), (75, 90), (90, 130)):
        m = (np.abs(labels) >= lo) & (np.abs(labels) < hi)
        if not m.any():
            continue
        signed = (fitted[m] - labels[m]) * np.sign(labels[m])
        print(f"| {lo}-{hi} | {m.sum()} | {np.median(np.abs(fitted[m])):.1f} | {signed.mean():+.1f} | "
              f"{np.abs(signed).mean():.1f} |")


def timing(points: np.ndarray, shape: tuple) -> dict:
    """Per-face time of head_pose (one call per face) and head_pose_batch: best of 5 rounds,
    wall clock and this process's CPU time (the machine may be shared)."""
    def best(fn, rounds: int = 5) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(rounds):
            w, c = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        return min(walls), min(cpus)

    n = len(points)
    w1, c1 = best(lambda: [pose.head_pose(p, shape) for p in points])
    wb, cb = best(lambda: pose.head_pose_batch(points, shape))
    return {"n": n, "single_wall_us": w1 / n * 1e6, "single_cpu_us": c1 / n * 1e6,
            "batch_wall_us": wb / n * 1e6, "batch_cpu_us": cb / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--all", action="store_true", help="keep faces with |angle| > 99 degrees")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--ablation", action="store_true", help="also compare other point sets and cameras")
    ap.add_argument("--aflw21", type=Path, help="aflw_21pt folder: the model's yaw on AFLW's yaw labels")
    ap.add_argument("--aflw21-n", type=int, default=1500, help="faces drawn from --aflw21 (seed 0)")
    ap.add_argument("--model", help="a model file (default: the bundled model)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    t0 = time.time()
    d = collect(args.data, not args.quiet, args.model)
    labels = d["labels"]
    keep = np.ones(len(labels), bool) if args.all else (np.abs(labels) <= 99).all(axis=1)
    shape = tuple(d["shape"][0])
    rows, bins = {}, {}
    names = {"a": "(a) ground-truth pt3d_68 x, y (3d)",
             "b": f"(b) model ({d['convention']} points), ground-truth landmark box",
             "c": f"(c) model ({d['convention']} points), predict_all (detector)"}
    for key in "abc":
        pts = d[key]
        found = ~np.isnan(pts[:, 0, 0])
        pred = np.full((len(pts), 3), np.nan)
        # one image size per call: AFLW2000-3D images are all 450x450, but do not rely on it
        convention = "3d" if key == "a" else d["convention"]  # pt3d_68 are 3D-convention points
        for i in np.flatnonzero(found):
            pred[i] = pose.head_pose(pts[i], tuple(d["shape"][i]), convention)
        m = keep & found
        rows[key] = summary(pred, labels, m)
        rows[key]["missed"] = int((keep & ~found).sum())
        ay = np.abs(labels[:, 0])
        bins[key] = {f"{lo}-{hi}": summary(pred, labels, m & (ay >= lo) & (ay < hi)) for lo, hi in YAW_BINS}
    speed = timing(d["b"][keep], shape)

    rule = "all faces" if args.all else "faces with all |angle| <= 99 deg"
    print(f"## Head pose on {args.data.name} ({len(labels)} faces; {rule}: {int(keep.sum())})\n")
    print("Mean absolute error, degrees (AFLW2000-3D `Pose_Para` convention); geodesic = mean "
          "rotation angle between fitted and labelled pose.\n")
    print("| points | n | yaw | pitch | roll | mean | geodesic | missed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in "abc":
        r = rows[key]
        print(f"| {names[key]} | {r['n']} | {r['yaw']:.2f} | {r['pitch']:.2f} | {r['roll']:.2f} | "
              f"**{r['mean']:.2f}** | {r['geodesic']:.2f} | {r['missed']} |")
    print("\nBy the label's yaw, either side (mean absolute error: yaw / pitch / roll, mean):\n")
    print("| points | " + " | ".join(f"yaw ±{b} deg" for b in bins["a"]) + " |")
    print("|---|" + "---|" * len(bins["a"]))
    for key in "abc":
        cells = [f"n={v['n']}: {v['yaw']:.1f} / {v['pitch']:.1f} / {v['roll']:.1f}, **{v['mean']:.1f}**"
                 for v in bins[key].values()]
        print(f"| {names[key]} | " + " | ".join(cells) + " |")
    print(f"\nSpeed of `head_pose` ({speed['n']} faces of (b), one thread, best of 5 rounds): "
          f"{speed['single_wall_us']:.0f} us a face wall clock ({speed['single_cpu_us']:.0f} us CPU) "
          f"called one face at a time; `head_pose_batch` {speed['batch_wall_us']:.1f} us a face "
          f"({speed['batch_cpu_us']:.1f} us CPU). Machine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; run took {time.time() - t0:.0f} s.")
    if args.ablation:
        ablation(d, keep)
    if args.aflw21:
        aflw21(args.aflw21, args.aflw21_n, args.model)
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "all": args.all, "rows": rows,
                                         "yaw_bins": bins, "speed": speed}, indent=1) + "\n")


if __name__ == "__main__":
    main()
