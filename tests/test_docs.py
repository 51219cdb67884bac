"""README.md and the docs pages against their sources (issue 28.6): every option table and benchmark figure sits
in a block that docs/generate.py writes from llm_magics/options.py and the last benchmark run
(bench/RESULTS.md, bench/gpu_results/), so a page cannot drift from what was measured."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
_spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

PAGES = [page for page in generate.pages() if page.exists()]
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[+-]\d+)?")


def table_rows(text: str) -> list[tuple[str, ...]]:
    """The numbers of each table row that holds any (header and delimiter rows hold none, or only words)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            numbers = tuple(NUMBER.findall(line))
            if numbers:
                rows.append(numbers)
    return rows


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_generated_blocks_are_current(page):
    text = page.read_text()
    assert generate.render(text) == text, f"{page.relative_to(ROOT)} differs: run python3 docs/generate.py"


def test_readme_figures_are_rows_of_the_last_run():
    # Read apart from the generator: every figure row the README shows is a row of RESULTS.md, number for number.
    blocks = generate.BLOCK.finditer((ROOT / "README.md").read_text())
    readme_rows = table_rows("".join(block.group("body") for block in blocks))
    assert readme_rows, "the README shows no generated figures"
    measured = set(table_rows(RESULTS.read_text()))
    assert [row for row in readme_rows if row not in measured] == []


def test_every_measured_table_is_on_the_performance_page():
    page = (ROOT / "docs" / "performance.md").read_text()
    shown = set(table_rows(page))
    missing = [row for row in table_rows(RESULTS.read_text()) if row not in shown]
    assert missing == [], "a table of bench/RESULTS.md is not on docs/performance.md: add a generated block"


def test_a_hand_edited_figure_is_caught():
    readme = (ROOT / "README.md").read_text()
    block = next(generate.BLOCK.finditer(readme))
    row = next(line for line in block.group("body").splitlines() if line.startswith("|") and NUMBER.search(line))
    edited = readme.replace(row, NUMBER.sub("9.999", row, count=1), 1)
    assert edited != readme
    assert generate.render(edited) == readme  # the check above would fail on it; the generator puts it back


def test_an_unknown_block_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown generated block"):
        generate.render("<!-- generated: no such thing -->\n<!-- end generated -->")
    with pytest.raises(ValueError, match="run python bench/run_all.py --only nothing.py"):
        generate.render("<!-- generated: results nothing.py -->\n<!-- end generated -->")
