"""The attention views and the logit lens in a real JupyterLab 4 (and Notebook 7) in headless Chromium:
axis labels, no stale label during a layer switch, the lens grid, and readable text in the dark theme.
Screenshots land in test-artifacts/ and refresh the README's pictures in docs/."""

import shutil

import pytest

from browser_support import needs_chromium, open_page, ours, write_notebook
from support import ARTIFACTS, ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]
DOCS = ROOT / "docs"
SENTENCE = "The cat sat on the mat because it was tired."
CELLS = [
    "%load_ext llm_magics",
    "%llm load default",
    f"%llm attention --layer 3 {SENTENCE}",  # widget 0: head view
    f"%llm attention --view matrix --layer 5 {SENTENCE} It slept until the sun came up over the hills.",  # 1
    "%llm attention --view model The cat sat on the mat",  # widget 2: model view
    "%llm lens The cat sat on the mat because it was",  # widget 3: logit lens
    "%llm lens --target ' tired' The cat sat on the mat because it was",  # widget 4: lens, target mode
    "%llm attribute --method saliency --max-new-tokens 2 The capital of France is",  # heatmap 0
    "%%llm patch --layers 27-29\nThe Eiffel Tower is in the city of\nThe Colosseum is in the city of",  # heatmap 1
]
WIDGETS = 5
IDLE = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"

# Every state the widget goes through, recorded by the page itself on each DOM change.
RECORD = """(index) => { const root = document.querySelectorAll('.llm-attention')[index]; window.llmStates = [];
  const note = () => { const label = root.querySelector('.llm-label'), body = root.querySelector('.llm-body');
    window.llmStates.push({busy: root.classList.contains('llm-busy'), text: label.textContent,
      label: label.dataset.layer, drawn: body.dataset.layer, head: body.dataset.head}); };
  new MutationObserver(note).observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
  note(); }"""

# WCAG contrast of each text-bearing element against the background actually behind it.
CONTRAST = """([index, selector]) => {
  const root = document.querySelectorAll(selector || '.llm-attention')[index];
  const parse = (c) => { const m = c.match(/[\\d.]+/g) || [0, 0, 0, 0];
    return [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1]; };
  const over = (top, bottom) => top.slice(0, 3).map((c, i) => c * top[3] + bottom[i] * (1 - top[3])).concat(1);
  const background = (node) => { const layers = [];
    for (let n = node; n && n.nodeType === 1; n = n.parentElement)
      layers.push(parse(getComputedStyle(n).backgroundColor));
    return layers.reverse().reduce((below, layer) => over(layer, below), [255, 255, 255, 1]); };
  const lum = (c) => { const l = c.slice(0, 3).map((v) => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2]; };
  let worst = {ratio: 99};
  for (const node of root.querySelectorAll('*')) {
    if (!node.offsetParent || ![...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim())) continue;
    const bg = background(node), fg = over(parse(getComputedStyle(node).color), bg);
    const a = lum(fg), b = lum(bg), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst.ratio) worst = {ratio, text: node.textContent.slice(0, 30), cls: node.className, fg, bg};
  }
  return worst; }"""


def _run_all(page):
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(".llm-attention .llm-lens-cell", state="attached", timeout=240_000)
    page.wait_for_function(IDLE, timeout=120_000)
    page.wait_for_function(
        f"document.querySelectorAll('.llm-attention').length === {WIDGETS} && "
        "document.querySelectorAll('.llm-heatmap .llm-cell').length > 0 && "
        "![...document.querySelectorAll('.llm-attention')].some(r => r.classList.contains('llm-busy'))",
        timeout=60_000,
    )


def _shot(page, index, name):
    _shot_of(page, ".llm-attention", index, name)


def _shot_of(page, selector, index, name):
    page.evaluate("document.querySelectorAll('.Toastify').forEach(n => n.remove())")  # the news pop-up
    widget = page.locator(selector).nth(index)
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(ARTIFACTS / name))
    DOCS.mkdir(exist_ok=True)
    shutil.copy(ARTIFACTS / name, DOCS / name)


def _switch_and_record(page, index, act, layer, head):
    page.evaluate(RECORD, index)
    act()
    page.wait_for_function(
        f"""() => {{ const r = document.querySelectorAll('.llm-attention')[{index}];
        return !r.classList.contains('llm-busy') && r.querySelector('.llm-label').dataset.layer === '{layer}'; }}""",
        timeout=60_000,
    )
    states = page.evaluate("window.llmStates")
    # Never a label over another layer's drawing: busy, or the label names the data that is drawn.
    stale = [s for s in states if not s["busy"] and s["label"] != s["drawn"]]
    assert not stale, stale
    assert any(s["busy"] for s in states), states  # the computation showed as busy, not as old data
    final = states[-1]
    assert final["drawn"] == str(layer) and final["head"] == str(head)
    assert final["text"].startswith(f"layer {layer} · " + ("mean of heads" if head < 0 else f"head {head}"))


def test_attention_views_and_lens_in_jupyterlab(browser, lab):
    write_notebook(lab.root, "attention.ipynb", CELLS)
    page, errors = open_page(browser, lab, "attention.ipynb")
    _run_all(page)
    # Head view: it opens on the layer's top 3 heads by attention entropy, one colour each; a chip click
    # adds or removes a head.
    head_view = page.locator(".llm-attention").nth(0)
    drawn = "ls => [...new Set(ls.map(l => l.dataset.head))].sort()"
    assert head_view.locator("line.llm-line").count() > 5
    top3 = head_view.locator("line.llm-line").evaluate_all(drawn)
    assert len(top3) == 3 and head_view.locator(".llm-chip.llm-active").count() == 3
    assert "(top 3 by attention entropy)" in head_view.locator(".llm-label").text_content()
    extra = next(h for h in range(9) if str(h) not in top3)
    head_view.locator(f".llm-chip[data-head='{extra}']").click()
    page.wait_for_function(
        "document.querySelectorAll('.llm-attention')[0].querySelectorAll('.llm-chip.llm-active').length === 4",
        timeout=30_000,
    )
    assert sorted(head_view.locator("line.llm-line").evaluate_all(drawn)) == sorted(top3 + [str(extra)])
    head_view.locator(".llm-chip-top").click()
    page.wait_for_function(
        "document.querySelectorAll('.llm-attention')[0].querySelectorAll('.llm-chip.llm-active').length === 3",
        timeout=30_000,
    )
    assert head_view.locator(".llm-chip").count() == 9
    # Each chip is numbered, its number legible on its colour (WCAG 4.5:1, black or white text).
    assert head_view.locator(".llm-chip").all_text_contents() == [str(h) for h in range(9)]
    contrast = head_view.locator(".llm-chip").evaluate_all("""cs => cs.map(c => {
        const rgb = s => s.match(/\\d+/g).slice(0, 3).map(Number).map(v => { v /= 255;
          return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        const lum = s => { const [r, g, b] = rgb(s); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const [a, b] = [lum(getComputedStyle(c).color), lum(getComputedStyle(c).backgroundColor)].sort((x, y) => y - x);
        return (a + 0.05) / (b + 0.05); })""")
    assert min(contrast) >= 4.5, contrast
    # Controls that do nothing are hidden: no layer/head menu in the model view and the lens.
    for index, shown in [(0, True), (1, True), (2, False), (3, False)]:
        widget = page.locator(".llm-attention").nth(index)
        assert widget.locator(".llm-layer-control").is_visible() == shown
        assert widget.locator(".llm-head-control").is_visible() == shown
    assert page.locator(".llm-attention").nth(1).locator(".llm-chips").is_hidden()
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
    # Whole tokens: no cell's text is clipped.
    assert lens.locator(".llm-lens-cell, .llm-lens-input").evaluate_all(
        "ns => ns.every(n => n.scrollWidth <= n.clientWidth + 1)"
    )
    # Target mode: probability and rank of ' tired' across the 31 rows.
    target = page.locator(".llm-attention").nth(4)
    assert "target ·tired" in target.locator(".llm-lens-target .llm-label").text_content()
    assert target.locator(".llm-target-prob .llm-target-point").count() == 31
    ranks = target.locator(".llm-target-rank .llm-target-point").evaluate_all("ns => ns.map(n => +n.dataset.value)")
    assert len(ranks) == 31 and min(ranks) >= 1 and ranks[-1] < ranks[0]
    # Attribution and patching heatmaps render; a patch cell click shows that run's top-5 next tokens.
    attribution, patching = page.locator(".llm-heatmap").nth(0), page.locator(".llm-heatmap").nth(1)
    assert attribution.locator(".llm-cell:not(.llm-empty)").count() > 5
    assert "attribution · saliency" in attribution.locator(".llm-label").first.text_content()
    assert patching.locator(".llm-cell:not(.llm-empty)").count() == 3 * patching.locator(".llm-col").count()
    patching.scroll_into_view_if_needed()
    patching.locator(".llm-cell[data-row='29'][data-col='0']").click()
    patching.locator(".llm-detail-table tr").nth(4).wait_for(timeout=30_000)
    assert patching.locator(".llm-detail-table tr").count() == 5
    assert "layer 29" in patching.locator(".llm-detail .llm-label").text_content()
    _shot_of(page, ".llm-heatmap", 1, "patch-view.png")
    attribution.locator(".llm-normalize").check()  # --normalize as a control: rows scaled to their max
    page.wait_for_timeout(300)
    assert "row-normalised" in attribution.locator(".llm-cell:not(.llm-empty)").first.get_attribute("title")
    for index, name in [
        (0, "attention-head.png"),
        (1, "attention-matrix.png"),
        (2, "attention-model.png"),
        (3, "lens.png"),
    ]:
        _shot(page, index, name)

    # A layer switch from the menu, and a click on a model-view thumbnail: never a stale label.
    page.locator(".llm-attention").evaluate_all("ns => ns.forEach(n => { n.dataset.kept = 'yes'; })")
    matrix.scroll_into_view_if_needed()
    _switch_and_record(page, 1, lambda: matrix.locator(".llm-layer").select_option("12"), 12, -1)
    model_view = page.locator(".llm-attention").nth(2)
    model_view.scroll_into_view_if_needed()
    _switch_and_record(page, 2, lambda: model_view.locator(".llm-thumb[data-layer='12'][data-head='4']").click(), 12, 4)
    assert model_view.locator("canvas.llm-matrix").count() == 1  # the click opened the matrix view
    # The saved snapshot's refresh (the kernel updates the output a second after the last switch) reaches the
    # output's text/html and leaves the live views as they are: no view is drawn again.
    page.wait_for_selector(
        ".llm-widget-fallback .llm-attention-static[data-layer='12'][data-head='4']", state="attached", timeout=30_000
    )
    assert page.locator(".llm-attention[data-kept='yes']").count() == WIDGETS
    # Zoom: a wheel turn over the matrix narrows the labelled range.
    before = len(matrix.locator(".llm-row-label").all_text_contents())
    matrix.locator(".llm-viewport").hover()
    for _ in range(4):
        page.mouse.wheel(0, -200)
    matrix.locator(".llm-reset-zoom").wait_for(state="visible", timeout=15_000)
    first = matrix.locator(".llm-row-label").first.get_attribute("data-index")
    assert matrix.locator(".llm-reset-zoom").is_visible() and (
        int(first) > 0 or len(matrix.locator(".llm-row-label").all_text_contents()) <= before
    )

    # The dark theme: every text of every view reads at WCAG AA contrast.
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeName === 'JupyterLab Dark'", timeout=30_000)
    page.wait_for_timeout(1500)
    for index in range(WIDGETS):
        worst = page.evaluate(CONTRAST, [index, ".llm-attention"])
        assert worst["ratio"] >= 4.5, worst
    page.locator(".llm-attention").nth(3).scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-attention-dark.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_function("document.body.dataset.jpThemeName === 'JupyterLab Light'", timeout=30_000)

    # Saved and reopened without a kernel: each snapshot shows the state it was left in, and follows Dark.
    page.wait_for_timeout(2500)  # the kernel refreshes the outputs' snapshots a second after the last change
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("!window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
    page.evaluate("window.jupyterapp.serviceManager.sessions.shutdownAll()")
    assert not ours(errors), errors
    page.close()
    page, errors = open_page(browser, lab, "attention.ipynb")
    page.wait_for_selector(".llm-widget-fallback .llm-attention-static", timeout=60_000)
    page.wait_for_timeout(2000)
    states = page.locator(".llm-attention-static").evaluate_all("ns => ns.map(n => ({...n.dataset}))")
    assert [s["view"] for s in states] == ["head", "matrix", "matrix", "lens", "lens"], states
    assert states[1]["layer"] == "12" and states[1]["head"] == "-1" and states[1]["zoom"], states[1]
    assert states[2]["layer"] == "12" and states[2]["head"] == "4", states[2]
    assert states[0]["heads"] == ",".join(sorted(top3, key=int)), states[0]
    assert page.locator(".llm-heatmap-static").count() == 2
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeName === 'JupyterLab Dark'", timeout=30_000)
    page.wait_for_timeout(1500)
    for index in range(WIDGETS):
        worst = page.evaluate(CONTRAST, [index, ".llm-attention-static"])
        assert worst["ratio"] >= 4.5, worst
        background = (
            page.locator(".llm-attention-static").nth(index).evaluate("n => getComputedStyle(n).backgroundColor")
        )
        assert background in ("rgba(0, 0, 0, 0)", "transparent"), background  # the dark page shows through
    for index in range(2):  # the attribution and patching snapshots too
        background = page.locator(".llm-heatmap-static").nth(index).evaluate("n => getComputedStyle(n).backgroundColor")
        assert background in ("rgba(0, 0, 0, 0)", "transparent"), background
    page.locator(".llm-attention-static").nth(1).scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-attention-reopened-dark.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    assert not [e for e in ours(errors) if "widget model not found" not in e], errors
    page.close()


def test_attention_views_in_notebook7(browser, notebook7):
    write_notebook(notebook7.root, "attention.ipynb", CELLS)
    page, errors = open_page(browser, notebook7, "attention.ipynb", path="notebooks")
    _run_all(page)
    matrix = page.locator(".llm-attention").nth(1)
    assert "·cat" in matrix.locator(".llm-row-label").all_text_contents()
    assert page.locator(".llm-attention").nth(3).locator(".llm-lens-cell").count() == 31 * 9
    assert page.locator(".llm-attention").nth(2).locator(".llm-layer-control").is_hidden()
    # The why views render here too, and a patch cell click shows its top 5.
    assert page.locator(".llm-heatmap").nth(0).locator(".llm-cell:not(.llm-empty)").count() > 5
    patching = page.locator(".llm-heatmap").nth(1)
    patching.scroll_into_view_if_needed()
    patching.locator(".llm-cell[data-row='28'][data-col='0']").click()
    patching.locator(".llm-detail-table tr").nth(4).wait_for(timeout=30_000)
    assert patching.locator(".llm-detail-table tr").count() == 5
    page.screenshot(path=str(ARTIFACTS / "notebook7-attention.png"))
    # The snapshot refresh (an update of the output) keeps the live views in Notebook 7 too: no errors.
    matrix.evaluate("n => { n.dataset.kept = 'yes'; }")
    matrix.locator(".llm-layer").select_option("12")
    page.wait_for_selector(
        ".llm-widget-fallback .llm-attention-static[data-layer='12'][data-view='matrix']",
        state="attached",
        timeout=30_000,
    )
    assert matrix.get_attribute("data-kept") == "yes"
    assert not ours(errors), errors
    page.close()


LONG_TEXT = 18 * (
    "The river bends twice before it reaches the town. In spring the water rises over the stones, "
    "and the children watch the boats carry timber down to the mill, where the old wheel still turns. "
)
LONG_TEXT = LONG_TEXT.strip()


def test_long_matrix_overview_and_exact_tile_in_jupyterlab(browser, lab):
    """Past 512 tokens the matrix view paints a pooled overview; a dragged zoom brings the exact tile of the
    square in sight, and hovering a cell in it reads that cell's weight, checked against transformers' eager
    attentions computed here."""
    import torch
    from transformers import AutoModelForCausalLM

    from llm_magics import Session

    cells = ["%load_ext llm_magics", "%llm load default", f"%%llm attention --view matrix --layer 4\n{LONG_TEXT}"]
    write_notebook(lab.root, "long.ipynb", cells)
    page, errors = open_page(browser, lab, "long.ipynb")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    matrix = page.locator(".llm-attention").first
    overview = matrix.locator("canvas.llm-matrix")
    overview.wait_for(state="visible", timeout=300_000)
    page.wait_for_function(IDLE, timeout=120_000)
    n = int(matrix.locator(".llm-label").text_content().split("·")[-1].split()[0])
    assert n > 512
    pool = -(-n // 512)
    assert overview.get_attribute("data-pool") == str(pool)
    assert overview.evaluate("c => [c.width, c.height]") == [-(-n // pool)] * 2  # never the n × n map
    assert f"pooled {pool}×{pool}" in matrix.locator(".llm-info").text_content()

    matrix.locator(".llm-viewport").scroll_into_view_if_needed()
    box = matrix.locator(".llm-viewport").bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.30, box["y"] + box["height"] * 0.55
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + box["width"] * 0.15, y0 + box["height"] * 0.15, steps=5)
    page.mouse.up()
    tile = matrix.locator("canvas.llm-matrix-tile")
    tile.wait_for(state="visible", timeout=60_000)
    r0, c0, span, tile_pool = map(int, tile.get_attribute("data-box").split(","))
    assert tile_pool == 1 and span <= 512 and tile.evaluate("c => [c.width, c.height]") == [span, span]
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    info = matrix.locator(".llm-info").text_content()
    assert "pooled" not in info, info
    i, j, shown = int(info.split("(")[1].split(")")[0]), int(info.split("(")[2].split(")")[0]), info.split(": ")[1]
    assert r0 <= i < r0 + span and c0 <= j < c0 + span
    value, peak = float(shown.split()[0]), float(shown.split("max ")[1].rstrip(")"))

    loaded = Session().load("default")
    eager = AutoModelForCausalLM.from_pretrained(loaded.source, attn_implementation="eager")
    ids = loaded.tokenizer(LONG_TEXT, return_tensors="pt")["input_ids"]
    assert ids.shape[1] == n
    with torch.no_grad():
        weights = eager(ids, output_attentions=True).attentions[4][0].mean(0)
    assert abs(peak - float(weights[i].max())) < 1e-3
    assert abs(value - float(weights[i, j])) <= peak / 255 + 1e-4, (value, float(weights[i, j]))
    assert not ours(errors), errors
