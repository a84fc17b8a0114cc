"""Copy the tables of benchmarks/RESULTS.md into README.md between the results markers.

Usage: python benchmarks/update_readme.py   (after benchmarks/peers.py)
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def main() -> None:
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    header = re.search(r"^- Date: .*$", results, re.M).group(0)
    machine = re.search(r"^- Machine: .*$", results, re.M).group(0)
    load = re.search(r"^- Load: .*$", results, re.M).group(0)
    tables = [block for block in results.split("\n\n") if block.lstrip().startswith("| method")]
    body = "\n".join([header, machine, load, "", "Accuracy (NME in %, FR in %; misses count as failures):",
                      "", tables[0], "", "Speed and size (one thread; ratio = dlib time / this time), all "
                      "methods interleaved call by call:", "", tables[1]]
                     + (["", "Landmarks from a given box, one library at a time (a whole pass over the "
                         "images each, as a program runs one of them):", "", tables[2]]
                        if len(tables) > 2 else []))
    readme = (REPO / "README.md").read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    from lightmark.core.files import write_text

    write_text(REPO / "README.md", before + START + "\n" + body + "\n" + END + after)
    print("README.md: benchmark tables updated")


if __name__ == "__main__":
    main()
