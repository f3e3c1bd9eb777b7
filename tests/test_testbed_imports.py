"""The testbed package has no import cycle: modules form layers (state, kube, node, faults, health, startup, api).

Read from the source with ast (nothing is imported), so an import inside a function counts too: a
lazy import only hides a cycle until the day it is moved to the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "testbed"


def imports_of(path: Path) -> set[str]:
    """The modules of PATH's package that PATH imports (relative or as testbed.X), anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and (node.module or "").split(".")[0] == "testbed"):
                parts = (node.module or "").split(".")[node.level == 0:]
                found |= {parts[0]} if parts and parts[0] else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("testbed.")}
    return {m for m in found if (path.parent / f"{m}.py").exists() and m != path.stem}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per back edge met in a depth-first walk."""
    found: list[list[str]] = []
    state: dict[str, str] = {}  # module -> "open" while on the walk's stack, "done" after

    def walk(mod: str, stack: list[str]) -> None:
        state[mod] = "open"
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == "open":
                found.append([*stack[stack.index(dep):], mod, dep])
            elif dep not in state:
                walk(dep, [*stack, mod])
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            walk(mod, [])
    return found


def test_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    (tmp_path / "x.py").write_text("def f():\n    from . import y\n")
    (tmp_path / "y.py").write_text("from testbed.x import f\nimport testbed.z\n")
    assert imports_of(tmp_path / "x.py") == {"y"}
    assert imports_of(tmp_path / "y.py") == {"x"}  # z.py does not exist


def test_testbed_modules_import_no_cycle() -> None:
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    assert {"api", "faults", "node", "startup", "state"} <= set(graph)
    assert cycles(graph) == []
    assert "startup" not in graph["faults"] and "health" not in graph["faults"]
