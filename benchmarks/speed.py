"""Latency and throughput of every method at one thread, on AFW images where every detector finds
the labelled face (so the face-box rows time the same faces).

Each method is timed twice: interleaved call by call (a background load slows every method alike)
and one library at a time (a whole pass each, as a program using one library runs it); see
``timing.interleaved`` and ``timing.blocked``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

import timing
from common import match
from dlib_peer import DlibPeer, rects_to_array, to_rect
from mediapipe_peer import MediapipePeer
from methods import LightmarkPeer

#: Faces in the throughput batch (GT boxes from this many images).
BATCH = 32
#: End-to-end methods also timed one at a time (the detectors alone are left out for run time).
E2E_BLOCKED = ("lightmark-onnx/e2e", "lightmark-onnx/e2e-norefine", "dlib/e2e-up0", "dlib/e2e", "mediapipe/e2e")

Sample = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # image, GT box, RFB box, HOG box


def select_samples(lm: LightmarkPeer, dlib: DlibPeer, mp: MediapipePeer, afw: Path, n_images: int) -> list[Sample]:
    """The first ``n_images`` AFW images whose labelled face RFB-320, HOG and mediapipe all find."""
    from lightmark.core import geometry
    from lightmark.data.readers import open_dataset

    ds = open_dataset(afw)
    samples = []
    for i in range(len(ds)):
        s = ds[i]
        lb = geometry.landmark_box(s.points)
        rd = match(lm.onnx.detect(s.image), lb)
        hd = match(rects_to_array(dlib.det(s.image, dlib.upsample)), lb)
        if rd is not None and hd is not None and mp.labelled_face(s.image, lb) is not None:
            samples.append((s.image, lb, rd[:4], hd[:4]))
        if len(samples) >= n_images:
            break
    return samples


def single_face_tasks(lm: LightmarkPeer, dlib: DlibPeer, mp: MediapipePeer,
                      samples: list[Sample]) -> dict[str, list[timing.Task]]:
    """Landmarks of one face from a given box (mediapipe: from its previous answer, see below)."""
    from lightmark.core import geometry

    t, o, sp, mapping = lm.torch, lm.onnx, dlib.sp, dlib.mapping
    tasks: dict[str, list[timing.Task]] = {
        "lightmark-torch/gt": [lambda im=im, b=b: t.predict(im, b, box_kind="landmarks") for im, b, _, _ in samples],
        "lightmark-onnx/gt": [lambda im=im, b=b: o.predict(im, b, box_kind="landmarks") for im, b, _, _ in samples],
        "lightmark-onnx/facebox": [lambda im=im, d=d: o.predict(im, d, box_kind="face") for im, _, d, _ in samples],
        "dlib/gt-mapped": [lambda im=im, b=b: sp(im, to_rect(mapping(b))) for im, b, _, _ in samples],
        "dlib/hogbox": [lambda im=im, d=d: sp(im, to_rect(d)) for im, _, _, d in samples],
        # mediapipe takes no box: its video mode, primed on the same photo (untimed), crops from
        # the previous answer and skips its detector, which is what this row times.
        "mediapipe/tracking": [timing.Timed(lambda im=im: mp.track(im), setup=lambda im=im: mp.prime(im))
                               for im, *_ in samples],
    }
    s_in = o.input_size
    crops = [geometry.crops_from_boxes(im, b[None], s_in, o.crop_scale)[0] for im, b, _, _ in samples]
    tasks["lightmark-torch/model-only"] = [lambda c=c: t.predictor.predict_crops(c) for c in crops]
    tasks["lightmark-onnx/model-only"] = [lambda c=c: o.predictor.predict_crops(c) for c in crops]
    return tasks


def end_to_end_tasks(lm: LightmarkPeer, dlib: DlibPeer, mp: MediapipePeer,
                     samples: list[Sample]) -> dict[str, list[timing.Task]]:
    """Every face of a photo: detector + landmarks (and the detectors alone)."""
    t, o, det = lm.torch, lm.onnx, dlib.det
    ims = [im for im, *_ in samples]

    def each(fn: Callable[[np.ndarray], Any]) -> list[timing.Task]:
        return [lambda im=im: fn(im) for im in ims]

    return {
        "lightmark-torch/e2e": each(t.predict_all),
        "lightmark-onnx/e2e": each(o.predict_all),
        "lightmark-onnx/e2e-norefine": each(lm.predict_all_norefine),
        "dlib/e2e": each(lambda im: dlib.end_to_end(im, 1)),
        "dlib/e2e-up0": each(lambda im: dlib.end_to_end(im, 0)),
        "mediapipe/e2e": each(mp.faces),
        "lightmark/detector-only": each(o.detect),
        "dlib/detector-only": each(lambda im: det(im, 1)),
        "dlib/detector-only-up0": each(lambda im: det(im, 0)),
    }


def throughput(lm: LightmarkPeer, dlib: DlibPeer, samples: list[Sample], repeats: int) -> dict[str, dict]:
    """BATCH faces (GT boxes) from BATCH different images: one model batch for lightmark, face
    after face for dlib (it has no batch mode). Faces per second from the median time."""
    from lightmark.core import geometry

    t, o, sp, mapping = lm.torch, lm.onnx, dlib.sp, dlib.mapping
    batch = (samples * (BATCH // max(len(samples), 1) + 1))[:BATCH]
    s_in = o.input_size
    crops = np.concatenate([geometry.crops_from_boxes(im, b[None], s_in, o.crop_scale)[0] for im, b, _, _ in batch])

    def with_crops(lmk: Any) -> Callable[[], Any]:
        def f() -> Any:
            cs, ms = zip(*[geometry.crops_from_boxes(im, b[None], s_in, lmk.crop_scale) for im, b, _, _ in batch])
            return geometry.points_to_image(lmk.predictor.predict_crops(np.concatenate(cs)), np.concatenate(ms))
        return f

    reps = max(10, 3 * repeats)
    tasks: dict[str, list[timing.Task]] = {
        "lightmark-torch/model-only": [lambda: t.predictor.predict_crops(crops)] * reps,
        "lightmark-onnx/model-only": [lambda: o.predictor.predict_crops(crops)] * reps,
        "lightmark-torch/with-crops": [with_crops(t)] * reps,
        "lightmark-onnx/with-crops": [with_crops(o)] * reps,
        "dlib/sequential": [lambda: [sp(im, to_rect(mapping(b))) for im, b, _, _ in batch]] * reps,
    }
    res = timing.interleaved(tasks, 1, warmup=1)
    for v in res.values():
        v["faces_per_s"] = BATCH / (v["median_ms"] / 1e3)
    return res


def run_timing(lm: LightmarkPeer, dlib: DlibPeer, mp: MediapipePeer, afw: Path, n_images: int,
               repeats: int, show: bool) -> dict[str, Any]:
    samples = select_samples(lm, dlib, mp, afw, n_images)
    single = single_face_tasks(lm, dlib, mp, samples)
    e2e = end_to_end_tasks(lm, dlib, mp, samples)

    def say(what: str) -> None:
        if show:
            print(f"timing {what} on {len(samples)} AFW images x {repeats} repeats", file=sys.stderr)

    say("single faces, interleaved")
    res_single = timing.interleaved(single, repeats)
    say("single faces, one method at a time")
    res_blocked = timing.blocked(single, repeats)
    say("end to end, interleaved")
    res_e2e = timing.interleaved(e2e, repeats)
    say("end to end, one method at a time")
    res_e2e_blocked = timing.blocked({k: e2e[k] for k in E2E_BLOCKED}, repeats)
    say("throughput")
    res_tput = throughput(lm, dlib, samples, repeats)
    sizes = sorted({im.shape[:2] for im, *_ in samples})
    return {"images": len(samples), "repeats": repeats, "image_sizes_hw_min_max": [list(sizes[0]), list(sizes[-1])],
            "single_face": res_single, "single_face_blocked": res_blocked, "end_to_end": res_e2e,
            "end_to_end_blocked": res_e2e_blocked, "batch": BATCH, "throughput": res_tput}
