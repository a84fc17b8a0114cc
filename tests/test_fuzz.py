"""Property-based fuzzing of every input lightmark reads (hypothesis, derandomised).

Targets: the label readers (300W .pts, AFLW2000-3D .mat, FaceSynthetics _ldmks.txt, CSV tables,
the AFLW 21-point table),
the image loader (files and arrays), boxes given to ``Landmarker.predict``, and model files (the
JSON, the ONNX graph, the safetensors weights). The property, for every case: the outcome is a
valid result or a :class:`~lightmark.core.errors.LightmarkError` whose message names the file (or
the argument), within a time bound; never another exception type, a hang or a crash.

Every case runs in a sandbox: a child interpreter that takes cases on stdin and answers on stdout.
A case that crashes it (SIGSEGV in a C parser) or runs past the time bound is reported as such and
the sandbox is restarted, so one bad case cannot take the test run down with it.

By default a few hundred cases in all (about a minute on two shared cores); ``pytest
--fuzz-long`` runs at least 10,000. Set ``LIGHTMARK_FUZZ_REPORT=FILE`` to get the counts of
outcomes (results, each error class, timeouts, crashes, bugs) per target as JSON.
"""
from __future__ import annotations

import io
import json
import math
import os
import select
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

pytest.importorskip("hypothesis")  # the dev extra

REPO = Path(__file__).resolve().parents[1]
#: Seconds one case may take (generous: the CI machine's two cores are shared).
TIME_BOUND = 20.0
#: Cases per target by default; --fuzz-long multiplies them so the total is >= 10,000.
CASES = {"pts": 50, "facesynthetics": 25, "csv": 40, "aflw21": 30, "mat": 60, "image_file": 50,
         "image_array": 40, "box": 60, "model_json": 30, "onnx": 30, "safetensors": 20}
LONG_FACTOR = 25

OUTCOMES: dict[str, Counter] = defaultdict(Counter)


# =============================================================================================
# the sandbox side: runs in the child interpreter


class _Work:
    """What the sandbox keeps between cases: an image and a Landmarker for the box cases."""

    def __init__(self, model: str) -> None:
        from lightmark.api import Landmarker

        self.image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        self.lm = Landmarker(model=model)


def _check_points(a: Any, shape: tuple) -> Optional[str]:
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != shape:
        return f"result is not float32 {shape}: {type(a).__name__} {getattr(a, 'shape', '')}"
    if not np.all(np.isfinite(a)):
        return "result has non-finite values"
    return None


def _run_case(work: _Work, target: str, args: dict) -> Optional[str]:
    """Run one case; returns a problem with a result (None: a good result). Raises what it raises."""
    from lightmark.core.imaging import as_image, load_image
    from lightmark.data import formats
    from lightmark.data.readers import open_dataset

    if target == "pts":
        return _check_points(formats.read_pts(args["path"]), (68, 2))
    if target == "facesynthetics":
        pts, pupils = formats.read_facesynthetics_labels(args["path"])
        return _check_points(pts, (68, 2)) or _check_points(pupils, (2, 2))
    if target == "mat":
        pts, meta = formats.read_aflw_mat(args["path"])
        bad = [k for k in ("pitch_deg", "yaw_deg", "roll_deg") if k in meta and not math.isfinite(meta[k])]
        return _check_points(pts, (68, 2)) or (f"non-finite pose {bad}" if bad else None)
    if target == "csv":
        names, values, _ = formats.read_keypoint_csv(args["path"])
        for v in values:
            if isinstance(v, Exception):
                if not isinstance(v, formats.DataError) or Path(args["path"]).name not in str(v):
                    return f"row error {type(v).__name__} does not name the file: {v}"
            elif _check_points(v, (68, 2)):
                return _check_points(v, (68, 2))
        ds = open_dataset(args["path"], skip_bad=True)  # the images named are looked up too
        return None if all(_check_points(r.points, (68, 2)) is None for r in ds.records) else "bad record"
    if target == "aflw21":
        from lightmark.data.aflw21 import read_aflw21_csv

        for _, _, v in read_aflw21_csv(args["path"]):
            if isinstance(v, Exception):
                if not isinstance(v, formats.DataError) or Path(args["path"]).name not in str(v):
                    return f"row error {type(v).__name__} does not name the file: {v}"
            elif not (isinstance(v[1], np.ndarray) and v[1].shape == (21, 2) and v[1].dtype == np.float32
                      and math.isfinite(v[0]) and not np.any(np.isinf(v[1]))):
                return f"bad row value {v!r}"
        open_dataset(args["path"], kind="aflw21", skip_bad=True)
        return None
    if target == "image_file":
        img = load_image(args["path"])
        return None if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 else "bad image"
    if target == "image_array":
        a = _make_array(args)
        img = as_image(a)
        return None if img.dtype == np.uint8 and img.shape == (a.shape[0], a.shape[1], 3) else "bad image"
    if target == "box":
        if args["batch"]:
            out = work.lm.predict_batch(work.image, args["box"], box_kind=args["kind"])
            return _check_points(out, (len(out), 68, 2))
        return _check_points(work.lm.predict(work.image, args["box"], box_kind=args["kind"]), (68, 2))
    if target in ("model_json", "onnx", "safetensors"):
        from lightmark.api import Landmarker

        lm = Landmarker(model=args["path"], refine=False)
        return _check_points(lm.predict(work.image, (40, 30, 110, 100)), (68, 2))
    raise AssertionError(f"unknown target {target}")


def _make_array(spec: dict) -> Any:
    if spec.get("ragged"):
        return [[1, 2, 3], [4, 5]]
    rng = np.random.default_rng(spec["seed"])
    shape = tuple(spec["shape"])
    dtype = np.dtype(spec["dtype"])
    scale = spec["scale"]
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        hi = min(int(info.max), int(scale) if scale >= 1 else 1)
        return rng.integers(max(int(info.min), -hi), hi + 1, shape, dtype=np.int64).astype(dtype)
    a = rng.random(shape) * scale + spec["offset"]
    if spec.get("nan") and a.size:
        a.reshape(-1)[0] = np.nan
    return a.astype(dtype)


def worker_main() -> None:  # pragma: no cover - runs in the sandbox
    """The sandbox loop: one JSON case per stdin line, one JSON answer per stdout line."""
    from lightmark.core.errors import LightmarkError

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the channel
    work = _Work(sys.argv[1])
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        case = json.loads(line)
        t = time.monotonic()
        try:
            problem = _run_case(work, case["target"], case["args"])
            answer = {"outcome": "result"} if problem is None else {"outcome": "bug", "why": problem}
        except LightmarkError as e:
            answer = {"outcome": "error", "cls": type(e).__name__, "msg": str(e)[:2000]}
        except BaseException as e:  # anything else escaping is a bug in lightmark
            answer = {"outcome": "bug", "cls": type(e).__name__,
                      "why": "".join(traceback.format_exception(e))[-3000:]}
        answer["seconds"] = round(time.monotonic() - t, 3)
        out.write(json.dumps(answer) + "\n")
        out.flush()


# =============================================================================================
# the test side


class Sandbox:
    """The child interpreter running :func:`worker_main`; restarted after a crash or a timeout."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.proc: Optional[subprocess.Popen] = None
        self._start()

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
                   OMP_NUM_THREADS="1")
        code = "import sys, test_fuzz; test_fuzz.worker_main()"
        self.proc = subprocess.Popen([sys.executable, "-c", code, self.model], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     bufsize=1, env=env)
        line = self._readline(120.0)
        assert line == "ready\n", f"the sandbox did not start: {line!r}"

    def _readline(self, timeout: float) -> Optional[str]:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline()

    def call(self, target: str, args: dict) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"target": target, "args": args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._readline(TIME_BOUND)
        if line:
            return json.loads(line)
        if line is None:  # still running: a hang
            self.proc.kill()
            self.proc.wait()
            self._start()
            return {"outcome": "timeout"}
        rc = self.proc.wait()  # EOF: the sandbox died
        self._start()
        return {"outcome": "crash", "rc": rc}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def base_model(files_dir) -> Path:
    pytest.importorskip("onnx")
    from helpers import write_tiny_model

    return write_tiny_model(files_dir, name="base", head="integral")


@pytest.fixture(scope="module")
def sandbox(base_model):
    box = Sandbox(str(base_model))
    yield box
    box.close()
    report = os.environ.get("LIGHTMARK_FUZZ_REPORT")
    if report:
        totals: Counter = Counter()
        for c in OUTCOMES.values():
            totals.update(c)
        Path(report).write_text(json.dumps({"per_target": {k: dict(v) for k, v in OUTCOMES.items()},
                                            "total": dict(totals), "cases": sum(totals.values())},
                                           indent=1) + "\n")


def n_cases(request, target: str) -> int:
    return CASES[target] * (LONG_FACTOR if request.config.getoption("--fuzz-long") else 1)


def fuzz(request, target: str, strategy, body) -> None:
    """Run ``body`` on ``strategy`` with fixed settings (derandomised: the same cases every run)."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=n_cases(request, target), derandomize=True, database=None, deadline=None,
              print_blob=True, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case) -> None:
        body(case)

    run()


def check(sandbox: Sandbox, target: str, args: dict, names: Optional[str]) -> None:
    """Run a case and assert the property; ``names``: what an error message must name."""
    answer = sandbox.call(target, args)
    kind = answer["outcome"]
    label = {"result": "result", "error": answer.get("cls"), "timeout": "timeout",
             "crash": "crash", "bug": "bug"}[kind]
    OUTCOMES[target][label] += 1
    assert kind != "crash", f"{target}: the process crashed (status {answer.get('rc')}) on {args}"
    assert kind != "timeout", f"{target}: no answer within {TIME_BOUND} s on {args}"
    assert kind != "bug", f"{target}: {answer.get('cls', '')} {answer.get('why')} on {args}"
    if kind == "error" and names is not None:
        assert names in answer["msg"], f"{target}: the error does not name {names!r}: {answer['msg']}"


# ---------------------------------------------------------------------------------------------
# strategies


def _st():
    from hypothesis import strategies as st

    return st


def numbers():
    st = _st()
    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    special = st.sampled_from(["nan", "inf", "-inf", "1e39", "-1e39", "1e7", "1e30", "1e308",
                               "1e-320", "0x10", "1_000", "", "١٢", "12.5.3", "--1", "+3"])
    return st.one_of(floats.map(repr), st.floats(-500, 500).map(lambda v: f"{v:.3f}"),
                     st.integers(-10**6, 10**40).map(str), special)


def text_lines(n_min: int, n_max: int):
    st = _st()
    pair = st.tuples(numbers(), numbers()).map(lambda t: f"{t[0]} {t[1]}")
    line = st.one_of(pair, pair, pair, st.text(max_size=20), numbers(),
                     st.tuples(numbers(), numbers(), numbers()).map(" ".join))
    return st.lists(line, min_size=n_min, max_size=n_max)


def plausible_points(st):
    return st.tuples(st.floats(10, 80), st.floats(10, 80), st.floats(5, 40), st.integers(0, 2**31)).map(
        lambda t: (np.column_stack([t[0] + t[2] * np.cos(np.arange(68) * 0.4 + t[3] % 7),
                                    t[1] + t[2] * np.sin(np.arange(68) * 0.4)])))


def mutated(base: bytes):
    """Bytes of ``base`` with a few edits: flipped bytes, uint32 fields overwritten, cuts, inserts."""
    st = _st()
    n = len(base)
    edit = st.one_of(
        st.tuples(st.just("set"), st.integers(0, n - 1), st.integers(0, 255)),
        st.tuples(st.just("u32"), st.integers(0, max(0, n // 4 - 1)),
                  st.sampled_from([0, 1, 7, 8, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 392, 14, 15])),
        st.tuples(st.just("cut"), st.integers(0, n), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, n), st.integers(0, 255)),
    )

    def apply(edits: list) -> bytes:
        b = bytearray(base)
        for op, at, v in edits:
            if op == "set" and at < len(b):
                b[at] = v
            elif op == "u32" and 4 * at + 4 <= len(b):
                b[4 * at:4 * at + 4] = struct.pack("<I", v)
            elif op == "cut":
                del b[at:]
            elif op == "insert":
                b[at:at] = bytes([v]) * (1 + v % 7)
        return bytes(b)

    return st.one_of(st.lists(edit, min_size=1, max_size=6).map(apply), st.binary(max_size=600))


# ---------------------------------------------------------------------------------------------
# label readers


def test_fuzz_pts(sandbox, files_dir, request) -> None:
    st = _st()
    valid = "version: 1\nn_points: 68\n{\n"
    header = st.sampled_from([valid, valid, valid, "version: 1\nn_points: 67\n{\n",
                              "version: 1\n{\n", "version: 1\nn_points: x\n{\n", "", "version: 2\n"])
    footer = st.sampled_from(["}\n", "}\n", "}\n", "", "}\n}\n", "} trailing\n"])
    plausible = plausible_points(st).map(lambda p: "\n".join(f"{x:.3f} {y:.3f}" for x, y in p) + "\n")
    body = st.one_of(plausible, plausible, text_lines(60, 72).map(lambda ls: "\n".join(ls) + "\n"),
                     text_lines(0, 5).map("\n".join))
    strategy = st.one_of(st.tuples(header, body, footer).map("".join).map(lambda s: s.encode()),
                         st.binary(max_size=300))
    path = files_dir / "case.pts"

    def body_(data: bytes) -> None:
        path.write_bytes(data)
        check(sandbox, "pts", {"path": str(path)}, path.name)

    fuzz(request, "pts", strategy, body_)


def test_fuzz_facesynthetics(sandbox, files_dir, request) -> None:
    st = _st()
    plausible = st.tuples(plausible_points(st), st.floats(0, 100), st.floats(0, 100)).map(
        lambda t: ("\n".join(f"{x:.4f} {y:.4f}" for x, y in t[0]) + f"\n{t[1]} {t[2]}\n1 2\n").encode())
    strategy = st.one_of(plausible, text_lines(66, 72).map(lambda ls: ("\n".join(ls) + "\n").encode()),
                         st.binary(max_size=300))
    path = files_dir / "000001_ldmks.txt"

    def body_(data: bytes) -> None:
        path.write_bytes(data)
        check(sandbox, "facesynthetics", {"path": str(path)}, path.name)

    fuzz(request, "facesynthetics", strategy, body_)


def test_fuzz_csv(sandbox, files_dir, request) -> None:
    from PIL import Image

    st = _st()
    folder = files_dir / "csvset"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(folder / "images" / "a.jpg")
    good = ",".join(f"{v:.2f}" for v in np.tile([40.0, 50.0], 68) + np.arange(136) % 13)
    name = st.sampled_from(["a.jpg", "b.jpg", '"a.jpg"', "", "image", "../a.jpg", "a.jpg\x00"])
    row = st.one_of(st.just(good), st.lists(numbers(), min_size=130, max_size=140).map(",".join))
    table = st.lists(st.tuples(name, row).map(lambda t: f"{t[0]},{t[1]}"), min_size=0, max_size=4)
    header = st.sampled_from(["", "image," + ",".join(f"x{i},y{i}" for i in range(68)) + "\n", "name,x\n"])
    strategy = st.one_of(st.tuples(header, table.map("\n".join)).map(lambda t: (t[0] + t[1]).encode()),
                         st.binary(max_size=400))
    path = folder / "table.csv"

    def body_(data: bytes) -> None:
        path.write_bytes(data)
        check(sandbox, "csv", {"path": str(path)}, path.name)

    fuzz(request, "csv", strategy, body_)


def test_fuzz_aflw21_csv(sandbox, files_dir, request) -> None:
    from PIL import Image

    st = _st()
    folder = files_dir / "aflw21set"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(folder / "images" / "a.jpg")
    good = ",".join(f"{v:.2f}" for v in np.tile([40.0, 50.0], 21) + np.arange(42) % 11)
    name = st.sampled_from(["a.jpg", "b.jpg", '"a.jpg"', "", "image"])
    yaw = st.one_of(numbers(), st.just("12.5"))
    row = st.one_of(st.just(good), st.just(",".join(["-1.00"] * 42)),
                    st.lists(numbers(), min_size=40, max_size=44).map(",".join))
    table = st.lists(st.tuples(name, yaw, row).map(",".join), min_size=0, max_size=4)
    header = st.sampled_from(["", "image,yaw_deg," + ",".join(f"x{i},y{i}" for i in range(21)) + "\n"])
    strategy = st.one_of(st.tuples(header, table.map("\n".join)).map(lambda t: (t[0] + t[1]).encode()),
                         st.binary(max_size=300))
    path = folder / "aflw21.csv"

    def body_(data: bytes) -> None:
        path.write_bytes(data)
        check(sandbox, "aflw21", {"path": str(path)}, path.name)

    fuzz(request, "aflw21", strategy, body_)


def _mat_bases() -> list[bytes]:
    scipy_io = pytest.importorskip("scipy.io")
    out = []
    rng = np.random.default_rng(0)
    p3 = np.vstack([rng.uniform(20, 80, (2, 68)), rng.uniform(-5, 5, (1, 68))]).astype(np.float32)
    for compress in (False, True):
        buf = io.BytesIO()
        scipy_io.savemat(buf, {"roi": np.array([[1, 2, 3, 4]], np.int16), "pt3d_68": p3,
                               "Pose_Para": np.array([[0.1, -0.2, 0.3, 1, 2, 3, 0.001]], np.float32)},
                         do_compression=compress)
        out.append(buf.getvalue())
    return out


def test_fuzz_aflw_mat(sandbox, files_dir, request) -> None:
    st = _st()
    strategy = st.one_of(*[mutated(b) for b in _mat_bases()])
    path = files_dir / "image00001.mat"

    def body_(data: bytes) -> None:
        path.write_bytes(data)
        check(sandbox, "mat", {"path": str(path)}, path.name)

    fuzz(request, "mat", strategy, body_)


# ---------------------------------------------------------------------------------------------
# images


def _image_bases() -> list[tuple[str, bytes]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    out = []
    for fmt, ext, kw in (("PNG", ".png", {}), ("JPEG", ".jpg", {"quality": 80}), ("GIF", ".gif", {}),
                         ("BMP", ".bmp", {}), ("TIFF", ".tif", {}), ("WEBP", ".webp", {})):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out.append((ext, buf.getvalue()))
    buf = io.BytesIO()
    Image.fromarray((rng.integers(0, 65535, (16, 16))).astype(np.uint16)).save(buf, format="PNG")
    out.append((".png", buf.getvalue()))
    return out


def test_fuzz_image_files(sandbox, files_dir, request) -> None:
    st = _st()
    bases = _image_bases()
    strategy = st.one_of(*[mutated(b).map(lambda d, e=ext: (e, d)) for ext, b in bases])

    def body_(case: tuple[str, bytes]) -> None:
        ext, data = case
        path = files_dir / f"photo{ext}"
        path.write_bytes(data)
        check(sandbox, "image_file", {"path": str(path)}, path.name)

    fuzz(request, "image_file", strategy, body_)


def test_fuzz_image_arrays(sandbox, request) -> None:
    st = _st()
    shape = st.one_of(st.tuples(st.integers(0, 40), st.integers(0, 40)),
                      st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 5)),
                      st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple))
    spec = st.fixed_dictionaries({
        "shape": shape,
        "dtype": st.sampled_from(["uint8", "uint16", "float16", "float32", "float64", "bool", "int8",
                                  "int32", "int64", "complex64", "uint32"]),
        "scale": st.sampled_from([1.0, 255.0, 65535.0, 1e30, 0.5]),
        "offset": st.sampled_from([0.0, -0.5, 0.001]),
        "nan": st.booleans(), "seed": st.integers(0, 1000),
        "ragged": st.sampled_from([False] * 9 + [True]),
    })

    def body_(args: dict) -> None:
        check(sandbox, "image_array", args, None)

    fuzz(request, "image_array", spec, body_)


# ---------------------------------------------------------------------------------------------
# boxes


def test_fuzz_boxes(sandbox, request) -> None:
    st = _st()
    coord = st.one_of(st.floats(-300, 500), st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from([0.0, -1e9, 1e9, 1e300, -1e300, 5e-324, 159.999, 120.0]))
    plausible = st.tuples(st.floats(-50, 150), st.floats(-50, 110), st.floats(0.5, 400),
                          st.floats(0.5, 400)).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])
    box = st.one_of(plausible, plausible, st.lists(coord, min_size=0, max_size=6))
    strategy = st.fixed_dictionaries({
        "box": st.one_of(box, st.lists(st.lists(coord, min_size=4, max_size=5), min_size=0, max_size=3),
                         st.sampled_from(["10,20,30,40", None, [], [[1, 2], [3]]])),
        "kind": st.sampled_from(["face", "landmarks", "face", "other"]),
        "batch": st.booleans(),
    })

    def body_(args: dict) -> None:
        check(sandbox, "box", args, None)

    fuzz(request, "box", strategy, body_)


# ---------------------------------------------------------------------------------------------
# model files


def _json_value():
    st = _st()
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                       st.sampled_from(["heatmap", "integral", "regression", "subpixel", "argmax"]))
    return st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=6)


def test_fuzz_model_json(sandbox, files_dir, base_model, request) -> None:
    st = _st()
    meta = json.loads(base_model.with_suffix(".json").read_text())
    keys = ["model", "codec", "crop_scale", "onnx_sha256", "format", "model.head", "model.input_size",
            "model.heatmap_size", "model.num_points", "codec.decoder", "codec.sigma", "model.upsample_strides"]
    edit = st.tuples(st.sampled_from(keys), st.one_of(_json_value(), st.just("<delete>")))
    folder = files_dir / "jsonmodel"
    folder.mkdir(exist_ok=True)
    onnx = folder / "m.onnx"
    onnx.write_bytes(base_model.read_bytes())

    def build(edits: list) -> bytes:
        m = json.loads(json.dumps(meta))
        for key, value in edits:
            node, *rest = key.split(".")
            parent, leaf = (m, node) if not rest else (m.get(node), rest[0])
            if not isinstance(parent, dict):
                continue
            if value == "<delete>":
                parent.pop(leaf, None)
            else:
                parent[leaf] = value
        return json.dumps(m).encode()

    strategy = st.one_of(st.lists(edit, min_size=1, max_size=4).map(build), st.binary(max_size=200),
                         _json_value().map(lambda v: json.dumps(v).encode()))

    def body_(data: bytes) -> None:
        (folder / "m.json").write_bytes(data)
        check(sandbox, "model_json", {"path": str(onnx)}, "m.")

    fuzz(request, "model_json", strategy, body_)


def test_fuzz_onnx_files(sandbox, files_dir, base_model, request) -> None:
    from lightmark.core.files import sha256

    st = _st()
    meta = json.loads(base_model.with_suffix(".json").read_text())
    folder = files_dir / "onnxmodel"
    folder.mkdir(exist_ok=True)
    path = folder / "m.onnx"

    def body_(data: bytes) -> None:
        path.write_bytes(data)
        # The checksum matches, so the mutated graph really reaches onnxruntime's parser.
        (folder / "m.json").write_text(json.dumps(dict(meta, onnx_sha256=sha256(path))))
        check(sandbox, "onnx", {"path": str(path)}, "m.")

    fuzz(request, "onnx", mutated(base_model.read_bytes()), body_)


def test_fuzz_safetensors_files(sandbox, files_dir, request) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from helpers import randomize, tiny

    from lightmark.core.files import sha256
    from lightmark.models import build_model, save_model

    folder = files_dir / "stmodel"
    folder.mkdir(exist_ok=True)
    model = randomize(build_model(tiny(input_size=32, head_channels=8, heatmap_size=4)))
    save_model(model, {"codec": {"decoder": "subpixel"}, "crop_scale": 1.25}, folder / "base")
    base = (folder / "base.safetensors").read_bytes()
    meta = json.loads((folder / "base.json").read_text())
    path = folder / "m.safetensors"

    def body_(data: bytes) -> None:
        path.write_bytes(data)
        (folder / "m.json").write_text(json.dumps(dict(meta, sha256=sha256(path))))
        check(sandbox, "safetensors", {"path": str(path)}, "m.")

    fuzz(request, "safetensors", mutated(base), body_)


def test_pickle_disguised_as_safetensors_never_runs(sandbox, files_dir, tmp_path) -> None:
    """A torch.save-style pickle named .safetensors (checksum right) is refused, its code never run."""
    import pickle

    from lightmark.core.files import sha256

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    folder = files_dir / "pickle"
    folder.mkdir(exist_ok=True)
    path = folder / "evil.safetensors"
    path.write_bytes(pickle.dumps({"weights": Payload()}))
    meta = {"format": "lightmark-model/1", "model": {"head": "integral", "input_size": 32},
            "codec": {}, "crop_scale": 1.25, "sha256": sha256(path)}
    (folder / "evil.json").write_text(json.dumps(meta))
    pytest.importorskip("torch")
    answer = sandbox.call("safetensors", {"path": str(path)})
    assert answer["outcome"] == "error" and "evil" in answer["msg"], answer
    assert not marker.exists()
