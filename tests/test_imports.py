"""The package's shape: imports run one way (down the layers, no circles), and commands that read files start
without PyTorch."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "cnnlab"


def imported_modules(path: Path) -> set[str]:
    """The cnnlab modules a file imports anywhere in it: at the top, inside functions, under TYPE_CHECKING."""
    modules = {p.stem for p in path.parent.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:  # from .runs import load_run
                found.add(node.module.split(".")[0])
            else:  # from . import distributed, __version__
                found.update(alias.name if alias.name in modules else "__init__" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("cnnlab."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("cnnlab."))
    return found - {path.stem}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    return {path.stem: imported_modules(path) for path in sorted(package.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports as [a, b, …, a], or None: a depth-first search that meets a module on its own path."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            if cycle := visit(target, path + [module]):
                return cycle
        done.add(module)
        return None

    for module in graph:
        if cycle := visit(module, []):
            return cycle
    return None


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


# The package's layers, top to bottom: a module imports its own layer or the layers below, never one above.
# `train` (a recipe into a run folder, the tutorial's steps 1–11) sits above the analysis it prints at the end
# (three random predictions); `inference` sits with the training loop it shares the engines with.
LAYERS = (
    ("apps", {"__main__", "cli", "serve", "studio"}),
    ("workflow", {"train", "teach"}),
    ("analysis", {"compare", "evaluation", "explain", "export", "inside", "prediction", "report"}),
    ("runs", {"runs", "checkpoint", "transfer"}),
    ("training", {"loop", "engines", "distributed", "inference"}),
    ("model/data", {"models", "data", "images", "recipes", "augment", "history", "schedule", "plots", "display",
                    "course"}),
    ("base", {"errors", "files", "threads", "device", "notebook", "__init__"}),
)


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Each import that goes up a layer, as 'a (layer) → b (higher layer)'."""
    depth = {module: i for i, (_, modules) in enumerate(layers) for module in modules}
    name = {module: layer for layer, modules in layers for module in modules}
    return [f"{a} ({name[a]}) → {b} ({name[b]})" for a, targets in sorted(graph.items()) for b in sorted(targets)
            if depth[b] < depth[a]]


def test_every_module_has_a_layer():
    placed = [module for _, modules in LAYERS for module in modules]
    assert len(placed) == len(set(placed)), "a module in two layers"
    assert set(import_graph()) == set(placed), "place the new module in LAYERS (tests/test_imports.py)"


def test_imports_run_down_the_layers():
    assert layer_violations(import_graph()) == []


def test_the_layer_check_finds_an_import_upwards():
    # A control: the data layer reaching up into the CLI is caught; the CLI reaching down is not.
    graph = {"data": {"cli", "errors"}, "cli": {"data"}, "errors": set()}
    layers = (("apps", {"cli"}), ("model/data", {"data"}), ("base", {"errors"}))
    assert layer_violations(graph, layers) == ["data (model/data) → cli (apps)"]

def test_the_circle_finder_finds_a_circle(tmp_path):
    # A control: three files importing round a circle, one of them inside a function.
    (tmp_path / "a.py").write_text("from .b import thing\n")
    (tmp_path / "b.py").write_text("def f():\n    from . import c\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n")
    (tmp_path / "d.py").write_text("from .a import thing\n")
    graph = {path.stem: imported_modules(path) for path in tmp_path.glob("*.py")}
    assert graph["b"] == {"c"}
    assert find_cycle(graph) in (["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"])
    graph["c"] = set()
    assert find_cycle(graph) is None


def modules_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running ``code`` (which must not print)."""
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env={"PYTHONPATH": str(REPO),
                                                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


HEAVY = {"torch", "matplotlib", "onnx", "numpy", "PIL"}


def test_importing_the_cli_loads_no_heavy_library():
    assert modules_after("import cnnlab.cli") & HEAVY == set()


def test_importing_cnnlab_outside_ipython_sets_up_nothing_for_it():  # cnnlab.notebook: only inside IPython
    assert modules_after("import cnnlab") & {"IPython", "rich", *HEAVY} == set()


def test_commands_that_read_files_load_no_heavy_library(digit_run):
    quiet = ("import contextlib, io\nfrom cnnlab import cli\n"
             "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), "
             "contextlib.suppress(SystemExit):\n    ")
    # and their one-line errors: a folder or recipe that is not there
    for argv in (["recipes"], ["recipes", "fashion-cnn"], ["runs", str(digit_run.parent)], ["--help"],
                 ["runs", str(digit_run.parent / "missing")], ["recipes", "missing"]):
        assert modules_after(quiet + f"cli.main({argv!r})") & HEAVY == set(), argv


def test_the_api_still_offers_every_name_lazily():
    import cnnlab

    for name in cnnlab.__all__:
        assert getattr(cnnlab, name) is not None
    assert "train_recipe" in dir(cnnlab)
