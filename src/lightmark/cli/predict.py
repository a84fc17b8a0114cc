"""`lightmark predict`: landmarks for every face in photos (files, folders, globs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from lightmark.cli.common import print_json
from lightmark.core.imaging import IMAGE_SUFFIXES
from lightmark.core.errors import CliError

#: Images loaded and sent through the landmark model together by `lightmark predict`.
PREDICT_CHUNK = 8


def _expand_images(items: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and globs -> image paths; names nothing twice."""
    import glob

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(f"{p}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif any(c in item for c in "*?["):
            found = sorted(Path(q) for q in glob.glob(item) if Path(q).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(f"{item}: no image matches this pattern")
            out += found
        else:
            out.append(p)  # missing files are reported per image, the rest go on
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _parse_box(text: str) -> tuple[float, ...]:
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"--box {text!r}: expected four numbers x1,y1,x2,y2") from None
    if len(box) != 4:
        raise CliError(f"--box {text!r}: expected four numbers x1,y1,x2,y2, got {len(box)}")
    return box


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from lightmark.api import Landmarker
    from lightmark.core.draw import draw_landmarks
    from lightmark.core.files import atomic_path
    from lightmark.core.imaging import load_image

    paths = _expand_images(args.images)
    box = _parse_box(args.box) if args.box else None
    if box is not None and len(paths) != 1:
        raise CliError("--box applies to a single image; give one image with it")
    lm = Landmarker(model=args.model, backend=args.backend, threads=args.threads,
                    refine=not args.no_refine, score_threshold=args.threshold)
    out_dir: Optional[Path] = None
    out_file: Optional[Path] = None
    if args.out:
        o = Path(args.out)
        if len(paths) == 1 and o.suffix.lower() in IMAGE_SUFFIXES:
            out_file = o
        else:
            out_dir = o
            out_dir.mkdir(parents=True, exist_ok=True)
    # One annotated file per input; inputs of the same name from different folders get a number.
    out_names: dict[Path, str] = {}
    for path in paths:
        name, k = f"{path.stem}_landmarks.png", 1
        while name in out_names.values():
            k += 1
            name = f"{path.stem}_{k}_landmarks.png"
        out_names[path] = name
    results, n_faces, errors = [], 0, []
    bar = tqdm(total=len(paths), disable=len(paths) < 2 or args.quiet, desc="predict", unit="img")
    for start in range(0, len(paths), PREDICT_CHUNK):
        # Load a chunk, then run the landmark model once on all its faces (batched inference).
        loaded = []
        for path in paths[start:start + PREDICT_CHUNK]:
            try:
                loaded.append((path, load_image(path)))
            except ValueError as e:
                errors.append(str(e))
                print(f"error: {e}", file=sys.stderr)
                bar.update(1)
        if box is not None:
            found_per_image = [[(list(box), None, lm.predict(img, box, box_kind=args.box_kind))]
                               for _, img in loaded]
        else:
            found_per_image = [[(f.box.tolist(), f.score, f.points) for f in faces]
                               for faces in lm.predict_many([img for _, img in loaded])]
        for (path, image), found in zip(loaded, found_per_image):
            faces = [{"box": [round(float(v), 2) for v in b],
                      "score": None if sc is None else round(float(sc), 4),
                      "points": np.round(pts, 2).tolist()} for b, sc, pts in found]
            if not faces and not args.quiet:
                print(f"{path}: no face found", file=sys.stderr)
            n_faces += len(faces)
            results.append({"image": str(path), "width": image.shape[1], "height": image.shape[0],
                            "faces": faces})
            target = out_file or (out_dir / out_names[path] if out_dir else None)
            if target is not None:
                annotated = draw_landmarks(image, [pts for _, _, pts in found],
                                           boxes=[b for b, _, _ in found])
                with atomic_path(target) as tmp:
                    Image.fromarray(annotated).save(tmp, format=_pil_format(target))
            bar.update(1)
    bar.close()
    report = {"model": str(lm.model_path), "backend": lm.backend, "images": results,
              "errors": errors}
    if args.json is not None:
        print_json(report, args.json)
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


def _pil_format(path: Path) -> str:
    s = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
            ".webp": "WEBP"}.get(s, "PNG")
