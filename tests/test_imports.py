"""fwgen's modules import each other without cycles, counting the imports made inside
functions too (a cycle hidden behind a late import is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every fwgen module ``path`` imports, anywhere in it (``from fwgen import ir`` is
    fwgen.ir when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    paths = [p for p in (ROOT / "fwgen").rglob("*.py") if "compiled_templates" not in p.parts]
    modules = {module_name(p) for p in paths}
    out = {}
    for path in paths:
        name = module_name(path)
        out[name] = imports_of(path, modules) - {name}
        if name != "fwgen":
            out[name].discard("fwgen")  # every module's package is initialized first: not an edge back
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    edges = graph()
    assert len(edges) > 25 and "fwgen.engine" in edges["fwgen.lowering"]
    assert cycles(edges) == []


def test_the_detector_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_explain_interpreter_shares_nothing_with_the_engine() -> None:
    edges = graph()
    reached: set[str] = set()
    todo = ["fwgen.explain"]
    while todo:
        node = todo.pop()
        for nxt in edges[node] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert not reached & {"fwgen.engine", "fwgen.lowering", "fwgen.targets", "fwgen.lint_context", "fwgen.diff"}
