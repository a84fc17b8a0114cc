"""`lightmark video` end to end: records, annotated video, frame folders, bad and cut-short input."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightmark.cli import main
from lightmark.video import CSV_COLUMNS, VideoError, open_frames

import video_clips as vc

N = 16


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A face moving right for N frames, then N // 2 frames without it (mp4v in AVI)."""
    frames = vc.moving_clip(n=N, step=3.0) + [vc.render(480, 320, [], k) for k in range(N, N + N // 2)]
    return vc.write_video(tmp_path_factory.mktemp("clip") / "clip.avi", frames)


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_lines_and_annotated_video(clip, tmp_path, capsys) -> None:
    out, js = tmp_path / "annotated.mp4", tmp_path / "faces.jsonl"
    rc, _, err = run(["video", str(clip), "--out", str(out), "--json", str(js), "--quiet"], capsys)
    assert rc == 0, err
    recs = _lines(js)
    total = N + N // 2
    assert [r["frame"] for r in recs] == list(range(total))
    assert recs[3]["time"] == pytest.approx(3 / 30, abs=1e-3)
    ids = set()
    for r in recs[:N]:
        assert len(r["faces"]) == 1
        f = r["faces"][0]
        assert len(f["points"]) == 68 and len(f["box"]) == 4 and len(f["pose"]) == 3
        assert len(f["points_3d"]) == 68  # the bundled model's 3d set, beside the 2d points
        assert all(abs(v) <= 180 for v in f["pose"])
        assert 0.5 < f["quality"] <= 1 and 0 < f["score"] <= 1
        ids.add(f["id"])
    assert ids == {0}
    # The face moves 3 px a frame: so do its points.
    x0 = np.mean([p[0] for p in recs[0]["faces"][0]["points"]])
    x9 = np.mean([p[0] for p in recs[9]["faces"][0]["points"]])
    assert x9 - x0 == pytest.approx(27, abs=4)
    assert all(r["faces"] == [] for r in recs[N + 2:])  # gone once the face is gone
    assert vc.count_frames(out) == total
    assert not list(tmp_path.glob(".*partial*")), "temporary video left behind"


def test_csv_rows_and_raw_mode(clip, tmp_path, capsys) -> None:
    path = tmp_path / "faces.csv"
    rc, _, err = run(["video", str(clip), "--csv", str(path), "--no-smooth", "--every", "4", "--quiet"], capsys)
    assert rc == 0, err
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == tuple(CSV_COLUMNS) and len(rows[0]) == 10 + 136
    body = rows[1:]
    assert len(body) == N + N // 2  # one row per face per frame, one per empty frame
    assert body[0][2] == "0" and float(body[0][10]) > 0
    assert body[-1][0] == str(N + N // 2 - 1) and body[-1][2:] == [""] * (len(CSV_COLUMNS) - 2)


def test_folder_of_frames_with_fps(tmp_path, capsys) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, f in enumerate(vc.moving_clip(n=5)):
        Image.fromarray(f).save(folder / f"f{k:03d}.png")
    (folder / "notes.txt").write_text("not a frame")
    js = tmp_path / "r.jsonl"
    rc, _, err = run(["video", str(folder), "--json", str(js), "--fps", "10", "--quiet"], capsys)
    assert rc == 0, err
    recs = _lines(js)
    assert [r["time"] for r in recs] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(len(r["faces"]) == 1 for r in recs)


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys) -> None:
    missing = tmp_path / "nothere.mp4"
    rc, _, err = run(["video", str(missing), "--json", str(tmp_path / "a.jsonl")], capsys)
    assert rc == 2 and str(missing) in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    rc, _, err = run(["video", str(junk)], capsys)
    assert rc == 2 and "cannot open as a video" in err and str(junk) in err
    assert len(err.strip().splitlines()) == 1, err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run(["video", str(empty)], capsys)
    assert rc == 2 and "no frames" in err
    with pytest.raises(SystemExit):  # argparse: --json and --csv exclude each other
        main(["video", str(junk), "--json", "a", "--csv", "b"])
    with pytest.raises(VideoError):
        open_frames(tmp_path, fps=-1)


def test_bad_output_suffix(clip, tmp_path, capsys) -> None:
    rc, _, err = run(["video", str(clip), "--out", str(tmp_path / "x.gif"), "--quiet"], capsys)
    assert rc == 2 and "x.gif" in err and ".mp4" in err
    assert not list(tmp_path.iterdir())


def test_cut_short_video_keeps_complete_records(clip, tmp_path, capsys) -> None:
    cut = tmp_path / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    js, out = tmp_path / "r.jsonl", tmp_path / "a.mp4"
    rc, _, err = run(["video", str(cut), "--json", str(js), "--out", str(out), "--quiet"], capsys)
    assert rc == 0, err
    assert "cut short" in err
    recs = _lines(js)  # every line parses
    assert 0 < len(recs) < N + N // 2
    assert [r["frame"] for r in recs] == list(range(len(recs)))
    assert vc.count_frames(out) == len(recs)


def test_unreadable_frame_mid_folder_keeps_what_was_done(tmp_path, capsys) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, f in enumerate(vc.moving_clip(n=4)):
        Image.fromarray(f).save(folder / f"f{k:03d}.png")
    (folder / "f002.png").write_bytes(b"\x89PNG broken")
    js, out = tmp_path / "r.jsonl", tmp_path / "a.mp4"
    rc, _, err = run(["video", str(folder), "--json", str(js), "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and "f002.png" in err and "frame 2" in err
    assert [r["frame"] for r in _lines(js)] == [0, 1]
    assert vc.count_frames(out) == 2
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_stopped_run_leaves_complete_files(clip, tmp_path, monkeypatch, error) -> None:
    from lightmark import Landmarker
    from lightmark.tracking import FaceTracker
    from lightmark.video import process_video

    real = FaceTracker.update

    def update(self, frame, t=None):
        if self.frame_index == 3:
            raise error("stop")
        return real(self, frame, t)

    monkeypatch.setattr(FaceTracker, "update", update)
    js, out = tmp_path / "r.jsonl", tmp_path / "a.mp4"
    with pytest.raises(error):
        process_video(clip, Landmarker(), out=out, json_path=js, progress=False)
    assert [r["frame"] for r in _lines(js)] == [0, 1, 2]
    assert not list(tmp_path.glob(".*partial*"))
    if error is KeyboardInterrupt:  # stopped by the user: the frames done are a valid video
        assert vc.count_frames(out) == 3
    else:  # a bug: no video under the target's name
        assert not out.exists()
