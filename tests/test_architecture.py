"""The house plan, checked: packages import only downwards, no module imports itself back
through others, and only the Dagger executor imports `dagger`.

    errors → dockerfile → oci → settings → cache → engines → output → commands → cli

Type-only imports count too: a circle that only `TYPE_CHECKING` hides is still a circle a
reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"
LAYERS = (
    ("__init__", "errors"),
    ("dockerfile",),
    ("oci",),
    ("settings",),
    ("cache",),
    ("engines",),
    ("output",),
    ("commands",),
    ("cli", "main", "__main__"),
)
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """`pipeline.*` and `dagger` modules imported, with the line, and whether at module level
    outside `if TYPE_CHECKING:` (a runtime import at import time)."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    found.append((full if full in modules() else child.module, child.lineno, top))
            elif _deferred(child):
                visit(child, False)
            else:
                visit(child, top)

    visit(tree, True)
    return found


def _deferred(node: ast.AST) -> bool:
    """What is not run when the module loads: type-only blocks and bodies of defs."""
    if isinstance(node, ast.If):
        return "TYPE_CHECKING" in ast.unparse(node.test)
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else "__init__"]


def test_packages_import_only_downwards() -> None:
    wrong = []
    for name, path in modules().items():
        for imported, line, _ in imports(path):
            if imported.startswith("pipeline") and layer(imported) > layer(name):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} → {imported}")
    assert wrong == []


def test_no_import_circles() -> None:
    graph = {
        name: {i for i, _, _ in imports(path) if i.startswith("pipeline") and i != name}
        for name, path in modules().items()
    }
    graph = {name: {i for i in edges if i in graph} for name, edges in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(name: str, stack: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                walk(target, [*stack, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_dagger_is_imported_only_by_its_executor_and_only_when_chosen(name: str) -> None:
    for imported, line, top in imports(modules()[name]):
        if imported == "dagger" or imported.startswith("dagger."):
            assert name == "pipeline.engines.dagger_engine", f"{name}:{line} imports {imported}"
            assert not top, f"{name}:{line} imports dagger when the module loads"


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_says_what_it_does(name: str) -> None:
    tree = ast.parse(modules()[name].read_text())
    assert ast.get_docstring(tree), f"{name} has no module docstring"
