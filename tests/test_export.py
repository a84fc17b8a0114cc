"""ONNX export: outputs match torch, the files and the rules."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from lightmark.core.config import CodecConfig, ModelConfig  # noqa: E402
from lightmark.export import ExportError, check_onnx_rules, export_onnx  # noqa: E402
from lightmark.models import ModelFileError, ModelRuleError, build_model, checkpoint, save_model  # noqa: E402

from helpers import randomize, tiny  # noqa: E402

torch.set_num_threads(1)


def saved(tmp_path, cfg: ModelConfig, name: str = "m"):
    m = randomize(build_model(cfg))
    save_model(m, {"codec": CodecConfig(), "crop_scale": 1.25, "trained_on": "test"}, tmp_path / name)
    return m


@pytest.mark.parametrize("head,attention,hm,block", [
    ("integral", "coord", 8, "deconv"), ("heatmap", "se", 12, "deconv"), ("regression", None, 8, "deconv"),
    ("integral", "coord", 8, "separable"), ("integral", None, 12, "separable")])
def test_onnx_matches_torch(tmp_path, head, attention, hm, block):
    m = saved(tmp_path, tiny(head=head, attention=attention, heatmap_size=hm, head_block=block))
    out = export_onnx(tmp_path / "m.safetensors", tmp_path / "exported")
    assert out == tmp_path / "exported.onnx" and out.is_file()

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    # An integral head's graph also gives the softmax moments its points and quality are read from.
    assert [o.name for o in sess.get_outputs()] == ["output"] + (["moments"] if head == "integral" else [])
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)  # batch 3: dynamic
    got = sess.run(["output"], {"input": x})[0]
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == ((3, 68, 2) if head == "regression" else (3, 68, hm, hm))
    assert np.abs(ref).max() > 0.1  # a non-trivial output, so the comparison means something
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    if head == "integral":
        from lightmark.core.codec import decode, softmax_moments
        from lightmark.runtime.onnx import OnnxPredictor

        moments = sess.run(["moments"], {"input": x})[0]
        np.testing.assert_allclose(moments, softmax_moments(ref), atol=1e-4)
        # The predictor reads its points from the moments: the numpy decoder's points.
        crops = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
        pred = OnnxPredictor(out)
        _, raw = pred.predict_crops_raw(crops)
        np.testing.assert_allclose(pred.predict_crops(crops), decode(raw, meta_model(tmp_path)), atol=1e-4)
        pts, q = pred.predict_crops_quality(crops)
        assert pts["2d"].shape == (2, 68, 2) and q.shape == (2,) and np.all((q > 0) & (q < 1))

    meta = json.loads((tmp_path / "exported.json").read_text())
    model_meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["onnx_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["sha256"] == model_meta["sha256"] and meta["model"] == model_meta["model"]
    assert meta["trained_on"] == "test" and meta["crop_scale"] == 1.25
    assert meta["onnx_opset"] == 17 and meta["onnx_check"]["max_abs_diff"] < 1e-3
    assert meta["onnx_channel_multiple"] == 16  # the graph is the padded copy, checked above
    # The copy padded to 8 channels (AVX2's block width) is written beside it, checked the same way.
    v = meta["onnx_variants"]["8"]
    c8 = tmp_path / v["file"]
    assert c8.name == "exported.c8.onnx" and v["sha256"] == hashlib.sha256(c8.read_bytes()).hexdigest()
    got8 = ort.InferenceSession(str(c8), providers=["CPUExecutionProvider"]).run(["output"], {"input": x})[0]
    np.testing.assert_allclose(got8, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    proto = onnx.load(str(out))
    floats = [t for t in proto.graph.initializer if t.data_type != TensorProto.INT64]
    assert floats and all(t.data_type == TensorProto.FLOAT for t in floats)


def meta_model(folder) -> dict:
    return json.loads((folder / "exported.json").read_text())["model"]


def test_export_next_to_model_keeps_it_loadable(tmp_path):
    from lightmark.models import load_model

    saved(tmp_path, tiny(head="regression"))
    export_onnx(tmp_path / "m", tmp_path / "m.onnx")
    model, meta = load_model(tmp_path / "m")  # the shared JSON still vouches for the weights
    assert "onnx_sha256" in meta and not model.training


def test_export_refuses_missing_or_tampered_model(tmp_path):
    with pytest.raises(ModelFileError, match="missing"):
        export_onnx(tmp_path / "nothing", tmp_path / "out")
    saved(tmp_path, tiny())
    w = tmp_path / "m.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ModelFileError, match="checksum"):
        export_onnx(tmp_path / "m", tmp_path / "out")
    assert not (tmp_path / "out.onnx").exists()


def test_export_refuses_over_size(tmp_path, monkeypatch):
    saved(tmp_path, tiny())
    monkeypatch.setattr(checkpoint, "MAX_MODEL_BYTES", 50_000)
    with pytest.raises(ModelRuleError, match="MB limit"):
        export_onnx(tmp_path / "m", tmp_path / "out")
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "out.json").exists()


def _graph(initializers, nodes=None):
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
    nodes = nodes or [helper.make_node("Add", ["input", initializers[0].name], ["output"])]
    return helper.make_model(helper.make_graph(nodes, "g", [inp], [out], initializers))


def test_onnx_rules():
    ok = _graph([helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])])
    assert check_onnx_rules(ok)["float32_weights"] == 4
    # A second output is allowed only as the integral head's "moments".
    for name, allowed in (("moments", True), ("heatmaps", False)):
        two = _graph([helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])])
        two.graph.node.append(helper.make_node("Identity", ["output"], [name]))
        two.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4]))
        if allowed:
            assert check_onnx_rules(two)["float32_weights"] == 4
        else:
            with pytest.raises(ModelRuleError, match="outputs"):
                check_onnx_rules(two)
    f64 = _graph([helper.make_tensor("w", TensorProto.DOUBLE, [4], [1.0, 2.0, 3.0, 4.0])])
    with pytest.raises(ModelRuleError, match="float64"):
        check_onnx_rules(f64)
    int8 = _graph([helper.make_tensor("w", TensorProto.INT8, [4], [1, 2, 3, 4])])
    with pytest.raises(ModelRuleError, match="int8"):
        check_onnx_rules(int8)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    branch = helper.make_graph([helper.make_node("Identity", ["input"], ["y"])], "b", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    sub = _graph([w, cond], [helper.make_node("If", ["c"], ["output"], then_branch=branch,
                                              else_branch=branch)])
    with pytest.raises(ModelRuleError, match="sub-graph"):
        check_onnx_rules(sub)


def test_export_error_is_value_error():
    assert issubclass(ExportError, ValueError)


def test_long_integer_tensors_only_as_indices():
    """A 100-element int64 permutation feeding a Gather index is fine; fed to arithmetic it is not."""
    perm = helper.make_tensor("perm", TensorProto.INT64, [100], list(range(100)))
    gather = _graph([perm], [helper.make_node("Gather", ["input", "perm"], ["output"], axis=1)])
    assert check_onnx_rules(gather)["float32_weights"] == 0
    added = _graph([perm], [helper.make_node("Add", ["input", "perm"], ["output"])])
    with pytest.raises(ModelRuleError, match="int64 with 100 elements"):
        check_onnx_rules(added)


def test_graph_without_moments_is_decoded_in_numpy(tmp_path):
    """A file exported before the moments output (one output) still runs, with the same points."""
    from lightmark.core.files import sha256
    from lightmark.runtime.onnx import OnnxPredictor

    saved(tmp_path, tiny(head="integral", attention=None, heatmap_size=8))
    out = export_onnx(tmp_path / "m.safetensors", tmp_path / "new.onnx", variants=())
    proto = onnx.load(str(out))
    keep = [o for o in proto.graph.output if o.name == "output"]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    meta = json.loads((tmp_path / "new.json").read_text())
    meta["onnx_sha256"] = sha256(tmp_path / "old.onnx")
    (tmp_path / "old.json").write_text(json.dumps(meta))

    new, old = OnnxPredictor(out), OnnxPredictor(tmp_path / "old.onnx")
    assert new.uses_moments and not old.uses_moments
    crops = np.random.default_rng(3).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(old.predict_crops(crops), new.predict_crops(crops), atol=1e-4)
    (p_new, q_new), (p_old, q_old) = new.predict_crops_quality(crops), old.predict_crops_quality(crops)
    np.testing.assert_allclose(p_old["2d"], p_new["2d"], atol=1e-4)
    np.testing.assert_allclose(q_old, q_new, atol=1e-5)
