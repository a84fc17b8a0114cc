"""onnxruntime latency of candidate architectures (random weights), one thread, batch 1.

The search behind the shipped model's head: how much of a forward pass each head and input size
costs on a CPU, measured in one run. Weights do not change the speed, so no training is needed.

    python benchmarks/head_latency.py [--repeats 400]
"""
from __future__ import annotations

import timing  # noqa: F401  (first: one thread in the numeric libraries, before they load)

import argparse  # noqa: E402
import io  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from lightmark.core.config import ModelConfig  # noqa: E402
from lightmark.models import build_model, count_macs  # noqa: E402
from lightmark.models.padding import pad_channels  # noqa: E402

BASE = dict(backbone="shufflenet_v2_noconv5", width=1.0, input_size=128, head="integral",
            head_channels=64, heatmap_size=16, upsample_strides=[2, 2])
CANDIDATES = {
    "transposed-conv head, 64 ch (bundled before)": {},
    "separable head, 64 ch": dict(head_block="separable"),
    "separable head, 128 ch": dict(head_block="separable", head_channels=128),
    "separable head, 128 ch + coord attention (bundled)": dict(head_block="separable", head_channels=128,
                                                              attention="coord"),
    "separable head, 64 ch, 96 px input": dict(head_block="separable", input_size=96, heatmap_size=12),
    "separable head, 128 ch + coord attention, 96 px input": dict(head_block="separable", head_channels=128,
                                                                  attention="coord", input_size=96,
                                                                  heatmap_size=12),
    "x0.5 with conv5, separable head, 64 ch": dict(head_block="separable", width=0.5, backbone="shufflenet_v2"),
    "x1.5 without conv5, separable head, 64 ch": dict(head_block="separable", width=1.5),
}


def latency_ms(cfg: ModelConfig, repeats: int, padded: bool) -> float:
    """Median onnxruntime time (ms) of one forward pass; ``padded``: the copy export ships, with
    widths rounded up to 16 by zero channels (``lightmark.models.padding``)."""
    model = build_model(cfg).eval()
    if padded:
        model = pad_channels(model, 16)
    s = cfg.input_size
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, s, s),), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"], do_constant_folding=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, s, s), dtype=np.float32)
    return timing.repeat(lambda: sess.run(None, {"input": x}), repeats, warmup=50)["median_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=400)
    args = ap.parse_args()
    timing.pin_library_threads()
    torch.manual_seed(0)
    meter = timing.LoadMeter()
    print("| architecture | median ms, widths as trained | median ms, widths padded to 16 (exported) "
          "| M multiply-adds | M parameters |")
    print("|---|---:|---:|---:|---:|")
    for name, change in CANDIDATES.items():
        cfg = ModelConfig(**{**BASE, **change})
        ms = latency_ms(cfg, args.repeats, padded=False)
        ms_pad = latency_ms(cfg, args.repeats, padded=True)
        model = build_model(cfg)
        print(f"| {name} | {ms:.2f} | {ms_pad:.2f} | {count_macs(model, cfg.input_size) / 1e6:.1f} | "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} |", flush=True)
    ld = meter.read()
    print(f"\nload: other processes used on average {ld.get('other_processes_cores_mean', float('nan')):.2f} "
          f"of the {ld['cpus']} CPUs (load average {ld['loadavg_start'][0]} at start, "
          f"{ld['loadavg_end'][0]} at end); {ld['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
