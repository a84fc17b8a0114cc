"""The `lightmark` command line: predict on photos of every kind, evaluate, info, and errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightmark.cli import main

pytest.importorskip("onnx")
from helpers import write_tiny_model  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Photos come from the tiny generated set (conftest.tiny_faces: faces cut from the bundled
# example photo); only the evaluation of AFLW2000-3D files needs the shared data.


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(write_tiny_model(tmp_path_factory.mktemp("model"), gain=0.0))


@pytest.fixture(scope="module")
def group_photo(tmp_path_factory, tiny_faces) -> Path:
    """Three labelled faces side by side on one canvas."""
    tiles = [np.asarray(Image.open(p).convert("RGB").resize((300, 300)))
             for p in sorted(tiny_faces.glob("*.jpg"))[:3]]
    path = tmp_path_factory.mktemp("photos") / "group.jpg"
    Image.fromarray(np.concatenate(tiles, axis=1)).save(path)
    return path


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_predict_group_photo_json_and_annotation(model, group_photo, tmp_path, capsys) -> None:
    rc, _, err = run(["predict", str(group_photo), "--model", model, "--json", str(tmp_path / "r.json"),
                      "--out", str(tmp_path / "annotated.png")], capsys)
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    faces = report["images"][0]["faces"]
    assert len(faces) >= 3
    assert all(len(f["points"]) == 68 and len(f["box"]) == 4 and 0 < f["score"] <= 1 for f in faces)
    annotated = np.asarray(Image.open(tmp_path / "annotated.png"))
    assert annotated.shape == (300, 900, 3)
    assert not np.array_equal(annotated, np.asarray(Image.open(group_photo)))


def test_predict_folder_goes_on_after_a_corrupt_file(model, group_photo, tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "b_group.jpg").write_bytes(group_photo.read_bytes())
    rc, out, err = run(["predict", str(folder), "--model", model, "--out", str(tmp_path / "out"),
                        "--json", "--quiet"], capsys)
    assert rc == 0
    assert "a_broken.jpg" in err
    report = json.loads(out)
    assert [Path(r["image"]).name for r in report["images"]] == ["b_group.jpg"]
    assert any("a_broken.jpg" in e for e in report["errors"])
    assert (tmp_path / "out" / "b_group_landmarks.png").is_file()


def test_predict_image_kinds(model, tiny_faces, tmp_path, capsys) -> None:
    """Grayscale, RGBA, 16-bit, EXIF-rotated and very large photos all work."""
    face = Image.open(sorted(tiny_faces.glob("*.jpg"))[0]).convert("RGB")
    assert face.width != face.height  # so the EXIF check below tells portrait from landscape
    face.convert("L").save(tmp_path / "gray.png")
    face.convert("RGBA").save(tmp_path / "rgba.png")
    arr16 = (np.asarray(face.convert("L"), np.uint16) * 257)
    Image.fromarray(arr16).save(tmp_path / "deep16.png")
    rotated = face.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 8  # ...and EXIF says: rotate 90 degrees clockwise to display
    rotated.save(tmp_path / "exif.jpg", exif=exif)
    big = Image.new("RGB", (4000, 3000), (90, 110, 120))
    big.paste(face.resize((1200, 1200)), (1500, 900))
    big.save(tmp_path / "big.jpg", quality=85)
    names = ["gray.png", "rgba.png", "deep16.png", "exif.jpg", "big.jpg"]
    rc, out, err = run(["predict", *(str(tmp_path / n) for n in names), "--model", model,
                        "--json", "--quiet"], capsys)
    assert rc == 0, err
    report = {Path(r["image"]).name: r for r in json.loads(out)["images"]}
    for n in names:
        assert len(report[n]["faces"]) >= 1, n
    # EXIF orientation applied: the displayed image is upright (portrait/landscape as the original)
    assert (report["exif.jpg"]["width"], report["exif.jpg"]["height"]) == face.size
    x1, y1, x2, y2 = report["big.jpg"]["faces"][0]["box"]
    assert 1400 < (x1 + x2) / 2 < 2800 and 800 < (y1 + y2) / 2 < 2200


def test_predict_no_face_and_bad_input(model, tmp_path, capsys) -> None:
    Image.new("RGB", (320, 240), (128, 128, 128)).save(tmp_path / "blank.png")
    rc, _, err = run(["predict", str(tmp_path / "blank.png"), "--model", model], capsys)
    assert rc == 1 and "no face" in err
    rc, _, err = run(["predict", str(tmp_path / "missing.jpg"), "--model", model], capsys)
    assert rc == 2 and "missing.jpg" in err
    rc, _, err = run(["predict", str(tmp_path / "blank.png"), "--box", "1,2,3", "--model", model], capsys)
    assert rc == 2 and "four numbers" in err
    rc, _, err = run(["predict", str(tmp_path / "blank.png"), "--box", "50,40,10,10", "--model", model],
                     capsys)
    assert rc == 2 and "empty" in err
    rc, _, err = run(["predict", str(tmp_path / "nothing-*.png"), "--model", model], capsys)
    assert rc == 2 and "no image matches" in err
    rc, _, err = run(["predict", str(tmp_path / "blank.png"), "--model", str(tmp_path / "nope.onnx")],
                     capsys)
    assert rc == 2 and "nope" in err


def test_predict_with_box(model, tmp_path, capsys) -> None:
    Image.new("RGB", (320, 240), (128, 128, 128)).save(tmp_path / "blank.png")
    rc, out, _ = run(["predict", str(tmp_path / "blank.png"), "--box", "100,60,200,180",
                      "--box-kind", "landmarks", "--model", model, "--json"], capsys)
    assert rc == 0
    pts = np.array(json.loads(out)["images"][0]["faces"][0]["points"])
    assert pts.shape == (68, 2)
    # the tiny model answers a ring of radius 13/32 of the crop, centred in it; the crop is the
    # box's square (side 1.25 * 120 = 150 px) around the box centre (150, 120)
    assert np.allclose(pts.mean(axis=0), (150, 120), atol=0.5)
    assert abs(np.ptp(pts[:, 0]) - 2 * 13 / 32 * 150) < 1.0


def test_evaluate_writes_report_plot_and_file_list(model, shared_data, tmp_path, capsys) -> None:
    aflw = shared_data("aflw2000_sample")
    rc, out, err = run(["evaluate", "--data", str(aflw), "--model", model, "--split", "test",
                        "--json", str(tmp_path / "rep.json"), "--plot", str(tmp_path / "ced.png"),
                        "--quiet"], capsys)
    assert rc == 0, err
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert {"n", "nme_box", "nme_io"} <= set(rep) and rep["n"] == 3
    assert "yaw bins" in out
    assert (tmp_path / "ced.png").stat().st_size > 1000
    assert list(tmp_path.glob("rep*.txt")), "the split's file list is written beside the report"


def test_info(capsys) -> None:
    pytest.importorskip("torch")
    rc, out, _ = run(["info", "--config", str(CONFIGS / "default.yaml")], capsys)
    assert rc == 0 and "MB" in out and "multiply-adds" in out
    rc, out, _ = run(["info", "--json"], capsys)
    assert json.loads(out)["float32_mb"] > 0


def test_unexpected_errors_are_one_line(monkeypatch, capsys) -> None:
    import lightmark.cli.models as cli

    def boom(_args):
        raise RuntimeError("something broke")

    monkeypatch.setattr(cli, "cmd_info", boom)
    monkeypatch.delenv("LIGHTMARK_DEBUG", raising=False)
    rc, _, err = run(["info"], capsys)
    assert rc == 3 and "internal error" in err and "something broke" in err


def test_same_names_in_two_folders_get_two_annotations(model, group_photo, tmp_path, capsys) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.jpg").write_bytes(group_photo.read_bytes())
    rc, _, _ = run(["predict", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg"),
                    "--model", model, "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x_2_landmarks.png", "x_landmarks.png"]


def test_info_reads_a_dotted_model_name(tmp_path, capsys) -> None:
    pytest.importorskip("torch")
    from lightmark.core.config import CodecConfig, ModelConfig
    from lightmark.models import build_model, save_model

    cfg = ModelConfig(backbone="shufflenet_v2_noconv5", width=0.5, input_size=64, head_channels=16,
                      heatmap_size=8)
    save_model(build_model(cfg), {"codec": CodecConfig(), "crop_scale": 1.25}, tmp_path / "m.v2")
    rc, out, err = run(["info", "--model", str(tmp_path / "m.v2")], capsys)
    assert rc == 0, err
    assert "input 64x64" in out


def test_detect_mirror_reaches_the_detector(model, group_photo, tmp_path, capsys, monkeypatch) -> None:
    from lightmark.runtime.detector import FaceDetector

    made = []
    real_init = FaceDetector.__init__

    def spy(self, *a, **kw):
        real_init(self, *a, **kw)
        made.append(self.mirror)

    monkeypatch.setattr(FaceDetector, "__init__", spy)
    rc, _, err = run(["predict", str(group_photo), "--model", model, "--detect-mirror",
                      "--json", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    assert made == [True]
    faces = json.loads((tmp_path / "r.json").read_text())["images"][0]["faces"]
    assert len(faces) >= 3
    rc, _, _ = run(["predict", str(group_photo), "--model", model, "--json", str(tmp_path / "s.json")],
                   capsys)
    assert rc == 0 and made == [True, False]
