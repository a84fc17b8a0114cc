"""`lightmark info | train | export | evaluate | fit-box-mapping`: the model's life cycle."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lightmark.cli.common import landmarker_from, print_json
from lightmark.core.errors import CliError


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
        print_json(info, None)
    else:
        print(f"model: {cfg.backbone} x{cfg.width}, head {cfg.head} ({cfg.head_block} block, {cfg.head_channels} ch, "
              f"{cfg.heatmap_size}x{cfg.heatmap_size}), input {cfg.input_size}x{cfg.input_size}")
        print(f"parameters: {info['params']:,} (backbone {info['params_backbone']:,}, "
              f"head {info['params_head']:,})")
        print(f"float32 size: {info['float32_mb']:.2f} MB")
        print(f"multiply-adds: {info['macs'] / 1e6:.1f} M at {cfg.input_size}x{cfg.input_size}")
        print(f"output: {tuple(info['output_shape'])}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lightmark.training.loop import run_from_args

    return run_from_args(args)


def cmd_export(args: argparse.Namespace) -> int:
    from lightmark.export import export_onnx

    out = export_onnx(args.model, args.out, opset=args.opset)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lightmark.evaluate import evaluate, write_report

    landmarker = landmarker_from(args)
    predictor = landmarker.predictor
    detector = landmarker if args.boxes == "predict_all" else None
    if args.boxes == "detector":
        from lightmark.runtime.detector import FaceDetector

        detector = FaceDetector(threads=args.threads, mirror=args.detect_mirror)
    report = evaluate(predictor, args.data, split=args.split, box_source=args.boxes,
                      detector=detector, seed=args.seed, progress=not args.quiet,
                      convention=args.convention)
    s = report["summary"]
    to_stdout = args.json == "-"  # the report goes to stdout: the summary lines to stderr
    say = (lambda text: print(text, file=sys.stderr)) if to_stdout else print
    line = (f"{args.data} [{args.split}, {args.boxes} boxes, {report['convention']}] n={s['n']}: "
            f"NME_box {s['nme_box']:.2f}%  NME_io {s['nme_io']:.2f}%  "
            f"FR@8 {s['fr_8_io']:.1f}%  AUC@8 {s['auc_8_io']:.3f}")
    if s.get("n_missed"):
        line += f"  missed {s['n_missed']}"
    say(line)
    yaw = [k for k in s if k.startswith("nme_box_yaw")]
    if yaw:
        say("  yaw bins (NME_box %): " + ", ".join(f"{k[12:]}: {s[k]:.2f}" for k in yaw))
    if to_stdout:
        from lightmark.evaluate import _json_safe

        print(json.dumps(_json_safe(report), indent=2, allow_nan=False))
    if (args.json and not to_stdout) or args.plot:
        json_path = args.json if args.json and not to_stdout else str(Path(args.plot).with_suffix(".json"))
        written = write_report(report, json_path, plot_path=args.plot)
        say("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def cmd_fit_box_mapping(args: argparse.Namespace) -> int:
    from lightmark.core.boxmap import DEFAULT_MAPPING
    from lightmark.training.box_mapping import fit_box_mapping, write_box_mapping

    mapping = fit_box_mapping(args.datasets, args.limit, seed=args.seed)
    if args.note:
        mapping["note"] = args.note
    write_box_mapping(mapping, args.out or DEFAULT_MAPPING)
    print(json.dumps(mapping, indent=2))
    return 0
