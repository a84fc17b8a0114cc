"""ONNX export of a saved model: ``NAME.onnx`` + ``NAME.json`` (the model's JSON plus
``onnx_sha256``), checked against the model rules and verified with onnxruntime against torch.

The graph has one input ``input`` ``(N, 3, S, S)`` float32 (normalised as
:func:`lightmark.imaging.to_input` does; ``N`` is dynamic) and the output ``output`` with the
layout of the model's head (see docs/ARCHITECTURE.md). A graph of an ``integral`` head has a
second output, ``moments`` ``(N, C * K, 3)``: :func:`lightmark.core.codec.softmax_moments` of
``output`` computed in the graph, so the runtime reads points and quality without decoding the
maps in numpy (docs/SPEED.md).
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np

from lightmark.core import files
from lightmark.core.modelfile import model_paths
from lightmark.core.errors import ExportError

PathLike = Union[str, Path]

INPUT_NAME = "input"
OUTPUT_NAME = "output"
MOMENTS_NAME = "moments"
#: Integer initializers up to this many elements are allowed: small shape and axis constants
#: (e.g. a Reshape target or a Resize size), never weights. Longer ones pass only when they feed
#: nothing but index or shape inputs (the channel shuffle's Gather order).
MAX_INT_INITIALIZER = 64
#: Largest difference (map cells) allowed between the graph's moments and softmax_moments of the
#: torch output in the export check: both are float32 sums of the same products.
MOMENTS_TOLERANCE = 1e-3
#: Channel counts in the exported graph are rounded up to this (zero channels; see models.padding).
CHANNEL_MULTIPLE = 16


#: (op type, input position) pairs that take indices or shapes, never weights.
_INDEX_INPUTS = {("Gather", 1), ("Reshape", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3),
                 ("Slice", 4), ("Split", 1), ("Unsqueeze", 1), ("Squeeze", 1), ("Expand", 1),
                 ("Tile", 1), ("Resize", 3)}


def _index_only_tensors(graph: Any) -> set[str]:
    """Names of tensors whose every use is an index or shape input (see ``_INDEX_INPUTS``)."""
    uses: dict[str, list[bool]] = {}
    for node in graph.node:
        for pos, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, pos) in _INDEX_INPUTS)
    return {name for name, flags in uses.items() if flags and all(flags)}


def check_onnx_rules(model_proto: Any, what: str = "onnx model") -> dict[str, Any]:
    """Apply the model rules to an ONNX graph; return its weight statistics.

    Single graph: one input, the output (and an integral head's ``moments``), no sub-graphs (If/Loop/Scan bodies), no local functions,
    no external data. Float32: every floating-point initializer is FLOAT; integer initializers are
    tiny shape constants or feed only index/shape inputs (a channel permutation). Size: float32 weights (initializers and Constant nodes) within the
    same 15 MB limit as the safetensors file.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    from lightmark.models.checkpoint import MAX_MODEL_BYTES, ModelRuleError

    g = model_proto.graph
    init_names = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in init_names]
    outputs = [o.name for o in g.output]
    if inputs != [INPUT_NAME] or outputs not in ([OUTPUT_NAME], [OUTPUT_NAME, MOMENTS_NAME]):
        raise ModelRuleError(f"{what}: expected one input {INPUT_NAME!r} and the outputs "
                             f"{OUTPUT_NAME!r} (and optionally {MOMENTS_NAME!r}), got inputs "
                             f"{inputs}, outputs {outputs}")
    if len(model_proto.functions):
        raise ModelRuleError(f"{what}: has {len(model_proto.functions)} local functions; "
                             "a single flat graph is required")
    tensors: list[tuple[str, Any]] = [(t.name, t) for t in g.initializer]
    for node in g.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ModelRuleError(f"{what}: node {node.name or node.op_type!r} holds a sub-graph; "
                                     "a single flat graph is required")
            if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                tensors.append((node.output[0], attr.t))
    # Integer tensors that only ever feed an index or shape input (a channel permutation, a
    # reshape target) are not weights, whatever their length.
    index_only = _index_only_tensors(g)
    n_float = 0
    for name, t in tensors:
        if t.data_location == TensorProto.EXTERNAL:
            raise ModelRuleError(f"{what}: tensor {name!r} is stored outside the file")
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        if t.data_type == TensorProto.FLOAT:
            n_float += n
        elif t.data_type in (TensorProto.INT64, TensorProto.INT32) and (
                n <= MAX_INT_INITIALIZER or name in index_only):
            continue
        else:
            dtype = numpy_helper.to_array(t).dtype
            raise ModelRuleError(f"{what}: tensor {name!r} is {dtype} with {n} elements; "
                                 "weights must be float32")
    size = n_float * 4
    if size > MAX_MODEL_BYTES:
        raise ModelRuleError(f"{what}: {size / 1e6:.2f} MB of float32 weights is over the "
                             f"{MAX_MODEL_BYTES / 1e6:g} MB limit")
    return {"float32_weights": n_float, "float32_mb": size / 1e6}


#: Extra graphs written beside NAME.onnx, padded to these channel multiples, for CPUs whose
#: blocked layout uses that width (8 floats: AVX2 without AVX-512). The runtime picks the one
#: that suits the CPU (lightmark.runtime.onnx.cpu_channel_block); outputs are the same.
VARIANT_MULTIPLES = (8,)


def add_moments_output(proto: Any, hm_size: tuple[int, int]) -> None:
    """Append the ``moments`` output to an integral head's graph (in place): the softmax of each
    ``h x w`` map of ``output`` times :func:`lightmark.core.codec.moment_columns`, the numpy
    decoder's own columns, so both compute the same sums."""
    from onnx import TensorProto, helper, numpy_helper

    from lightmark.core.codec import moment_columns

    h, w = hm_size
    g = proto.graph
    g.initializer.extend([numpy_helper.from_array(np.asarray(moment_columns(h, w)), "moments_columns"),
                          numpy_helper.from_array(np.array([0, 0, h * w], np.int64), "moments_shape")])
    g.node.extend([
        helper.make_node("Reshape", [OUTPUT_NAME, "moments_shape"], ["moments_flat"], name="moments_reshape"),
        helper.make_node("Softmax", ["moments_flat"], ["moments_softmax"], axis=-1, name="moments_softmax"),
        helper.make_node("MatMul", ["moments_softmax", "moments_columns"], [MOMENTS_NAME], name="moments_matmul"),
    ])
    g.output.append(helper.make_tensor_value_info(MOMENTS_NAME, TensorProto.FLOAT, ["batch", None, 3]))


def _export_graph(model: Any, multiple: int, model_path: PathLike, where: Path, opset: int,
                  check_batch: int, seed: int) -> tuple[bytes, dict[str, Any]]:
    """The ONNX bytes of ``model`` padded to ``multiple`` channels, checked against the unpadded
    torch model; the check's numbers."""
    import onnx
    import onnxruntime as ort
    import torch

    from lightmark.models.padding import pad_channels

    s = int(model.cfg.input_size)
    # The graph runs a copy with zero channels that suit onnxruntime's blocked layout (exact; the
    # check below compares it with the unpadded model).
    runtime_model = pad_channels(model, multiple)

    # The legacy TorchScript exporter: the torch.export-based one needs onnxscript, which
    # lightmark does not depend on. Its deprecation warnings are not the user's concern.
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        try:
            torch.onnx.export(
                runtime_model, (torch.zeros(1, 3, s, s),), buf, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True)
        except Exception as e:  # the exporter raises many types
            raise ExportError(f"{model_path}: ONNX export failed ({type(e).__name__}: {e})") from None
    proto = onnx.load_from_string(buf.getvalue())
    # Verify below: same numbers from onnxruntime as from torch, at a batch size other than the traced 1.
    x = np.random.default_rng(seed).standard_normal((check_batch, 3, s, s)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    integral = model.cfg.head == "integral"
    if integral:
        add_moments_output(proto, ref.shape[2:4])
    data = proto.SerializeToString()
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{where}: exported graph is invalid ({e})") from None
    stats = check_onnx_rules(proto, str(where))

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    if got.shape != ref.shape:
        raise ExportError(f"{where}: onnxruntime output shape {got.shape} != torch {ref.shape}")
    diff = float(np.max(np.abs(got - ref)))
    tol = max(1e-4, 1e-3 * float(np.max(np.abs(ref))))
    if not np.isfinite(diff) or diff > tol:
        raise ExportError(f"{where}: onnxruntime differs from torch by {diff:.3g} (tolerance {tol:.3g})")
    check = {"batch": check_batch, "max_abs_diff": diff, "tolerance": tol, **stats}
    if integral:
        from lightmark.core.codec import softmax_moments

        got_m = sess.run([MOMENTS_NAME], {INPUT_NAME: x})[0]
        want_m = softmax_moments(ref)
        diff_m = float(np.max(np.abs(got_m - want_m))) if got_m.shape == want_m.shape else float("inf")
        if not diff_m <= MOMENTS_TOLERANCE:
            raise ExportError(f"{where}: the graph's moments differ from the numpy decoder's by "
                              f"{diff_m:.3g} cells (tolerance {MOMENTS_TOLERANCE:g})")
        check["moments_max_abs_diff"] = diff_m
    return data, check


def variant_path(onnx_path: PathLike, multiple: int) -> Path:
    """``NAME.c8.onnx`` beside ``NAME.onnx``: the graph padded to ``multiple`` channels."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.c{int(multiple)}.onnx")


def export_onnx(model_path: PathLike, out_path: PathLike, opset: int = 17,
                check_batch: int = 2, seed: int = 0,
                variants: tuple[int, ...] = VARIANT_MULTIPLES) -> Path:
    """Export the model saved at ``model_path`` to ``NAME.onnx`` + ``NAME.json``; return the .onnx path.

    Runs the model rules on the torch model and on the ONNX graph, then compares onnxruntime with
    torch on a random ``check_batch`` batch (max abs difference at most 1e-3 of the output's
    scale, and at least 1e-4), and writes the files only when all of that passed. For each of
    ``variants`` (channel multiples other than :data:`CHANNEL_MULTIPLE`) the same is done for a
    graph padded to that multiple, written as ``NAME.c<multiple>.onnx`` and listed in the JSON as
    ``"onnx_variants"`` with its checksum.
    """
    from lightmark.models import load_model
    from lightmark.models.checkpoint import check_model_rules

    out_paths = model_paths(out_path)
    onnx_path, json_path = out_paths.onnx, out_paths.json
    model, meta = load_model(model_path)
    check_model_rules(model, str(model_path))
    data, check = _export_graph(model, CHANNEL_MULTIPLE, model_path, onnx_path, opset, check_batch, seed)
    extra: dict[int, tuple[bytes, dict[str, Any]]] = {}
    for m in sorted({int(v) for v in variants} - {CHANNEL_MULTIPLE}):
        extra[m] = _export_graph(model, m, model_path, variant_path(onnx_path, m), opset, check_batch, seed)

    out = dict(meta)
    out.update({
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "onnx_opset": opset,
        "onnx_input": INPUT_NAME,
        "onnx_output": OUTPUT_NAME,
        "onnx_outputs": [OUTPUT_NAME] + ([MOMENTS_NAME] if model.cfg.head == "integral" else []),
        "onnx_channel_multiple": CHANNEL_MULTIPLE,
        "onnx_check": check,
    })
    out.pop("onnx_variants", None)
    if extra:
        out["onnx_variants"] = {str(m): {"file": variant_path(onnx_path, m).name,
                                         "sha256": hashlib.sha256(d).hexdigest(), "check": c}
                                for m, (d, c) in extra.items()}
    files.write_bytes(onnx_path, data)
    for m, (d, _) in extra.items():
        files.write_bytes(variant_path(onnx_path, m), d)
    files.write_text(json_path, json.dumps(out, indent=2, sort_keys=True) + "\n")
    return onnx_path
