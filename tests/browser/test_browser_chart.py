"""The training chart in a real JupyterLab and headless Chromium: its height through window resizes (live and
static), a reopened chart in a narrow output, the overlay's legend, and the raw loss line in Dark."""

import pytest

from browser_support import LIVE_CHART_PAST_STEP_5, needs_chromium, open_page, ours, write_notebook
from support import ARTIFACTS, DATA

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]
CORPUS = (DATA / "tiny_corpus.txt").read_text() * 3
IDLE = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
HEIGHTS = "ns => ns.map(n => Math.round(n.getBoundingClientRect().height))"

# WCAG contrast of a line's stroke against what is painted behind it (alpha composited up the tree).
STROKE_CONTRAST = """el => {
  const parse = c => { const m = c.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const layers = [];
  for (let node = el.closest('.js-plotly-plot'); node; node = node.parentElement) {
    const bg = parse(getComputedStyle(node).backgroundColor);
    if (bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
  }
  let background = [255, 255, 255, 1];
  for (const layer of layers.reverse()) background = over(layer, background);
  const stroke = parse(getComputedStyle(el).stroke);
  stroke[3] *= Number(getComputedStyle(el).strokeOpacity);
  const line = over(stroke, background);
  const lum = c => { const v = c.slice(0, 3).map(x => { x /= 255;
      return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const [a, b] = [lum(line), lum(background)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""


CELLS = [
    "%load_ext llm_magics",
    # live until the Stop button is pressed
    f"%%llm train --from-scratch --steps 100000 --seq-len 32 --batch-size 4 --lr 0.003 --widget\n{CORPUS}",
    # overlays the stopped run (--compare's default: the previous run on the same data)
    f"%%llm train --from-scratch --steps 6 --seq-len 32 --batch-size 4 --lr 0.001 --widget\n{CORPUS}",
]


def _resized_heights(page, selector):
    """The heights of the charts at the page's width, narrower, and back."""
    seen = []
    for width in (1500, 900, 1500):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(800)  # short: see test_browser_commands.py
        seen.append(page.eval_on_selector_all(selector, HEIGHTS))
    return seen


def test_chart_height_legend_dark_line_and_reopened_width(browser, lab):
    write_notebook(lab.root, "chart.ipynb", CELLS)
    page, errors = open_page(browser, lab, "chart.ipynb")
    _check_chart(page, errors, lab, browser)


def _check_chart(page, errors, lab, browser):
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(LIVE_CHART_PAST_STEP_5, polling=250, timeout=180_000)
    live = _resized_heights(page, ".llm-training-view .js-plotly-plot")
    assert live[0] and live[0][0] > 300 and live[0] == live[1] == live[2], live

    page.locator("button:has-text('Stop')").first.click()
    page.wait_for_function(
        "document.querySelectorAll('.jp-RenderedPlotly .plot-container').length === 2", timeout=240_000
    )
    page.wait_for_function(IDLE, timeout=120_000)
    static = _resized_heights(page, ".jp-RenderedPlotly")
    assert len(static[0]) == 2 and min(static[0]) > 300 and static[0] == static[1] == static[2], static

    # The lr axis reads 0.001 or 2e−4, never SI's "3m" (minutes, beside an ETA).
    lr_ticks = page.locator(".jp-RenderedPlotly").first.locator(".y2tick text").all_text_contents()
    assert lr_ticks and not any(tick[-1] in "mµnk" for tick in lr_ticks), lr_ticks

    # The overlay's legend names the earlier run by the option that differs.
    legend = page.locator(".jp-RenderedPlotly").nth(1).locator(".legend").text_content()
    assert "lr=0.003" in legend and "lr=0.001" in legend, legend

    # Dark: the raw loss line (the first trace) contrasts with the background (WCAG non-text, 3:1).
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    page.wait_for_timeout(1000)
    # the trace plotly drew for the 'loss' data (its calcdata is bound to the trace's group)
    ratios = page.eval_on_selector_all(
        ".jp-RenderedPlotly",
        f"""ns => ns.map(n => ({STROKE_CONTRAST})(
        [...n.querySelectorAll('.scatterlayer .trace')].find(g => g.__data__ && g.__data__[0].trace.name === 'loss')
          .querySelector('path.js-line')))""",
    )
    assert len(ratios) == 2
    assert min(ratios) >= 3, ratios
    page.screenshot(path=str(ARTIFACTS / "lab-chart-dark.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'true'", timeout=30_000)

    # Saved and reopened in a narrower window: each chart fits its output, lr axis included.
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("!window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
    page.evaluate("window.jupyterapp.serviceManager.sessions.shutdownAll()")
    assert not ours(errors), errors
    page.close()
    page, errors = open_page(browser, lab, "chart.ipynb")
    page.set_viewport_size({"width": 800, "height": 1000})
    page.wait_for_selector(".jp-RenderedPlotly", state="attached", timeout=60_000)
    page.wait_for_timeout(3000)
    fits = """n => { const out = n.closest('.jp-OutputArea-output').getBoundingClientRect();
        const drawn = n.querySelector('.plot-container') && n.querySelector('.plot-container').style.display !== 'none'
          ? n.querySelector('.main-svg') : n.querySelector('.plot-img');
        const box = drawn.getBoundingClientRect();
        return [n.scrollWidth <= n.clientWidth + 1, box.right <= out.right + 1, Math.round(box.height)]; }"""
    reopened = page.eval_on_selector_all(".jp-RenderedPlotly", f"ns => ns.map({fits})")
    assert len(reopened) == 2 and all(row[0] and row[1] and row[2] > 100 for row in reopened), reopened
    page.screenshot(path=str(ARTIFACTS / "lab-chart-reopened-narrow.png"))
    page.close()
