"""Architecture contracts, read from the source with ``ast`` (nothing is imported or run).

- ``tgdp/`` is the maths: it never imports the study system, Ray, MLflow, Optuna, argparse or matplotlib,
  so the same stage code runs in a notebook, a test or a Ray Train worker.
- No import cycle among the project's modules (imports inside functions count too: a lazy import that
  closes a cycle still ties the two modules together).
- Every module in ``tgdp/`` and ``study/`` is readable in one sitting: at most 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tgdp", "study")
FORBIDDEN_IN_TGDP = ("study", "ray", "mlflow", "optuna", "argparse", "matplotlib")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module name ``path`` imports, absolute, at any depth of the file."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _project_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: {m for m in _imports(name, path) if m in mods and m != name} for name, path in mods.items()}


def test_tgdp_imports_no_system_or_ui_library() -> None:
    # guards the layering: the maths must run without Ray/MLflow/Optuna and without a CLI or plotting stack
    bad = []
    for name, path in _modules().items():
        if name.split(".")[0] != "tgdp":
            continue
        for imported in _imports(name, path):
            if imported.split(".")[0] in FORBIDDEN_IN_TGDP:
                bad.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not bad, "tgdp/ must stay pure maths:\n" + "\n".join(sorted(set(bad)))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan); a package's ``__init__`` importing
    its own submodules to re-export them is not a cycle when the submodules do not import the package back."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    # guards the structure: modules that import each other cannot be read, tested or changed one at a time
    graph = _project_graph()
    # a submodule naming its own package (``from study import UserError``) is the package's public API, not a
    # cycle, as long as the package's __init__ does not import that submodule back
    for name in graph:
        parent = name.rpartition(".")[0]
        if parent in graph and name in graph[parent]:
            continue
        graph[name].discard(parent)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_detector_finds_a_cycle() -> None:
    # the detector itself must be able to fail
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_fits_in_one_sitting(name: str) -> None:
    # guards readability: a module over 400 lines holds two concepts (STYLE.md)
    path = _modules()[name]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (max {MAX_LINES}): split it by concept"
