#!/usr/bin/env python
"""Re-save the Ultra-Light RFB-320 face detector without its initializers listed as graph inputs.

The published ONNX file (IR 4, opset 9) lists all 244 weight tensors among the graph inputs as
well as the image. onnxruntime must then treat every weight as something a caller could
override, so it neither folds constants nor fuses the batch norms into the convolutions, and the
graph runs unoptimised. Dropping them from ``graph.input`` (IR >= 4 allows initializers that are
not inputs) changes nothing else: the same nodes, the same weights, the same opset.

    python scripts/clean_detector_onnx.py [--src ORIGINAL.onnx] [--out CLEANED.onnx] [PHOTO_DIR ...]

Default source: ``../shared/models/face_detector/version-RFB-320.onnx``; default output: the
bundled ``src/lightmark/assets/face_detector/version-RFB-320.onnx``. The cleaned file is written
only after :class:`lightmark.runtime.detector.FaceDetector` found the same faces with both files
on every ``.jpg``/``.png`` in the photo folders (default: AFW and aflw2000_val under
``../shared/data``), their boxes within ``--tol`` pixels or ``--rel-tol`` of the letterbox canvas
side, whichever is larger.

Why a relative bound as well: onnxruntime runs the cleaned graph with the batch norms folded
into the convolutions and in its blocked (NCHWc) layout, which sums in another order. The box
outputs are float32 fractions of the canvas, whose resolution is 6e-8 near 1; on AFW's 384 px
canvases a few ulps of that already exceed 1e-4 px (docs/SPEED.md has the measured differences).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DEFAULT_SRC = SHARED / "models" / "face_detector" / "version-RFB-320.onnx"
DEFAULT_OUT = REPO / "src" / "lightmark" / "assets" / "face_detector" / "version-RFB-320.onnx"
ANYSIZE_NAME = "version-RFB-anysize.onnx"  # written beside --out
DEFAULT_PHOTOS = [SHARED / "data" / "300w" / "afw", SHARED / "data" / "aflw2000_val"]


def clean(model_bytes: bytes) -> bytes:
    """The serialised model with every initializer removed from ``graph.input``."""
    import onnx

    m = onnx.load_from_string(model_bytes)
    init = {t.name for t in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in init]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def anysize(cleaned_bytes: bytes) -> bytes:
    """The cleaned graph with free input height and width, cut before the box decoding (whose
    prior boxes are baked in for one size): outputs ``scores`` and the raw ``locations``, decoded
    by :mod:`lightmark.runtime.rfb`."""
    import onnx

    m = onnx.load_from_string(cleaned_bytes)
    g = m.graph
    nodes = list(g.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    # The regressions: on the way back from 'boxes', the Concat over the anchors (axis 1) of the
    # four heads, which the decoding's Slices read (the later Concat joins centres and sizes).
    k = producer["boxes"]
    while True:
        n = nodes[k]
        if n.op_type == "Concat" and onnx.helper.get_attribute_value(n.attribute[0]) == 1:
            break
        k = producer[n.input[0]]
    loc = nodes[k].output[0]
    # Keep only what 'scores' and the regressions need (the decoding's constants go).
    needed, stack = set(), ["scores", loc]
    while stack:
        t = stack.pop()
        j = producer.get(t)
        if j is None or j in needed:
            continue
        needed.add(j)
        stack.extend(nodes[j].input)
    keep = [nodes[j] for j in sorted(needed)]
    for n in keep:
        n.output[:] = ["locations" if o == loc else o for o in n.output]
        n.input[:] = ["locations" if i == loc else i for i in n.input]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    dims = g.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del g.output[:]
    g.output.extend([
        onnx.helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, "anchors", 2]),
        onnx.helper.make_tensor_value_info("locations", onnx.TensorProto.FLOAT, [1, "anchors", 4])])
    del g.value_info[:]  # shapes recorded for 320x240 would be wrong at other sizes
    onnx.checker.check_model(m)
    return m.SerializeToString()


def compare(src: Path, cleaned: Path, photos: list[Path], tol: float, rel_tol: float) -> dict:
    """Run the bundled detector code with both files on every photo; the largest differences."""
    from lightmark.core.imaging import load_image
    from lightmark.runtime.detector import FaceDetector

    a, b = FaceDetector(src), FaceDetector(cleaned)
    worst_box = worst_rel = worst_score = worst_raw = 0.0
    faces = over_abs = 0
    for p in photos:
        img = load_image(p)
        da, db = a.detect(img), b.detect(img)
        if da.shape != db.shape:
            raise SystemExit(f"{p}: {len(da)} faces with {src.name}, {len(db)} with the cleaned graph")
        faces += len(da)
        if len(da):
            diff = float(np.max(np.abs(da[:, :4] - db[:, :4])))
            side = max(a.canvas_size(img))
            if diff > max(tol, rel_tol * side):
                raise SystemExit(f"{p}: boxes differ by {diff:.3g} px (tolerance {tol:g} px or "
                                 f"{rel_tol:g} x the {side} px canvas)")
            over_abs += diff > tol
            worst_box, worst_rel = max(worst_box, diff), max(worst_rel, diff / side)
            worst_score = max(worst_score, float(np.max(np.abs(da[:, 4] - db[:, 4]))))
        x = a.preprocess(img)
        ra = a._session.run(None, {a._input_name: x})
        rb = b._session.run(None, {b._input_name: x})
        worst_raw = max(worst_raw, max(float(np.max(np.abs(u - v))) for u, v in zip(ra, rb)))
    return {"photos": len(photos), "faces": faces, "max_box_diff_px": worst_box,
            "max_box_diff_of_canvas": worst_rel, "photos_over_abs_tol": over_abs,
            "max_score_diff": worst_score, "max_raw_output_diff": worst_raw}


def check_anysize(cleaned: Path, any_path: Path, photos: list[Path]) -> float:
    """The any-size graph with numpy decoding at 320x240 against the cleaned graph: largest box
    difference in pixels; raises when the faces found differ."""
    from lightmark.core.imaging import load_image
    from lightmark.runtime.detector import FaceDetector

    det = FaceDetector(cleaned)
    import lightmark.runtime.detector as detector_module

    detector_module.ANYSIZE_MODEL = any_path
    worst = 0.0
    for p in photos:
        img = load_image(p)
        a = det.detect(img)
        b = det.postprocess(*det.run_anysize(det.preprocess(img)), img.shape)
        if a.shape != b.shape:
            raise SystemExit(f"{p}: {len(a)} faces with the fixed graph, {len(b)} with the any-size one")
        if len(a):
            worst = max(worst, float(np.max(np.abs(a[:, :4] - b[:, :4]))))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--tol", type=float, default=1e-4, help="box difference always allowed, pixels")
    ap.add_argument("--rel-tol", type=float, default=1e-6,
                    help="box difference allowed as a fraction of the letterbox canvas side")
    ap.add_argument("photos", nargs="*", type=Path, default=DEFAULT_PHOTOS)
    args = ap.parse_args(argv)
    if not args.src.is_file():
        raise SystemExit(f"{args.src}: no such detector file")
    photos = sorted(p for d in args.photos for p in Path(d).iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"no photos in {[str(d) for d in args.photos]}: cannot check the cleaned graph")
    data = clean(args.src.read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / args.out.name
        tmp_path.write_bytes(data)
        report = compare(args.src, tmp_path, photos, args.tol, args.rel_tol)
    args.out.write_bytes(data)
    any_path = args.out.with_name(ANYSIZE_NAME)
    any_path.write_bytes(anysize(data))
    worst_any = check_anysize(args.out, any_path, photos)
    print(f"wrote {any_path}: at 320x240 its boxes differ from the cleaned graph's by at most "
          f"{worst_any:.3g} px")
    print(f"wrote {args.out} ({len(data)} bytes); on {report['photos']} photos, {report['faces']} faces: "
          f"boxes differ by at most {report['max_box_diff_px']:.3g} px "
          f"({report['max_box_diff_of_canvas']:.3g} of the canvas side; {report['photos_over_abs_tol']} "
          f"photos over {args.tol:g} px), scores by "
          f"{report['max_score_diff']:.3g}, raw outputs by {report['max_raw_output_diff']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
