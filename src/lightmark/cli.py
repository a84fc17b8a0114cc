"""`lightmark` command line. Thin: each subcommand parses its arguments and calls a library function.

Every command returns an exit status; bad input (a missing file, a bad box, an unreadable image)
ends with a one-line message naming the problem and status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from lightmark.core.errors import CliError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Images loaded and sent through the landmark model together by `lightmark predict`.
PREDICT_CHUNK = 8




def _print_json(obj: Any, path: Optional[str]) -> None:
    text = json.dumps(obj, indent=1)
    if path in (None, "-"):
        print(text)
    else:
        from lightmark.core.files import write_text

        write_text(path, text + "\n")


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from lightmark.core.config import ModelConfig, load_config, model_config_from_dict

    if args.model:
        from lightmark.core.modelfile import model_paths, read_meta

        meta = read_meta(model_paths(args.model).json)
        cfg = model_config_from_dict(meta["model"])
    elif args.config:
        cfg = load_config(args.config).model
    else:
        cfg = ModelConfig()
    try:
        from lightmark.models import model_info
    except ImportError as e:  # torch missing: the torch-free install can still read a model's JSON
        raise CliError(f"`lightmark info` needs torch to count parameters ({e}); "
                       "install lightmark[train]") from None
    info = model_info(cfg)
    info["config"] = cfg.__dict__
    if args.json:
        _print_json(info, None)
    else:
        print(f"model: {cfg.backbone} x{cfg.width}, head {cfg.head} ({cfg.head_block} block, {cfg.head_channels} ch, "
              f"{cfg.heatmap_size}x{cfg.heatmap_size}), input {cfg.input_size}x{cfg.input_size}")
        print(f"parameters: {info['params']:,} (backbone {info['params_backbone']:,}, "
              f"head {info['params_head']:,})")
        print(f"float32 size: {info['float32_mb']:.2f} MB")
        print(f"multiply-adds: {info['macs'] / 1e6:.1f} M at {cfg.input_size}x{cfg.input_size}")
        print(f"output: {tuple(info['output_shape'])}")
    return 0


# ---------------------------------------------------------------------------------------------
# train / export / evaluate
# ---------------------------------------------------------------------------------------------
def add_train_arguments(sp: argparse.ArgumentParser) -> None:
    """The arguments of `lightmark train`, shared with `python -m lightmark.train` (torchrun)."""
    sp.add_argument("config", help="YAML run configuration (see configs/)")
    sp.add_argument("--resume", help="checkpoint to continue from (e.g. runs/default/last)")
    sp.add_argument("--skip-bad", action="store_true", help="skip and count bad samples")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. train.epochs=3")
    sp.add_argument("--out", help="output folder (overrides out_dir)")


def cmd_train(args: argparse.Namespace) -> int:
    from lightmark.training.loop import run_from_args

    return run_from_args(args)


def cmd_export(args: argparse.Namespace) -> int:
    from lightmark.export import export_onnx

    out = export_onnx(args.model, args.out, opset=args.opset)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def _predictor(model: Optional[str], backend: str, threads: int) -> Any:
    from lightmark.api import Landmarker

    return Landmarker(model=model, backend=backend, threads=threads).predictor


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lightmark.evaluate import evaluate, write_report

    predictor = _predictor(args.model, args.backend, args.threads)
    detector = None
    if args.boxes == "detector":
        from lightmark.runtime.detector import FaceDetector

        detector = FaceDetector(threads=args.threads)
    report = evaluate(predictor, args.data, split=args.split, box_source=args.boxes,
                      detector=detector, seed=args.seed, progress=not args.quiet)
    s = report["summary"]
    line = (f"{args.data} [{args.split}, {args.boxes} boxes] n={s['n']}: "
            f"NME_box {s['nme_box']:.2f}%  NME_io {s['nme_io']:.2f}%  "
            f"FR@8 {s['fr_8_io']:.1f}%  AUC@8 {s['auc_8_io']:.3f}")
    if s.get("n_missed"):
        line += f"  missed {s['n_missed']}"
    print(line)
    yaw = [k for k in s if k.startswith("nme_box_yaw")]
    if yaw:
        print("  yaw bins (NME_box %): " + ", ".join(f"{k[12:]}: {s[k]:.2f}" for k in yaw))
    if args.json or args.plot:
        json_path = args.json or str(Path(args.plot).with_suffix(".json"))
        written = write_report(report, json_path, plot_path=args.plot)
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------
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
        _print_json(report, args.json)
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


# ---------------------------------------------------------------------------------------------
# data engine and experiments
# ---------------------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from lightmark.synth import synth_main

    stats = synth_main(out=args.out, n=args.n, seed=args.seed, size=args.size, seg=args.seg,
                       jaw=args.jaw, workers=args.workers)
    print(json.dumps(stats))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from lightmark.synth import profile_main

    stats = profile_main(data=args.data, out=args.out, n=args.n, seed=args.seed,
                         max_yaw=args.max_yaw, jaw=args.jaw, workers=args.workers)
    print(json.dumps(stats))
    return 0


def cmd_seed_table(args: argparse.Namespace) -> int:
    from lightmark.training.experiments import seed_table_main

    return seed_table_main(args)


# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from lightmark import __version__

    p = argparse.ArgumentParser(prog="lightmark", description="68-point facial landmarks.")
    p.add_argument("--version", action="version", version=f"lightmark {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        return sp

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", help="NAME.onnx or NAME.safetensors (default: the bundled model)")
        sp.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
        sp.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")

    sp = add("info", cmd_info, "Parameters, float32 size and multiply-adds of a model.")
    sp.add_argument("--config", help="a run configuration (configs/*.yaml)")
    sp.add_argument("--model", help="a saved model's .json / .onnx / .safetensors")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = add("train", cmd_train, "Train a model from a configuration.")
    add_train_arguments(sp)

    sp = add("export", cmd_export, "Export a saved model to ONNX (checked against torch).")
    sp.add_argument("--model", required=True, help="NAME.safetensors (+ NAME.json)")
    sp.add_argument("--out", required=True, help="NAME.onnx (NAME.json is written beside it)")
    sp.add_argument("--opset", type=int, default=17)

    sp = add("evaluate", cmd_evaluate, "NME, failure rate, AUC and CED plot on a labelled folder.")
    sp.add_argument("--data", required=True, help="a labelled folder (AFW, AFLW2000-3D, ...)")
    model_args(sp)
    sp.add_argument("--split", default="all", choices=["all", "val", "test"],
                    help="AFLW2000-3D protocol split (seeded 10%%/90%%)")
    sp.add_argument("--seed", type=int, default=0, help="split seed")
    sp.add_argument("--boxes", default="gt", choices=["gt", "detector"],
                    help="face boxes from ground-truth landmarks or from the bundled detector")
    sp.add_argument("--json", help="write the report here")
    sp.add_argument("--plot", help="write the CED plot (PNG) here")
    sp.add_argument("--quiet", action="store_true")

    sp = add("predict", cmd_predict, "68 landmarks for every face in photos (or in one given box).")
    sp.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    model_args(sp)
    sp.add_argument("--box", help="x1,y1,x2,y2: a face box to use instead of the detector")
    sp.add_argument("--box-kind", default="face", choices=["face", "landmarks"],
                    help="--box is a detector-style face box (default) or a tight landmark box")
    sp.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                    help="write JSON (boxes, scores, points) to FILE, or stdout without FILE")
    sp.add_argument("--out", help="annotated image (one input) or folder for annotated images")
    sp.add_argument("--threshold", type=float, default=0.7, help="detector score threshold")
    sp.add_argument("--no-refine", action="store_true", help="skip the second, re-centred pass")
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

    sp = add("synth", cmd_synth, "Render synthetic faces (FaceSynthetics format) from the ICT model.")
    data_engine_args(sp)
    sp.add_argument("--size", type=int, default=256)
    sp.add_argument("--seg", action="store_true", help="also write _seg.png masks")

    sp = add("profile", cmd_profile, "Turn real labelled faces in 3D (300W-LP style).")
    sp.add_argument("--data", required=True, help="a labelled folder (HELEN train, UTKFace)")
    data_engine_args(sp)
    sp.add_argument("--max-yaw", type=float, default=60.0)

    sp = add("seed-table", cmd_seed_table, "Reproduce the seed's four-row augmentation table.")
    sp.add_argument("--config", default="configs/seed.yaml")
    sp.add_argument("--data", help="training folder (default: the config's first train_data)")
    sp.add_argument("--eval", dest="eval_data", action="append",
                    help="evaluation folder(s) (default: the config's val_data and AFW)")
    sp.add_argument("--epochs", type=int, default=3, help="epochs per row (the seed used 25)")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--out", default="runs/seed_table")
    sp.add_argument("--json", help="write the table as JSON here")
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


if __name__ == "__main__":
    raise SystemExit(main())
