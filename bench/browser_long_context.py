"""A long text's attention view as the user sees it: a real JupyterLab in headless Chromium, timed in the page,
against one plain forward pass of the same text timed in the same kernel.

    python bench/browser_long_context.py [--tokens 4096]

first paint = from running the `%%llm attention` cell to the matrix painted and not busy (the kernel's pass,
the first layer's picture, the transfer and the canvas); switch = choosing another layer in the menu until its
picture is painted (best and all of layers 3, 17, 29); tile = a dragged zoom until the exact tile of the square
in sight is painted. Needs Debian's chromium and Python playwright (the browser tests' set-up).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from common import device_name, markdown_table  # noqa: E402

READY = """(layer) => { const r = document.querySelector('.llm-attention');
  return r && !r.classList.contains('llm-busy') && r.querySelector('canvas.llm-matrix') &&
    (layer === null || r.querySelector('.llm-label').dataset.layer === String(layer)); }"""


def notebook(root: Path, n: int) -> int:
    """The notebook: load, time a plain forward pass of the text, then the attention cell. Returns the tokens."""
    import nbformat
    from long_context import text_of

    from llm_magics import Session

    tokenizer = Session().load("default").tokenizer
    text = text_of(tokenizer, n)
    plain = (
        "import time, torch, llm_magics\n"
        "loaded = llm_magics.session.loaded\n"
        f"ids = loaded.tokenizer({text!r}, return_tensors='pt')['input_ids']\n"
        "with torch.inference_mode():\n"
        "    loaded.model(ids[:, :64])  # warm-up\n"
        "    began = time.perf_counter(); loaded.model(ids); plain = time.perf_counter() - began\n"
        "print(f'PLAIN {plain:.3f} {ids.shape[1]}')"
    )
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = ["%load_ext llm_magics", "%llm load default", plain, f"%%llm attention\n{text}"]
    book.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(book, root / "long.ipynb")
    return len(tokenizer(text)["input_ids"])


def run_cell(page, index: int):
    page.evaluate(f"""() => {{ const panel = window.jupyterapp.shell.currentWidget;
        panel.content.activeCellIndex = {index};
        return window.jupyterapp.commands.execute('notebook:run-cell'); }}""")


def measure(page, n: int, screenshot: str | None = None) -> list[dict]:
    idle = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
    for index in (0, 1, 2):
        run_cell(page, index)
        page.wait_for_function(idle, timeout=600_000)
        time.sleep(0.3)
    outputs = "[...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join(' ')"
    page.wait_for_function(f"{outputs}.includes('PLAIN ')", timeout=600_000)
    plain = float(page.evaluate(f"{outputs}.split('PLAIN ')[1].split(' ')[0]"))
    began = time.perf_counter()
    run_cell(page, 3)
    page.wait_for_function(READY, arg=None, timeout=900_000, polling=50)
    first = time.perf_counter() - began
    rows = [{"step": "first paint (cell run to matrix painted)", "seconds": first, "vs plain": first / plain}]
    switches = []
    for layer in (3, 17, 29):
        began = time.perf_counter()
        page.locator(".llm-attention .llm-layer").select_option(str(layer))
        page.wait_for_function(READY, arg=layer, timeout=120_000, polling=10)
        switches.append(time.perf_counter() - began)
    rows.append(
        {
            "step": "layer switch, best (3, 17, 29: " + ", ".join(f"{s:.2f}" for s in switches) + " s)",
            "seconds": min(switches),
            "vs plain": min(switches) / plain,
        }
    )
    viewport = page.locator(".llm-attention .llm-viewport")
    viewport.scroll_into_view_if_needed()
    box = viewport.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5  # just below the diagonal
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + box["width"] * 0.08, y0 + box["height"] * 0.08, steps=4)
    page.mouse.up()
    began = time.perf_counter()
    page.locator(".llm-attention canvas.llm-matrix-tile").wait_for(state="visible", timeout=120_000)
    tile = time.perf_counter() - began
    if screenshot:
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6)
        page.evaluate("document.querySelectorAll('.Toastify').forEach(n => n.remove())")
        page.locator(".llm-attention").first.screenshot(path=screenshot)
    rows.append(
        {
            "step": "zoom: exact tile painted after the gesture (incl. its 0.4 s settle)",
            "seconds": tile,
            "vs plain": tile / plain,
        }
    )
    rows.append({"step": f"plain model(ids), {n} tokens, in the kernel", "seconds": plain, "vs plain": 1.0})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--screenshot", help="also save a picture of the zoomed matrix (with its tile) here")
    args = parser.parse_args()
    sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "browser")]
    from playwright.sync_api import sync_playwright

    from browser_support import CHROMIUM, open_page, serve

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        n = notebook(root, args.tokens)
        server = serve("lab", root)
        lab = next(server)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
                )
                page, errors = open_page(browser, lab, "long.ipynb")
                rows = measure(page, n, args.screenshot)
                browser.close()
        finally:
            next(server, None)
    print(
        f"The attention widget at {n} tokens in JupyterLab (headless Chromium), SmolLM2-135M, "
        f"on {device_name()}; timed in the page, against a plain forward pass in the same kernel\n"
    )
    print(
        markdown_table(
            ["step", "seconds", "vs plain"], [[r["step"], f"{r['seconds']:.2f}", f"{r['vs plain']:.2f}x"] for r in rows]
        )
    )


if __name__ == "__main__":
    main()
