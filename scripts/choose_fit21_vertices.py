"""Choose the ICT vertices of AFLW's 7 non-iBUG points (eye centres, nose wings, ears, mouth
centre) on AFLW *training* faces (aflw_21pt; never AFLW2000-3D), and print them as
``lightmark.synth.fit21.AFLW21_VERTICES``.

    python scripts/choose_fit21_vertices.py --faces 400 --seed 1 --rounds 3
    python scripts/choose_fit21_vertices.py --groups "mouth centre" --from-current

    python scripts/choose_fit21_vertices.py --held-out --faces 200 --seed 2

The first form is the full choice (round 1 fits the 14 iBUG points alone). ``--from-current``
starts from the current AFLW21_VERTICES and re-chooses ``--groups`` with every other point in the
fit (their own group left out). ``--held-out`` only measures the current choice: each visible
point of each face predicted by a fit without it (``fit21_labels.held_out_errors``).
"""
from __future__ import annotations

import argparse
import json
import time

from lightmark.core.paths import data_root
from lightmark.data import open_dataset
from lightmark.synth import fit21, fit21_labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(data_root() / "aflw_21pt"))
    ap.add_argument("--faces", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--groups", action="append", help="some of: " + ", ".join(fit21_labels._GROUPS))
    ap.add_argument("--from-current", action="store_true")
    ap.add_argument("--held-out", action="store_true", help="only measure the current vertices")
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args()
    ds = open_dataset(a.data, limit=a.faces, seed=a.seed)
    if a.held_out:
        from lightmark.data.aflw21 import AFLW21_NAMES

        r = fit21_labels.held_out_errors([rec.points for rec in ds.records])
        for k, name in enumerate(AFLW21_NAMES):
            print(f"{k:2d} {name:24s} {100 * r[k]['mean']:5.2f} % ({r[k]['n']} clicks)")
        print(f"mean over points: {100 * r['mean']:.2f} %")
        return
    t0 = time.time()
    choice, report = fit21_labels.choose_vertices(
        [r.points for r in ds.records], rounds=a.rounds, groups=a.groups,
        start=dict(fit21.AFLW21_VERTICES) if a.from_current else None,
        log=lambda m: print(f"{m} ({time.time() - t0:.0f} s)", flush=True))
    print(json.dumps({str(k): list(v) for k, v in sorted(choice.items())}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "choice": {str(k): list(v) for k, v in choice.items()},
                       "report": report}, f, indent=1)


if __name__ == "__main__":
    main()
