"""`lightmark synth | profile | fit21 | baseline-table`: the data engine, AFLW-21 labels and the
original write-up's table."""
from __future__ import annotations

import argparse
import json


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


def cmd_fit21(args: argparse.Namespace) -> int:
    from lightmark.core.errors import CliError
    from lightmark.synth.fit21_labels import check_aflw2000, fit21_main

    if args.check:
        if args.data or args.out:
            raise CliError("--check scores the fit on AFLW2000-3D; it takes no --data / --out")
        from lightmark.cli.common import print_json

        report = check_aflw2000(args.check, jaw=args.jaw)
        if args.json:
            print_json(report, args.json)
        print(f"{report['n']} faces ({len(report['failed'])} failed), jaw {args.jaw}, "
              f"{report['cpu_ms_per_face']} ms CPU per face; NME (% of the GT box) by |yaw|:")
        print("points      0-30   30-60   60-90  balanced   mean")
        for part, label in (("all", "0-67"), ("inner", "17-67"), ("jaw", "0-16"),
                            ("common14_fit", "14 fit"), ("common14_clicks", "14 click")):
            r = report[part]
            print(f"{label:8s} " + " ".join(f"{100 * r[k]:7.2f}" for k in
                                            ("yaw_0_30", "yaw_30_60", "yaw_60_90", "yaw_balanced", "mean")))
        return 0
    if not args.data or not args.out:
        raise CliError("needs --data and --out (or --check AFLW2000_DIR)")
    stats = fit21_main(data=args.data, out=args.out, limit=args.limit, seed=args.seed,
                       workers=args.workers, jaw=args.jaw, progress=args.progress)
    print(json.dumps(stats))
    return 0


def cmd_baseline_table(args: argparse.Namespace) -> int:
    from lightmark.training.experiments import baseline_table_main

    return baseline_table_main(args)
