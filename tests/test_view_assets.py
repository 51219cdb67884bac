"""The anywidget views' shipped code: one module and one stylesheet per widget, composed from the shared
dom.js and theme.css; and one fallback colour per JupyterLab theme variable across the whole frontend."""

import re
import shutil
import subprocess

import pytest

from llm_magics.views import assets
from llm_magics.views.attention import AttentionView
from llm_magics.views.heatmap import HeatmapView
from support import ROOT

VIEWS = ROOT / "llm_magics" / "views"
WIDGETS = [(AttentionView, "attention"), (HeatmapView, "heatmap")]


@pytest.mark.parametrize(("widget", "name"), WIDGETS)
def test_each_widget_ships_one_module_with_the_shared_helpers_written_in(widget, name, tmp_path):
    esm, css = str(widget._esm), str(widget._css)
    own = (VIEWS / f"{name}.js").read_text()
    assert re.search(r"^import .* from [\"']\./dom\.js[\"'];$", own, re.MULTILINE)  # the file imports them
    assert not re.search(r"^\s*(import|export) ", esm.replace("export default", ""), re.MULTILINE)
    exported = re.findall(r"^export function (\w+)", (VIEWS / "dom.js").read_text(), re.MULTILINE)
    assert {"el", "shortToken"} <= set(exported)
    for helper in exported:  # written in once, and no copy of its own left in the widget
        assert len(re.findall(rf"^function {helper}\(", esm, re.MULTILINE)) == 1, helper
    assert css.startswith((VIEWS / "theme.css").read_text()) and css.endswith((VIEWS / f"{name}.css").read_text())
    if shutil.which("node"):  # the composed module parses as an ES module
        module = tmp_path / f"{name}.mjs"
        module.write_text(esm)
        checked = subprocess.run(["node", "--check", str(module)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_a_local_import_is_replaced_by_that_module_without_its_exports():
    composed = assets.LOCAL_IMPORT.sub(assets._inlined, 'import { el } from "./dom.js";\nconst x = el("b");\n')
    assert composed.startswith((VIEWS / "dom.js").read_text().replace("export function", "function"))
    assert composed.endswith('const x = el("b");\n')


FALLBACK = re.compile(r"var\(\s*(--jp-[\w-]+)\s*,\s*(#[0-9a-fA-F]{3,8})\s*\)")


def test_each_theme_variable_has_one_fallback_colour_everywhere():
    """theme.css names each role's fallback (the light theme's colour); the extension's styles, the
    playground's and the static snapshots' inline styles use the same one."""
    theme = dict(FALLBACK.findall((VIEWS / "theme.css").read_text()))
    assert theme["--jp-brand-color1"] == "#1976d2" and len(theme) >= 6
    files = [*(ROOT / "llm_magics").rglob("*.py"), *VIEWS.glob("*.js"), *VIEWS.glob("*.css")]
    files += [*(ROOT / "labextension" / "src").glob("*.ts"), *(ROOT / "labextension" / "style").glob("*.css")]
    seen: dict[str, set[str]] = {}
    for path in files:
        for variable, colour in FALLBACK.findall(path.read_text()):
            seen.setdefault(variable, set()).add(colour.lower())
            if variable in theme:
                assert colour.lower() == theme[variable].lower(), f"{path.name}: {variable} falls back to {colour}"
    assert all(len(colours) == 1 for colours in seen.values()), seen
