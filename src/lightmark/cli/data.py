"""`lightmark synth | profile | baseline-table`: the data engine and the original write-up's table."""
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


def cmd_baseline_table(args: argparse.Namespace) -> int:
    from lightmark.training.experiments import baseline_table_main

    return baseline_table_main(args)
