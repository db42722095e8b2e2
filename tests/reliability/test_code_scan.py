"""Nothing is ever unpickled: the code is scanned (its syntax tree, not its text) for the ways a
file could be loaded as pickled Python objects, or a string run as code.

Forbidden in netcore/, flows/, bench/ and docker/: importing pickle or a relative (cPickle,
dill, cloudpickle, joblib, shelve, marshal); `np.load` without `allow_pickle=False`; pandas'
`read_pickle`; `torch.load`; the builtins `eval` and `exec`; importing any of those modules by
name at run time. Imports are followed through aliases (`import numpy as np`,
`from torch import load as fetch`). And Prefect, whose default result serializer is pickle:
every task or flow that persists its result must serialize it as JSON.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

from tests.reliability.processes import REPO

SCANNED = ("netcore", "flows", "bench", "docker")
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
FORBIDDEN_CALLS = {
    "eval": "eval() runs a string as code",
    "exec": "exec() runs a string as code",
    "torch.load": "torch.load unpickles",
    "pandas.read_pickle": "read_pickle unpickles",
}
NUMPY_LOADS = {"numpy.load"}
IMPORTERS = {"__import__", "importlib.import_module"}


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attribute lookups on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the full dotted name it was imported as."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _resolve(name: str, aliases: dict[str, str]) -> str:
    head, _, rest = name.partition(".")
    full = aliases.get(head, head)
    return f"{full}.{rest}" if rest else full


def _imports_a_pickler(call: ast.Call) -> bool:
    first = call.args[0] if call.args else None
    return isinstance(first, ast.Constant) and str(first.value).split(".")[0] in PICKLERS


def findings(source: str, filename: str) -> list[str]:
    """Every forbidden construct in `source`, as "file:line: what"."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            for module in modules:
                if module.split(".")[0] in PICKLERS:
                    report(node, f"imports {module}")
        if not isinstance(node, ast.Call) or not (name := _dotted(node.func)):
            continue
        full = _resolve(name, aliases)
        if full in FORBIDDEN_CALLS:
            report(node, FORBIDDEN_CALLS[full])
        elif full in NUMPY_LOADS and not any(
            k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in node.keywords
        ):
            report(node, "np.load without allow_pickle=False")
        elif full in IMPORTERS and _imports_a_pickler(node):
            report(node, f"imports {node.args[0].value} at run time")
    return found


def python_files() -> list[Path]:
    return sorted(path for folder in SCANNED for path in (REPO / folder).rglob("*.py"))


def test_the_scan_covers_the_code() -> None:
    scanned = {path.relative_to(REPO).parts[0] for path in python_files()}
    assert scanned == set(SCANNED)
    assert len(python_files()) >= 40


def test_no_unpickling_and_no_eval_in_the_code() -> None:
    problems = [
        problem
        for path in python_files()
        for problem in findings(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("snippet", "what"),
    [
        ("import pickle", "imports pickle"),
        ("import cloudpickle as cp", "imports cloudpickle"),
        ("from joblib import load", "imports joblib"),
        ("import numpy as np\nnp.load('x.npy')", "np.load without allow_pickle=False"),
        ("import numpy\nnumpy.load('x', allow_pickle=True)", "np.load without allow_pickle"),
        ("from numpy import load as fetch\nfetch('x.npy')", "np.load without allow_pickle"),
        ("import torch\ntorch.load('m.pt', weights_only=True)", "torch.load unpickles"),
        ("from torch import load\nload('m.pt')", "torch.load unpickles"),
        ("import pandas as pd\npd.read_pickle('f')", "read_pickle unpickles"),
        ("eval('1 + 1')", "eval() runs a string"),
        ("exec(code)", "exec() runs a string"),
        ("__import__('pickle')", "imports pickle at run time"),
        ("import importlib\nimportlib.import_module('dill')", "imports dill at run time"),
    ],
)
def test_the_scan_finds_each_forbidden_construct(snippet: str, what: str) -> None:
    (problem,) = findings(snippet, "snippet.py")
    assert what in problem


def test_the_scan_allows_the_safe_forms() -> None:
    safe = """
import numpy as np
from torch import nn
np.load("x.npy", allow_pickle=False, mmap_mode="r")
model.eval()           # a method called eval is not the builtin
session.exec(query)
"""
    assert findings(safe, "safe.py") == []


def test_persisted_prefect_results_are_json() -> None:
    """Prefect pickles persisted task and flow results unless told otherwise."""
    from prefect import Flow, Task
    from prefect.serializers import JSONSerializer

    import flows

    persisted = []
    for module in pkgutil.walk_packages(flows.__path__, "flows."):
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, Task | Flow) and value.persist_result:
                persisted.append(value)
                serializer = value.result_serializer
                assert serializer == "json" or isinstance(serializer, JSONSerializer), value.name
    assert persisted  # the cached download and prepare stages
