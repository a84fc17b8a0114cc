#!/usr/bin/env python
"""Where lightmark's time goes, stage by stage, beside dlib and mediapipe on the same images.

Stages of ``Landmarker.predict_all``: image decode (JPEG file -> RGB array), detector
pre-processing (letterbox + normalisation), detector network, box decoding + NMS, crop, network
input normalisation, landmark network, decoding (the graph's softmax moments to points; the
soft-argmax of the maps for a graph without them), mapping back to the photo, and the refinement pass (crop + network + decoding + mapping again). Each stage is timed on its own, on
the inputs the previous stage produced, and the whole call end to end.

Workloads: AFW photos (one labelled face each; only photos where the bundled detector finds
exactly one face are used) letterboxed into 640x480; 2x2 mosaics of four of them at 640x480
(several faces); the same photos letterboxed into 4000x3000 (12 MP). Each at one and two
threads (onnxruntime intra-op threads; OpenCV stays at one).

Peers, where installed (never dependencies of lightmark): dlib's HOG detector (upsample 0 and 1)
+ 68-point shape predictor (``face_recognition_models``), and mediapipe's face mesh (468 points,
its own BlazeFace detector; ``static_image_mode=True`` so that it detects on every photo, like
``predict_all``). All methods are timed in one run, interleaved call by call, best and median
over ``--repeats`` rounds; ratios are the peer's time over lightmark's (above 1: lightmark faster).

    python benchmarks/stages.py [--photos N] [--repeats R] [--threads 1,2] [--no-12mp]
                                [--memory] [--out FILE.md]

The memory check (``--memory``) runs in a fresh process: resident set size (VmRSS) after
importing lightmark, with a ready Landmarker and detector, and after 1,000 ``predict_all`` calls
on 640x480 photos read from disk each time.
"""
from __future__ import annotations

import os

# One thread for the numeric libraries, before numpy / onnxruntime are imported.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_AFW = REPO.parent / "shared" / "data" / "300w" / "afw"
VGA = (640, 480)
MP12 = (4000, 3000)


class StagesError(SystemExit):
    def __init__(self, msg: str) -> None:
        super().__init__(f"stages.py: error: {msg}")


# ------------------------------------------------------------------------------------------------
# photos


def letterbox(img: np.ndarray, size: tuple[int, int], fill: int = 90) -> np.ndarray:
    """``img`` scaled to fit ``size`` (w, h), centred on a grey canvas."""
    w, h = size
    s = min(w / img.shape[1], h / img.shape[0])
    sw, sh = max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out = np.full((h, w, 3), fill, np.uint8)
    y, x = (h - sh) // 2, (w - sw) // 2
    out[y:y + sh, x:x + sw] = small
    return out


def mosaic(imgs: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Four photos in a 2x2 grid filling ``size``."""
    w, h = size
    out = np.full((h, w, 3), 90, np.uint8)
    for k, img in enumerate(imgs[:4]):
        r, c = divmod(k, 2)
        out[r * h // 2:(r + 1) * h // 2, c * w // 2:(c + 1) * w // 2] = letterbox(img, (w // 2, h // 2))
    return out


def pick_photos(afw: Path, n: int, lm: Any) -> list[np.ndarray]:
    """The first ``n`` AFW photos on which the bundled detector finds exactly one face at 640x480."""
    from lightmark.core.imaging import load_image

    out = []
    for p in sorted(afw.glob("*.jpg")):
        img = load_image(p)
        if len(lm.detect(letterbox(img, VGA))) == 1:
            out.append(img)
        if len(out) == n:
            return out
    if not out:
        raise StagesError(f"{afw}: no photo with exactly one detected face")
    return out


# ------------------------------------------------------------------------------------------------
# timing


CLOCK: Callable[[], float] = time.perf_counter


def interleaved(tasks: dict[str, list[Callable[[], Any]]], repeats: int) -> dict[str, dict]:
    """Round-robin: every round runs each task's calls once, method after method, call by call.
    Returns best and median milliseconds per call for every task (``CLOCK``: wall time, or this
    thread's CPU time with ``--clock thread``)."""
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for f in (f for fs in tasks.values() for f in fs[:1]):
        f()  # warm-up: first-call allocations are not what is measured
    n = max(len(v) for v in tasks.values())
    for _ in range(repeats):
        for i in range(n):
            for k, fs in tasks.items():
                if i < len(fs):
                    t0 = CLOCK()
                    fs[i]()
                    times[k].append(CLOCK() - t0)
    return {k: {"best_ms": 1e3 * min(v), "median_ms": 1e3 * float(np.median(v)), "n": len(v)}
            for k, v in times.items() if v}


def cpu_load() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, this process's CPU seconds) so far."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [float(x) for x in f]
    busy = (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    return busy, t.user + t.system


# ------------------------------------------------------------------------------------------------
# lightmark's stages


def stage_tasks(lm: Any, photos: list[np.ndarray], files: list[Path]) -> dict[str, list[Callable]]:
    """One callable per photo for every stage, each on the previous stage's real output."""
    from lightmark.core import geometry
    from lightmark.core.imaging import load_image, to_input

    det, pred = lm.detector, lm.predictor
    scale, shift = lm.face_box_mapping()
    s = lm.input_size
    sets = [c for c in ("2d", "3d") if c in lm.conventions]  # what predict_all decodes
    tasks: dict[str, list[Callable]] = {k: [] for k in (
        "image decode", "detector pre-processing", "detector network", "box decoding + NMS", "crop",
        "input normalisation", "landmark network", "decoding", "mapping back", "refinement pass",
        "predict_all (end to end, refine)", "predict_all, no refinement pass")}
    for img, f in zip(photos, files):
        x = det.preprocess(img)
        raw = det.run_network(x)
        boxes = det.postprocess(*raw, img.shape)[:, :4].astype(np.float64)
        crops, mats = geometry.crops_from_boxes(img, boxes, s, scale, shift)
        xin = to_input(crops)
        # What predict_all runs and decodes: the graph's softmax moments when it has them, else the maps.
        out = pred.pass_output
        y = pred.run(xin, out)
        cpts = pred.decode_output(y, ["2d"])["2d"]
        pts = geometry.points_to_image(cpts, mats)
        lm_boxes = np.stack([geometry.landmark_box(p) for p in pts])
        tasks["image decode"].append(lambda f=f: load_image(f))
        tasks["detector pre-processing"].append(lambda img=img: det.preprocess(img))
        tasks["detector network"].append(lambda x=x: det.run_network(x))
        tasks["box decoding + NMS"].append(lambda raw=raw, sh=img.shape: det.postprocess(*raw, sh))
        tasks["crop"].append(lambda img=img, b=boxes: geometry.crops_from_boxes(img, b, s, scale, shift))
        tasks["input normalisation"].append(lambda c=crops: to_input(c))
        tasks["landmark network"].append(lambda xin=xin: pred.run(xin, out))
        # predict_all decodes the 2d set and, for a model that has one, the 3d set (Face.points_3d)
        tasks["decoding"].append(lambda y=y: pred.decode_output(y, sets))
        tasks["mapping back"].append(lambda c=cpts, m=mats: geometry.points_to_image(c, m))
        tasks["refinement pass"].append(
            lambda img=img, b=lm_boxes: lm._run([img], [b], lm.crop_scale, (0.0, 0.0), sets))
        tasks["predict_all (end to end, refine)"].append(lambda img=img: lm.predict_all(img))
        tasks["predict_all, no refinement pass"].append(lambda img=img: lm._norefine.predict_all(img))
    return tasks


# ------------------------------------------------------------------------------------------------
# peers


def dlib_peer() -> Optional[dict]:
    try:
        import dlib
    except ImportError:
        return None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    dat = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not dat.is_file():
        return None
    return {"version": dlib.__version__, "hog": dlib.get_frontal_face_detector(),
            "sp": dlib.shape_predictor(str(dat)), "rect": dlib.rectangle}


def mediapipe_peer() -> Optional[dict]:
    try:
        import mediapipe as mp
    except ImportError:
        return None
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4,
                                           refine_landmarks=False, min_detection_confidence=0.5)
    return {"version": mp.__version__, "mesh": mesh}


def peer_tasks(dl: Optional[dict], mp: Optional[dict], photos: list[np.ndarray],
               lm_boxes: list[np.ndarray], upsample1: bool = True) -> dict[str, list[Callable]]:
    tasks: dict[str, list[Callable]] = {}
    if dl is not None:
        hog, sp, rect = dl["hog"], dl["sp"], dl["rect"]
        hog_boxes = []
        for img, b in zip(photos, lm_boxes):
            r = hog(img, 0)
            hog_boxes.append(r[0] if len(r) else rect(*[int(v) for v in b[0, :4]]))

        def e2e(img: np.ndarray, up: int) -> list:
            return [sp(img, r) for r in hog(img, up)]

        tasks["dlib: shape predictor from a box"] = [lambda img=img, r=r: sp(img, r)
                                                     for img, r in zip(photos, hog_boxes)]
        tasks["dlib: HOG (upsample 0) + shape predictor"] = [lambda img=img: e2e(img, 0) for img in photos]
        if upsample1:  # on 12 MP photos this takes seconds a photo
            tasks["dlib: HOG (upsample 1) + shape predictor"] = [lambda img=img: e2e(img, 1) for img in photos]
    if mp is not None:
        tasks["mediapipe: face mesh + its detector"] = [lambda img=img: mp["mesh"].process(img)
                                                        for img in photos]
    return tasks


# ------------------------------------------------------------------------------------------------
# memory (a child process)


def memory_child(afw: Path, calls: int) -> dict:
    def rss() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
        return float("nan")

    from lightmark import Landmarker
    from lightmark.core.imaging import load_image

    files = sorted(afw.glob("*.jpg"))
    imported = rss()
    lm = Landmarker()
    lm.detector
    ready = rss()
    faces = 0
    for i in range(calls):
        faces += len(lm.predict_all(letterbox(load_image(files[i % len(files)]), VGA)))
    return {"after_import_mb": imported, "ready_mb": ready, "after_calls_mb": rss(), "calls": calls,
            "faces": faces}


# ------------------------------------------------------------------------------------------------
# report


def fmt(v: Optional[float], digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--afw", type=Path, default=DEFAULT_AFW)
    ap.add_argument("--photos", type=int, default=20, help="AFW photos per workload")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-12mp", action="store_true", help="skip the 12-megapixel workload")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--memory", action="store_true", help="also run the memory check (1,000 calls)")
    ap.add_argument("--memory-calls", type=int, default=1000)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="thread: this thread's CPU time, which a busy machine inflates less (only "
                         "meaningful at one thread: onnxruntime's second thread and mediapipe's "
                         "own threads are not counted)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.thread_time if args.clock == "thread" else time.perf_counter
    if not args.afw.is_dir():
        raise StagesError(f"{args.afw}: no such folder (AFW photos, 300W release)")
    if args.memory_child:
        print(json.dumps(memory_child(args.afw, args.memory_calls)))
        return 0

    from lightmark import Landmarker, __version__
    import onnxruntime as ort

    threads = [int(t) for t in args.threads.split(",")]
    landmarkers = {}
    for t in threads:
        lm = Landmarker(threads=t)
        lm._norefine = Landmarker(threads=t, refine=False, detector=lm.detector)
        landmarkers[t] = lm
    lm1 = landmarkers[threads[0]]
    base = pick_photos(args.afw, args.photos, lm1)
    workloads: dict[str, list[np.ndarray]] = {"640x480, one face": [letterbox(i, VGA) for i in base]}
    groups = [base[k:k + 4] for k in range(0, len(base) - 3, 4)]
    workloads["640x480, four faces (2x2 mosaic)"] = [mosaic(g, VGA) for g in groups]
    if not args.no_12mp:
        workloads["12 MP, one face"] = [letterbox(i, MP12) for i in base[: max(3, len(base) // 4)]]
    dl = None if args.no_peers else dlib_peer()
    mp = None if args.no_peers else mediapipe_peer()

    tmp = Path(tempfile.mkdtemp(prefix="lightmark-stages-"))
    busy0, self0, wall0 = *cpu_load(), time.monotonic()
    results: dict[str, dict] = {}
    for wname, photos in workloads.items():
        files = []
        for k, img in enumerate(photos):
            f = tmp / f"{len(results)}_{k}.jpg"
            cv2.imwrite(str(f), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            files.append(f)
        tasks: dict[str, list[Callable]] = {}
        for t, lm in landmarkers.items():
            for k, v in stage_tasks(lm, photos, files).items():
                tasks[f"lightmark {t}T: {k}"] = v
        lm_boxes = [lm1.detect(p) for p in photos]
        faces = sum(len(b) for b in lm_boxes)
        if wname.startswith("640x480, one"):
            # One face from a box: the landmark model alone (dlib's shape-predictor comparison).
            gt_like = [_lm_box(lm1, img, b) for img, b in zip(photos, lm_boxes)]
            for t, lm in landmarkers.items():
                tasks[f"lightmark {t}T: one face from a landmark box (one pass)"] = [
                    lambda img=img, b=b, lm=lm: lm._norefine.predict(img, b, box_kind="landmarks")
                    for img, b in zip(photos, gt_like)]
                tasks[f"lightmark {t}T: one face from a detector box (refine, 2 passes)"] = [
                    lambda img=img, b=b, lm=lm: lm.predict(img, b[0]) for img, b in zip(photos, lm_boxes)]
        tasks.update(peer_tasks(dl, mp, photos, lm_boxes, upsample1=not wname.startswith("12")))
        print(f"timing {wname}: {len(photos)} photos, {faces} faces, {len(tasks)} tasks", file=sys.stderr)
        results[wname] = {"photos": len(photos), "faces": faces, "timings": interleaved(tasks, args.repeats)}

    # Throughput: 32 faces from 32 photos as one call (GT-like boxes: the detector's box mapped to
    # a landmark box by the first pass, so one pass each, as benchmarks/peers.py measures it).
    batch_imgs = (workloads["640x480, one face"] * 32)[:32]
    tput: dict[str, list[Callable]] = {}
    for t, lm in landmarkers.items():
        boxes = [_lm_box(lm1, img, lm1.detect(img))[None] for img in batch_imgs]
        tput[f"lightmark {t}T: 32 faces, landmark boxes, one pass"] = [
            lambda lm=lm, boxes=boxes: lm._norefine.predict_boxes(batch_imgs, boxes, "landmarks")]
        dboxes = [lm1.detect(img)[:1, :4] for img in batch_imgs]
        tput[f"lightmark {t}T: 32 faces, detector boxes, refine"] = [
            lambda lm=lm, d=dboxes: lm.predict_boxes(batch_imgs, d, "face")]
    if dl is not None:
        sp, hog = dl["sp"], dl["hog"]
        rects = []
        for img in batch_imgs:
            r = hog(img, 0)
            rects.append(r[0] if len(r) else dl["rect"](0, 0, 100, 100))
        tput["dlib: 32 faces, face after face"] = [lambda: [sp(i, r) for i, r in zip(batch_imgs, rects)]]
    print("timing throughput (32 faces)", file=sys.stderr)
    results["throughput"] = {"timings": interleaved(tput, max(5, args.repeats))}
    busy1, self1, wall1 = *cpu_load(), time.monotonic()
    others = max(0.0, (busy1 - busy0) - (self1 - self0)) / (wall1 - wall0)

    memory = None
    if args.memory:
        print(f"memory: {args.memory_calls} predict_all calls in a fresh process", file=sys.stderr)
        out = subprocess.run([sys.executable, __file__, "--memory-child", "--afw", str(args.afw),
                              "--memory-calls", str(args.memory_calls)], capture_output=True, text=True,
                             check=True).stdout
        memory = json.loads(out.strip().splitlines()[-1])

    md = report(results, memory, threads, dl, mp, others, args, __version__, ort.__version__)
    print(md)
    if args.out:
        args.out.write_text(md)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"results": results, "memory": memory, "other_processes_cores_mean": others}, indent=1))
    return 0


def _lm_box(lm: Any, img: np.ndarray, dets: np.ndarray) -> np.ndarray:
    """The landmark box of lightmark's own first answer on the best detection (a GT-like box)."""
    from lightmark.core import geometry

    return geometry.landmark_box(lm._norefine.predict(img, dets[0, :4]))


def report(results: dict, memory: Optional[dict], threads: list[int], dl: Optional[dict],
           mp: Optional[dict], others: float, args: argparse.Namespace, version: str, ort_version: str) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    lines = [
        "# lightmark, stage by stage",
        "",
        f"- Command: `python benchmarks/stages.py {' '.join(sys.argv[1:])}`",
        f"- Machine: {cpu}, {os.cpu_count()} logical CPUs; {platform.platform()}; Python "
        f"{platform.python_version()}; lightmark {version}, onnxruntime {ort_version}, OpenCV "
        f"{cv2.__version__}, numpy {np.__version__}"
        + (f", dlib {dl['version']}" if dl else ", dlib not installed")
        + (f", mediapipe {mp['version']}" if mp else ", mediapipe not installed"),
        f"- Load: other processes used {others:.2f} CPUs on average during the timings "
        "(0 = an idle machine).",
        f"- Best / median {'wall' if args.clock == 'wall' else 'thread CPU'} ms per call over "
        f"{args.repeats} interleaved rounds; `1T`/`2T`: "
        "onnxruntime threads (OpenCV at 1). Ratio = peer's best time / lightmark's best time for "
        "the same work (above 1: lightmark faster).",
        "",
    ]
    for wname, r in results.items():
        if wname == "throughput":
            continue
        tm = r["timings"]
        lines += [f"## {wname} ({r['photos']} photos, {r['faces']} faces found)", "",
                  "| stage | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}: best (median) ms"
                                             for t in threads) + " |",
                  "|---|" + "---:|" * len(threads)]
        stages = [k.split(": ", 1)[1] for k in tm if k.startswith(f"lightmark {threads[0]}T: ")]
        for st in stages:
            cells = []
            for t in threads:
                v = tm.get(f"lightmark {t}T: {st}")
                cells.append(f"{v['best_ms']:.3f} ({v['median_ms']:.3f})" if v else "")
            lines.append(f"| {st} | " + " | ".join(cells) + " |")
        peers = [k for k in tm if not k.startswith("lightmark")]
        if peers:
            e2e = tm[f"lightmark {threads[0]}T: predict_all (end to end, refine)"]["best_ms"]
            one = tm.get(f"lightmark {threads[0]}T: one face from a landmark box (one pass)")
            lines += ["", "| peer | best (median) ms | ratio to lightmark predict_all, "
                      f"{threads[0]} thread | ratio to lightmark one face from a box |", "|---|---:|---:|---:|"]
            for k in peers:
                v = tm[k]
                r_e2e = v["best_ms"] / e2e if "shape predictor from a box" not in k else None
                r_one = v["best_ms"] / one["best_ms"] if one and "from a box" in k else None
                lines.append(f"| {k} | {v['best_ms']:.3f} ({v['median_ms']:.3f}) | {fmt(r_e2e)} | {fmt(r_one)} |")
        lines.append("")
    tm = results["throughput"]["timings"]
    lines += ["## Batch of 32 faces (32 photos, one call)", "", "| method | best ms | faces/s (best) | faces/s (median) |",
              "|---|---:|---:|---:|"]
    for k, v in tm.items():
        lines.append(f"| {k} | {v['best_ms']:.2f} | {32e3 / v['best_ms']:.0f} | {32e3 / v['median_ms']:.0f} |")
    if memory:
        lines += ["", "## Resident memory (fresh process, VmRSS)", "",
                  f"After importing lightmark: {memory['after_import_mb']:.0f} MB; a ready Landmarker with its "
                  f"detector: {memory['ready_mb']:.0f} MB; after {memory['calls']} `predict_all` calls on "
                  f"640x480 photos ({memory['faces']} faces): {memory['after_calls_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
