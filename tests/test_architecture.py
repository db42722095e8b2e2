"""The layering of the code, checked from the source (ast: nothing is imported or run).

docs/architecture.md explains the picture; this keeps it true:

    flows.cli        the commands                       may import everything below
    flows.training   the training flow and its stages
    flows.reports    figures, model card, HTML pages
    flows.predict    the batch-prediction flow and its plain parts
    flows.registry   versions, manifest, ONNX, provenance
    flows.runtime    Prefect settings, embedded server, console
    flows.paths      locations under DIGITFLOW_HOME
    netcore          the model and its input contract   numpy, Pillow, pyarrow, safetensors

- no import cycle between modules (every import counts, also one inside a function);
- no package imports one above it;
- netcore imports neither flows nor Prefect;
- nothing outside flows/cli/ imports flows.cli;
- Prefect (prefect, prefect_dask) only in flows/*/flow.py, flows/cli/ and flows/runtime/, so
  that a spawned worker, a test or a benchmark can import any stage's logic without it;
- package __init__.py files import nothing.

Imports under `if TYPE_CHECKING:` (for annotations only) never run and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("netcore", "flows")
# Lowest first: a module may import its own package and any package listed before it.
LAYERS = (
    "netcore",
    "flows.paths",
    "flows.runtime",
    "flows.registry",
    "flows.predict",
    "flows.reports",
    "flows.training",
    "flows.cli",
)
PREFECT = ("prefect", "prefect_dask")
# Modules outside flows/*/flow.py, flows/cli/ and flows/runtime/ allowed to import Prefect, each
# with the reason. None today.
PREFECT_EXCEPTIONS: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    }


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree, at any depth, except those under `if TYPE_CHECKING:` (imports
    for annotations only, which never run)."""
    nodes, pending = [], [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                pending.extend(child.orelse)
                continue
            pending.append(child)
    return nodes


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement in the file names (`from a.b import c` names
    `a.b.c`: a module, or a name in `a.b`), at any depth of the file, that can run."""
    names: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use the absolute name)"
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of netcore and flows it imports."""
    modules = source_modules()
    graph = {}
    for name, path in modules.items():
        targets = {imported for imported in imported_names(path) if imported in modules}
        graph[name] = targets - {name}
    return graph


def layer(module: str) -> int:
    matches = [
        i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} belongs to no layer: add its package to LAYERS"
    return max(matches)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_source() -> None:
    graph = import_graph()
    assert "flows.training.flow" in graph and "netcore.network" in graph
    # Spot checks that the reader sees both import forms, also inside functions.
    assert "flows.training.download" in graph["flows.training.flow"]
    assert "flows.training.flow" in graph["flows.cli.train"]  # imported inside the command


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_imports_for_annotations_only_are_not_counted() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
        "def f():\n    import c\n"
    )
    imported = {
        alias.name for n in runtime_nodes(tree) if isinstance(n, ast.Import) for alias in n.names
    }
    assert imported == {"b", "c"}


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_package_imports_one_above_it() -> None:
    upward = [
        f"{module} (layer {LAYERS[layer(module)]}) imports {target} ({LAYERS[layer(target)]})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert upward == []


def test_netcore_imports_neither_flows_nor_prefect() -> None:
    offending = [
        f"{name} imports {imported}"
        for name, path in source_modules().items()
        if name.startswith("netcore")
        for imported in sorted(imported_names(path))
        if imported.split(".")[0] in ("flows", *PREFECT)
    ]
    assert offending == []


def test_only_the_cli_imports_the_cli() -> None:
    offending = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if not module.startswith("flows.cli")
        for target in sorted(targets)
        if target.startswith("flows.cli")
    ]
    assert offending == []


def prefect_allowed(module: str) -> bool:
    return (
        module.startswith(("flows.cli.", "flows.runtime."))
        or (module.startswith("flows.") and module.endswith(".flow"))
        or module in PREFECT_EXCEPTIONS
    )


def test_prefect_only_in_flows_the_cli_and_the_runtime() -> None:
    offending = [
        f"{name} imports {imported}"
        for name, path in source_modules().items()
        if not prefect_allowed(name)
        for imported in sorted(imported_names(path))
        if imported.split(".")[0] in PREFECT
    ]
    assert offending == []


@pytest.mark.parametrize(
    "package", ["flows", *sorted({p.parent.name for p in (REPO / "flows").glob("*/__init__.py")})]
)
def test_package_init_files_import_nothing(package: str) -> None:
    init = REPO / "flows" / ("" if package == "flows" else package) / "__init__.py"
    tree = ast.parse(init.read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
