"""Landmarks over a video: read frames, track faces, write JSON Lines / CSV and an annotated video.

The work behind ``lightmark video IN [--out annotated.mp4] [--json F | --csv F] [--every N]
[--no-smooth]``. Input: any file OpenCV can open, or a folder of frames (images, sorted by name).

Per frame, the records hold the frame index, its time in seconds, and per face its track id, box
(the tight box of the points), score (of the detection that last matched the face), quality
(``lightmark.core.quality``), the 68 points and the head pose (yaw, pitch, roll in degrees,
:mod:`lightmark.core.pose`). JSON Lines: one object per frame, ``{"frame", "time", "faces": [{"id", "box",
"score", "quality", "points", "points_3d", "pose"}]}`` (``points_3d``: the model's 3D-convention
set beside 2d points, else null); CSV: one row per face (a frame without faces gets one
row with the face fields empty), columns ``CSV_COLUMNS``. Both are flushed after every frame, so a
run that stops early (input cut short, Ctrl-C) leaves complete lines for every frame done. The
annotated video is written under a temporary name beside the target and renamed at the end; a
run that stops early still finishes it (its frames match the records), an internal error removes
it.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO, Union

import numpy as np
from lightmark.core.errors import VideoError

PathLike = Union[str, Path]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Containers the annotated output may use (the codec is always mp4v).
VIDEO_OUT_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv")
DEFAULT_FPS = 30.0
CSV_COLUMNS = (["frame", "time", "id", "x1", "y1", "x2", "y2", "score", "quality", "pose"]
               + [f"{a}{i}" for i in range(68) for a in ("x", "y")])




# ---------------------------------------------------------------------------------------------
# input


@dataclass
class FrameSource:
    """Frames of a video file or of a folder of images, as RGB uint8 arrays with their times."""

    path: Path
    fps: float
    frame_count: Optional[int]  # as the container reports it (may be wrong); None when unknown
    _cap: Any = None
    _files: list[Path] = field(default_factory=list)
    #: Set when a video file stopped before ``frame_count`` frames.
    ended_early: bool = False

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        if self._cap is not None:
            yield from self._iter_video()
        else:
            yield from self._iter_folder()

    def _iter_video(self) -> Iterator[tuple[int, float, np.ndarray]]:
        import cv2

        cap, k = self._cap, 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                yield k, k / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                k += 1
        finally:
            cap.release()
        if k == 0:
            raise VideoError(f"{self.path}: no frame could be decoded")
        # Container frame counts are estimates; only a clear shortfall means the file was cut.
        if self.frame_count and k < self.frame_count - 1:
            self.ended_early = True

    def _iter_folder(self) -> Iterator[tuple[int, float, np.ndarray]]:
        from lightmark.core.imaging import ImageError, load_image

        for k, p in enumerate(self._files):
            try:
                img = load_image(p)
            except ImageError as e:
                raise VideoError(f"frame {k}: {e}") from None
            yield k, k / self.fps, img

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()


def open_frames(path: PathLike, fps: Optional[float] = None) -> FrameSource:
    """Open a video file or a folder of frames. ``fps``: frame rate for the times (default: the
    container's, else 30; a folder always uses ``fps`` or 30). Raises :class:`VideoError` naming
    the path when it is missing, not a video, or an empty folder."""
    p = Path(path)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise VideoError(f"fps must be a positive number, got {fps}")
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise VideoError(f"{p}: folder has no frames ({', '.join(IMAGE_SUFFIXES)})")
        return FrameSource(p, float(fps or DEFAULT_FPS), len(files), _files=files)
    if not p.is_file():
        raise VideoError(f"{p}: no such video file or folder")
    # FFmpeg's own log lines ("moov atom not found", ...) would precede our one-line error;
    # silence them unless the user set a level (read when OpenCV first starts FFmpeg).
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{p}: cannot open as a video (OpenCV has no decoder for it, or it is "
                         "not a video)")
    rate = cap.get(cv2.CAP_PROP_FPS)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    use = fps or (rate if math.isfinite(rate) and 0 < rate < 1000 else DEFAULT_FPS)
    return FrameSource(p, float(use), count if count > 0 else None, _cap=cap)


# ---------------------------------------------------------------------------------------------
# output


def face_record(face: Any) -> dict[str, Any]:
    """One face as the JSON record's dict (rounded to 0.01 px)."""
    pose = None if face.pose is None else np.round(np.asarray(face.pose, np.float64), 3).tolist()
    return {"id": face.track_id,
            "box": [round(float(v), 2) for v in face.box[:4]],
            "score": round(float(face.score), 4),
            "quality": None if face.quality is None else round(float(face.quality), 4),
            "points": np.round(np.asarray(face.points, np.float64), 2).tolist(),
            "points_3d": None if getattr(face, "points_3d", None) is None
            else np.round(np.asarray(face.points_3d, np.float64), 2).tolist(),
            "pose": pose}


class RecordWriter:
    """JSON Lines or CSV records, one frame at a time, flushed after each frame."""

    def __init__(self, path: PathLike, kind: str) -> None:
        if kind not in ("json", "csv"):
            raise VideoError(f"record kind must be 'json' or 'csv', got {kind!r}")
        self.kind = kind
        self.path = str(path)
        self._own = self.path != "-"
        try:
            self._f: TextIO = open(self.path, "w", newline="", encoding="utf-8") if self._own else sys.stdout
        except OSError as e:
            raise VideoError(f"{self.path}: cannot write ({e.strerror or e})") from None
        if kind == "csv":
            self._write(_csv_line(CSV_COLUMNS))

    def _write(self, text: str) -> None:
        self._f.write(text)  # one call per frame: a frame's lines go out together
        self._f.flush()

    def frame(self, index: int, time_s: float, faces: list[Any]) -> None:
        t = round(float(time_s), 4)
        if self.kind == "json":
            self._write(json.dumps({"frame": index, "time": t, "faces": [face_record(f) for f in faces]},
                                   separators=(",", ":")) + "\n")
            return
        if not faces:
            self._write(_csv_line([index, t] + [""] * (len(CSV_COLUMNS) - 2)))
            return
        rows = []
        for f in faces:
            r = face_record(f)
            pose = "" if r["pose"] is None else " ".join(str(v) for v in r["pose"])
            rows.append(_csv_line([index, t, r["id"], *r["box"], r["score"],
                                   "" if r["quality"] is None else r["quality"], pose,
                                   *[v for xy in r["points"] for v in xy]]))
        self._write("".join(rows))

    def close(self) -> None:
        if self._own:
            self._f.close()


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class AnnotatedVideo:
    """An mp4v video written under a temporary name beside ``path``, renamed by :meth:`finish`."""

    def __init__(self, path: PathLike, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_OUT_SUFFIXES:
            raise VideoError(f"{self.path}: the annotated video must end with one of "
                             f"{', '.join(VIDEO_OUT_SUFFIXES)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The suffix stays the target's: OpenCV picks the container from it.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".partial{self.path.suffix}",
                                   dir=self.path.parent)
        os.close(fd)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        self.tmp = Path(tmp)
        self.fps = fps
        self.frames = 0
        self._writer: Any = None
        self._size: Optional[tuple[int, int]] = None

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        h, w = rgb.shape[:2]
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise VideoError(f"{self.path}: OpenCV cannot write an mp4v video here")
            self._size = (w, h)
        elif (w, h) != self._size:
            raise VideoError(f"frame {self.frames} is {w}x{h}, the video started at "
                             f"{self._size[0]}x{self._size[1]}: an annotated video needs one size")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def finish(self) -> Optional[Path]:
        """Close and move to the target (``None`` and nothing left when no frame was written)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames == 0:
            self.discard()
            return None
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.tmp.exists():
            self.tmp.unlink()


def annotate(frame: np.ndarray, faces: list[Any]) -> np.ndarray:
    """A copy of ``frame`` with each face's points, box and track id drawn."""
    import cv2

    from lightmark.core.draw import draw_landmarks

    out = draw_landmarks(frame, [f.points for f in faces], boxes=[f.box for f in faces]) if faces \
        else frame.copy()
    for f in faces:
        x1, y1 = int(round(float(f.box[0]))), int(round(float(f.box[1])))
        size = float(max(f.box[2] - f.box[0], f.box[3] - f.box[1]))
        scale = max(0.4, size / 250)
        label = f"#{f.track_id}" + ("" if f.quality is None else f" q{f.quality:.2f}")
        cv2.putText(out, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0),
                    max(1, int(round(scale * 2))), cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------------------------


@dataclass
class VideoSummary:
    frames: int
    faces: int  # face records over all frames
    ids: int  # distinct track ids
    seconds: float
    ended_early: bool
    out: Optional[Path]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def process_video(source: PathLike, landmarker: Any, out: Optional[PathLike] = None,
                  json_path: Optional[PathLike] = None, csv_path: Optional[PathLike] = None,
                  detect_every: int = 30, smooth: bool = True, fps: Optional[float] = None,
                  progress: bool = True, **tracker_options: Any) -> VideoSummary:
    """Track faces through ``source`` (video file or frame folder), writing what was asked for.

    Raises :class:`VideoError` for an unreadable input or output. Frames done before an error or
    an interruption keep their records, and the annotated video is finished with them.
    """
    import time

    from tqdm import tqdm

    from lightmark.tracking import FaceTracker

    if json_path is not None and csv_path is not None:
        raise VideoError("give --json or --csv, not both")
    tracker = FaceTracker(landmarker, detect_every=detect_every, smooth=smooth,
                          fps=fps or DEFAULT_FPS, **tracker_options)
    src = open_frames(source, fps)
    writers: list[RecordWriter] = []
    video: Optional[AnnotatedVideo] = None
    n_frames = n_faces = 0
    ids: set[int] = set()
    t0 = time.perf_counter()
    bar = tqdm(total=src.frame_count, disable=not progress, desc=src.path.name, unit="frame",
               file=sys.stderr, dynamic_ncols=True)
    finished = False
    try:
        if json_path is not None:
            writers.append(RecordWriter(json_path, "json"))
        if csv_path is not None:
            writers.append(RecordWriter(csv_path, "csv"))
        if out is not None:
            video = AnnotatedVideo(out, src.fps)
        last_t = -math.inf
        for k, t, frame in src:
            # Containers may repeat a time stamp; the tracker needs them increasing.
            t = max(t, last_t + 1e-6)
            last_t = t
            faces = tracker.update(frame, t)
            for w in writers:
                w.frame(k, t, faces)
            if video is not None:
                video.write(annotate(frame, faces))
            n_frames += 1
            n_faces += len(faces)
            ids.update(f.track_id for f in faces)
            bar.update(1)
        finished = True
    except (VideoError, KeyboardInterrupt):
        # What was done is complete: keep it (the records are already flushed) and finish the video.
        if video is not None:
            video.finish()
            video = None
        raise
    finally:
        bar.close()
        src.close()
        for w in writers:
            w.close()
        if video is not None and not finished:
            video.discard()  # an internal error: no half-made file under the target's name
    written = video.finish() if video is not None else None
    return VideoSummary(n_frames, n_faces, len(ids), time.perf_counter() - t0, src.ended_early, written)
