"""`lightmark video`: track faces through a video or a folder of frames."""
from __future__ import annotations

import argparse
import sys

from lightmark.cli.common import landmarker_from
from lightmark.core.errors import CliError


def cmd_video(args: argparse.Namespace) -> int:
    from lightmark.video import process_video

    if args.every < 0:
        raise CliError(f"--every must be >= 0 (0: detect only when needed), got {args.every}")
    lm = landmarker_from(args, score_threshold=args.threshold)
    s = process_video(args.input, lm, out=args.out, json_path=args.json, csv_path=args.csv,
                      detect_every=args.every, smooth=not args.no_smooth, fps=args.fps,
                      progress=not args.quiet, max_faces=args.max_faces,
                      convention=args.convention)
    if s.ended_early:
        print(f"lightmark video: {args.input}: the video ended after {s.frames} frames, before the "
              "length its header gives (cut short?); everything written is complete", file=sys.stderr)
    if not args.quiet:
        print(f"{s.frames} frames, {s.faces} face records, {s.ids} track id(s), {s.fps:.1f} frames/s"
              + (f"; wrote {s.out}" if s.out else ""), file=sys.stderr)
        if not (args.out or args.json or args.csv):
            print("lightmark video: nothing written (give --out, --json or --csv)", file=sys.stderr)
    return 0
