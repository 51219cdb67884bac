"""The attention views and the logit lens in a real JupyterLab 4 (and Notebook 7) in headless Chromium:
axis labels, no stale label during a layer switch, the lens grid, and readable text in the dark theme.
Screenshots land in test-artifacts/ and refresh the README's pictures in docs/."""
import shutil

import nbformat
import pytest

from browser_support import needs_chromium, open_page, ours, serve
from support import ARTIFACTS, ROOT

pytestmark = needs_chromium
DOCS = ROOT / "docs"
SENTENCE = "The cat sat on the mat because it was tired."
CELLS = [
    "%load_ext llm_magics",
    "%llm load default",
    f"%llm attention --layer 3 {SENTENCE}",  # widget 0: head view
    f"%llm attention --view matrix --layer 5 {SENTENCE} It slept until the sun came up over the hills.",  # 1
    "%llm attention --view model The cat sat on the mat",  # widget 2: model view
    "%llm lens The cat sat on the mat because it was",  # widget 3: logit lens
]
IDLE = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"

# Every state the widget goes through, recorded by the page itself on each DOM change.
RECORD = """(index) => { const root = document.querySelectorAll('.llm-attention')[index]; window.llmStates = [];
  const note = () => { const label = root.querySelector('.llm-label'), body = root.querySelector('.llm-body');
    window.llmStates.push({busy: root.classList.contains('llm-busy'), text: label.textContent,
      label: label.dataset.layer, drawn: body.dataset.layer, head: body.dataset.head}); };
  new MutationObserver(note).observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
  note(); }"""

# WCAG contrast of each text-bearing element against the background actually behind it.
CONTRAST = """(index) => {
  const root = document.querySelectorAll('.llm-attention')[index];
  const parse = (c) => { const m = c.match(/[\\d.]+/g) || [0, 0, 0, 0]; return [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1]; };
  const over = (top, bottom) => top.slice(0, 3).map((c, i) => c * top[3] + bottom[i] * (1 - top[3])).concat(1);
  const background = (node) => { const layers = [];
    for (let n = node; n && n.nodeType === 1; n = n.parentElement) layers.push(parse(getComputedStyle(n).backgroundColor));
    return layers.reverse().reduce((below, layer) => over(layer, below), [255, 255, 255, 1]); };
  const lum = (c) => { const l = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2]; };
  let worst = {ratio: 99};
  for (const node of root.querySelectorAll('*')) {
    if (!node.offsetParent || ![...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim())) continue;
    const bg = background(node), fg = over(parse(getComputedStyle(node).color), bg);
    const a = lum(fg), b = lum(bg), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst.ratio) worst = {ratio, text: node.textContent.slice(0, 30), cls: node.className, fg, bg};
  }
  return worst; }"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-attention")
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nbformat.write(notebook, root / "attention.ipynb")
    yield from serve("lab", root)


@pytest.fixture(scope="module")
def notebook7(lab, tmp_path_factory):
    root = tmp_path_factory.mktemp("nb7-attention")
    shutil.copy(lab.root / "attention.ipynb", root / "attention.ipynb")
    yield from serve("notebook", root)


def _run_all(page):
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(".llm-attention .llm-lens-cell", state="attached", timeout=240_000)
    page.wait_for_function(IDLE, timeout=120_000)
    page.wait_for_function("document.querySelectorAll('.llm-attention').length === 4 && "
                           "![...document.querySelectorAll('.llm-attention')].some(r => r.classList.contains('llm-busy'))",
                           timeout=60_000)


def _shot(page, index, name):
    page.evaluate("document.querySelectorAll('.Toastify').forEach(n => n.remove())")  # the news pop-up
    widget = page.locator(".llm-attention").nth(index)
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(ARTIFACTS / name))
    DOCS.mkdir(exist_ok=True)
    shutil.copy(ARTIFACTS / name, DOCS / name)


def _switch_and_record(page, index, act, layer, head):
    page.evaluate(RECORD, index)
    act()
    page.wait_for_function(f"""() => {{ const r = document.querySelectorAll('.llm-attention')[{index}];
        return !r.classList.contains('llm-busy') && r.querySelector('.llm-label').dataset.layer === '{layer}'; }}""",
                           timeout=60_000)
    states = page.evaluate("window.llmStates")
    # Never a label over another layer's drawing: busy, or the label names the data that is drawn.
    stale = [s for s in states if not s["busy"] and s["label"] != s["drawn"]]
    assert not stale, stale
    assert any(s["busy"] for s in states), states  # the computation showed as busy, not as old data
    final = states[-1]
    assert final["drawn"] == str(layer) and final["head"] == str(head)
    assert final["text"].startswith(f"layer {layer} · " + ("mean of heads" if head < 0 else f"head {head}"))


def test_attention_views_and_lens_in_jupyterlab(browser, lab):
    page, errors = open_page(browser, lab, "attention.ipynb")
    _run_all(page)
    # Head view: lines, per-head colours (several heads drawn), one chip per head.
    head_view = page.locator(".llm-attention").nth(0)
    assert head_view.locator("line.llm-line").count() > 5
    assert len(set(head_view.locator("line.llm-line").evaluate_all("ls => ls.map(l => l.dataset.head)"))) > 3
    assert head_view.locator(".llm-chip").count() == 9
    # Matrix view: token labels on both axes.
    matrix = page.locator(".llm-attention").nth(1)
    rows = matrix.locator(".llm-row-label").all_text_contents()
    cols = matrix.locator(".llm-col-label").all_text_contents()
    assert "·cat" in rows and "·cat" in cols and "·hills" in rows and len(rows) == len(cols) > 10
    assert matrix.locator(".llm-legend").count() == 1
    # Logit lens: a layers x positions grid; the last row is the model's own guess.
    lens = page.locator(".llm-attention").nth(3)
    tokens = 9
    assert lens.locator(".llm-lens-cell").count() == 31 * tokens
    assert lens.locator(".llm-lens-cell[data-row='30']").count() == tokens
    assert all(t.strip() for t in lens.locator(".llm-lens-cell[data-row='30']").all_text_contents())
    for index, name in [(0, "attention-head.png"), (1, "attention-matrix.png"), (2, "attention-model.png"),
                        (3, "lens.png")]:
        _shot(page, index, name)

    # A layer switch from the menu, and a click on a model-view thumbnail: never a stale label.
    matrix.scroll_into_view_if_needed()
    _switch_and_record(page, 1, lambda: matrix.locator(".llm-layer").select_option("12"), 12, -1)
    model_view = page.locator(".llm-attention").nth(2)
    model_view.scroll_into_view_if_needed()
    _switch_and_record(page, 2, lambda: model_view.locator(".llm-thumb[data-layer='12'][data-head='4']").click(), 12, 4)
    assert model_view.locator("canvas.llm-matrix").count() == 1  # the click opened the matrix view
    # Zoom: a wheel turn over the matrix narrows the labelled range.
    before = len(matrix.locator(".llm-row-label").all_text_contents())
    matrix.locator(".llm-viewport").hover()
    for _ in range(4):
        page.mouse.wheel(0, -200)
    page.wait_for_timeout(300)
    first = matrix.locator(".llm-row-label").first.get_attribute("data-index")
    assert matrix.locator(".llm-reset-zoom").is_visible() and (int(first) > 0 or
                                                                len(matrix.locator(".llm-row-label").all_text_contents()) <= before)

    # The dark theme: every text of every view reads at WCAG AA contrast.
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeName === 'JupyterLab Dark'", timeout=30_000)
    page.wait_for_timeout(1500)
    for index in range(4):
        worst = page.evaluate(CONTRAST, index)
        assert worst["ratio"] >= 4.5, worst
    page.locator(".llm-attention").nth(3).scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-attention-dark.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    assert not ours(errors), errors
    page.close()


def test_attention_views_in_notebook7(browser, notebook7):
    page, errors = open_page(browser, notebook7, "attention.ipynb", path="notebooks")
    _run_all(page)
    matrix = page.locator(".llm-attention").nth(1)
    assert "·cat" in matrix.locator(".llm-row-label").all_text_contents()
    assert page.locator(".llm-attention").nth(3).locator(".llm-lens-cell").count() == 31 * 9
    page.screenshot(path=str(ARTIFACTS / "notebook7-attention.png"))
    assert not ours(errors), errors
    page.close()
