"""The package's layers: a module imports only from layers below its own (or from inside its own folder),
read from the source with `ast`, lazy imports inside functions included.

The folders are the layers' names: `base/` (errors, checks, files, progress...) at the bottom, `inspect/`
(attention, lens, patching, attribution) beside training and generation, `views/` above everything they
draw. A module or folder at the package root is one room; a new one must be given a layer below."""

import ast
from pathlib import Path

import llm_magics

PACKAGE = Path(llm_magics.__file__).parent

# Bottom first. Rooms in one layer do not import each other (training and generation in particular).
LAYERS = [
    {"base"},
    {"options"},
    {"loading", "quantization"},
    {"data"},
    {"training", "generation", "inspect"},
    {"evaluation", "runs", "lr_finder"},
    {"views"},
    {"api", "frontend"},
    {"magics"},
    {"completer"},  # the kernel's completions read the magics' command spec
    {"__init__"},  # the extension's entry point registers the magics
    {"__main__"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def room(path: Path) -> str:
    """The layer name of a file: its top-level module or folder under llm_magics/."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imported_rooms(path: Path) -> set[str]:
    """The package's rooms a file imports (relative or absolute), anywhere in the file."""
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for llm_magics/x.py, 1 for llm_magics/training/x.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1  # `.x` is this folder, `..x` its parent
                if up > depth:
                    continue
                base = list(path.relative_to(PACKAGE).parts[: depth - up])
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if node.module else [base + [alias.name] for alias in node.names]
            elif node.module and node.module.split(".")[0] == "llm_magics":
                target = node.module.split(".")[1:]
                names = [target] if target else [[alias.name] for alias in node.names]
            else:
                continue
            found.update(_module_or_init(name[0]) for name in names if name)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("llm_magics."))
    return found


def _module_or_init(name: str) -> str:
    """`from . import session_name` imports from the package's __init__, `from . import runs` a module."""
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else "__init__"


def test_every_module_has_a_layer():
    rooms = {room(p) for p in PACKAGE.rglob("*.py")}
    assert rooms - set(LAYER) == set(), "give the new module or folder a layer in LAYERS"


def test_no_import_runs_back_up():
    upward = {
        (room(path), target)
        for path in PACKAGE.rglob("*.py")
        for target in imported_rooms(path) - {room(path)}
        if target in LAYER and LAYER[target] >= LAYER.get(room(path), len(LAYERS))
    }
    assert upward == set(), "an import runs up (or sideways within a layer)"


def test_the_bottom_folder_imports_nothing_of_the_package_outside_itself():
    for path in (PACKAGE / "base").rglob("*.py"):
        assert imported_rooms(path) <= {"base"}, path


def test_training_and_generation_stay_apart():
    """The two rooms that used to import each other (compile_backend, context_length, the input checks)."""
    for path in (PACKAGE / "training").rglob("*.py"):
        assert "generation" not in imported_rooms(path), path
    assert "training" not in imported_rooms(PACKAGE / "generation.py")


def test_the_parser_sees_relative_and_lazy_imports():
    """The oracle for the checks above: hand-written files with known imports."""
    assert imported_rooms(PACKAGE / "training" / "loop.py") >= {"base", "data", "loading", "training"}
    assert "base" in imported_rooms(PACKAGE / "runs.py")  # base.html, a lazy import inside a function
    assert "base" in imported_rooms(PACKAGE / "views" / "training_chart.py")  # `from ..base.html import`
    assert "inspect" in imported_rooms(PACKAGE / "views" / "heatmap.py")  # `from ..inspect.patching import`
    assert imported_rooms(PACKAGE / "__main__.py") == {"__init__", "magics", "frontend"}  # `from . import Session`
    assert imported_rooms(PACKAGE / "api.py") >= {"generation", "training", "runs", "loading", "inspect"}


def test_results_below_views_draw_through_the_registry():
    """PatchingResult.view() and AttributionResult.view() reach views/heatmap.py through base/drawing.py."""
    from llm_magics.base import drawing
    from llm_magics.base.drawing import draw
    from llm_magics.inspect.attribution import AttributionResult
    from llm_magics.inspect.patching import PatchingResult
    from llm_magics.views.heatmap import attribution_view, patching_view

    assert drawing._DRAWERS[PatchingResult] is patching_view
    assert drawing._DRAWERS[AttributionResult] is attribution_view
    try:
        draw(object())
    except TypeError as error:
        assert "no view is registered for object" in str(error)
    else:
        raise AssertionError("an unregistered type must be refused")
