"""The layout tells the architecture: checks on the source itself, so that a change that breaks it fails here.

- ``experiments/`` imports in layers: no import circle, counting the imports inside functions too.
- Cells own their knowledge: no ``isinstance`` on a cell class outside ``gated/cells/``.
- ``gated.run`` fits on a screen (under 50 lines), and no function in ``gated/`` or ``experiments/`` is over 60
  lines but plotting code.
- A config imports nothing heavier than ml_collections (and ``configs.base``).
"""

import ast
import pathlib
import subprocess
import sys

import gated

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _sources(*folders):
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """The experiments modules that ``path`` imports, anywhere in it."""
    package = _module(path).rpartition(".")[0] if path.name != "__init__.py" else _module(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = ".".join(base[: len(base) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
            found |= {f"{target}.{a.name}" for a in node.names} | {target}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("experiments"):
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    modules = {_module(p) for p in _sources("experiments")}
    return {m for m in found if m in modules and m != _module(path)}


def test_experiments_import_in_layers_without_a_circle():
    graph = {_module(p): _imports(p) for p in _sources("experiments")}
    graph = {m: {d for d in deps if not m.startswith(d + ".") and d != "experiments"} for m, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import circle: {' -> '.join([*path, module])}"
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    assert "experiments.report" not in graph["experiments.engine"]  # the circle the layers removed
    assert graph["experiments.config"] <= {"experiments.tasks", "experiments.train"}


def test_no_isinstance_on_a_cell_class_outside_the_cells_package():
    cell_classes = {name for name in gated.cells.__all__
                    if isinstance(getattr(gated.cells, name), type) and issubclass(getattr(gated.cells, name),
                                                                                     gated.cells.Cell)}  # fmt: skip
    assert {"Cell", "LSTM", "GRU", "RNN", "LinearCell"} <= cell_classes
    found = []
    for path in _sources("gated", "experiments"):
        if path.is_relative_to(ROOT / "gated" / "cells"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                names = {
                    n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "") for n in ast.walk(node.args[1])
                }
                if names & cell_classes:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"isinstance on a cell class: {found}; ask the cell (gated.cells.require, a method)"


def _functions(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.end_lineno - node.lineno + 1, node.lineno


def test_functions_fit_on_a_screen():
    run = dict((name, n) for name, n, _ in _functions(ROOT / "gated" / "scan.py"))["run"]
    assert run < 50, f"gated.run is {run} lines"
    plotting = lambda name: name.startswith("plot") or name.endswith("figure")
    long = [f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)" for p in _sources("gated", "experiments")
            for name, n, line in _functions(p) if n > 60 and not plotting(name)]  # fmt: skip
    assert not long, long


def test_configs_import_only_ml_collections():
    allowed = {"ml_collections", "configs"}
    for path in _sources("configs"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            heavy = [n for n in names if n.split(".")[0] not in allowed]
            assert not heavy, f"{path.relative_to(ROOT)} imports {heavy}"
    code = ("import sys; sys.path.insert(0, '.'); from configs import adding; from configs.studies import rnn_lag; "
            "adding.get_config(); rnn_lag.get_config('tiny'); "
            "print(sorted(m for m in ('jax', 'gated', 'flax', 'numpy') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:] or out.stdout
