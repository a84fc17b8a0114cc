"""`lightmark predict`: landmarks for every face in photos (files, folders, globs).

Results are kept on disk as they are made, so an interrupted run (Ctrl-C, SIGTERM, even SIGKILL)
keeps every photo it finished: ``--json FILE.jsonl`` appends one line per photo as soon as it is
done; ``--json FILE.json`` is rewritten atomically every few seconds (and at the end, or on
Ctrl-C / SIGTERM, with ``"complete": false`` if the run did not finish). An input that cannot be
used (a missing file, an empty folder, a corrupt image) is reported and the others go on.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from lightmark.cli.common import landmarker_from, print_json
from lightmark.core.imaging import IMAGE_SUFFIXES
from lightmark.core.errors import CliError

#: Images loaded and sent through the landmark model together by `lightmark predict`.
PREDICT_CHUNK = 8
#: A ``.json`` report is rewritten at most this often (seconds), and never taking more than a
#: twentieth of the run: rewriting a large report after every photo would cost more than the photos.
JSON_REWRITE_S = 2.0
#: What ``--json`` may name: a file of these kinds, or "-" for stdout. Anything else (an image
#: name, most likely: ``--json a.jpg b.jpg``) is refused rather than overwritten.
JSON_SUFFIXES = (".json", ".jsonl")


def _expand_images(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their images, sorted) and globs -> (image paths, errors for the items that
    gave none); names nothing twice."""
    import glob

    out: list[Path] = []
    errors: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                errors.append(f"{p}: folder has no images ({', '.join(IMAGE_SUFFIXES[:9])}, ...)")
            out += found
        elif any(c in item for c in "*?["):
            found = sorted(Path(q) for q in glob.glob(item) if Path(q).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{item}: no image matches this pattern")
            out += found
        else:
            out.append(p)  # missing files are reported per image, the rest go on
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))], errors


def _parse_box(text: str) -> tuple[float, ...]:
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"--box {text!r}: expected four numbers x1,y1,x2,y2") from None
    if len(box) != 4:
        raise CliError(f"--box {text!r}: expected four numbers x1,y1,x2,y2, got {len(box)}")
    return box


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_json_target(value: Optional[str], inputs: Sequence[str], paths: Sequence[Path]) -> None:
    """``--json`` takes an optional value, so ``--json a.jpg b.jpg`` reads a.jpg as the output:
    only '-' or a .json / .jsonl name is accepted, and never an input."""
    if value is None or value == "-":
        return
    target = Path(value)
    if target.suffix.lower() not in JSON_SUFFIXES:
        raise CliError(f"--json {value}: the report goes to a .json or .jsonl file, or to stdout "
                       f"with '--json -' (or '--json=-'); {target.name} is not written. To print "
                       "JSON and list photos after it, write --json=- or put --json last")
    for p in [Path(i) for i in inputs] + list(paths):
        if _same_file(target, p):
            raise CliError(f"--json {value}: that is an input; it is never written over")


class _Report:
    """The report on disk as it grows: JSON Lines appended, or a JSON document rewritten."""

    def __init__(self, target: Optional[str], head: dict) -> None:
        self.target, self.head = target, head
        self.results: list[dict] = []
        self.errors: list[str] = []
        self._fd: Optional[int] = None
        self._last_write = time.monotonic()
        self._write_cost = 0.0
        if target not in (None, "-") and target.lower().endswith(".jsonl"):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
            except OSError as e:
                raise CliError(f"--json {target}: cannot write ({e.strerror or e})") from None

    def _line(self, row: dict) -> None:
        if self._fd is not None:
            # One write() per line: a process killed between two photos leaves whole lines only.
            os.write(self._fd, (json.dumps(row) + "\n").encode("utf-8"))

    def add(self, row: dict) -> None:
        self.results.append(row)
        self._line(row)

    def error(self, image: str, message: str) -> None:
        self.errors.append(message)
        self._line({"image": image, "error": message})

    def document(self, complete: bool) -> dict:
        return dict(self.head, images=self.results, errors=self.errors, complete=complete)

    def checkpoint(self) -> None:
        """Rewrite a .json report now and then, so a killed run keeps what it finished."""
        if self.target in (None, "-") or self._fd is not None:
            return
        now = time.monotonic()
        if now - self._last_write < max(JSON_REWRITE_S, 20 * self._write_cost):
            return
        self.finish(complete=False)
        self._write_cost = time.monotonic() - now
        self._last_write = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self, complete: bool) -> None:
        if self._fd is not None:  # every line is on disk already
            if complete:
                self.close()
            return
        if self.target not in (None, "-"):  # stdout gets the document once, from the caller
            print_json(self.document(complete), self.target)


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    paths, scan_errors = _expand_images(args.images)
    _check_json_target(args.json, args.images, paths)
    box = _parse_box(args.box) if args.box else None
    if box is not None and len(paths) + len(scan_errors) != 1:
        raise CliError("--box applies to a single image; give one image with it")
    if not paths:
        raise CliError("; ".join(scan_errors))
    lm = landmarker_from(args, refine=not args.no_refine, score_threshold=args.threshold)
    if args.convention not in lm.conventions:
        raise CliError(f"--convention {args.convention}: {lm.model_path.name} has "
                       f"{', '.join(lm.conventions)} landmarks only")
    out_dir: Optional[Path] = None
    out_file: Optional[Path] = None
    if args.out:
        o = Path(args.out)
        if len(paths) == 1 and o.suffix.lower() in IMAGE_SUFFIXES:
            if o.suffix.lower() not in _WRITABLE:
                raise CliError(f"--out {o}: cannot write {o.suffix} images; use one of "
                               f"{', '.join(sorted(_WRITABLE))}")
            out_file = o
        else:
            out_dir = o
    # One annotated file per input; inputs of the same name from different folders get a number.
    out_names: dict[Path, str] = {}
    for path in paths:
        name, k = f"{path.stem}_landmarks.png", 1
        while name in out_names.values():
            k += 1
            name = f"{path.stem}_{k}_landmarks.png"
        out_names[path] = name
    targets = {p: out_file or (out_dir / out_names[p] if out_dir else None) for p in paths}
    for p, target in targets.items():
        clash = next((q for q in paths if target is not None and _same_file(target, q)), None)
        if clash is not None:
            raise CliError(f"--out {args.out}: the annotated image {target} would overwrite the "
                           f"input {clash}; choose another --out")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    report = _Report(args.json, {"model": str(lm.model_path), "backend": lm.backend})
    for message in scan_errors:
        report.error(message.split(":", 1)[0], message)
        print(f"error: {message}", file=sys.stderr)
    # SIGTERM ends the run like Ctrl-C: what is finished is written before the process exits.
    previous = signal.getsignal(signal.SIGTERM)
    if _in_main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    bar = tqdm(total=len(paths), disable=len(paths) < 2 or args.quiet, desc="predict", unit="img")
    complete = False
    try:
        _predict_all(lm, paths, box, args, report, targets, bar)
        complete = True
    except KeyboardInterrupt:
        bar.close()
        report.finish(complete=False)
        if args.json == "-":
            print(json.dumps(report.document(False), indent=1))
        print(f"lightmark predict: interrupted after {len(report.results)} of {len(paths)} "
              f"image(s){'; finished ones are in ' + args.json if args.json not in (None, '-') else ''}",
              file=sys.stderr)
        return 130
    finally:
        if _in_main_thread():
            signal.signal(signal.SIGTERM, previous)
        if not complete:
            report.close()
    bar.close()
    report.finish(complete=True)
    results, errors = report.results, report.errors
    n_faces = sum(len(r["faces"]) for r in results)
    if args.json == "-":
        print_json(report.document(True), None)
    elif not args.quiet:
        for r in results:
            for i, f in enumerate(r["faces"]):
                score = f"score {f['score']:.2f}, " if f["score"] is not None else ""
                print(f"{r['image']}: face {i + 1}: {score}box {[round(v) for v in f['box']]}")
    if not args.quiet:
        print(f"{n_faces} face(s) in {len(results)} image(s)"
              + (f"; {len(errors)} unreadable" if errors else ""), file=sys.stderr)
    if errors and not results:
        return 2
    return 0 if n_faces else 1


def _predict_all(lm: Any, paths: list[Path], box: Optional[tuple[float, ...]],
                 args: argparse.Namespace, report: _Report, targets: dict[Path, Optional[Path]],
                 bar: Any) -> None:
    import numpy as np
    from PIL import Image

    from lightmark.core.draw import draw_landmarks
    from lightmark.core.files import atomic_path
    from lightmark.core.imaging import load_image

    for start in range(0, len(paths), PREDICT_CHUNK):
        # Load a chunk, then run the landmark model once on all its faces (batched inference).
        loaded = []
        for path in paths[start:start + PREDICT_CHUNK]:
            try:
                loaded.append((path, load_image(path)))
            except ValueError as e:
                report.error(str(path), str(e))
                print(f"error: {e}", file=sys.stderr)
                bar.update(1)
        if box is not None:
            found_per_image = [[(list(box), None, lm.predict(img, box, box_kind=args.box_kind,
                                                               convention=args.convention))]
                               for _, img in loaded]
        else:
            found_per_image = [[(f.box.tolist(), f.score, f.points) for f in faces]
                               for faces in lm.predict_many([img for _, img in loaded],
                                                            convention=args.convention)]
        for (path, image), found in zip(loaded, found_per_image):
            faces = [{"box": [round(float(v), 2) for v in b],
                      "score": None if sc is None else round(float(sc), 4),
                      "points": np.round(pts, 2).tolist()} for b, sc, pts in found]
            if not faces and not args.quiet:
                print(f"{path}: no face found", file=sys.stderr)
            target = targets[path]
            if target is not None:
                annotated = draw_landmarks(image, [pts for _, _, pts in found],
                                           boxes=[b for b, _, _ in found])
                with atomic_path(target) as tmp:
                    Image.fromarray(annotated).save(tmp, format=_pil_format(target))
            report.add({"image": str(path), "width": image.shape[1], "height": image.shape[0],
                        "faces": faces})
            bar.update(1)
        report.checkpoint()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


#: Annotated-image suffixes and the Pillow format each is written in.
_WRITABLE = {".png": "PNG", ".apng": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG",
             ".jfif": "JPEG", ".bmp": "BMP", ".dib": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
             ".webp": "WEBP", ".gif": "GIF", ".tga": "TGA", ".ppm": "PPM", ".pnm": "PPM"}


def _pil_format(path: Path) -> str:
    return _WRITABLE.get(path.suffix.lower(), "PNG")
