"""Copy the tables of benchmarks/RESULTS.md into README.md between the results markers.

Usage: python benchmarks/update_readme.py   (after benchmarks/peers.py)

Each table is found by the start of its header row (written by ``report.py``); a table that is
not in RESULTS.md (an older run) is left out with its caption.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"

#: (caption, start of the table's header row), in README order.
TABLES = (
    ("Accuracy (NME in %, FR in %; misses count as failures):", "| method | box | afw NME io"),
    ("AFLW2000-3D validation part by absolute yaw (NME_box in %, the AFLW2000-3D convention; its labels are "
     "projected 3D points, so the jaw differs from 300W's):", "| method | box | aflw2000_val 0–30"),
    ("Detector recall on aflw2000_val by absolute yaw (IoU >= 0.3 to the GT landmark box):", "| detector |"),
    ("Speed and size (one thread; ratio = dlib time / this time), all methods interleaved call by call:",
     "| method | landmarks only"),
    ("One library at a time (a whole pass over the images each, as a program runs one of them):",
     "| method, one library at a time"),
)


def find_table(results: str, header_start: str) -> Optional[str]:
    for block in results.split("\n\n"):
        if block.lstrip().startswith(header_start):
            return block.strip("\n")
    return None


def body(results: str) -> str:
    lines = [re.search(rf"^- {what}: .*$", results, re.M).group(0) for what in ("Date", "Machine", "Load")]
    for caption, header in TABLES:
        table = find_table(results, header)
        if table is not None:
            lines += ["", caption, "", table]
    return "\n".join(lines)


def main() -> None:
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    readme = (REPO / "README.md").read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    from lightmark.core.files import write_text

    write_text(REPO / "README.md", before + START + "\n" + body(results) + "\n" + END + after)
    print("README.md: benchmark tables updated")


if __name__ == "__main__":
    main()
