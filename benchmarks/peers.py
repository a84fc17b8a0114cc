#!/usr/bin/env python
"""lightmark against dlib's 68-point shape predictor and mediapipe's face mesh: accuracy, accuracy
by yaw, detector recall, latency, throughput, size.

One run measures, on the same images and with the same metric code (``lightmark.core.metrics``):

* lightmark, torch and onnxruntime backends, (a) on the ground-truth landmark box (the training
  crop, one pass) and (b) end to end with the bundled RFB-320 detector (``predict_all``: detector
  box -> fitted mapping -> landmarks, refined on the first answer's own box); onnx also without
  the refinement pass (``methods.py``);
* dlib's ``shape_predictor_68_face_landmarks.dat`` on its HOG detector's box (upsample 1 and 0),
  on the raw GT landmark box, and on the GT box mapped to a HOG-like box fitted on HELEN train
  (``dlib_peer.py``);
* mediapipe 0.10.21's face mesh with its own detector, its 468 vertices turned into the 68 iBUG
  points by a map fitted on HELEN train (``mediapipe_peer.py``, ``fit_mediapipe_map.py``).

A detection is the labelled face when its IoU with the GT landmark box is >= 0.3; a face without
one is a *miss* (left out of the mean NME, a failure in FR, 0 in the AUC). On AFLW2000-3D the
report adds NME_box by |yaw| bin and each detector's recall by the same bins (``accuracy.py``).
Timing is at one thread, interleaved call by call and one library at a time (``speed.py``,
``timing.py``); the report gives the ratios to dlib and the CPU share other processes used.

    python3 -m venv ../bench-venv && ../bench-venv/bin/pip install -e . torch==2.13.0 -r benchmarks/requirements.txt
    ../bench-venv/bin/python benchmarks/peers.py --repeats 5 --out benchmarks/RESULTS.md --quiet
    ../bench-venv/bin/python benchmarks/peers.py --limit 10 --timing-images 5 --repeats 1 --out /tmp/r.md

Writes ``--out`` (Markdown, ``report.py``) and the same path with ``.json``.
"""
from __future__ import annotations

import timing  # noqa: F401  (first: one thread in the numeric libraries, before they load)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

from accuracy import cross_check, run_accuracy  # noqa: E402
from common import DATA, REPO, BenchmarkError  # noqa: E402
from dlib_peer import DlibPeer, dlib_model_path  # noqa: E402
from mediapipe_peer import DEFAULT_MAP, MediapipePeer  # noqa: E402
from methods import LightmarkPeer  # noqa: E402
from report import write_json, write_markdown  # noqa: E402
from speed import run_timing  # noqa: E402

DEFAULT_MODEL = REPO / "src" / "lightmark" / "assets" / "model" / "lightmark.safetensors"
#: The data sets measured by default, in table order: (key, option, folder).
DATASETS = (("afw", "--afw", DATA / "300w" / "afw"),
            ("aflw2000_val", "--aflw-val", DATA / "aflw2000_val"),
            ("aflw2000_sample", "--aflw", DATA / "aflw2000_sample"))


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="lightmark model NAME.safetensors (+ NAME.json); default: the bundled "
                    f"{DEFAULT_MODEL.relative_to(REPO)}")
    ap.add_argument("--onnx", help="its ONNX export NAME.onnx (+ NAME.json with onnx_sha256); default: "
                    "export --model with lightmark.export.export_onnx into a temporary folder")
    for key, opt, path in DATASETS:
        ap.add_argument(opt, dest=key, default=str(path), help=f"{key} folder ('' to leave it out)")
    ap.add_argument("--helen", default=str(DATA / "300w" / "helen_trainset"),
                    help="training set for the GT box -> dlib box mapping fit (never the evaluation sets)")
    ap.add_argument("--dlib-model", help="shape_predictor_68_face_landmarks.dat (default: from face_recognition_models)")
    ap.add_argument("--mediapipe-map", default=str(DEFAULT_MAP), help="the 468 -> 68 map (fit_mediapipe_map.py)")
    ap.add_argument("--repeats", type=int, default=3, help="timing passes over the timing images")
    ap.add_argument("--timing-images", type=int, default=100, help="AFW images used for timing")
    ap.add_argument("--limit", type=int, help="a seeded subset of this many faces of each data set (HELEN: "
                    "at least 30), for a quick run; the figures are then not the benchmark's")
    ap.add_argument("--pin-cpu", type=int, help="run on this one CPU only (default: wherever the OS puts it)")
    ap.add_argument("--load-note", default="",
                    help="what else ran on the machine (written into the report; the measured "
                         "load of other processes is always reported)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.timing_images < 1 or (args.limit is not None and args.limit < 1):
        raise BenchmarkError("--repeats, --timing-images and --limit must be >= 1")
    if args.model is None and not DEFAULT_MODEL.is_file():
        raise BenchmarkError(f"{DEFAULT_MODEL}: the bundled model is not there; pass --model PATH")
    for what, p in [("--helen", args.helen)] + [(o, getattr(args, k)) for k, o, _ in DATASETS]:
        if p and not Path(p).exists():
            raise BenchmarkError(f"{what} {p}: no such folder")
    if not args.afw:
        raise BenchmarkError("--afw is needed (the timing images come from it)")
    return args


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Load every method, run the accuracy and timing passes; the results' measured parts."""
    show = not args.quiet
    lm = LightmarkPeer.load(Path(args.model) if args.model else DEFAULT_MODEL,
                            Path(args.onnx) if args.onnx else None, tmp, show)
    # The box mapping fit needs some tens of matched faces, however small a quick run's --limit.
    helen_limit = None if args.limit is None else max(args.limit, 30)
    dlib = DlibPeer(dlib_model_path(args.dlib_model), Path(args.helen), show, helen_limit)
    mp = MediapipePeer(Path(args.mediapipe_map))
    methods = lm.methods() + dlib.methods() + mp.methods()
    accuracy = {}
    for key, _, _ in DATASETS:
        if getattr(args, key):
            convention = lm.use_convention_of(Path(getattr(args, key)))
            summaries, info = run_accuracy(methods, dlib, Path(getattr(args, key)), show, args.limit)
            accuracy[key] = {"data": dict(info, lightmark_convention=convention), "summary": summaries}
    check = cross_check(lm.onnx, Path(args.afw), args.limit)
    mine = accuracy["afw"]["summary"]["lightmark-onnx/gt"]
    if abs(check["nme_io"] - mine["nme_io"]) > 1e-3:
        print(f"warning: lightmark.evaluate gives NME_io {check['nme_io']:.4f} on AFW GT boxes, "
              f"this script {mine['nme_io']:.4f}", file=sys.stderr)
    speed = run_timing(lm, dlib, mp, Path(args.afw), args.timing_images, args.repeats, show)
    from lightmark.runtime.detector import DEFAULT_MODEL as DETECTOR_MODEL

    sizes = {"lightmark_safetensors": lm.files.weights.stat().st_size, "lightmark_onnx": lm.files.onnx.stat().st_size,
             "lightmark_detector": DETECTOR_MODEL.stat().st_size, "dlib_shape_predictor": dlib.dat.stat().st_size,
             "dlib_hog_detector": dlib.hog_file_bytes(tmp), "mediapipe_models": mp.model_bytes()}
    return {"model": lm.info(), "dlib": dlib.info(), "dlib_version": dlib.version, "mediapipe": mp.info(),
            "labels": {m.key: (m.who, m.box) for m in methods}, "accuracy": accuracy,
            "cross_check_lightmark_evaluate_afw_gt": check, "timing": speed, "sizes": sizes}


NOTES = [
    "dlib's 68-point model was trained on iBUG 300-W, whose training part includes AFW and HELEN "
    "train: its AFW rows are on images it was trained on (an optimistic figure for dlib). lightmark "
    "never trains on AFW (its validation set); some of lightmark's training labels (utkface_dlib68) "
    "are dlib's own predictions. The mediapipe map was fitted on HELEN train only.",
    "AFLW2000-3D labels are projected 3D points (the jaw follows the 3D contour, not the visible one), "
    "a different markup convention from 300W that penalises every 2d method here; a lightmark model "
    "with a 3d output set is scored on it there (the data's own convention), dlib and mediapipe's "
    "fitted map give 2d points; aflw2000_sample has only 4 images (anecdotal), aflw2000_val 200.",
    "Detections are matched to the labelled face by IoU >= 0.3 with its landmark box; a miss gets no "
    "prediction (left out of the mean NME, a failure in FR and AUC).",
    "lightmark's detector rows use the API default: the first answer's own landmark box is cropped "
    "again and the model runs a second time (refine); 'no refine' is one pass.",
]


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    meter = timing.LoadMeter()
    timing.pin_library_threads()
    pinned = timing.pin_cpu(args.pin_cpu)
    with tempfile.TemporaryDirectory(prefix="lightmark-peers-") as tmp:
        measured = measure(args, Path(tmp))
    import numpy as np
    import onnxruntime
    import torch
    from lightmark import __version__

    prog = Path(sys.argv[0])
    try:
        prog = prog.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    res = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": timing.machine_info(), "pin_cpu": args.pin_cpu, "pinned_cpus": pinned,
        "versions": {"lightmark": __version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "dlib": measured.pop("dlib_version"), "mediapipe": measured["mediapipe"]["version"],
                     "numpy": np.__version__},
        "command": " ".join(shlex.quote(a) for a in ["python", str(prog), *(sys.argv[1:] if argv is None else argv)]),
        "limit": args.limit, "load_note": args.load_note, "load": meter.read(), **measured, "notes": NOTES,
    }
    out = Path(args.out)
    write_markdown(res, out)
    write_json(res, out.with_suffix(".json"))
    print(out.read_text())
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
