"""Sphinx configuration of the docs site: MyST Markdown pages, the example notebooks through myst-nb, the API
reference through autodoc, pydata-sphinx-theme (as JupyterLab, Jupyter Server and ipywidgets build theirs).

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc imports this checkout's llm_magics

from llm_magics import __version__  # noqa: E402

# Sphinx reads only under docs/: the example notebooks are copied in (docs/examples/ is ignored by git; a symlink
# would not survive a Windows checkout, and the sdist would carry the notebooks twice).
NOTEBOOKS = Path(__file__).resolve().parent / "examples"
shutil.rmtree(NOTEBOOKS, ignore_errors=True)
NOTEBOOKS.mkdir()
for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
    shutil.copy2(notebook, NOTEBOOKS)  # with its time stamp, so an unchanged notebook is not read again

project = "llm-magics"
release = version = __version__
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
# The notebooks are shown as saved, never run here: CI time matters, and tests/test_notebooks.py runs them.
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links are checked: a missing anchor is a warning, so an error
autodoc_member_order = "bysource"
autodoc_typehints = "description"
default_role = "code"  # the docstrings write `name` for code, as Markdown does
html_theme = "pydata_sphinx_theme"
html_title = "llm-magics"
html_sidebars = {"**": []}  # one level of pages: the wide benchmark tables get the room
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
# The notebooks have no language_info, so their %%llm cells are lexed as plain Python (and retried relaxed).
suppress_warnings = ["misc.highlighting_failure"]


def fill_generated_blocks(app, docname, source):
    """Each page's generated blocks, rewritten from their sources as the page is read (docs/generate.py)."""
    import generate

    source[0] = generate.render(source[0])


def escape_keyword_stars(app, what, name, obj, options, lines):
    """`**options: ...` in a docstring is a parameter, not the start of bold text."""
    lines[:] = [re.sub(r"(?:^|(?<=\s))\*\*(\w)", r"\\*\\*\1", line) for line in lines]


def setup(app):
    sys.path.insert(0, str(Path(__file__).parent))
    app.connect("source-read", fill_generated_blocks)
    app.connect("autodoc-process-docstring", escape_keyword_stars)
