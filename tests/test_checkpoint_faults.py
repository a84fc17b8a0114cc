"""Fault injection for training checkpoints: SIGKILL at every write step, then resume.

A tiny run (generated images and .pts labels, a tiny model, two epochs) is first run whole; it
counts its write steps (each temporary written, each rename, each pointer switch and each old set
removed: ``core.files.write_step``). Then, for every step k, a run is killed by SIGKILL at step k
and resumed with ``lightmark train --resume OUT/last``. After every kill:

* ``best`` is never corrupt: where ``best.safetensors`` exists, its JSON vouches for it;
* no state is lost beyond the epoch whose checkpoint was being written;
* the resumed run ends with weights bit-identical to the uninterrupted run's, and the same best;
* no temporary is left behind.

The runs are forked from one driver process that has imported torch once (each kill costs a
fraction of a second, not an interpreter start).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
name: faults
model: {{backbone: shufflenet_v2_noconv5, width: 0.5, input_size: 64, head: integral,
        head_channels: 16, heatmap_size: 8}}
train_data: [{{path: {data}}}]
val_data: {data}
train: {{epochs: {epochs}, batch_size: 2, steps_per_epoch: 1, optimizer: adamw, lr: 0.003,
        schedule: cosine, loss: l1, threads: 1, seed: 3}}
augment: {{rotation_deg: 10, flip: 0.5}}
out_dir: {out}
"""


def make_data(folder: Path, n: int = 4) -> None:
    """Photos of a bright blob on noise, with 68 points around it: enough to train on."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 80, (96, 96, 3)).astype(np.uint8)
        cx, cy, r = 48 + rng.uniform(-8, 8), 48 + rng.uniform(-8, 8), 20 + rng.uniform(-4, 4)
        yy, xx = np.mgrid[:96, :96]
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2] = (200, 170, 150)
        Image.fromarray(img).save(folder / f"f{i}.png")
        a = np.linspace(0, 2 * np.pi, 68, endpoint=False) + i
        pts = np.column_stack([cx + r * np.cos(a), cy + 0.9 * r * np.sin(a)]) + 1  # 1-based
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
        (folder / f"f{i}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")


def driver(work: str, epochs: int, only: str = "", resume_every: int = 1) -> None:
    """Run in a child interpreter: the whole experiment, results printed as one JSON line."""
    # The reference run is made in this process, before any fork, so that every import and lazy
    # initialisation is done once. One thread only: a fork copies no thread pool.
    import torch

    torch.set_num_threads(1)
    from lightmark.cli import main
    from lightmark.core import files
    from lightmark.core.files import sha256

    work_p = Path(work)
    data = work_p / "data"
    make_data(data)

    def config(out: Path) -> Path:
        path = out.parent / f"{out.name}.yaml"
        path.write_text(CONFIG.format(data=data, out=out, epochs=epochs))
        return path

    def inline(fn) -> int:
        return fn()

    def fork(fn) -> int:
        """Run ``fn`` in a forked child; its exit status (negative: killed by that signal)."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = fn()
            except BaseException:  # shown on the driver's stderr, then the child exits non-zero
                import traceback

                os.write(2, traceback.format_exc().encode())
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def train(out: Path, resume: bool = False, kill_at: int = 0, marks_to: str = "",
              how=fork) -> int:
        def run() -> int:
            import contextlib
            import io

            from lightmark.training import loop

            files._KILL_AT, files._write_steps = kill_at, 0
            marks: list[int] = []
            real = loop.train

            def spy(cfg, resume=None, skip_bad=False, log=print):
                def say(msg: str) -> None:  # an epoch's row is logged just before its checkpoint
                    if msg.startswith('{"epoch"'):
                        marks.append(files._write_steps)
                return real(cfg, resume=resume, skip_bad=skip_bad, log=say)

            loop.train = spy
            args = ["train", str(config(out)), "--skip-bad"] + (["--resume", str(out / "last")] if resume else [])
            err = io.StringIO()
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    rc = main(args)
            finally:
                loop.train = real
            if rc:
                os.write(2, err.getvalue()[-2000:].encode())
            if marks_to:
                Path(marks_to).write_text(json.dumps({"marks": marks, "total": files._write_steps}))
            return rc
        return how(run)

    def best_ok(out: Path) -> bool:
        """``best`` is absent, or its weights are the ones its JSON names."""
        st, js = out / "best.safetensors", out / "best.json"
        if not st.exists() and not js.exists():
            return True
        try:
            return sha256(st) == json.loads(js.read_text())["sha256"]
        except (OSError, ValueError, KeyError):
            return False

    def saved_epoch(out: Path) -> int:
        from lightmark.training.checkpoints import find_set

        found = find_set(out / "last")
        return json.loads((found / "last_state.json").read_text())["epoch"] if found else 0

    ref = work_p / "ref"
    rc = train(ref, kill_at=10 ** 9, marks_to=str(work_p / "ref.json"), how=inline)  # counts only
    info = json.loads((work_p / "ref.json").read_text())
    marks, total = info["marks"], info["total"]
    result = {"rc_ref": rc, "marks": marks, "total": total, "ref_last": sha256(ref / "last.safetensors"),
              "ref_best": sha256(ref / "best.safetensors"), "cases": []}
    steps = range(1, total + 1)
    if only:
        steps = [int(k) for k in only.split(",")]
    for k in steps:
        out = work_p / f"k{k:03d}"
        rc_kill = train(out, kill_at=k)
        epoch_of_kill = sum(1 for m in marks if m < k)  # the epoch whose checkpoint was being written
        case = {"k": k, "rc_kill": rc_kill, "epoch_of_kill": epoch_of_kill,
                "best_ok_after_kill": best_ok(out), "saved_epoch": saved_epoch(out)}
        result["cases"].append(case)
        if (k - 1) % resume_every and k != total:
            continue  # the default run resumes every few kills; --fuzz-long resumes after each
        rc_resume = train(out, resume=case["saved_epoch"] > 0)
        case.update(rc_resume=rc_resume, best_ok=best_ok(out),
                    last_same=(out / "last.safetensors").exists() and sha256(out / "last.safetensors") == result["ref_last"],
                    best_same=(out / "best.safetensors").exists() and sha256(out / "best.safetensors") == result["ref_best"],
                    temporaries=[str(p.relative_to(out)) for p in out.rglob("*.tmp")],
                    sets=sorted(p.name for p in (out / "checkpoints").iterdir()))
    print(json.dumps(result))


def run_driver(tmp_path: Path, epochs: int = 2, only: str = "", resume_every: int = 1) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
               OMP_NUM_THREADS="1")
    env.pop("LIGHTMARK_TEST_KILL_AT_WRITE", None)
    code = (f"import test_checkpoint_faults as t; "
            f"t.driver({str(tmp_path)!r}, {epochs}, {only!r}, {resume_every})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def faults(tmp_path_factory, request) -> tuple[Path, dict]:
    # Every write step is killed; each kill is resumed to the end under --fuzz-long, every fourth
    # one (and the first and last) otherwise (a resume costs a whole run: seconds on a shared CPU).
    work = tmp_path_factory.mktemp("faults")
    long = request.config.getoption("--fuzz-long", default=False)
    return work, run_driver(work, resume_every=1 if long else 4)


def test_sigkill_at_every_checkpoint_write_then_resume(faults) -> None:
    _, res = faults
    assert res["rc_ref"] == 0 and len(res["marks"]) == 2
    assert res["total"] > res["marks"][1] > res["marks"][0] == 0  # both epochs wrote checkpoints
    assert len(res["cases"]) == res["total"]
    n_resumed = 0
    for c in res["cases"]:
        where = f"killed at write step {c['k']} (epoch {c['epoch_of_kill']}): {c}"
        assert c["rc_kill"] == -9, where
        assert c["best_ok_after_kill"], where  # best is never corrupt
        assert c["saved_epoch"] >= c["epoch_of_kill"] - 1, where  # at most the current epoch lost
        if "rc_resume" not in c:
            continue
        n_resumed += 1
        assert c["rc_resume"] == 0 and c["best_ok"], where
        assert c["last_same"] and c["best_same"], where  # bit-identical to the uninterrupted run
        assert not c["temporaries"], where
        # One pointer and one complete set per tag are left: the older sets were removed.
        assert [s.split(".")[0] for s in c["sets"]] == ["best", "best", "last", "last"], where
    assert n_resumed >= res["total"] // 4


def test_resume_reads_the_newest_complete_set_and_user_files_load(faults) -> None:
    """The layout: OUT/last.* are loadable model files; a damaged newest set is passed over."""
    from lightmark.models import load_model
    from lightmark.training.checkpoints import SETS, find_set

    work, res = faults
    assert res["cases"][0]["last_same"]  # killed at the very first write, resumed: a fresh run
    out = work / "k001"
    model, meta = load_model(out / "last.safetensors")
    assert meta["epoch"] == 2 and (out / "last_state.json").is_file()
    assert os.readlink(out / "last.safetensors") == f"{SETS}/last/last.safetensors"
    current = find_set(out / "last")
    assert current is not None and current.name.startswith("last.")
    # A newer set that is incomplete (no manifest) or damaged is never used.
    fake = current.parent / f"last.{int(current.name.split('.')[1]) + 1:06d}"
    fake.mkdir()
    (fake / "last.safetensors").write_bytes(b"half a file")
    assert find_set(out / "last") == current
    mode = (current / "last_state.safetensors").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not 0600 (safetensors makes its files private)
