"""The package's layers: a module imports only from layers below its own (or from inside its own package),
read from the source with `ast`, lazy imports inside functions included. A new module must be given a layer."""
import ast
from pathlib import Path

import llm_magics

PACKAGE = Path(llm_magics.__file__).parent

# Bottom first. Modules in one layer do not import each other (training and generation in particular).
LAYERS = [
    {"errors", "interrupts", "status", "progress", "cells", "kinds"},
    {"checks", "devices", "files", "options", "views.html"},  # views/html.py: the plot theme and SVG chart
    {"loading", "quantization"},
    {"data"},
    {"attribution"},  # Captum's methods on a model: attention's --explain uses its gradient x input
    {"training", "generation", "attention", "lens"},
    {"patching", "evaluation", "runs", "lr_finder"},
    {"views"},
    {"api", "frontend"},
    {"magics"},
    {"__init__"},  # the extension's entry point registers the magics
    {"__main__"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}

# Results that draw themselves (`.view()`) import their view lazily, inside that method. Listed so that the
# list only shrinks.
UPWARD_FOR_NOW = {
    ("patching", "views"),  # PatchResult.view()
    ("attribution", "views"),  # Attribution.view()
}


def room(path: Path) -> str:
    """The layer name of a file: its top-level module or sub-package under llm_magics/."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "views.html" if parts[:2] == ("views", "html") else parts[0]


def imported_rooms(path: Path) -> set[str]:
    """The package's modules a file imports (relative or absolute), anywhere in the file."""
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for llm_magics/x.py, 1 for llm_magics/training/x.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1  # `.x` is this folder, `..x` its parent
                if up > depth:
                    continue
                base = list(path.relative_to(PACKAGE).parts[:depth - up])
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if node.module else [base + [alias.name] for alias in node.names]
            elif node.module and node.module.split(".")[0] == "llm_magics":
                target = node.module.split(".")[1:]
                names = [target] if target else [[alias.name] for alias in node.names]
            else:
                continue
            found.update("views.html" if name[:2] == ["views", "html"] else _module_or_init(name[0])
                         for name in names if name)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("llm_magics."))
    return found


def _module_or_init(name: str) -> str:
    """`from . import session_name` imports from the package's __init__, `from . import runs` a module."""
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else "__init__"


def test_every_module_has_a_layer():
    rooms = {room(p) for p in PACKAGE.rglob("*.py")}
    assert rooms - set(LAYER) == set(), "give the new module a layer in LAYERS"


def test_no_import_runs_back_up():
    upward = set()
    for path in PACKAGE.rglob("*.py"):
        source = room(path)
        for target in imported_rooms(path) - {source}:
            if target in LAYER and LAYER[target] >= LAYER.get(source, len(LAYERS)):
                upward.add((source, target))
    assert upward - UPWARD_FOR_NOW == set(), "an import runs up (or sideways within a layer)"
    assert UPWARD_FOR_NOW - upward == set(), "fixed: remove it from UPWARD_FOR_NOW"


def test_training_and_generation_stay_apart():
    """The two rooms that used to import each other (compile_backend, context_length, the input checks)."""
    for path in (PACKAGE / "training").rglob("*.py"):
        assert "generation" not in imported_rooms(path), path
    assert "training" not in imported_rooms(PACKAGE / "generation.py")


def test_the_parser_sees_relative_and_lazy_imports():
    """The oracle for the checks above: hand-written files with known imports."""
    assert imported_rooms(PACKAGE / "training" / "loop.py") >= {"data", "devices", "loading", "training"}
    assert "views.html" in imported_rooms(PACKAGE / "runs.py")  # a lazy import inside a function
    assert "views.html" in imported_rooms(PACKAGE / "views" / "training_chart.py")  # `from .html import`
    assert imported_rooms(PACKAGE / "__main__.py") == {"__init__", "magics"}  # `from . import Session`
    assert imported_rooms(PACKAGE / "api.py") >= {"generation", "training", "runs", "loading"}
