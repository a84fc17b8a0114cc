"""Tools around :mod:`lightmark.synth.fit21`: choosing the ICT vertices of AFLW's non-iBUG points,
checking the fit where the answer is known (AFLW2000-3D's ``pt2d`` -> ``pt3d_68``), and writing
3D-convention labels for a whole AFLW 21-point folder (`lightmark fit21`), resumably.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from lightmark.core.errors import ProfileError
from lightmark.data.aflw21 import NUM_POINTS_AFLW21
from lightmark.synth import ict
from lightmark.synth.fit21 import (JAW_CHOICES, MIN_VISIBLE, ShapeModel, _project,
                                   _vertex_sets, fit21, shape_model)


_PROVISIONAL: dict[int, tuple[int, ...]] = {7: (24223,), 10: (22653,), 12: (7620,), 13: (1140,),
                                            15: (3360,), 16: (6893,), 18: (5533, 5517)}

#: Groups chosen together: a picture-left point (model x < 0) and its mirror image, or one point.
_GROUPS = {"eye centres": (7, 10), "nose wings": (13, 15), "ears": (12, 16), "mouth centre": (18,)}
# Search radius (cm) around each group's anchor; the ears' clicks vary most (lobe, tragus).
_RADIUS = {"eye centres": 1.5, "nose wings": 2.0, "ears": 4.5, "mouth centre": 1.5}


def _anchor(model: ict.ICTModel, group: str) -> np.ndarray:
    """A rough model-space position of the picture-left point of ``group`` (x < 0)."""
    n, lm = model.neutral, model.landmarks68
    if group == "eye centres":
        return n[lm[36:42]].mean(axis=0)
    if group == "nose wings":
        return n[lm[31]]
    if group == "mouth centre":
        return n[lm[[62, 66]]].mean(axis=0)
    return np.array([-8.5, 1.0, -1.0])  # ears: beside the head, at the nose's height


def _candidates(model: ict.ICTModel, group: str) -> list[tuple[int, ...]]:
    """Vertex sets to try for the picture-left point of ``group``: single vertices of the skin
    (and, for the eye centre, the eyeball) near its anchor, plus a few means of landmark vertices."""
    n = model.neutral
    pool = np.flatnonzero(np.isin(model.vert_region, [ict.FACE, ict.HEAD] +
                                  ([ict.SCLERA, ict.IRIS] if group == "eye centres" else [])))
    d = np.linalg.norm(n[pool] - _anchor(model, group), axis=1)
    sel = pool[d < _RADIUS[group]]
    if group == "mouth centre":
        sel = sel[np.abs(n[sel, 0]) < 0.05]  # the midline: a lopsided choice would bias every face
    else:
        sel = sel[n[sel, 0] < 0]  # the picture-left side; the right point takes the mirror
    cands = [(int(v),) for v in sel]
    lm = model.landmarks68
    if group == "eye centres":
        cands.append(tuple(int(v) for v in lm[[37, 38, 40, 41]]))
    elif group == "mouth centre":
        cands += [tuple(int(v) for v in lm[[62, 66]]), tuple(int(v) for v in lm[[51, 57]])]
    return cands


def _mirror_sets(model: ict.ICTModel, sets: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    from scipy.spatial import cKDTree

    n = model.neutral
    tree = cKDTree(n)
    return [tuple(int(tree.query(n[v] * np.array([-1.0, 1.0, 1.0]))[1]) for v in s) for s in sets]


def choose_vertices(faces: Sequence[np.ndarray], rounds: int = 2, model_path: Optional[str] = None,
                    clip: float = 0.2, log: Callable[[str], None] = lambda _m: None,
                    groups: Optional[Sequence[str]] = None, start: Optional[dict] = None) -> tuple[dict, dict]:
    """Choose :data:`AFLW21_VERTICES` from clicked faces ((21, 2) each, NaN = not visible).

    Round 1 fits each face to the 14 iBUG points only; every candidate vertex set is projected
    with each face's fit, and a group's choice is the candidate whose projection lies nearest the
    clicks (mean distance / fitted 68-point box size, each face's term clipped at ``clip`` so a
    failed fit cannot decide). Later rounds fit to all other points (the current choices) but
    leave the group being chosen out, so a choice is never judged by a fit that used it.
    ``groups`` limits the choice to some of :data:`_GROUPS`; ``start`` (default: the provisional
    choice, :data:`_PROVISIONAL`) is where the others stay. With ``start`` given, round 1 also
    uses the other groups' points (it is then a later round).
    Returns (choice, report: per group the chosen sets and their held-out errors, per round).
    """
    m = ict.load_ict(model_path)
    base = shape_model(m.path)
    choice = dict(_PROVISIONAL if start is None else start)
    cands = {g: _candidates(m, g) for g in _GROUPS}
    report: dict = {"faces": len(faces), "rounds": []}
    for rnd in range(rounds):
        sm = base.with_points(_vertex_sets(m, choice))
        rr: dict = {}
        for g, pts in _GROUPS.items():
            if groups is not None and g not in groups:
                continue
            use = np.ones(NUM_POINTS_AFLW21, bool)
            if rnd == 0 and start is None:
                use[list(_PROVISIONAL)] = False  # the 14 iBUG points only
            else:
                use[list(pts)] = False
            left = cands[g]
            right = _mirror_sets(m, left) if len(pts) == 2 else None
            lm, lb = base.sets_basis(left)
            rm_, rb_ = base.sets_basis(right) if right else (None, None)
            tot = np.zeros(len(left))
            cnt = 0
            for face in faces:
                vis = np.isfinite(face).all(axis=1)
                seen = [k for k in pts if vis[k]]
                if not seen or (vis & use).sum() < MIN_VISIBLE + 2:
                    continue
                try:
                    f = fit21(face, sm=sm, use=use)
                except ProfileError:
                    continue
                box = float(np.sqrt(np.prod(np.ptp(f.points68, axis=0))))
                for side, k in enumerate(pts):
                    if not vis[k]:
                        continue
                    mean, basis = (lm, lb) if side == 0 else (rm_, rb_)
                    xy = _project(mean + basis @ f.coef, f.scale, f.rot, f.trans)
                    tot += np.minimum(np.linalg.norm(xy - face[k], axis=1) / box, clip)
                    cnt += 1
            best = int(np.argmin(tot))
            choice[pts[0]] = left[best]
            if right:
                choice[pts[1]] = right[best]
            rr[g] = {"sets": [list(choice[k]) for k in pts], "held_out_error": round(float(tot[best] / max(cnt, 1)), 5),
                     "clicks": cnt, "candidates": len(left)}
            log(f"round {rnd + 1} {g}: {rr[g]}")
        report["rounds"].append(rr)
    return choice, report


def held_out_errors(faces: Sequence[np.ndarray], points: Sequence[int] = tuple(range(NUM_POINTS_AFLW21)),
                    sm: Optional[ShapeModel] = None, clip: float = 0.2, **fit_kw) -> dict:
    """Leave-one-point-out accuracy on clicked faces (training data: no 68-point truth needed).

    For every visible point k of ``points`` of every face, fit without k and measure how far the
    fit puts k's vertex from its click (/ the fitted 68-point box size, clipped at ``clip``).
    Returns per point the mean and the count, and ``mean``: the mean over points.
    """
    out: dict = {}
    for k in points:
        errs = []
        for face in faces:
            if not np.isfinite(face[k]).all():
                continue
            use = np.ones(NUM_POINTS_AFLW21, bool)
            use[k] = False
            try:
                f = fit21(face, sm=sm, use=use, **fit_kw)
            except ProfileError:
                errs.append(clip)
                continue
            box = float(np.sqrt(np.prod(np.ptp(f.points68, axis=0))))
            errs.append(min(float(np.linalg.norm(f.points21[k] - face[k])) / box, clip))
        out[k] = {"mean": float(np.mean(errs)) if errs else float("nan"), "n": len(errs)}
    out["mean"] = float(np.nanmean([v["mean"] for v in out.values()]))
    return out


# ------------------------------------------------------------------------------------------
# the check where the answer is known: AFLW2000-3D


def check_aflw2000(folder: Union[str, Path], jaw: str = "substitute", model_path: Optional[str] = None) -> dict:
    """Fit every ``.mat`` of an AFLW2000-3D folder from its 21 ``pt2d`` points and score the 68
    fitted points against its ``pt3d_68`` (NME by the ground-truth landmark box, sqrt(w * h)).

    Returns per part (``all`` 0-67, ``inner`` 17-67, ``jaw`` 0-16) the yaw bins of
    :func:`lightmark.core.metrics.yaw_bins` (fractions) and the mean, plus ``n``, ``failed``
    (files whose fit raised) and ``cpu_ms_per_face``. For scale, ``common14_clicks`` and
    ``common14_fit`` compare the clicks themselves and the fit with ``pt3d_68`` on the 14 shared
    points (those visible in each face).
    """
    from lightmark.data.aflw21 import AFLW21_COMMON, IBUG68_COMMON

    from lightmark.core.metrics import box_size, yaw_bins
    from lightmark.data.aflw21 import read_aflw2000_pt2d
    from lightmark.data.formats import read_aflw_mat

    files = sorted(Path(folder).glob("*.mat"))
    if not files:
        raise ProfileError(f"{folder}: no AFLW2000-3D .mat files")
    sm = shape_model(model_path, jaw=jaw)
    pred, gt, yaw, clicks, failed, cpu = [], [], [], [], [], 0.0
    for f in files:
        g, meta = read_aflw_mat(f)
        p21 = read_aflw2000_pt2d(f)
        t0 = time.process_time()
        try:
            r = fit21(p21, sm=sm)
        except ProfileError as e:
            failed.append(f"{f.name}: {e}")
            continue
        finally:
            cpu += time.process_time() - t0
        pred.append(r.points68)
        clicks.append(p21)
        gt.append(g)
        yaw.append(meta.get("yaw_deg", np.nan))
    pr, gt_, yw = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(yaw)
    box = box_size(gt_)
    out: dict = {"folder": str(folder), "jaw_vertices": jaw, "n": len(pr), "failed": failed,
                 "cpu_ms_per_face": round(1000 * cpu / len(files), 2)}
    for part, sl in (("all", slice(0, 68)), ("inner", slice(17, 68)), ("jaw", slice(0, 17))):
        e = np.linalg.norm(pr[:, sl] - gt_[:, sl], axis=-1).mean(axis=1) / box
        out[part] = {**yaw_bins(e, yw), "mean": float(e.mean())}
    g14 = gt_[:, IBUG68_COMMON]
    c14 = np.asarray(clicks, np.float64)[:, AFLW21_COMMON]
    seen = np.isfinite(c14).all(axis=-1)
    for name, pts in (("common14_clicks", c14), ("common14_fit", pr[:, IBUG68_COMMON])):
        d = np.where(seen, np.linalg.norm(np.nan_to_num(pts) - g14, axis=-1), 0.0)
        e = d.sum(axis=1) / np.maximum(seen.sum(axis=1), 1) / box
        out[name] = {**yaw_bins(e, yw), "mean": float(e.mean())}
    return out


# ------------------------------------------------------------------------------------------
# label generation: `lightmark fit21`

MANIFEST = "manifest.json"
PARTS = "parts"  # per-slice records of finished faces (what a resumed run trusts)


def _format_pts(points: np.ndarray) -> str:
    """A 300W ``.pts`` file: 1-based, as :func:`lightmark.data.formats.read_pts` reads it."""
    body = "".join(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in np.asarray(points, np.float64))
    return f"version: 1\nn_points: {len(points)}\n{{\n{body}}}\n"


@functools.lru_cache(maxsize=2)
def _source(data: str, limit: Optional[int], seed: int):
    """(data set, relative names) of a labelling run: the AFLW-21 faces, bad rows skipped."""
    from lightmark.data.readers import open_dataset

    ds = open_dataset(data, skip_bad=True, limit=limit, seed=seed)
    if ds.kind != "aflw21":
        raise ProfileError(f"{data}: fit21 needs an AFLW 21-point table (kind 'aflw21'), got kind {ds.kind!r}")
    return ds, ds.relative_names()


def fit21_slice(indices: range, data: str, out: str, limit: Optional[int], seed: int, jaw: str,
                todo: tuple[int, ...]) -> list[dict]:
    """Fit and write faces ``todo[i]`` for ``i`` in ``indices``; each face's image copy and
    ``.pts`` are written atomically, then the slice's entries go to ``parts/`` in one file, so a
    killed run keeps every finished slice. Module level so worker processes can run it."""
    from lightmark.core import files

    ds, names = _source(data, limit, seed)
    outp = Path(out)
    entries: list[dict] = []
    sm = shape_model(None, jaw=jaw)
    for i in indices:
        idx = todo[i]
        rec = ds.records[idx]
        stem = rec.image_path.stem
        t0 = time.process_time()
        try:
            r = fit21(rec.points, sm=sm)
        except ProfileError as e:
            entries.append({"name": stem, "source": names[idx], "skipped": str(e)})
            continue
        cpu = time.process_time() - t0
        img = outp / rec.image_path.name
        if not img.exists():
            files.write_bytes(img, rec.image_path.read_bytes())
        files.write_text(outp / f"{stem}.pts", _format_pts(r.points68))
        yaw, pitch, roll = r.yaw_pitch_roll
        entries.append({
            "name": stem, "image": rec.image_path.name, "source": names[idx],
            "aflw_yaw_deg": rec.meta.get("yaw_deg"),
            "yaw": round(yaw, 2), "pitch": round(pitch, 2), "roll": round(roll, 2),
            "n_visible": int(r.visible.sum()), "fit_error_px": round(r.error_px, 3),
            "fit_error_box": round(r.error_box, 5), "cpu_ms": round(cpu * 1000, 1),
            # The fit itself: any other vertex (another jaw convention) can be projected later.
            "fit": {"scale": round(r.scale, 5), "rot": np.round(r.rot, 6).ravel().tolist(),
                    "trans": np.round(r.trans, 4).tolist(), "coef": np.round(r.coef, 5).tolist()},
        })
    if entries:
        files.write_text(outp / PARTS / f"{entries[0]['name']}-{len(entries)}-{time.time_ns()}.json",
                         json.dumps(entries))
    return entries


def _finished(outp: Path) -> dict[str, dict]:
    """Entries of faces a previous run finished (its part files; a face counts only while its
    ``.pts`` is there). A part file that cannot be read is ignored: its faces are redone."""
    done: dict[str, dict] = {}
    folder = outp / PARTS
    if not folder.is_dir():
        return done
    for part in sorted(folder.glob("*.json")):
        try:
            entries = json.loads(part.read_text())
        except (OSError, ValueError):
            continue
        for e in entries:
            if "skipped" in e or (outp / f"{e['name']}.pts").is_file():
                done[e["name"]] = e
    return done


def fit21_main(data: str, out: str, limit: Optional[int] = None, seed: int = 0, workers: int = 1,
               jaw: str = "substitute", progress: bool = False) -> dict:
    """CLI entry (``lightmark fit21``): 68-point labels (3D convention) for the faces of an
    AFLW-21 table, written to ``out`` as 300W ``.pts`` files (1-based) beside a copy of each image,
    with ``manifest.json`` (convention, source, jaw, per face the fit error, pose and fit).
    Resumable: faces already finished in ``out`` are kept, not refitted. ``limit``: a seeded
    subset of that many faces. ``workers`` > 1 fits slices in that many processes."""
    from lightmark.core import files
    from lightmark.synth.parallel import check_workers, run_slices, split

    if jaw not in JAW_CHOICES:
        raise ProfileError(f"jaw must be one of {JAW_CHOICES}, got {jaw!r}")
    workers = check_workers(workers)
    ds, names = _source(str(data), limit, int(seed))
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(outp)
    if old and old.get("jaw") not in (None, jaw):
        raise ProfileError(f"{outp}: holds labels with jaw {old.get('jaw')!r}; use another folder for {jaw!r}")
    done = _finished(outp)
    todo = tuple(i for i, rec in enumerate(ds.records) if rec.image_path.stem not in done)
    t0 = time.perf_counter()
    task = functools.partial(fit21_slice, data=str(data), out=str(outp), limit=limit, seed=int(seed),
                             jaw=jaw, todo=todo)
    for part in run_slices(task, split(0, len(todo), workers) if todo else [], workers,
                           progress="fit21" if progress else None):
        for e in part:
            done[e["name"]] = e
    secs = time.perf_counter() - t0
    faces = [done[n] for n in sorted(done) if "skipped" not in done[n]]
    skipped = [f"{done[n]['source']}: {done[n]['skipped']}" for n in sorted(done) if "skipped" in done[n]]
    errs = np.array([f["fit_error_box"] for f in faces]) if faces else np.zeros(0)
    cpu = [f["cpu_ms"] for f in faces]
    stats = {
        "format": "pts", "convention": "3d", "points": 68,
        "landmarks": "300W .pts, 1-based; the ICT model's 68 landmark vertices projected (jaw on fixed "
                     "3D points, not the visible contour)",
        "jaw": jaw, "generator": "lightmark.synth.fit21", "model": str(ict.default_model_path().name),
        "source": str(data), "limit": limit, "seed": int(seed), "n": len(faces), "n_source": len(ds),
        "bad_rows": [f"{w}: {r}" for w, r in ds.bad], "skipped": skipped,
        "fit_error_box_median": round(float(np.median(errs)), 5) if len(errs) else None,
        "fit_error_box_p90": round(float(np.percentile(errs, 90)), 5) if len(errs) else None,
        "cpu_ms_per_face": round(float(np.mean(cpu)), 1) if cpu else None,
        "seconds_this_run": round(secs, 1), "fitted_this_run": len(todo), "workers": workers,
        # Every run into this folder (a resumed run adds one): what the labels cost in all.
        "runs": (old or {}).get("runs", []) + [{"seconds": round(secs, 1), "fitted": len(todo),
                                                  "workers": workers}],
        "faces": faces,
    }
    files.write_text(outp / MANIFEST, json.dumps(stats, indent=0))
    return {k: v for k, v in stats.items() if k not in ("faces", "bad_rows", "skipped", "runs")} | \
        {"n_skipped": len(skipped), "n_bad_rows": len(ds.bad)}


def _read_manifest(outp: Path) -> Optional[dict]:
    try:
        return json.loads((outp / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
