"""The tiers are marked on the tests themselves: every test module in tests/browser/ and tests/notebooks/
says, in its module-level `pytestmark`, that it is a browser (or notebook) test and a slow one, so that a new
file there cannot land in the everyday tier (`pytest -m "not slow"`) by forgetting it."""

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FOLDERS = {"browser": ("browser", "slow"), "notebooks": ("notebook", "slow")}


def module_marks(path: Path) -> set[str]:
    """The names X of every `pytest.mark.X` in the module's top-level `pytestmark = ...`."""
    marks = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            for sub in ast.walk(node.value):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Attribute)
                    and sub.value.attr == "mark"
                    and getattr(sub.value.value, "id", None) == "pytest"
                ):
                    marks.add(sub.attr)
    return marks


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_every_module_of_the_folder_carries_its_markers(folder):
    modules = sorted((TESTS / folder).glob("test_*.py"))
    assert modules, folder
    missing = {p.name: set(FOLDERS[folder]) - module_marks(p) for p in modules}
    assert not {name: marks for name, marks in missing.items() if marks}, missing


def test_the_check_sees_a_missing_marker(tmp_path):
    path = tmp_path / "test_new.py"
    path.write_text("import pytest\n\npytestmark = [pytest.mark.slow]\n")
    assert module_marks(path) == {"slow"}
    path.write_text("import pytest\n\npytestmark = pytest.mark.notebook\n")
    assert module_marks(path) == {"notebook"}
    path.write_text("import pytest\n")
    assert module_marks(path) == set()
