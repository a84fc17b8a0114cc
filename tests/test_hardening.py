"""Hardening: no hangs, no lost work, no silent wrong answers (one regression test per failure).

Each test names the issue item it covers. Nothing here needs the shared data except where it says
so (and then it skips inside the test).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightmark.cli import main
from lightmark.core import files, geometry
from lightmark.core.errors import (DataError, GeometryError, ImageError, LandmarkerError,
                                   LightmarkError, ModelFileError)
from lightmark.core.imaging import IMAGE_SUFFIXES, as_image, load_image, to_rgb8
from lightmark.data.formats import read_aflw_mat, read_facesynthetics_labels, read_keypoint_csv, read_pts
from lightmark.data.readers import open_dataset

pytest.importorskip("onnx")
from helpers import write_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
EXAMPLE = SRC / "lightmark" / "assets" / "example.jpg"
SHARED = REPO.parent / "shared" / "data"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def python(code: str, timeout: float = 120, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout's lightmark."""
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(REPO / "tests")]), OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=e, **kw)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(write_tiny_model(tmp_path_factory.mktemp("model"), gain=0.0))


def face_points(cx: float = 50.0, cy: float = 50.0, s: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    p = np.column_stack([cx + s * rng.uniform(-1, 1, 68), cy + s * rng.uniform(-1, 1, 68)])
    p[36:48, 1] = cy - 0.4 * s
    p[48:68, 1] = cy + 0.5 * s
    return p


def write_pts(path: Path, pts: np.ndarray) -> None:
    body = "\n".join(f"{float(x)!r} {float(y)!r}" for x, y in pts)
    path.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


def pts_set(folder: Path, n: int = 3, size: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 100 + 10 * i, np.uint8)).save(folder / f"face{i}.jpg")
        write_pts(folder / f"face{i}.pts", face_points() + 1)
    return folder


# ---------------------------------------------------------------------------------------------
# 2. huge crops


def test_warp_image_work_is_bounded_by_the_output() -> None:
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for side in (1e5, 1e9, 1e15):
        t = time.monotonic()
        crop = geometry.warp_image(image, geometry.crop_matrix((320, 240), side, 128), 128)
        assert crop.shape == (128, 128, 3) and time.monotonic() - t < 2.0, side
    # A side so large that the matrix underflows: a named geometry error, not ZeroDivisionError.
    with pytest.raises(GeometryError, match="crop matrix"):
        geometry.warp_image(image, geometry.crop_matrix((320, 240), 1e300, 128), 128)
    with pytest.raises(GeometryError):
        geometry.warp_image(image, np.full((2, 3), np.nan), 128)


def test_area_shrink_matches_the_gaussian_path() -> None:
    # Below 1/16 the crop is area-averaged first: on smooth content it must stay what the plain
    # blur-and-sample gave (1 level of 255), so large faces crop as before.
    import cv2

    yy, xx = np.mgrid[:3000, :3000]
    img = ((np.sin(xx / 150) + np.cos(yy / 97)) * 60 + 128).astype(np.uint8)
    img = np.repeat(img[..., None], 3, axis=2)
    for centre, inside in (((1500, 1500), True), ((1500, 300), False)):
        m = geometry.crop_matrix(centre, 128 * 20.0, 128, angle_deg=10)
        sigma = 0.25 * 20
        k = int(2 * round(3 * sigma) + 1)
        ref = cv2.warpAffine(cv2.GaussianBlur(img, (k, k), sigma), m, (128, 128), flags=cv2.INTER_LINEAR)
        diff = np.abs(geometry.warp_image(img, m, 128).astype(int) - ref)
        if inside:
            assert diff.max() <= 1
        else:  # where the photo ends, its last (partly covered) crop pixels may differ
            assert (diff > 1).mean() < 0.01


@pytest.mark.parametrize("box", [(-1e9, -1e9, 1e9, 1e9), (-1e300, -1e300, 1e300, 1e300),
                                 (10, 10, 10.5, 10.5), (-5e4, 0, 5e4, 200)])
def test_absurd_boxes_are_refused_by_name(model, box) -> None:
    from lightmark.api import Landmarker

    lm = Landmarker(model=model)
    image = np.full((240, 320, 3), 128, np.uint8)
    t = time.monotonic()
    with pytest.raises(LandmarkerError, match="absurd") as ei:
        lm.predict(image, box)
    assert time.monotonic() - t < 2.0
    assert "np.float64" not in str(ei.value)


def test_cli_huge_box_ends_quickly(model, capsys) -> None:
    t = time.monotonic()
    rc, _, err = run(["predict", str(EXAMPLE), "--model", model, "--box=-1e9,-1e9,1e9,1e9"], capsys)
    assert rc == 2 and "absurd" in err and time.monotonic() - t < 10


@pytest.mark.parametrize("value", ["1e7", "1e30", "-3e6"])
def test_absurd_label_coordinates_are_refused_by_name(tmp_path, value) -> None:
    d = pts_set(tmp_path / "set")
    text = (d / "face1.pts").read_text().splitlines()
    text[3] = f"{value} 20.0"
    (d / "face1.pts").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match="face1.pts.*absurd"):
        open_dataset(d)
    ds = open_dataset(d, skip_bad=True)  # --skip-bad skips it
    assert len(ds) == 2 and "face1.pts" in ds.bad[0][0]


def test_labels_far_outside_their_image_are_refused_at_load(tmp_path, model, capsys) -> None:
    # 5000 px is not absurd in itself, but it is for a 100 px photo: found when the image is read.
    d = pts_set(tmp_path / "set")
    pts = face_points() + 1
    pts[5] = (5000.0, 20.0)
    write_pts(d / "face1.pts", pts)
    ds = open_dataset(d)
    with pytest.raises(DataError, match=r"face1\.pts.*far outside the 100x100 image"):
        ds[1]
    t = time.monotonic()
    rc, _, err = run(["evaluate", "--data", str(d), "--model", model, "--quiet"], capsys)
    assert rc == 2 and "face1.pts" in err and time.monotonic() - t < 30


def test_training_cache_skips_absurd_labels(tmp_path) -> None:
    pytest.importorskip("torch")
    from lightmark.training.data import CropCache

    d = pts_set(tmp_path / "set")
    pts = face_points() + 1
    pts[5] = (5000.0, 20.0)
    write_pts(d / "face1.pts", pts)
    ds = open_dataset(d, skip_bad=True)
    t = time.monotonic()
    cache = CropCache(ds, 64, 1.25, skip_bad=True, log=lambda _m: None)
    assert len(cache) == 2 and time.monotonic() - t < 10
    with pytest.raises(DataError, match="face1.pts"):
        CropCache(ds, 64, 1.25, skip_bad=False, log=lambda _m: None)


# ---------------------------------------------------------------------------------------------
# 3. --json never writes over an input


def test_json_option_never_swallows_an_image(model, tmp_path, capsys) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(EXAMPLE.read_bytes())
    b.write_bytes(EXAMPLE.read_bytes())
    before = a.read_bytes()
    rc, out, err = run(["predict", "--json", str(a), str(b), "--model", model], capsys)
    assert rc == 2 and "--json" in err and a.read_bytes() == before
    rc, out, err = run(["predict", "--json=-", str(a), str(b), "--model", model, "--quiet"], capsys)
    assert rc in (0, 1) and len(json.loads(out)["images"]) == 2
    rc, out, err = run(["predict", str(a), "--model", model, "--out", str(a)], capsys)
    assert rc == 2 and "overwrite" in err and a.read_bytes() == before
    rc, _, err = run(["predict", str(a), "--model", model, "--json", str(tmp_path / "r.json")], capsys)
    assert rc in (0, 1) and json.loads((tmp_path / "r.json").read_text())["complete"] is True


# ---------------------------------------------------------------------------------------------
# 4-6. .mat files and label values


def _uncompressed_mat_with_bad_type(path: Path) -> None:
    """An uncompressed AFLW-like .mat whose pt3d_68 data tag names type 392: scipy.io.loadmat
    died with SIGSEGV on it."""
    scipy_io = pytest.importorskip("scipy.io")
    import struct

    p3 = np.vstack([face_points().T, np.zeros((1, 68))]).astype(np.float32)
    scipy_io.savemat(str(path), {"Pose_Para": np.zeros((1, 7), np.float32), "pt3d_68": p3},
                     do_compression=False)
    data = bytearray(path.read_bytes())
    # The real part's tag is the last data element: type miSINGLE (7), 816 bytes (3 x 68 x 4).
    at = bytes(data).rfind(struct.pack("<II", 7, 816))
    assert at > 0
    data[at:at + 4] = struct.pack("<I", 392)
    path.write_bytes(bytes(data))


def test_corrupt_uncompressed_mat_is_a_named_error_not_a_crash(tmp_path) -> None:
    bad = tmp_path / "image00001.mat"
    _uncompressed_mat_with_bad_type(bad)
    # In a child process: before the fix this killed the interpreter (SIGSEGV).
    r = python(f"""
        from lightmark.data.formats import read_aflw_mat
        from lightmark.core.errors import DataError
        try:
            read_aflw_mat({str(bad)!r})
        except DataError as e:
            print("DataError:", e)
        """)
    assert r.returncode == 0, r.stderr
    assert "DataError:" in r.stdout and "image00001.mat" in r.stdout


def test_corrupt_mat_in_a_folder_is_skipped_or_named(tmp_path, model, capsys) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    d = tmp_path / "aflw"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.full((100, 100, 3), 120, np.uint8)).save(d / f"image0000{i}.jpg")
        p3 = np.vstack([(face_points() + 1).T, np.zeros((1, 68))]).astype(np.float32)
        scipy_io.savemat(str(d / f"image0000{i}.mat"), {"pt3d_68": p3,
                                                        "Pose_Para": np.zeros((1, 7), np.float32)})
    _uncompressed_mat_with_bad_type(d / "image00001.mat")
    ds = open_dataset(d, skip_bad=True)
    assert len(ds) == 2 and "image00001.mat" in ds.bad[0][0]
    rc, _, err = run(["evaluate", "--data", str(d), "--model", model, "--quiet"], capsys)
    assert rc == 2 and "image00001.mat" in err


def test_our_mat_reader_matches_scipy_on_the_real_files() -> None:
    scipy_io = pytest.importorskip("scipy.io")
    mats = sorted((SHARED / "aflw2000_val").glob("*.mat"))[:60] + sorted((SHARED / "aflw2000_sample").glob("*.mat"))
    if not mats:
        pytest.skip("shared AFLW2000-3D data not present")
    from lightmark.data.matfile import read_mat_arrays

    for p in mats:
        ours = read_mat_arrays(p, ["pt3d_68", "Pose_Para"])
        ref = scipy_io.loadmat(str(p), variable_names=["pt3d_68", "Pose_Para"])
        for k in ("pt3d_68", "Pose_Para"):
            assert np.array_equal(ours[k], ref[k].astype(np.float64)), (p, k)


@pytest.mark.parametrize("value", ["a string", {"x": np.zeros(3)}, np.array([1 + 2j] * 204).reshape(3, 68)])
@pytest.mark.parametrize("compress", [False, True])
def test_non_numeric_mat_variables_name_the_file(tmp_path, value, compress) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    path = tmp_path / "image00007.mat"
    scipy_io.savemat(str(path), {"pt3d_68": value}, do_compression=compress)
    with pytest.raises(DataError, match=r"image00007\.mat: pt3d_68 is .*not numbers"):
        read_aflw_mat(path)
    Image.fromarray(np.full((100, 100, 3), 120, np.uint8)).save(tmp_path / "image00007.jpg")
    with pytest.raises(DataError, match="no usable samples"):
        open_dataset(tmp_path, skip_bad=True)  # skipped (and then nothing is left)


@pytest.mark.parametrize("big", ["1e39", "-3.5e38", "1e300"])
def test_labels_are_checked_after_the_float32_cast(tmp_path, big) -> None:
    pts = face_points()
    write_pts(tmp_path / "a.pts", pts)
    lines = (tmp_path / "a.pts").read_text().splitlines()
    lines[10] = f"{big} 1.0"
    (tmp_path / "a.pts").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"a\.pts"):
        read_pts(tmp_path / "a.pts")
    fs = tmp_path / "000001_ldmks.txt"
    fs.write_text("\n".join(f"{x} {y}" for x, y in face_points()) + f"\n{big} 1\n3 4\n")
    with pytest.raises(DataError, match="000001_ldmks.txt"):
        read_facesynthetics_labels(fs)
    # CSV: the fast (numpy) path and the row-by-row path both give the row's error.
    row = ",".join(f"{v:.3f}" for v in face_points().reshape(-1))
    bad = ",".join([big] + [f"{v:.3f}" for v in face_points().reshape(-1)[1:]])
    for quoted in (False, True):
        name = '"b.jpg"' if quoted else "b.jpg"
        (tmp_path / "t.csv").write_text(f"a.jpg,{row}\n{name},{bad}\n")
        names, values, _ = read_keypoint_csv(tmp_path / "t.csv")
        assert isinstance(values[0], np.ndarray) and np.all(np.isfinite(values[0]))
        assert isinstance(values[1], DataError) and "row 2" in str(values[1]) and "t.csv" in str(values[1])


def test_aflw21_rows_and_pt2d_are_checked_like_the_68_point_labels(tmp_path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    from lightmark.data.aflw21 import read_aflw2000_pt2d, read_aflw21_csv

    good = ",".join(f"{v:.2f}" for v in np.tile([40.0, 50.0], 21) + np.arange(42))
    for big in ("1e39", "3e7"):
        (tmp_path / "aflw21.csv").write_text(f"a.jpg,10,{good}\nb.jpg,10,{big},{good.split(',', 1)[1]}\n")
        rows = read_aflw21_csv(tmp_path / "aflw21.csv")
        assert np.all(np.isfinite(rows[0][2][1]))
        assert isinstance(rows[1][2], DataError) and "row 2" in str(rows[1][2])
    # pt2d through the strict .mat reader: a corrupt type tag is a named error, not a crash.
    path = tmp_path / "image00009.mat"
    scipy_io.savemat(str(path), {"pt2d": np.full((2, 21), 30.0)}, do_compression=False)
    assert read_aflw2000_pt2d(path).shape == (21, 2)
    data = bytearray(path.read_bytes())
    import struct

    at = bytes(data).rfind(struct.pack("<II", 9, 2 * 21 * 8))
    data[at:at + 4] = struct.pack("<I", 392)
    path.write_bytes(bytes(data))
    r = python(f"""
        from lightmark.data.aflw21 import read_aflw2000_pt2d
        from lightmark.core.errors import DataError
        try:
            read_aflw2000_pt2d({str(path)!r})
        except DataError as e:
            print("DataError:", e)
        """)
    assert r.returncode == 0 and "DataError:" in r.stdout and "image00009.mat" in r.stdout, r.stderr


def test_degenerate_points_are_refused(tmp_path) -> None:
    write_pts(tmp_path / "flat.pts", np.column_stack([np.linspace(0, 50, 68), np.full(68, 7.0)]))
    with pytest.raises(DataError, match=r"flat\.pts: degenerate"):
        read_pts(tmp_path / "flat.pts")


# ---------------------------------------------------------------------------------------------
# 7. config types


@pytest.mark.parametrize("override, words", [("train.epochs=three", ["train.epochs", "integer"]),
                                             ("train.epochs=-1", ["train.epochs", "at least 1"]),
                                             ("train.lr=fast", ["train.lr", "number"])])
def test_bad_config_values_exit_2_naming_the_key(tmp_path, capsys, override, words) -> None:
    pytest.importorskip("torch")
    cfg = tmp_path / "c.yaml"
    # Data that does not exist: a config error must come first, before any data is read.
    cfg.write_text(f"train_data: [{{path: {tmp_path / 'nothing'}}}]\nout_dir: {tmp_path / 'run'}\n")
    t = time.monotonic()
    rc, out, err = run(["train", str(cfg), "--set", override], capsys)
    assert rc == 2, err
    assert all(w in err for w in words), err
    assert "internal error" not in err and time.monotonic() - t < 30
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# 8. torch-free install with a .safetensors model


def test_safetensors_model_without_torch_says_what_to_install(tmp_path) -> None:
    (tmp_path / "m.safetensors").write_bytes(b"\0" * 16)
    (tmp_path / "m.json").write_text("{}")
    r = python(f"""
        import sys
        sys.modules["torch"] = None  # as in the torch-free install: `import torch` fails
        from lightmark.cli import main
        sys.exit(main(["predict", {str(EXAMPLE)!r}, "--model", {str(tmp_path / 'm.safetensors')!r}]))
        """)
    assert r.returncode == 2, r.stderr
    assert "lightmark[train]" in r.stderr and "internal error" not in r.stderr


# ---------------------------------------------------------------------------------------------
# 9. one bad input does not stop a batch


def test_predict_goes_on_past_an_empty_folder(model, tmp_path, capsys) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(EXAMPLE.read_bytes())
    (tmp_path / "empty").mkdir()
    rc, out, err = run(["predict", str(good), str(tmp_path / "empty"), "--model", model,
                        "--json", "--quiet"], capsys)
    report = json.loads(out)
    assert [Path(r["image"]).name for r in report["images"]] == ["good.jpg"]
    assert any("empty" in e and "no images" in e for e in report["errors"])
    assert rc in (0, 1)
    rc, _, err = run(["predict", str(tmp_path / "empty"), "--model", model], capsys)
    assert rc == 2 and "no images" in err


def test_predict_many_on_error(model, tmp_path) -> None:
    from lightmark.api import Landmarker

    lm = Landmarker(model=model)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    images = [str(EXAMPLE), str(broken), np.zeros((1, 1, 3), np.uint8)]
    with pytest.raises(ImageError, match="broken.jpg"):
        lm.predict_many(images)
    skipped = lm.predict_many(images, on_error="skip")
    returned = lm.predict_many(images, on_error="return")
    alone = lm.predict_many([str(EXAMPLE)])[0]
    assert len(alone) >= 1
    for out in (skipped, returned):
        assert len(out) == 3
        assert [f.box.tolist() for f in out[0]] == [f.box.tolist() for f in alone]
        assert all(np.array_equal(f.points, g.points) for f, g in zip(out[0], alone))
    assert skipped[1] == [] and skipped[2] == []
    assert isinstance(returned[1], ImageError) and "broken.jpg" in str(returned[1])
    assert isinstance(returned[2], ImageError)
    with pytest.raises(LandmarkerError, match="on_error"):
        lm.predict_many(images, on_error="ignore")


def test_folder_scan_finds_every_format_pillow_reads(model, tmp_path, capsys) -> None:
    from PIL import features

    face = Image.open(EXAMPLE).convert("RGB").resize((200, 150))
    face.save(tmp_path / "a.gif")
    names = ["a.gif"]
    if features.check("avif"):
        face.save(tmp_path / "b.avif")
        names.append("b.avif")
    (tmp_path / "c.heic").write_bytes(b"\0\0\0\x18ftypheic")  # no plugin here: must be reported
    (tmp_path / "notes.txt").write_text("not an image")
    rc, out, err = run(["predict", str(tmp_path), "--model", model, "--json", "--quiet"], capsys)
    report = json.loads(out)
    assert sorted(Path(r["image"]).name for r in report["images"]) == sorted(names)
    assert any("c.heic" in e for e in report["errors"]) or "c.heic" in [Path(r["image"]).name for r in report["images"]]
    assert "notes.txt" not in out


def test_image_suffixes_are_formats_pillow_reads() -> None:
    from PIL import Image as PILImage

    PILImage.init()
    readable = {ext for ext, fmt in PILImage.registered_extensions().items() if fmt in PILImage.OPEN}
    plugin_only = {".heic", ".heif"}  # pillow-heif
    assert set(IMAGE_SUFFIXES) - plugin_only <= readable, set(IMAGE_SUFFIXES) - plugin_only - readable
    common = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".avif"}
    assert common <= set(IMAGE_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# 10. float and uint16 arrays


def test_out_of_range_arrays_are_refused_not_clipped() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    with pytest.raises(ImageError, match=r"\[0, 1\].*divide by 255"):
        to_rgb8(rgb.astype(np.float32))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        to_rgb8((rgb.astype(np.float32) / 255 - 0.45) / 0.22)  # ImageNet-normalised
    with pytest.raises(ImageError, match="uint16.*astype"):
        to_rgb8(rgb.astype(np.uint16))
    assert np.array_equal(to_rgb8(rgb.astype(np.float64) / 255), rgb)
    assert np.array_equal(to_rgb8(rgb.astype(np.uint16) * 257), rgb)
    # Rounding noise just past 1 (under half a level) is still accepted.
    assert to_rgb8(np.full((4, 4), 1.001)).min() == 255


# ---------------------------------------------------------------------------------------------
# 11. results kept as they are made; temporaries cleaned up


def _photo_folder(folder: Path, n: int) -> Path:
    folder.mkdir()
    face = Image.open(EXAMPLE).convert("RGB").resize((160, 120))
    for i in range(n):
        face.save(folder / f"p{i:03d}.jpg")
    return folder


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_sigkill_keeps_the_finished_photos(model, tmp_path, suffix) -> None:
    photos = _photo_folder(tmp_path / "photos", 20)
    out = tmp_path / f"r{suffix}"
    # The child kills itself (SIGKILL: no clean-up at all) when it loads the 13th photo.
    r = python(f"""
        import os, signal
        import lightmark.cli.predict as P
        import lightmark.core.imaging as I
        P.JSON_REWRITE_S = 0.0
        real, calls = I.load_image, [0]
        def load(path, *a, **k):
            calls[0] += 1
            if calls[0] == 13:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, *a, **k)
        I.load_image = load
        from lightmark.cli import main
        main(["predict", {str(photos)!r}, "--model", {model!r}, "--json", {str(out)!r}, "--quiet"])
        """)
    assert r.returncode == -signal.SIGKILL, r.stderr
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        doc = json.loads(out.read_text())
        assert doc["complete"] is False
        rows = doc["images"]
    assert [Path(r["image"]).name for r in rows] == [f"p{i:03d}.jpg" for i in range(8)]  # one chunk
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sigint_writes_what_is_finished(model, tmp_path, monkeypatch, capsys) -> None:
    import lightmark.core.imaging as imaging

    photos = _photo_folder(tmp_path / "photos", 12)
    real, calls = imaging.load_image, [0]

    def load(path, *a, **k):
        calls[0] += 1
        if calls[0] == 10:
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(imaging, "load_image", load)
    out = tmp_path / "r.json"
    rc, _, err = run(["predict", str(photos), "--model", model, "--json", str(out), "--quiet"], capsys)
    assert rc == 130 and "interrupted after 8 of 12" in err
    doc = json.loads(out.read_text())
    assert doc["complete"] is False and len(doc["images"]) == 8


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path) -> None:
    # A writer killed between its temporary and the rename (the fault hook's first step).
    target = tmp_path / "report.json"
    r = python(f"""
        from lightmark.core.files import write_text
        write_text({str(target)!r}, "x")
        """, env={"LIGHTMARK_TEST_KILL_AT_WRITE": "1"})
    assert r.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and not target.exists()
    # A temporary of a live writer (this process) is left alone.
    mine = tmp_path / (files.temp_name(tmp_path / "other.json") + "abcdefgh.tmp")
    mine.write_text("in progress")
    removed = files.clean_stale_temporaries(tmp_path)
    assert removed == left and mine.exists() and not left[0].exists()
    # atomic writes sweep a folder by themselves (once per process).
    r = python(f"""
        import pathlib
        from lightmark.core.files import write_text
        p = pathlib.Path({str(tmp_path)!r})
        stale = p / ".a.json.{files._HOST}-999999999.zzzzzzzz.tmp"
        stale.write_text("old")
        write_text(p / "b.json", "{{}}")
        print(stale.exists())
        """)
    assert r.stdout.strip() == "False", r.stderr


# ---------------------------------------------------------------------------------------------
# 12. smaller ones


def test_write_errors_name_the_file_not_the_temporary(tmp_path, capsys, model) -> None:
    (tmp_path / "r.json").mkdir()  # a folder where the report should go
    with pytest.raises(OSError) as ei:
        files.write_text(tmp_path / "r.json", "{}")
    assert "r.json" in str(ei.value) and ".tmp" not in str(ei.value)
    rc, _, err = run(["predict", str(EXAMPLE), "--model", model, "--json", str(tmp_path / "r.json")],
                     capsys)
    assert rc == 2 and ".tmp" not in err and "r.json" in err


def test_messages_show_plain_numbers() -> None:
    for bad in [(5.0, 5.0, 1.0, 10.0), np.array([0, 0, np.nan, 4])]:
        with pytest.raises(GeometryError) as ei:
            geometry.as_box(bad)
        assert "np.float64" not in str(ei.value)


def test_evaluate_json_dash_is_stdout(model, tmp_path, monkeypatch, capsys) -> None:
    d = pts_set(tmp_path / "set")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["evaluate", "--data", str(d), "--model", model, "--json", "-", "--quiet"], capsys)
    assert rc == 0, err
    assert json.loads(out)["summary"]["n"] == 3 and "NME" in err
    assert not (tmp_path / "-").exists()


def test_bytes_and_pathlike_paths(model) -> None:
    from lightmark.api import Landmarker

    img = load_image(os.fsencode(str(EXAMPLE)))
    assert np.array_equal(img, load_image(EXAMPLE))
    lm = Landmarker(model=model)
    box = (60, 40, 200, 200)
    assert np.array_equal(lm.predict(os.fsencode(str(EXAMPLE)), box), lm.predict(str(EXAMPLE), box))
    with pytest.raises(ImageError, match="nope.jpg"):
        as_image(b"/nowhere/nope.jpg")
    with pytest.raises(ImageError):
        as_image("bad\0name.jpg")


def test_model_json_with_unknown_head_fails_at_load(tmp_path, model) -> None:
    from lightmark.api import Landmarker
    from lightmark.core.modelfile import read_meta

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(Path(model).read_bytes())
    meta = json.loads(Path(model).with_suffix(".json").read_text())
    meta["model"]["head"] = "transformer"
    bad.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"bad\.json: unknown head 'transformer'"):
        read_meta(bad.with_suffix(".json"))
    with pytest.raises(ModelFileError, match="unknown head"):
        Landmarker(model=bad)


@pytest.mark.parametrize("edit", [("model", "num_points", None), ("model", "input_size", 32.5),
                                  ("model", "input_size", True), ("model", "heatmap_size", "4"),
                                  (None, "codec", [1]), ("codec", "decoder", "magic"),
                                  (None, "crop_scale", float("inf"))])
def test_model_json_fields_are_checked_at_load(tmp_path, model, edit) -> None:
    # Found by tests/test_fuzz.py: num_points null gave a TypeError at load, a NaN ONNX output
    # gave NaN points.
    from lightmark.api import Landmarker

    bad = tmp_path / "m.onnx"
    bad.write_bytes(Path(model).read_bytes())
    meta = json.loads(Path(model).with_suffix(".json").read_text())
    section, key, value = edit
    (meta[section] if section else meta)[key] = value
    bad.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"m\.json"):
        Landmarker(model=bad)


def test_a_model_answering_nan_is_an_error_not_an_answer(tmp_path) -> None:
    from lightmark.api import Landmarker

    nan_model = write_tiny_model(tmp_path, name="nanny", gain=float("nan"))
    with pytest.raises(ModelFileError, match=r"nanny\.onnx.*non-finite"):
        Landmarker(model=nan_model).predict(np.full((100, 100, 3), 9, np.uint8), (20, 20, 80, 80))


def test_atomic_writes_get_ordinary_permissions(tmp_path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    with files.atomic_path(tmp_path / "x.bin") as tmp:
        # A writer that replaces the file with a private one (safetensors' save_file does).
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.close(fd)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------------------
# already holding, kept so: threads and memory


def test_threads_sharing_a_landmarker_match_one_thread(model) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from lightmark.api import Landmarker

    lm = Landmarker(model=model)
    photo = load_image(EXAMPLE)
    boxes = [(40 + 3 * i, 30 + 2 * i, 200 + i, 190 + 2 * i) for i in range(24)]
    one = [lm.predict(photo, b) for b in boxes] + [f.points for f in lm.predict_all(photo)]
    fresh = Landmarker(model=model)  # its detector is made by the threads, once
    with ThreadPoolExecutor(4) as pool:
        many = list(pool.map(lambda b: fresh.predict(photo, b), boxes))
        alls = list(pool.map(lambda _: fresh.predict_all(photo), range(4)))
    assert all(np.array_equal(a, b) for a, b in zip(one, many))
    for faces in alls:
        assert all(np.array_equal(f.points, p) for f, p in zip(faces, one[len(boxes):]))


def test_memory_stays_flat_over_many_calls(model) -> None:
    import tracemalloc

    from lightmark.api import Landmarker

    lm = Landmarker(model=model)
    photo = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for _ in range(50):
        lm.predict(photo, (20, 20, 100, 100))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(2000):
        lm.predict(photo, (20 + i % 7, 20, 100, 100 + i % 5))
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 1_000_000, f"{grown} bytes more after 2,000 calls"


def test_all_errors_are_lightmark_errors() -> None:
    assert issubclass(GeometryError, LightmarkError) and issubclass(GeometryError, ValueError)
