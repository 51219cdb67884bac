"""A real JupyterLab on loopback and a real headless Chromium: the extension, the live loss chart and the
attention view as a person sees them. Screenshots land in test-artifacts/."""
import shutil

import nbformat
import pytest

from browser_support import needs_chromium, open_page, ours, serve
from conftest import ARTIFACTS, DATA

pytestmark = needs_chromium
CORPUS = (DATA / "tiny_corpus.txt").read_text() * 3


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in [
        "%load_ext llm_magics",
        "%llm load default",
        "%llm attention --layer 3 The cat sat on the mat because it was tired.",
        "long_text = 'The quick brown fox jumps over the lazy dog. ' * 108\n%llm attention --layer 5 {long_text}",
        f"%%llm train --from-scratch --steps 40 --seq-len 32 --batch-size 4 --widget\n{CORPUS}",
    ]]
    nbformat.write(notebook, root / "demo.ipynb")
    plain = nbformat.v4.new_notebook()
    plain.metadata["kernelspec"] = notebook.metadata["kernelspec"]
    plain.cells = [nbformat.v4.new_code_cell("print(1 + 1)")]
    nbformat.write(plain, root / "plain.ipynb")
    endless = nbformat.v4.new_notebook()
    endless.metadata["kernelspec"] = notebook.metadata["kernelspec"]
    endless.cells = [nbformat.v4.new_code_cell(source) for source in [
        "%load_ext llm_magics",
        f"%%llm train --from-scratch --steps 100000 --seq-len 32 --batch-size 4 --widget\n{CORPUS}",
    ]]
    nbformat.write(endless, root / "stop.ipynb")
    yield from serve("lab", root)


@pytest.fixture(scope="module")
def notebook7(lab, tmp_path_factory):
    root = tmp_path_factory.mktemp("nb7")
    for name in ("demo.ipynb",):
        shutil.copy(lab.root / name, root / name)
    yield from serve("notebook", root)


def test_extension_chart_attention_status_and_panel(browser, lab):
    page, errors = open_page(browser, lab, "demo.ipynb")
    assert page.evaluate("window.jupyterapp.isPluginActivated('llm-magics:plugin')")
    # The %%llm cell's magic line is highlighted by token, before anything runs.
    page.wait_for_selector(".cm-llm-command", timeout=30_000)
    commands = page.eval_on_selector_all(".cm-llm-command", "nodes => nodes.map(n => n.textContent)")
    assert "train" in commands and "load" in commands
    assert page.locator(".cm-llm-body").count() >= 1
    assert page.locator(".llm-status-item").evaluate("n => n.style.display") == "none"  # nothing loaded yet

    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # The attention view: lines drawn in the head view.
    page.wait_for_selector(".llm-attention line.llm-line", state="attached", timeout=120_000)
    assert page.locator(".llm-attention line.llm-line").count() > 5
    # Over 1,024 tokens open in the matrix view: a full-resolution canvas with attention drawn on it.
    page.wait_for_function("[...document.querySelectorAll('canvas.llm-matrix')].some(c => c.width >= 1024)",
                           timeout=120_000)
    inked = """() => { const c = [...document.querySelectorAll('canvas.llm-matrix')].find(c => c.width >= 1024);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) { if (d[i] < 250) n++; } return n; }"""
    assert page.evaluate(inked) > 1000
    before = page.evaluate("document.querySelector('canvas.llm-matrix').toDataURL().length")
    page.locator(".llm-layer").nth(1).select_option("7")  # the long text's view: recaptured in the kernel
    page.wait_for_function(f"document.querySelector('canvas.llm-matrix').toDataURL().length !== {before}",
                           timeout=60_000)
    page.locator("canvas.llm-matrix").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-attention-1024.png"))
    # The live loss chart: plotly draws the loss trace with points.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot .scatterlayer .trace path.js-line')]"
        ".some(p => (p.getAttribute('d') || '').split('L').length > 10)", timeout=180_000)
    page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=180_000)
    page.wait_for_function("document.querySelector('.llm-status-item') && "
                           "document.querySelector('.llm-status-item').textContent.includes('from-scratch')",
                           timeout=30_000)
    status = page.locator(".llm-status-item").text_content()
    assert "cpu" in status and "RAM" in status
    page.screenshot(path=str(ARTIFACTS / "lab-notebook.png"), full_page=False)

    page.locator(".llm-status-item").click()
    page.wait_for_selector("#llm-magics-panel .llm-run", state="attached", timeout=30_000)
    run = page.locator("#llm-magics-panel .llm-run").first.text_content()
    assert "train: 40/40 steps" in run and "→" in run
    assert "parameters" in page.locator("#llm-magics-panel .llm-card").text_content()
    page.screenshot(path=str(ARTIFACTS / "lab-panel.png"))
    assert not ours(errors), errors
    page.close()


def test_notebook_without_llm_magics_shows_nothing(browser, lab):
    page, errors = open_page(browser, lab, "plain.ipynb")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function("window.jupyterapp.shell.currentWidget.content.model.cells.get(0).outputs.length > 0",
                           timeout=60_000)
    page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'")
    assert page.locator(".llm-status-item").evaluate("n => n.style.display") == "none"
    page.screenshot(path=str(ARTIFACTS / "lab-plain.png"))
    assert not ours(errors), errors
    page.close()


def test_notebook7_renders_the_chart_and_attention_offline(browser, notebook7):
    page, errors = open_page(browser, notebook7, "demo.ipynb", path="notebooks")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(".llm-attention line.llm-line", state="attached", timeout=120_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot .scatterlayer .trace path.js-line')]"
        ".some(p => (p.getAttribute('d') || '').split('L').length > 10)", timeout=180_000)
    page.screenshot(path=str(ARTIFACTS / "notebook7.png"))
    assert not ours(errors), errors
    page.close()


def _stop_training_from_the_browser(page, click):
    # Not awaiting the command: it resolves only when the (endless) cell ends.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function("() => /step ([6-9]|\\d\\d+)\\//.test(document.body.innerText)", timeout=120_000)
    click()
    page.wait_for_function("document.body.innerText.includes('Stopped early: the model in memory keeps step')",
                           timeout=60_000)
    page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=60_000)


def test_stop_button_of_the_live_chart_stops_training(browser, lab):
    page, errors = open_page(browser, lab, "stop.ipynb")
    _stop_training_from_the_browser(page, lambda: page.locator("button:has-text('Stop')").first.click())
    page.screenshot(path=str(ARTIFACTS / "lab-stopped.png"))
    assert not ours(errors), errors
    page.close()
