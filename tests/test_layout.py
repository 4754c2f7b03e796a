"""The package's shape: a CLI that starts without torch, no import cycles, one owner of the run folder's names."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src" / "aisle"


def _imported_modules(cmd: str) -> set[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", cmd], capture_output=True, text=True, check=True)
    return {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("cmd", ["import aisle", "import aisle.cli", "import aisle.cli; aisle.cli.app"])
def test_the_cli_and_the_package_start_without_torch(cmd: str) -> None:
    heavy = {m for m in _imported_modules(cmd) if m.split(".")[0] in {"torch", "lightning", "timm", "transformers"}}
    assert heavy == set(), f"{cmd!r} imports {sorted(heavy)[:5]}"


def test_lazy_exports_resolve() -> None:
    import aisle

    for name in aisle.__all__:
        assert getattr(aisle, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        aisle.nope  # noqa: B018


def _unit(module: str) -> str | None:
    """The package-level unit a module belongs to: ``aisle.training.cv`` -> ``training``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "aisle" and len(parts) > 1 else None


def _import_graph() -> dict[str, set[str]]:
    """unit -> the units its modules import (module level and inside functions alike)."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        unit = _unit(module)
        if unit is None:  # aisle/__init__.py: lazy re-exports of everything, imports nothing at run time
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                other = _unit(name)
                if other is not None and other != unit:
                    graph.setdefault(unit, set()).add(other)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []


def test_no_import_cycle_between_subpackages() -> None:
    graph = _import_graph()
    assert "training" in graph and "data" in graph["training"], "the graph reads the package's imports"
    assert _cycles(graph) == []


def test_lower_floors_never_import_higher_ones() -> None:
    graph = _import_graph()
    for low in ("data", "models", "registry", "serialization", "rundir", "config"):
        high = graph.get(low, set()) & {"training", "inference", "evaluation", "cli", "api", "cache"}
        assert high == set(), f"{low} imports {high}"


def test_only_rundir_spells_run_folder_file_names() -> None:
    pattern = re.compile(
        r"\"(best\.safetensors|cv_summary\.json|template\.safetensors|last\.json|done\.json|"
        r"label_map\.json|config\.yaml|folds\.csv|oof\.csv|history\.csv)\"|\"main\"|\"fold_"
    )
    offenders = [
        f"{p.relative_to(SRC)}:{i}"
        for p in SRC.rglob("*.py")
        if p.name != "rundir.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line) and not line.startswith("__all__")
    ]
    assert offenders == []


def _body_lines(f: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines without its docstring."""
    first = f.body[0]
    doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    return (
        (f.end_lineno or f.lineno)
        - f.lineno
        + 1
        - ((first.end_lineno or first.lineno) - first.lineno + 1 if doc else 0)
    )


def test_files_and_functions_stay_small() -> None:
    """House style: files under 400 lines, functions under 60 (docstrings not counted)."""
    long_files = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if len(p.read_text().splitlines()) > 400]
    long_functions = [
        f"{p.relative_to(SRC)}:{f.name} ({_body_lines(f)} lines)"
        for p in SRC.rglob("*.py")
        for f in ast.walk(ast.parse(p.read_text()))
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and _body_lines(f) > 60
    ]
    assert long_files == [] and long_functions == []
