"""Backbone, heads, model info, model files and the torch predictor."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lightmark.core.config import CodecConfig, ModelConfig, to_dict  # noqa: E402
from lightmark.core.modelfile import model_paths  # noqa: E402
from lightmark.models import (  # noqa: E402
    LandmarkModel, ModelConfigError, ModelFileError, ModelRuleError, TorchPredictor, build_model,
    check_model_rules, count_macs, load_model, model_info, save_model, soft_argmax)
from lightmark.models.heads import crop_to_heatmap, heatmap_to_crop  # noqa: E402
from lightmark.models.shufflenet import shuffle_order  # noqa: E402
from lightmark.models import checkpoint  # noqa: E402
from lightmark.models.heads import deconv_geometry  # noqa: E402
from lightmark.models.shufflenet import STAGE_CHANNELS, ShuffleNetV2, ShuffleUnit  # noqa: E402

from helpers import randomize, tiny  # noqa: E402

torch.set_num_threads(1)

META = {"codec": CodecConfig(), "crop_scale": 1.25}


# --- backbone -------------------------------------------------------------------------------

# ImageNet ShuffleNet V2 parameter counts with the 1000-class classifier (paper: 1.4M, 2.3M,
# 3.5M, 7.4M); the classifier is Linear(conv5 channels, 1000).
PAPER_TOTAL = {0.5: 1_366_792, 1.0: 2_278_604, 1.5: 3_503_624, 2.0: 7_393_996}


@pytest.mark.parametrize("width", [0.5, 1.0, 1.5, 2.0])
def test_backbone_params_match_paper_without_classifier(width):
    net = ShuffleNetV2(width)
    n = sum(p.numel() for p in net.parameters())
    fc = STAGE_CHANNELS[width][4] * 1000 + 1000
    assert n + fc == PAPER_TOTAL[width]
    if width == 1.0:
        assert 1_240_000 < n < 1_260_000  # ~1.25M without the classifier
    no5 = ShuffleNetV2(width, conv5=False)
    c4, c5 = STAGE_CHANNELS[width][3:]
    assert sum(p.numel() for p in no5.parameters()) == n - (c4 * c5 + 2 * c5)
    assert no5.out_channels == c4 and net.out_channels == c5


def test_backbone_macs_match_paper():
    # Paper (Table 8): 41M and 146M FLOPs (multiply-adds) at 224x224, classifier included.
    for width, paper in ((0.5, 41e6), (1.0, 146e6)):
        macs = count_macs(ShuffleNetV2(width), 224) + STAGE_CHANNELS[width][4] * 1000
        assert abs(macs - paper) / paper < 0.03, (width, macs)


@pytest.mark.parametrize("width", [0.5, 1.0, 1.5, 2.0])
def test_backbone_output_shape(width):
    net = ShuffleNetV2(width).eval()
    with torch.no_grad():
        y = net(torch.zeros(2, 3, 64, 64))
    assert y.shape == (2, STAGE_CHANNELS[width][4], 2, 2)


def test_channel_shuffle_interleaves_groups():
    assert shuffle_order(6).tolist() == [0, 3, 1, 4, 2, 5]
    unit = ShuffleUnit(6, 6, 1).eval()
    for m in unit.branch2.modules():  # a branch that outputs zeros: the shuffle alone is visible
        if isinstance(m, nn.BatchNorm2d):
            nn.init.zeros_(m.weight)
    x = torch.arange(1.0, 7.0).reshape(1, 6, 1, 1)
    with torch.no_grad():
        assert unit(x).flatten().tolist() == [1, 0, 2, 0, 3, 0]  # passthrough 1, 2, 3 interleaved


@pytest.mark.parametrize("cfg", [
    tiny(head_block="separable", attention="coord"),
    tiny(backbone="shufflenet_v2", head="heatmap", attention="se"),
    tiny(width=1.0, head_block="separable", heatmap_size=12),
    tiny(width=1.5, backbone="shufflenet_v2")])
def test_padded_copy_gives_the_same_output_with_aligned_widths(cfg):
    from lightmark.models.padding import conv_channel_counts, pad_channels

    m = randomize(build_model(cfg))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    p = pad_channels(m, 16)
    x = torch.randn(2, 3, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = m(x), p(x)
    assert float(ref.abs().max()) > 0.1
    torch.testing.assert_close(got, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)
    # Every backbone width is a multiple of 16 (the image's 3 channels in excepted) ...
    for name, c_in, c_out in conv_channel_counts(p.backbone):
        assert c_out % 16 == 0 and (c_in % 16 == 0 or c_in == 3), (name, c_in, c_out)
    # ... some widths really changed, and the model passed in is untouched.
    assert conv_channel_counts(p) != conv_channel_counts(m)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert m.backbone.stage2[0].shuffle_order.numel() == STAGE_CHANNELS[cfg.width][1]


def test_padding_leaves_other_heads_alone():
    from lightmark.models.padding import conv_channel_counts, pad_channels, unit_map

    # Heads that cannot read padded features (regression; a heatmap head without a transposed
    # conv) leave the model as it is when the padding would reach them (x1.0: 464 = 2 x 232,
    # padded to 2 x 240) ...
    for cfg in (tiny(width=1.0, head="regression"),
                tiny(width=1.0, head="heatmap", upsample_strides=[], heatmap_size=2)):
        m = randomize(build_model(cfg))
        p = pad_channels(m)
        assert conv_channel_counts(p) == conv_channel_counts(m) and not p.training
    # ... and are padded inside when the features come out as they were (x0.5: 192 = 2 x 96).
    m = randomize(build_model(tiny(head="regression")))
    p = pad_channels(m)
    assert conv_channel_counts(p) != conv_channel_counts(m)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(p(x), m(x), atol=1e-5 * float(m(x).abs().max()), rtol=0)
    assert unit_map(3, 4) == [0, 1, 2, -1, 3, 4, 5, -1]
    with pytest.raises(ValueError, match="multiple"):
        pad_channels(m, 0)


def test_bad_width_rejected():
    with pytest.raises(ValueError, match="width"):
        ShuffleNetV2(0.75)


# --- heads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["heatmap", "integral", "regression"])
@pytest.mark.parametrize("attention", [None, "se", "coord"])
def test_head_shapes(head, attention):
    cfg = tiny(head=head, attention=attention)
    m = build_model(cfg).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 64))
    assert y.shape == ((2, 68, 2) if head == "regression" else (2, 68, 8, 8))
    assert torch.isfinite(y).all()
    has_attention = any(type(mod).__name__ in ("SqueezeExcite", "CoordAttention") for mod in m.modules())
    assert has_attention == (attention is not None)


@pytest.mark.parametrize("head", ["heatmap", "integral"])
@pytest.mark.parametrize("attention", [None, "coord"])
@pytest.mark.parametrize("heatmap_size", [8, 12])
def test_separable_head_shapes(head, attention, heatmap_size):
    m = build_model(tiny(head=head, attention=attention, head_block="separable",
                         heatmap_size=heatmap_size)).eval()
    assert type(m.head).__name__ == "SeparableHead" and m.head.resize == (heatmap_size != 8)
    assert not any(isinstance(mod, nn.ConvTranspose2d) for mod in m.modules())
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 68, heatmap_size, heatmap_size) and torch.isfinite(y).all()


def test_separable_head_is_cheaper_than_deconv_head():
    """The point of the separable block: fewer multiply-adds and parameters at the same width."""
    cfg = dict(width=1.0, input_size=128, head_channels=64, heatmap_size=16)
    deconv, separable = build_model(tiny(**cfg)), build_model(tiny(head_block="separable", **cfg))
    head_macs = {k: count_macs(m, 128) - count_macs(m.backbone, 128)
                 for k, m in (("deconv", deconv), ("separable", separable))}
    assert head_macs["separable"] < head_macs["deconv"] / 4
    assert sum(p.numel() for p in separable.head.parameters()) < \
        sum(p.numel() for p in deconv.head.parameters()) / 4


@pytest.mark.parametrize("width", [0.5, 1.0, 1.5, 2.0])
def test_widths_with_integral_head(width):
    m = build_model(tiny(width=width, backbone="shufflenet_v2")).eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 68, 8, 8)


def test_seed_layout_68x96x96():
    # The seed: 192 px input, two 4x transposed convs: 6 -> 24 -> 96.
    cfg = ModelConfig(width=1.0, input_size=192, head="heatmap", head_channels=32,
                      heatmap_size=96, upsample_strides=[4, 4])
    m = build_model(cfg).eval()
    assert m.head.natural_size == 96 and not m.head.resize
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 192, 192)).shape == (1, 68, 96, 96)


def test_heatmap_resized_to_configured_size():
    m = build_model(tiny(heatmap_size=12)).eval()  # natural 8x8
    assert m.head.resize
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 68, 12, 12)


@pytest.mark.parametrize("stride", range(1, 9))
def test_deconv_geometry_multiplies_size(stride):
    k, p = deconv_geometry(stride)
    up = nn.ConvTranspose2d(1, 1, k, stride, p)
    assert up(torch.zeros(1, 1, 5, 3)).shape[2:] == (5 * stride, 3 * stride)


def test_soft_argmax_peak_uniform_and_gradient():
    logits = torch.zeros(1, 2, 6, 10)
    logits[0, 0, 3, 7] = 50.0  # row 3, column 7
    logits.requires_grad_(True)
    pts = soft_argmax(logits)
    assert pts.shape == (1, 2, 2)
    assert torch.allclose(pts[0, 0], torch.tensor([7.0, 3.0]), atol=1e-4)
    assert torch.allclose(pts[0, 1], torch.tensor([4.5, 2.5]), atol=1e-5)  # uniform: centre
    pts.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_soft_argmax_matches_numpy_codec():
    heatmap = pytest.importorskip("lightmark.core.codec")
    logits = torch.randn(2, 5, 7, 9) * 3
    np.testing.assert_allclose(soft_argmax(logits).numpy(), heatmap.soft_argmax(logits.numpy()),
                               atol=1e-4)


def test_heatmap_to_crop_formula():
    p = torch.tensor([[0.0, 15.0], [-0.5, 15.5]])
    c = heatmap_to_crop(p, 128, 16)
    # pixel centres: first heatmap cell covers crop pixels 0..7, centre 3.5; outer edges map to edges
    assert torch.allclose(c, torch.tensor([[3.5, 123.5], [-0.5, 127.5]]))
    assert torch.allclose(crop_to_heatmap(c, 128, 16), p)
    # non-square map (h, w): x uses w, y uses h
    assert torch.allclose(heatmap_to_crop(torch.tensor([0.0, 0.0]), 64, (8, 16)), torch.tensor([1.5, 3.5]))


def test_regression_head_outputs_crop_pixels():
    m = build_model(tiny(head="regression")).eval()
    with torch.no_grad():
        m.head.fc.weight.zero_()
        m.head.fc.bias.copy_(torch.tensor([0.0, 1.0] * 68))
        y = m(torch.randn(1, 3, 64, 64))
    # u = 0 / 1 are the crop's outer edges -0.5 and S - 0.5
    assert torch.allclose(y[0, :, 0], torch.full((68,), -0.5))
    assert torch.allclose(y[0, :, 1], torch.full((68,), 63.5))
    fresh = build_model(tiny(head="regression")).eval()
    with torch.no_grad():
        y0 = fresh(torch.randn(1, 3, 64, 64))
    assert torch.allclose(y0, torch.full_like(y0, 31.5), atol=1.0)  # starts near the centre


@pytest.mark.parametrize("field,value", [("width", 0.75), ("input_size", 100), ("head", "mlp"),
                                         ("attention", "cbam"), ("backbone", "resnet"),
                                         ("upsample_strides", [2, 0]), ("heatmap_size", 0),
                                         ("head_block", "pixelshuffle")])
def test_bad_config_rejected(field, value):
    with pytest.raises(ModelConfigError, match=field):
        build_model(tiny(**{field: value}))


# --- model info -----------------------------------------------------------------------------

def test_count_macs_grouped_and_transposed():
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),  # 8*8 outputs * 6 ch * 3*9
        nn.Conv2d(6, 6, 3, padding=1, groups=6),  # depthwise: 64 * 6 * 1*9
        nn.ConvTranspose2d(6, 4, 4, 2, 1, groups=2),  # 64*6 inputs * (4/2) * 16
        nn.Flatten(), nn.Linear(4 * 16 * 16, 10))
    assert count_macs(net, 8) == 64 * 6 * 27 + 64 * 6 * 9 + 384 * 2 * 16 + 1024 * 10


def test_model_info():
    cfg = tiny()
    m = build_model(cfg)
    info = model_info(cfg, m)
    n = sum(p.numel() for p in m.parameters())
    bn_stats = sum(b.numel() for k, b in m.named_buffers() if "running" in k)
    assert info["params"] == n == info["params_backbone"] + info["params_head"]
    assert info["float32_mb"] == pytest.approx((n + bn_stats) * 4 / 1e6)
    assert info["output_shape"] == [68, 8, 8]
    assert info["macs"] > count_macs(m.backbone, 64) > 0


# --- model files ----------------------------------------------------------------------------

@pytest.mark.parametrize("head,attention", [("integral", "coord"), ("heatmap", "se"), ("regression", None)])
def test_save_load_roundtrip(tmp_path, head, attention):
    m = randomize(build_model(tiny(head=head, attention=attention)))
    save_model(m, {**META, "note": "hi"}, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").is_file() and (tmp_path / "m.json").is_file()
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "lightmark-model/1" and meta["note"] == "hi"
    assert meta["model"] == to_dict(m.cfg) and meta["codec"] == to_dict(CodecConfig())
    assert len(meta["sha256"]) == 64
    from safetensors.torch import load_file
    assert not any("num_batches_tracked" in k for k in load_file(str(tmp_path / "m.safetensors")))

    m2, meta2 = load_model(tmp_path / "m")  # without suffix
    assert not m2.training and meta2 == meta
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert not any(p.isnan().any() for p in m2.parameters())
    assert not list((tmp_path).glob("*.tmp"))  # nothing half-written left


def test_model_paths_strip_only_known_suffixes(tmp_path):
    paths = model_paths(tmp_path / "a.json")
    assert (paths.safetensors, paths.json, paths.stem) == (tmp_path / "a.safetensors", tmp_path / "a.json", tmp_path / "a")
    assert model_paths(tmp_path / "a.v2").safetensors.name == "a.v2.safetensors"


def test_checksum_tamper_detected(tmp_path):
    m = randomize(build_model(tiny()))
    save_model(m, META, tmp_path / "m")
    w = tmp_path / "m.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"m\.safetensors.*checksum"):
        load_model(tmp_path / "m")


def test_missing_json_and_weights(tmp_path):
    save_model(build_model(tiny()), META, tmp_path / "m")
    (tmp_path / "m.json").rename(tmp_path / "x.json")
    with pytest.raises(ModelFileError, match=r"m\.json.*missing"):
        load_model(tmp_path / "m.safetensors")
    (tmp_path / "m.safetensors").rename(tmp_path / "x.safetensors2")
    (tmp_path / "x.json").rename(tmp_path / "m.json")
    with pytest.raises(ModelFileError, match=r"m\.safetensors.*missing"):
        load_model(tmp_path / "m")


def test_wrong_keys_in_json(tmp_path):
    save_model(build_model(tiny()), META, tmp_path / "m")
    j = tmp_path / "m.json"
    meta = json.loads(j.read_text())
    bad = dict(meta, model={**meta["model"], "depth": 3})
    j.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"m\.json.*depth"):
        load_model(tmp_path / "m")
    j.write_text(json.dumps({k: v for k, v in meta.items() if k != "crop_scale"}))
    with pytest.raises(ModelFileError, match=r"m\.json.*crop_scale"):
        load_model(tmp_path / "m")
    j.write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(tmp_path / "m")


def test_weights_not_matching_config(tmp_path):
    # A file whose checksum is right but whose tensors belong to another architecture.
    save_model(build_model(tiny(head_channels=8)), META, tmp_path / "a")
    save_model(build_model(tiny()), META, tmp_path / "b")
    meta_b = json.loads((tmp_path / "b.json").read_text())
    meta_a = json.loads((tmp_path / "a.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(dict(meta_a, model=meta_b["model"])))
    with pytest.raises(ModelFileError, match=r"a\.safetensors.*shape"):
        load_model(tmp_path / "a")


def test_size_rule(tmp_path, monkeypatch):
    big = build_model(ModelConfig(width=2.0, input_size=64, head="heatmap", head_channels=256,
                                  heatmap_size=8, upsample_strides=[2, 2]))
    with pytest.raises(ModelRuleError, match="MB limit"):
        save_model(big, META, tmp_path / "big")
    assert not list(tmp_path.iterdir())  # refused before writing anything
    small = build_model(tiny())
    check_model_rules(small)
    monkeypatch.setattr(checkpoint, "MAX_MODEL_BYTES", 10_000)
    with pytest.raises(ModelRuleError, match="over the"):
        save_model(small, META, tmp_path / "small")


def test_dtype_rule(tmp_path):
    m = build_model(tiny())
    m.head.out.bias = nn.Parameter(m.head.out.bias.detach().double())
    with pytest.raises(ModelRuleError, match="float64"):
        save_model(m, META, tmp_path / "m")
    with pytest.raises(ModelRuleError, match="float16"):
        save_model(build_model(tiny()).half(), META, tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_single_network_rule(tmp_path):
    cfg = tiny()
    a, b = build_model(cfg), build_model(cfg)

    class Ensemble(nn.Module):
        def __init__(self):
            super().__init__()
            self.members = nn.ModuleList([a, b])

        def forward(self, x):
            return sum(m(x) for m in self.members) / 2

    with pytest.raises(ModelRuleError, match="single LandmarkModel"):
        save_model(Ensemble(), META, tmp_path / "e")
    two_backbones = LandmarkModel(cfg, nn.ModuleList([a.backbone, b.backbone]), a.head)
    with pytest.raises(ModelRuleError, match="extra tensors"):
        check_model_rules(two_backbones)
    extra = build_model(cfg)
    extra.teacher = b.backbone
    with pytest.raises(ModelRuleError, match="backbone.*head"):
        check_model_rules(extra)


def test_save_checks_meta(tmp_path):
    m = build_model(tiny())
    with pytest.raises(ValueError, match="crop_scale"):
        save_model(m, {"codec": {}}, tmp_path / "m")
    with pytest.raises(ValueError, match="does not match"):
        save_model(m, {**META, "model": to_dict(tiny(width=1.0))}, tmp_path / "m")


# --- predictor ------------------------------------------------------------------------------

def test_torch_predictor_regression_and_integral(tmp_path):
    pytest.importorskip("lightmark.core.codec")
    from lightmark.core.imaging import to_input

    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    for head in ("regression", "integral"):
        m = randomize(build_model(tiny(head=head)))
        save_model(m, META, tmp_path / head)
        model, meta = load_model(tmp_path / head)
        pred = TorchPredictor(model, meta, batch_size=2)  # two batches: 2 + 1
        assert pred.input_size == 64 and pred.crop_scale == 1.25 and pred.meta is meta
        pts = pred.predict_crops(crops)
        assert pts.dtype == np.float32 and pts.shape == (3, 68, 2)
        with torch.no_grad():
            y = m(torch.from_numpy(to_input(crops)))
        want = y if head == "regression" else heatmap_to_crop(soft_argmax(y), 64, 8)
        np.testing.assert_allclose(pts, want.numpy(), atol=1e-3)
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        pred.predict_crops(np.zeros((1, 32, 32, 3), np.uint8))


def test_torch_predictor_heatmap_peaks():
    pytest.importorskip("lightmark.core.codec")
    m = build_model(tiny(head="heatmap"))
    pred = TorchPredictor(m, {"model": to_dict(m.cfg), "codec": {"decoder": "argmax"}, "crop_scale": 1.25})

    def fake_forward(x):  # a known output, to test the decoding path of the predictor
        out = torch.zeros(x.shape[0], 68, 8, 8)
        out[:, :, 2, 5] = 100.0
        return out
    m.forward = fake_forward
    pts = pred.predict_crops(np.zeros((1, 64, 64, 3), np.uint8))
    # cell (row 2, col 5) of an 8x8 map on a 64 px crop: centre (5.5 * 8 - 0.5, 2.5 * 8 - 0.5)
    np.testing.assert_allclose(pts[0, 0], [43.5, 19.5], atol=1e-4)


def test_torch_predictor_keeps_model_device_by_default():
    m = build_model(tiny(head="regression")).to("meta")  # a device other than the CPU default
    pred = TorchPredictor(m, {"model": to_dict(m.cfg), "codec": {}, "crop_scale": 1.25})
    assert pred.device.type == "meta" and next(pred.model.parameters()).device.type == "meta"
    with pytest.raises(ValueError, match="crop_scale"):
        TorchPredictor(m, {"model": to_dict(m.cfg)})
