"""`lightmark` command line: the one place where arguments are parsed.

Each subcommand's work lives in a module of this package (``models.py``: info, train, export,
evaluate, fit-box-mapping; ``predict.py``; ``data.py``: synth, profile, fit21, baseline-table), and
each calls a library function. Every command returns an exit status; bad input (a missing file, a
bad box, an unreadable image) ends with a one-line message naming the problem and status 2,
never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from lightmark.cli import align, data, models, predict, video
from lightmark.core.errors import CliError


def add_train_arguments(sp: argparse.ArgumentParser) -> None:
    """The arguments of `lightmark train` (also under `torchrun ... -m lightmark train`)."""
    sp.add_argument("config", help="YAML run configuration (see configs/)")
    sp.add_argument("--resume", help="checkpoint to continue from (e.g. runs/default/last)")
    sp.add_argument("--skip-bad", action="store_true", help="skip and count bad samples")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. train.epochs=3")
    sp.add_argument("--out", help="output folder (overrides out_dir)")



def build_parser() -> argparse.ArgumentParser:
    from lightmark import __version__

    p = argparse.ArgumentParser(prog="lightmark", description="68-point facial landmarks.")
    p.add_argument("--version", action="version", version=f"lightmark {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str,
            aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, aliases=list(aliases))
        sp.set_defaults(func=fn)
        return sp

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", help="a bundled model by name (default, accurate) or NAME.onnx / "
                        "NAME.safetensors (default: the bundled default model)")
        sp.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
        sp.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
        sp.add_argument("--flip", action="store_true",
                        help="also run each face's mirror image and average the two answers (more "
                             "accurate; one more crop a face for the landmark model)")
        sp.add_argument("--detect-mirror", action="store_true",
                        help="also run the face detector on the mirror image: finds most of the "
                             "profiles it misses, for twice the detector's time")

    sp = add("info", models.cmd_info, "Parameters, float32 size and multiply-adds of a model.")
    sp.add_argument("--config", help="a run configuration (configs/*.yaml)")
    sp.add_argument("--model", help="a saved model's .json / .onnx / .safetensors")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = add("train", models.cmd_train, "Train a model from a configuration.")
    add_train_arguments(sp)

    sp = add("export", models.cmd_export, "Export a saved model to ONNX (checked against torch).")
    sp.add_argument("--model", required=True, help="NAME.safetensors (+ NAME.json)")
    sp.add_argument("--out", required=True, help="NAME.onnx (NAME.json is written beside it)")
    sp.add_argument("--opset", type=int, default=17)

    sp = add("evaluate", models.cmd_evaluate, "NME, failure rate, AUC and CED plot on a labelled folder.")
    sp.add_argument("--data", required=True, help="a labelled folder (AFW, AFLW2000-3D, ...)")
    model_args(sp)
    sp.add_argument("--split", default="all", choices=["all", "val", "test"],
                    help="AFLW2000-3D protocol split (10%%/90%%, by a seeded hash of file names)")
    sp.add_argument("--seed", type=int, default=0, help="split seed")
    sp.add_argument("--boxes", default="gt", choices=["gt", "detector", "predict_all"],
                    help="face boxes from ground-truth landmarks, from the bundled detector (one "
                         "pass), or the whole predict_all pipeline (detector + refinement)")
    sp.add_argument("--convention", choices=["2d", "3d"],
                    help="landmark set to score (default: the data set's: 3d for AFLW2000-3D and "
                         "FaceSynthetics, 2d for 300W folders and CSV tables)")
    sp.add_argument("--json", metavar="FILE", help="write the report here ('-': to stdout)")
    sp.add_argument("--plot", help="write the CED plot (PNG) here")
    sp.add_argument("--quiet", action="store_true")

    sp = add("predict", predict.cmd_predict, "68 landmarks for every face in photos (or in one given box).")
    sp.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    model_args(sp)
    sp.add_argument("--box", help="x1,y1,x2,y2: a face box to use instead of the detector")
    sp.add_argument("--box-kind", default="face", choices=["face", "landmarks"],
                    help="--box is a detector-style face box (default) or a tight landmark box")
    sp.add_argument("--convention", default="2d", choices=["2d", "3d"],
                    help="2d: 300W's jaw on the visible contour (default); 3d: projected 3D points "
                         "(AFLW2000-3D's), for models that have them")
    sp.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                    help="write JSON (boxes, scores, points) to FILE.json (rewritten as photos are "
                         "done) or FILE.jsonl (one line per photo), or to stdout without FILE "
                         "('-'); any other name is refused, so `--json a.jpg b.jpg` never "
                         "overwrites a.jpg")
    sp.add_argument("--out", help="annotated image (one input) or folder for annotated images")
    sp.add_argument("--threshold", type=float, default=0.7, help="detector score threshold")
    sp.add_argument("--no-refine", action="store_true", help="skip the second, re-centred pass")
    sp.add_argument("--quiet", action="store_true")

    sp = add("video", video.cmd_video, "Track faces through a video (or a folder of frames): landmarks per "
                                       "frame as JSON Lines or CSV, and an annotated video.")
    sp.add_argument("input", help="a video file OpenCV can open, or a folder of frames (sorted by name)")
    model_args(sp)
    sp.add_argument("--out", help="annotated video (mp4v; .mp4, .mov, .avi or .mkv)")
    rec = sp.add_mutually_exclusive_group()
    rec.add_argument("--json", metavar="FILE", help="JSON Lines, one frame per line ('-': stdout)")
    rec.add_argument("--csv", metavar="FILE", help="CSV, one row per face and frame ('-': stdout)")
    sp.add_argument("--every", type=int, default=30,
                    help="run the face detector every N frames (and when a face is lost; 0: only then)")
    sp.add_argument("--no-smooth", action="store_true", help="raw landmarks, no temporal smoothing")
    sp.add_argument("--convention", default="2d", choices=["2d", "3d"],
                    help="landmark set to track (3d: projected 3D points, for models that have them)")
    sp.add_argument("--fps", type=float, help="frame rate for the times (default: the video's; 30 for folders)")
    sp.add_argument("--max-faces", type=int, default=None, help="track at most this many faces")
    sp.add_argument("--threshold", type=float, default=0.7, help="detector score threshold")
    sp.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    sp = add("align", align.cmd_align, "Aligned crops (FFHQ or ArcFace) of every face in photos.")
    sp.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    sp.add_argument("--out", required=True, help="folder for the crops, <stem>_<k>.png")
    sp.add_argument("--style", default="ffhq", choices=["ffhq", "arcface"],
                    help="ffhq: FFHQ/StyleGAN crop (default 1024 px); arcface: ArcFace 5-point crop "
                         "(default 112 px)")
    sp.add_argument("--size", type=int, help="crop side in pixels (default: the style's)")
    model_args(sp)
    sp.add_argument("--threshold", type=float, default=0.7, help="detector score threshold")
    sp.add_argument("--quiet", action="store_true")

    def data_engine_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", required=True, help="output folder (FaceSynthetics format)")
        sp.add_argument("--n", type=int, required=True, help="number of images")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--jaw", default="3d", choices=["3d", "contour"],
                        help="jaw convention written to _ldmks.txt (the other goes beside it)")
        sp.add_argument("--workers", type=int, default=1,
                        help="processes rendering contiguous slices of the images (0: one per CPU "
                             "core); the output is identical for any value")

    sp = add("synth", data.cmd_synth, "Render synthetic faces (FaceSynthetics format) from the ICT model.")
    data_engine_args(sp)
    sp.add_argument("--size", type=int, default=256)
    sp.add_argument("--seg", action="store_true", help="also write _seg.png masks")

    sp = add("profile", data.cmd_profile, "Turn real labelled faces in 3D (300W-LP style).")
    sp.add_argument("--data", required=True, help="a labelled folder (HELEN train, UTKFace)")
    data_engine_args(sp)
    sp.add_argument("--max-yaw", type=float, default=60.0)

    sp = add("fit21", data.cmd_fit21,
             "68-point labels (3D convention) for AFLW 21-point faces by fitting the ICT face model; "
             "or, with --check, the fit's accuracy on AFLW2000-3D.")
    sp.add_argument("--data", help="an AFLW 21-point folder (aflw21.csv + images/) or its CSV")
    sp.add_argument("--out", help="output folder: NAME.pts (1-based) + NAME.jpg + manifest.json; "
                                  "resumable (finished faces are kept)")
    sp.add_argument("--limit", type=int, help="a seeded random subset of this many faces")
    sp.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    sp.add_argument("--workers", type=int, default=1, help="processes (0: one per CPU core)")
    sp.add_argument("--jaw", default="substitute", choices=["substitute", "landmarks68"],
                    help="jaw vertices of the 68 labels (see docs/LARGE_POSE_DATA.md)")
    sp.add_argument("--check", metavar="AFLW2000_DIR",
                    help="instead: fit each .mat's 21 pt2d points and score the 68 against its pt3d_68")
    sp.add_argument("--json", help="with --check: write the report here")
    sp.add_argument("--progress", action="store_true", help="show a progress bar")

    sp = add("baseline-table", data.cmd_baseline_table,
             "Reproduce the original write-up's four-row augmentation table (alias: seed-table).",
             aliases=["seed-table"])
    sp.add_argument("--config", default="configs/baseline.yaml")
    sp.add_argument("--data", action="append",
                    help="a training folder, repeatable (default: the config's train_data)")
    sp.add_argument("--eval", dest="eval_data", action="append",
                    help="evaluation folder(s) (default: the config's val_data and AFW)")
    sp.add_argument("--eval-split", default="auto", choices=["auto", "all"],
                    help="auto: the protocol's test part of a whole AFLW2000-3D folder, all of any "
                         "other; all: every face (for aflw2000_val, the validation part itself)")
    sp.add_argument("--epochs", type=int, default=3, help="epochs per row (the original write-up used 25)")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--out", default="runs/baseline_table")
    sp.add_argument("--json", help="write the table as JSON here")

    sp = add("fit-box-mapping", models.cmd_fit_box_mapping,
             "Fit the detector-box -> training-crop mapping on labelled training data (never AFW).")
    sp.add_argument("datasets", nargs="+", help="labelled training folders")
    sp.add_argument("--limit", type=int, default=400, help="faces per data set (seeded choice)")
    sp.add_argument("--out", help="mapping JSON to write (default: the bundled one)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the choice of faces")
    sp.add_argument("--note", default=None, help="free text stored with the fit (e.g. why a set was left out)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"lightmark {args.command}: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, OSError) as e:
        # Our errors are ValueError subclasses whose message names the file and the problem.
        print(f"lightmark {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightmark {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: say so in one line; the traceback on request
        import os

        if os.environ.get("LIGHTMARK_DEBUG"):
            raise
        print(f"lightmark {args.command}: internal error ({type(e).__name__}: {e}); "
              "set LIGHTMARK_DEBUG=1 for the traceback", file=sys.stderr)
        return 3
