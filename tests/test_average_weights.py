"""scripts/average_weights.py: one model whose tensors are the mean of several checkpoints'."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


import helpers

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "average_weights.py"


def _save(folder: Path, name: str, seed: int, **cfg) -> Path:
    from lightmark.core.config import CodecConfig
    from lightmark.models import build_model, save_model

    save_model(helpers.randomize(build_model(helpers.tiny(**cfg)), seed),
               {"codec": CodecConfig(), "crop_scale": 1.25}, folder / name)
    return folder / name


def test_the_average_is_the_mean_of_every_float_tensor(tmp_path):
    from lightmark.models import load_model

    a, b, c = (_save(tmp_path, n, s) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "avg"), str(a), str(b), f"{c}.safetensors"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    avg, meta = load_model(tmp_path / "avg.safetensors")
    states = [load_model(f"{p}.safetensors")[0].state_dict() for p in (a, b, c)]
    checked = 0
    for k, v in avg.state_dict().items():
        if v.is_floating_point():
            want = (states[0][k] + states[1][k] + states[2][k]) / 3
            assert (v - want).abs().max().item() < 1e-6, k
            checked += 1
        else:
            assert (v == states[2][k]).all(), k
    assert checked > 20 and meta["averaged_from"] == [str(a), str(b), f"{c}.safetensors"]


def test_other_networks_and_missing_files_are_refused(tmp_path):
    a = _save(tmp_path, "a", 1)
    other = _save(tmp_path, "w", 2, head_channels=8)
    for args in ([str(a), str(other)], [str(a), str(tmp_path / "nowhere")], [str(a)]):
        run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out"), *args],
                             capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert not (tmp_path / "out.safetensors").exists()
