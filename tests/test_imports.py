"""The package's layering: no import circles, and the core never reaches up into autoplace.study.

Every import counts, a deferred one inside a function too: a circle that only closes at run time is still a
circle. The faces (cli.py, api.py) may import anything; the core (every other module outside study/) may not
import study/.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autoplace"
FACES = {"autoplace", "autoplace.__main__", "autoplace.cli", "autoplace.api"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's own modules this file imports, resolved to module names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from .x import y`: y may be a name, not a module
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the path that closes it (depth-first search, colours)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt == "autoplace":  # the package's own __init__ imports nothing at import time but api lazily
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_graph_sees_the_imports_it_must_see():
    """The walk resolves relative and deferred imports (so the tests below can fail)."""
    edges = graph()
    assert "autoplace.inference" in edges["autoplace.trainer"]
    assert "autoplace.config" in edges["autoplace.study.opening"]
    assert "autoplace.study.run" in edges["autoplace.api"]  # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_circles():
    assert cycles(graph()) == []


def test_the_core_never_imports_the_study_subpackage():
    offenders = {name: sorted(t for t in targets if t.startswith("autoplace.study"))
                 for name, targets in graph().items()
                 if not name.startswith("autoplace.study") and name not in FACES}
    assert {name: t for name, t in offenders.items() if t} == {}


def test_only_the_storage_module_touches_optunas_private_attributes():
    """Optuna's internals live in one room (study/storage.py), where each use names the version it was checked
    against."""
    private = ("._storage", "._trial_id", "._study_id", "._backend", "._CachedStorage", "_get_trials",
               "_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_stale_trial_ids")
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if any(word in p.read_text(encoding="utf-8") for word in private))
    assert users == ["study/storage.py"]
