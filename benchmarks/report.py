"""The benchmark's report: Markdown tables (``RESULTS.md``) and the full results as JSON.

``update_readme.py`` copies the tables into README.md, finding each by its header row, so a
header change here must be matched there.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from methods import RECALL, SHORT

#: The data sets with a by-yaw section (others with yaw angles, e.g. the 4-image sample, have
#: their bins in the JSON only).
YAW_SETS = ("aflw2000_val",)


def _f(x: Optional[float], nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def _pct(x: Optional[float]) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x * 100:.1f} %"


def _mb(n: Optional[int]) -> str:
    return "–" if n is None else f"{n / 1e6:.1f} MB"


def _cell(d: Optional[dict]) -> str:
    return "" if not d else f"{d['median_ms']:.2f} [{d['p10_ms']:.2f}–{d['p90_ms']:.2f}]"


def _ratio(ref: float, d: Optional[dict]) -> str:
    return "" if not d else f"{ref / d['median_ms']:.2f}x"


# ------------------------------------------------------------------------------------------------
# header and accuracy


def header_lines(res: dict) -> list[str]:
    m, mo, ld = res["machine"], res["model"], res["load"]
    trained = f", epoch {mo['epoch']}" if mo.get("epoch") is not None else ""
    mp = res["mediapipe"]
    pin = f"; pinned to CPU {res['pinned_cpus']}" if res.get("pin_cpu") is not None else ""
    return [
        "# lightmark vs dlib and mediapipe (68 points)\n",
        f"- Date: {res['date']}",
        f"- Machine: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
        f"{m['platform']}; Python {m['python']}{pin}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}",
        f"- Command: `{res['command']}`"
        + (f" (**a quick run on {res['limit']} faces per data set: not the benchmark's figures**)"
           if res.get("limit") else ""),
        f"- lightmark model: `{mo['source']}` ({mo.get('name') or 'unnamed'}{trained}; sha256 `{mo['sha256']}`; "
        f"ONNX sha256 `{mo['onnx_sha256']}`, {mo['onnx_source']}); input {mo['input_size']} px, "
        f"`{mo['backbone']}` x{mo['width']} + `{mo['head']}` head ({mo.get('head_block') or 'deconv'} block), "
        f"{mo['params'] / 1e6:.2f} M parameters, {mo['macs'] / 1e6:.0f} M multiply-adds per face",
        f"- dlib: `{Path(res['dlib']['model']).name}` with `get_frontal_face_detector()` "
        f"(upsample {res['dlib']['upsample']} unless said otherwise)",
        f"- mediapipe: {mp['version']}, `mp.solutions.face_mesh.FaceMesh(static_image_mode=True, "
        f"max_num_faces={mp['max_faces']})` (its short-range face detector, then the 468-vertex mesh), "
        f"turned into the 68 iBUG points by `{mp['map']}` (cross-validated on HELEN train: NME_box "
        f"{mp['map_info']['cv_nme_box_pct']:.2f} %, NME_io {mp['map_info']['cv_nme_io_pct']:.2f} %)",
        f"- Load: {(res['load_note'].rstrip('. ') + '. ') if res['load_note'] else ''}During this run other processes used "
        f"on average {_f(ld.get('other_processes_cores_mean'))} of the {ld['cpus']} CPUs (load average "
        f"{ld['loadavg_start'][0]} at start, {ld['loadavg_end'][0]} at end); the run took {ld['wall_s']:.0f} s.",
        "",
    ]


def accuracy_lines(res: dict) -> list[str]:
    acc = res["accuracy"]
    L = ["## Accuracy\n",
         "NME in % (inter-ocular: outer eye corners 36/45; box: sqrt(w·h) of the GT landmark box), "
         "mean over faces with a prediction; FR@8% and AUC@8% are on the inter-ocular NME and count "
         "detector misses as failures. Same `lightmark.core.metrics` code for every row.\n"]
    head, sep = "| method | box |", "|---|---|"
    for s in acc:
        nm = acc[s]["data"]["name"]
        head += f" {nm} NME io | {nm} NME box | {nm} FR@8 | {nm} AUC@8 | {nm} missed |"
        sep += "---:|---:|---:|---:|---:|"
    L += [head, sep]
    for k, (who, box) in res["labels"].items():
        row = f"| {who} | {box} |"
        for s in acc:
            r = acc[s]["summary"][k]
            row += (f" {_f(r['nme_io'])} | {_f(r['nme_box'])} | {_f(r['fr_8_io'], 1)} | "
                    f"{_f(r['auc_8_io'], 3)} | {r['n_missed']}/{r['n']} |")
        L.append(row)
    return L + ["", *dlib_note_lines(res), *per_set_lines(res), ""]


def dlib_note_lines(res: dict) -> list[str]:
    mp = res["dlib"]["box_mapping"]
    return [
        "Which dlib figure is which: **own detector (HOG)** is dlib as people use it (its HOG box, "
        "the box its predictor was trained on); **GT landmark box, raw** hands dlib the tight box "
        "around the 68 labelled points, which differs in shape and position from the square HOG "
        "boxes it was trained on (those sit higher: brows in, chin cut), so it is a wrong input for "
        "dlib (shown because it is the same box lightmark gets in its GT rows); **GT landmark box "
        f"mapped** turns that box into a HOG-like square of {mp['side_ratio']:.3f} x its larger side, "
        f"centre moved by ({mp['shift'][0]:+.3f}, {mp['shift'][1]:+.3f}) x that side (medians over "
        f"{mp['matched']} of {mp['faces']} HELEN train faces matched to a HOG detection): the fair "
        "GT-box comparison with lightmark's GT rows, free of detector misses. mediapipe takes no "
        "box: it runs its own detector (its face is the one whose 68 mapped points' box matches "
        "the labelled face).\n"]


def per_set_lines(res: dict) -> list[str]:
    L = []
    for s in res["accuracy"]:
        info = res["accuracy"][s]["data"]
        com = info.get("summary_on_faces_found_by_every_detector") or {}
        if com:
            parts = ", ".join(f"{SHORT[k]} {_f(v['nme_io'])}" for k, v in com.items())
            L.append(f"- {info['name']}: on the {info['found_by_every_detector']} of {info['n']} faces every "
                     f"detector (RFB-320, HOG, mediapipe) found, NME io: {parts}.")
        q = info.get("mapped_gt_box_vs_hog_box_iou_p10_50_90")
        if q:
            L.append(f"- {info['name']}: IoU of the mapped GT box with dlib's own HOG box (faces HOG found), "
                     f"10/50/90%: {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}. dlib's cascade is sensitive to "
                     "its start box, so the mapped-box row is the better GT-box comparison but not "
                     "dlib's best case; the HOG row is, on the faces HOG finds.")
    return L + [f"- {note}" for note in res["notes"]]


def yaw_lines(res: dict) -> list[str]:
    """NME_box and detector recall by absolute yaw bin, for each data set with yaw angles."""
    L: list[str] = []
    for s, a in res["accuracy"].items():
        info = a["data"]
        if s not in YAW_SETS or not info.get("has_yaw"):
            continue
        nm = info["name"]
        r0 = next(iter(a["summary"].values()))
        n = [r0[f"n_yaw_{b}"] for b in ("0_30", "30_60", "60_90")]
        L += [f"## {nm} by yaw\n",
              f"NME_box in % (the AFLW2000-3D convention) by absolute yaw ({n[0]} / {n[1]} / {n[2]} faces in "
              "0–30° / 30–60° / 60–90°; the last bin takes the few beyond 90°), over the faces each "
              "method found; balanced = mean of the three bins. The labels are projected 3D points, "
              "so on a turned face the jaw runs where the 3D jaw is, not along the visible contour "
              "(300W's markup, which lightmark, dlib and the mediapipe map learnt): every method "
              "pays for that on the jaw, the more the larger the yaw.\n",
              f"| method | box | {nm} 0–30 | {nm} 30–60 | {nm} 60–90 | {nm} balanced | {nm} all | {nm} missed |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for k, (who, box) in res["labels"].items():
            r = a["summary"][k]
            L.append(f"| {who} | {box} | {_f(r['nme_box_yaw_0_30'])} | {_f(r['nme_box_yaw_30_60'])} | "
                     f"{_f(r['nme_box_yaw_60_90'])} | {_f(r['nme_box_yaw_balanced'])} | {_f(r['nme_box'])} | "
                     f"{r['n_missed']}/{r['n']} |")
        L += ["", f"Detector recall on {nm}: share of the labelled faces found (a detection with IoU "
              ">= 0.3 to the GT landmark box; for mediapipe, the box of its 68 mapped points), by absolute yaw.\n",
              "| detector | 0–30 | 30–60 | 60–90 | all |", "|---|---:|---:|---:|---:|"]
        for k, name in RECALL.items():
            f = info["found_by_yaw"][k]
            L.append(f"| {name} | {_pct(f['yaw_0_30'])} | {_pct(f['yaw_30_60'])} | {_pct(f['yaw_60_90'])} | "
                     f"{_pct(f['all'])} |")
        L.append("")
    return L


# ------------------------------------------------------------------------------------------------
# speed


def speed_lines(res: dict) -> list[str]:
    t, sz = res["timing"], res["sizes"]
    ss, ee, tp = t["single_face"], t["end_to_end"], t["throughput"]
    ref1, ref2 = ss["dlib/gt-mapped"]["median_ms"], ee["dlib/e2e-up0"]["median_ms"]
    ref3 = tp["dlib/sequential"]["faces_per_s"]
    L = ["## Speed and size (1 thread)\n",
         f"Median wall time per call over {t['images']} AFW images x {t['repeats']} repeats (images "
         f"{t['image_sizes_hw_min_max'][0]}..{t['image_sizes_hw_min_max'][1]} px, h x w; those where RFB-320, "
         "HOG and mediapipe all find the labelled face), all methods interleaved call by call; p10–p90 in "
         "brackets; ratio = dlib time / this time (above 1: faster than dlib), against dlib on the mapped "
         "GT box (landmarks only), dlib with HOG upsample 0 (end to end: its faster setting) and dlib "
         "face after face (batch).\n",
         "| method | landmarks only, box given (ms) | vs dlib | detector + landmarks (ms) | vs dlib | "
         f"batch of {t['batch']} faces (faces/s) | vs dlib | model on disk |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [
        ("lightmark (torch), GT landmark box", ss["lightmark-torch/gt"], ee["lightmark-torch/e2e"],
         tp["lightmark-torch/with-crops"], f"{_mb(sz['lightmark_safetensors'])} (.safetensors)"),
        ("lightmark (onnxruntime), GT landmark box", ss["lightmark-onnx/gt"], ee["lightmark-onnx/e2e"],
         tp["lightmark-onnx/with-crops"], f"{_mb(sz['lightmark_onnx'])} (.onnx)"),
        ("lightmark (onnxruntime), RFB-320 box: landmarks with refine (2 passes); end to end without",
         ss["lightmark-onnx/facebox"], ee["lightmark-onnx/e2e-norefine"], None, ""),
        ("dlib 68, mapped GT box; HOG upsample 0", ss["dlib/gt-mapped"], ee["dlib/e2e-up0"],
         tp["dlib/sequential"], f"{_mb(sz['dlib_shape_predictor'])} (.dat)"),
        ("dlib 68, HOG box; HOG upsample 1", ss["dlib/hogbox"], ee["dlib/e2e"], None, ""),
        ("mediapipe face mesh: video mode, from its previous answer (no detector); own detector",
         ss["mediapipe/tracking"], ee["mediapipe/e2e"], None, f"{_mb(sz['mediapipe_models'])} (.tflite, mesh + detector)"),
    ]
    for name, a, b, c, size in rows:
        tp_cell = f"{c['faces_per_s']:.0f}" if c else ""
        tp_ratio = f"{c['faces_per_s'] / ref3:.2f}x" if c else ""
        L.append(f"| {name} | {_cell(a)} | {_ratio(ref1, a)} | {_cell(b)} | {_ratio(ref2, b)} | "
                 f"{tp_cell} | {tp_ratio} | {size} |")
    ref4 = ee["dlib/detector-only-up0"]["median_ms"]
    for key, name, size in (("lightmark/detector-only", "RFB-320 (onnxruntime)", _mb(sz["lightmark_detector"])),
                            ("dlib/detector-only-up0", "dlib HOG, upsample 0",
                             f"{_mb(sz.get('dlib_hog_detector'))} (serialised)"),
                            ("dlib/detector-only", "dlib HOG, upsample 1", "")):
        L.append(f"| detector only: {name} | | | {_cell(ee[key])} | {_ratio(ref4, ee[key])} | | | {size} |")
    return L + [""]


def blocked_lines(res: dict) -> list[str]:
    t = res["timing"]
    bb, eb = t["single_face_blocked"], t["end_to_end_blocked"]
    refb, refe = bb["dlib/gt-mapped"]["median_ms"], eb["dlib/e2e-up0"]["median_ms"]
    L = ["One library at a time (each round runs one method over all the images, then the next; the "
         "order rotated each round): how a program that uses one of them sees it. Interleaving call by "
         "call, as in the table above, also charges each method for the caches the others evicted. "
         "Landmark rows are compared with dlib on the mapped GT box, detector rows with dlib's HOG "
         "(upsample 0) + landmarks.\n",
         "| method, one library at a time | ms | vs dlib |", "|---|---:|---:|"]
    for key, name in (("lightmark-onnx/gt", "lightmark (onnxruntime), landmarks from the GT landmark box"),
                      ("lightmark-onnx/model-only", "lightmark (onnxruntime), model only (ready crop)"),
                      ("lightmark-torch/gt", "lightmark (torch), landmarks from the GT landmark box"),
                      ("dlib/gt-mapped", "dlib 68, landmarks from the mapped GT box"),
                      ("dlib/hogbox", "dlib 68, landmarks from the HOG box"),
                      ("mediapipe/tracking", "mediapipe, mesh from its previous answer (video mode, no detector)")):
        L.append(f"| {name} | {_cell(bb[key])} | {_ratio(refb, bb[key])} |")
    for key, name in (("lightmark-onnx/e2e", "lightmark (onnxruntime), detector + landmarks (`predict_all`, refine)"),
                      ("lightmark-onnx/e2e-norefine", "lightmark (onnxruntime), detector + landmarks, one pass"),
                      ("dlib/e2e-up0", "dlib, HOG (upsample 0) + landmarks"),
                      ("dlib/e2e", "dlib, HOG (upsample 1) + landmarks"),
                      ("mediapipe/e2e", "mediapipe, its detector + face mesh (static image mode)")):
        L.append(f"| {name} | {_cell(eb[key])} | {_ratio(refe, eb[key])} |")
    return L + [""]


def model_only_lines(res: dict) -> list[str]:
    t = res["timing"]
    ss, tp = t["single_face"], t["throughput"]
    cpw = t["end_to_end_blocked"]["mediapipe/e2e"].get("cpu_per_wall")
    return [
        f"Model only (`predict_crops` on ready crops, no cropping): one crop torch "
        f"{ss['lightmark-torch/model-only']['median_ms']:.2f} ms, onnxruntime "
        f"{ss['lightmark-onnx/model-only']['median_ms']:.2f} ms; {t['batch']} crops: torch "
        f"{tp['lightmark-torch/model-only']['faces_per_s']:.0f} crops/s, onnxruntime "
        f"{tp['lightmark-onnx/model-only']['faces_per_s']:.0f} crops/s. The batch columns above include "
        "cropping each face from its image (lightmark) — dlib has no batch mode and runs face after face; "
        "mediapipe's legacy API has neither a batch nor a box input (its video mode crops from the "
        "previous frame's answer, timed here on the same photo after an untimed pass). \"Landmarks "
        "only\" includes lightmark's crop, model, decoding and mapping back; dlib's call includes its "
        "own feature extraction; mediapipe's includes its graph's per-call overhead and the 468 -> 68 "
        "map. CPU time per wall time of each method is in the JSON (`cpu_per_wall`; 1.0 = one thread "
        "running all the time, above 1 threads ran in parallel; mediapipe end to end, one library at "
        f"a time: {_f(cpw)}).",
        ""]


def write_markdown(res: dict, path: Path) -> None:
    L = header_lines(res) + accuracy_lines(res) + yaw_lines(res) + speed_lines(res) + blocked_lines(res) \
        + model_only_lines(res)
    _write(path, "\n".join(L) + "\n")


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    return x


def write_json(res: dict, path: Path) -> None:
    _write(path, json.dumps(_json_safe(res), indent=2) + "\n")


def _write(path: Path, text: str) -> None:
    """Atomically: a reader (update_readme.py) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
