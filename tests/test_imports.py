"""The package's import structure: which part of lightmark may import which.

Every module under src/lightmark/ is parsed (not imported) and its ``lightmark.*`` imports are
collected, at module level (run when the module is imported; class bodies and ``try`` blocks
included, ``if TYPE_CHECKING:`` blocks not) and inside functions (run when called). Then:

- (a) module-level imports have no cycle;
- (b) module-level imports between parts follow the layers (``ALLOWED``): ``core`` at the bottom
  (numpy only), ``data`` / ``models`` / ``runtime`` on it, ``training`` above those, ``api`` on
  ``core`` and ``runtime`` (torch-side modules only inside functions), ``cli`` on top; at any
  level, ``core`` imports nothing else of lightmark and nothing imports ``cli``;
- (c) with torch blocked, ``lightmark``, ``lightmark.api``, every ``lightmark.runtime``,
  ``lightmark.core`` and ``lightmark.data`` module imports.

A failure names each offending edge: ``importer -> imported (file:line, level)``.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "lightmark"

#: For each part (``lightmark.<part>``; "lightmark" is the package's own __init__), the other parts
#: its modules may import at module level. A part always may import its own modules. ``None``:
#: anything. A part not listed may import anything but ``cli``.
ALLOWED: dict[str, Optional[set[str]]] = {
    "core": set(),
    "data": {"core"},
    "models": {"core"},
    "runtime": {"core"},
    # training fits the detector's box mapping, so it may run the (torch-free) runtime
    "training": {"core", "data", "models", "runtime", "evaluate"},
    "api": {"core", "runtime"},
    "evaluate": {"core", "data"},
    "export": {"core", "models"},
    "synth": {"core", "data"},
    "tracking": {"core"},  # drives a Landmarker handed to it; never imports the API
    "video": {"core"},
    "lightmark": set(),  # `import lightmark` stays cheap: its names load lazily
    "__main__": {"cli"},  # `python -m lightmark`
    "cli": None,
}
#: Parts that import nothing outside themselves at any level (inside functions too).
SEALED = {"core"}
#: Parts that nothing else may import, at any level ("__main__" is the command's entry point).
TOP = {"cli": {"__main__"}}

#: Edges that break a rule today, each with why it is tolerated; reported to the lead. A listed
#: edge that is gone must be removed from here (the test says so), so the list cannot go stale.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    src: str  # importing module
    dst: str  # imported lightmark module (the package itself when no submodule is named)
    path: str  # file of the importing module, relative to src/
    line: int
    module_level: bool

    def __str__(self) -> str:
        where = "module level" if self.module_level else "inside a function"
        return f"{self.src} -> {self.dst} ({self.path}:{self.line}, {where})"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(src: Path = SRC, package: str = "lightmark") -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> Optional[str]:
    """The longest known module that ``name`` is or lies in (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str], src: Path = SRC,
               package: str = "lightmark") -> list[Edge]:
    """The ``package.*`` imports in one module's source, each with its line and level."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    rel = str(path.relative_to(src))
    edges: list[Edge] = []

    def add(target: str, node: ast.stmt, module_level: bool) -> None:
        dst = _resolve(target, known)
        if dst is not None and dst != name:
            edges.append(Edge(name, dst, rel, node.lineno, module_level))

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            module_level = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the `if TYPE_CHECKING:` body never runs
                visit(child, module_level)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    add(alias.name, node, module_level)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the importing module's package
                here = name if is_pkg else name.rpartition(".")[0]
                base = ".".join(here.split(".")[: len(here.split(".")) - (node.level - 1)])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] == package:
                for alias in node.names:
                    sub = f"{mod}.{alias.name}"
                    add(sub if sub in known else mod, node, module_level)
        for child in ast.iter_child_nodes(node):
            visit(child, module_level)

    visit(tree, True)
    return list(dict.fromkeys(edges))  # `from m import a, b` is one edge


def import_graph(src: Path = SRC, package: str = "lightmark") -> list[Edge]:
    modules = all_modules(src, package)
    known = set(modules)
    return [e for name, path in modules.items() for e in imports_of(name, path, known, src, package)]


def part(module: str) -> str:
    """``lightmark.core.geometry`` -> ``core``; ``lightmark.api`` -> ``api``; ``lightmark`` -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def find_cycle(edges: Iterable[Edge]) -> Optional[list[Edge]]:
    """One cycle of the directed graph, as its edges in order, or None."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.src, []).append(e)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[Edge] = []

    def dfs(node: str) -> Optional[list[Edge]]:
        state[node] = 1
        for e in sorted(graph.get(node, []), key=lambda e: (e.dst, e.line)):
            if state.get(e.dst) == 1:  # back to a module on the current path: a cycle
                on_path = [p.src for p in path] + [node]
                return path[on_path.index(e.dst):] + [e]
            if e.dst not in state:
                path.append(e)
                found = dfs(e.dst)
                if found:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def rule_violations(edges: Iterable[Edge], allowed: dict[str, Optional[set[str]]] = ALLOWED,
                    sealed: set[str] = SEALED, top: dict[str, set[str]] = TOP) -> list[tuple[Edge, str]]:
    """Edges against the layer rules, each with the rule it breaks."""
    out = []
    for e in edges:
        a, b = part(e.src), part(e.dst)
        if a == b:
            continue
        if b in top and a not in top[b]:
            out.append((e, f"nothing imports {b}"))
        elif a in sealed:
            out.append((e, f"{a} imports nothing else of lightmark, at any level"))
        elif e.module_level and allowed.get(a) is not None and b not in allowed[a]:
            ok = ", ".join(sorted(allowed[a])) or "nothing else of lightmark"
            out.append((e, f"{a} may import only {ok} at module level"))
    return out


@pytest.fixture(scope="module")
def graph() -> list[Edge]:
    edges = import_graph()
    assert len(edges) > 50, "the parser found almost no lightmark imports"
    return edges


def test_the_graph_holds_both_levels(graph) -> None:
    """Spot checks of the parser on edges that exist today, at both levels."""
    by = {(e.src, e.dst): e for e in graph}
    assert by[("lightmark.runtime.onnx", "lightmark.core.geometry")].module_level
    assert not by[("lightmark.api", "lightmark.runtime.onnx")].module_level  # inside _load_predictor
    assert not by[("lightmark.api", "lightmark.models")].module_level  # the torch backend
    assert by[("lightmark.__main__", "lightmark.cli")].module_level
    modules = all_modules()
    assert all(e.src in modules and e.dst in modules for e in graph)


def test_no_import_cycle_at_module_level(graph) -> None:
    cycle = find_cycle(e for e in graph if e.module_level)
    assert cycle is None, "module-level import cycle:\n  " + "\n  ".join(map(str, cycle or []))


def test_imports_follow_the_layers(graph) -> None:
    found = rule_violations(graph)
    unexpected = [f"{e}: {why}" for e, why in found if (e.src, e.dst) not in KNOWN_EXCEPTIONS]
    assert not unexpected, "imports against the layers:\n  " + "\n  ".join(unexpected)
    stale = set(KNOWN_EXCEPTIONS) - {(e.src, e.dst) for e, _ in found}
    assert not stale, f"no longer a violation, remove from KNOWN_EXCEPTIONS: {sorted(stale)}"


def test_every_part_of_the_package_is_placed() -> None:
    """A new part of the package (a new folder or top-level module) gets its rule in ALLOWED."""
    parts = {part(m) for m in all_modules()}
    assert parts - set(ALLOWED) == set(), f"parts without a rule in ALLOWED: {sorted(parts - set(ALLOWED))}"


def _toy(tmp_path: Path, files: dict[str, str]) -> list[Edge]:
    for rel, text in files.items():
        p = tmp_path / "lightmark" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return import_graph(tmp_path)


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    """The parser, cycle finder and rules on a small made-up package, where each is known to fire."""
    edges = _toy(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/a.py": "from lightmark.core import b\n",
        "core/b.py": "import lightmark.core.c as c\n",
        "core/c.py": "from . import a\n\ndef f():\n    from lightmark.data import reader\n",
        "data/__init__.py": "",
        "data/reader.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                           "    from lightmark.models import net\nfrom lightmark.core.a import x\n"),
        "models/__init__.py": "", "models/net.py": "class Net:\n    from lightmark.runtime import s\n",
        "runtime/__init__.py": "", "runtime/s.py": "def g():\n    import lightmark.cli\n",
        "cli/__init__.py": "",
    })
    got = {(e.src, e.dst, e.module_level) for e in edges}
    assert got == {("lightmark.core.a", "lightmark.core.b", True),
                   ("lightmark.core.b", "lightmark.core.c", True),
                   ("lightmark.core.c", "lightmark.core.a", True),  # relative import resolved
                   ("lightmark.core.c", "lightmark.data.reader", False),
                   ("lightmark.data.reader", "lightmark.core.a", True),  # TYPE_CHECKING block skipped
                   ("lightmark.models.net", "lightmark.runtime.s", True),  # class bodies run on import
                   ("lightmark.runtime.s", "lightmark.cli", False)}
    cycle = find_cycle(e for e in edges if e.module_level)
    assert cycle is not None and [e.src for e in cycle] == ["lightmark.core.a", "lightmark.core.b",
                                                            "lightmark.core.c"]
    assert cycle[-1].dst == cycle[0].src and "core/c.py:1, module level" in str(cycle[-1])
    assert find_cycle(e for e in edges if e.module_level and e.src != "lightmark.core.c") is None
    why = {(e.src, e.dst): rule for e, rule in rule_violations(edges)}
    assert why == {("lightmark.core.c", "lightmark.data.reader"):
                   "core imports nothing else of lightmark, at any level",
                   ("lightmark.models.net", "lightmark.runtime.s"):
                   "models may import only core at module level",
                   ("lightmark.runtime.s", "lightmark.cli"): "nothing imports cli"}


TORCH_FREE_SCRIPT = r"""
import importlib, json, sys, traceback

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test (imported as {name!r})")
        return None

sys.meta_path.insert(0, BlockTorch())
try:
    import torch  # noqa: F401
    blocked = False
except ImportError:
    blocked = True
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{f.filename}:{f.lineno}" for f in reversed(tb) if "lightmark" in f.filename), "?")
        failed[name] = f"{type(e).__name__}: {e} (at {where})"
print(json.dumps({"blocked": blocked, "failed": failed,
                  "torch_loaded": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
"""


def test_torch_free_modules_import_with_torch_blocked() -> None:
    mods = all_modules()
    names = ["lightmark", "lightmark.api"] + sorted(
        m for m in mods if part(m) in ("runtime", "core", "data") and m != "lightmark")
    assert "lightmark.core.geometry" in names and "lightmark.runtime.onnx" in names
    import lightmark

    # The subprocess imports the same lightmark as this test run.
    here = str(Path(lightmark.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", TORCH_FREE_SCRIPT, *names], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["blocked"], "the torch blocker did not block `import torch`"
    assert not result["failed"], "torch-free modules that did not import with torch blocked:\n  " + \
        "\n  ".join(f"{k}: {v}" for k, v in result["failed"].items())
    assert result["torch_loaded"] == []
