"""The package's import structure: no cycles, deferred or not, and the model layer below inference,
training, run folders and diagnostics."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest

import ppgen

PACKAGE = Path(ppgen.__file__).resolve().parent
ROOT = PACKAGE.parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def imports(module: str) -> set[str]:
    """The ppgen modules ``module`` imports anywhere in its source (at the top or inside a function),
    leaving out its own parent packages (Python imports those first in any case)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            found = _resolve(target) if target.startswith("ppgen") else None
            if found and found != module and not module.startswith(found + "."):
                out.add(found)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_deferred_or_not() -> None:
    graph = {m: imports(m) for m in MODULES}
    assert cycles(graph) == []


#: The layer of the families (and what they are built from) imports none of the layers above it.
MODEL_LAYER = ("ppgen.models", "ppgen.program", "ppgen.contracts", "ppgen.bounds", "ppgen.nets", "ppgen.arviz_data",
               "ppgen.spec", "ppgen.spec_values", "ppgen.spec_yaml", "ppgen.overrides", "ppgen.data")
ABOVE = ("ppgen.inference", "ppgen.training", "ppgen.store", "ppgen.api", "ppgen.cli", "ppgen.evaluation",
         "ppgen.diagnostics")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_model_layer_imports_nothing_above_it() -> None:
    """Families declare what they can do (ppgen.contracts); routines, the loop, run folders and
    diagnostics use them, never the other way round."""
    wrong = sorted(f"{m} -> {t}" for m in MODULES if _within(m, MODEL_LAYER)
                   for t in imports(m) if _within(t, ABOVE))
    assert wrong == []
    assert imports("ppgen.models.energy.family") >= {"ppgen.models.energy.gibbs_kernel"}  # the scan sees what a family imports
    assert {"ppgen.spec_values", "ppgen.spec_yaml", "ppgen.overrides"} <= set(MODULES)  # the spec's modules are in the table


#: The families and what they are built from draw no figures and open no run folders: figures are found by
#: family class in ppgen.plots, the Bayesian workflow over runs is in ppgen.diagnostics.
FAMILIES = ("ppgen.models", "ppgen.nets", "ppgen.contracts", "ppgen.bounds", "ppgen.arviz_data", "ppgen.spec",
            "ppgen.spec_values", "ppgen.spec_yaml", "ppgen.overrides", "ppgen.data")
EDGE = ABOVE + ("ppgen.plots",)


def test_the_families_import_neither_figures_nor_run_folders() -> None:
    wrong = sorted(f"{m} -> {t}" for m in MODULES if _within(m, FAMILIES) for t in imports(m) if _within(t, EDGE))
    assert wrong == []
    assert imports("ppgen.plots.gan") >= {"ppgen.models.gan"}  # the figures import the family, not the other way


def _import_in_order(order: list[str]) -> subprocess.CompletedProcess:
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    return subprocess.run([sys.executable, "-c", code, *order], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled-1", "shuffled-2"])
def test_every_module_imports_in_a_fresh_interpreter_in_any_order(order: str) -> None:
    names = sorted(MODULES)
    if order == "reversed":
        names.reverse()
    elif order.startswith("shuffled"):
        random.Random(int(order.split("-")[1])).shuffle(names)
    done = _import_in_order(names)
    assert done.returncode == 0, done.stderr[-3000:]


def private_imports(source: str) -> list[str]:
    """The underscore names a module's source imports from ppgen modules (``from ppgen.x import _y``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ppgen":
            found += [f"{node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_the_private_import_finder_finds_one() -> None:
    assert private_imports("from ppgen.models.gan import GAN, _hidden\nfrom os import _exit\n") == \
        ["ppgen.models.gan._hidden"]


def test_no_module_imports_another_modules_underscore_name() -> None:
    """What one module uses of another is that module's public surface: a name starting with ``_`` is
    private to its module, so importing it elsewhere couples the two behind the reader's back."""
    found = {m: private_imports(p.read_text()) for m, p in MODULES.items()}
    assert not {m: v for m, v in found.items() if v}
