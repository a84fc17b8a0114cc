"""`lightmark align`: every face of every photo as an aligned crop (FFHQ or ArcFace style)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightmark.cli.common import landmarker_from
from lightmark.cli.predict import _expand_images
from lightmark.core.errors import CliError


def cmd_align(args: argparse.Namespace) -> int:
    """Every face of every photo as an aligned crop ``<stem>_<k>.png`` (k = 1, 2, ... in the
    detector's score order) in ``--out``."""
    from PIL import Image

    from lightmark.core.align import DEFAULT_SIZE, AlignError, align_face, check_size
    from lightmark.core.files import atomic_path
    from lightmark.core.imaging import load_image

    if args.size is not None:
        try:
            check_size(args.size)
        except AlignError as e:
            raise CliError(f"--size: {e}") from None
    paths, scan_errors = _expand_images(args.images)  # an empty folder is reported, the rest go on
    if not paths:
        raise CliError("; ".join(scan_errors))
    lm = landmarker_from(args, score_threshold=args.threshold)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Inputs of the same name from different folders get a number, as in `lightmark predict`.
    stems: dict[Path, str] = {}
    for path in paths:
        stem, k = path.stem, 1
        while stem in stems.values():
            k += 1
            stem = f"{path.stem}_{k}"
        stems[path] = stem
    n_faces, n_read, errors = 0, 0, list(scan_errors)
    for message in scan_errors:
        print(f"error: {message}", file=sys.stderr)
    for path in paths:
        try:
            image = load_image(path)
        except ValueError as e:
            errors.append(str(e))
            print(f"error: {e}", file=sys.stderr)
            continue
        n_read += 1
        faces = lm.predict_all(image)
        if not faces and not args.quiet:
            print(f"{path}: no face found", file=sys.stderr)
        for k, face in enumerate(faces, start=1):
            crop, _ = align_face(image, face.points, style=args.style, size=args.size)
            target = out_dir / f"{stems[path]}_{k}.png"
            with atomic_path(target) as tmp:
                Image.fromarray(crop).save(tmp, format="PNG")
            n_faces += 1
            if not args.quiet:
                print(target)
    if not args.quiet:
        size = args.size or DEFAULT_SIZE[args.style]
        print(f"{n_faces} aligned face(s) ({args.style}, {size}x{size}) from {n_read} image(s)"
              + (f"; {len(errors)} unreadable" if errors else ""), file=sys.stderr)
    if errors and not n_read:
        return 2
    return 0 if n_faces else 1
