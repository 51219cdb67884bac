"""What a notebook shows during waits and after runs, in a real kernel (nbclient): a status line before each
long silent wait (presence and order, not timing), progress bars whose saved text is their final state,
generate's closing line, and which model a finetune after --from-scratch tunes."""

import re

import nbformat
import pytest
from nbclient import NotebookClient

from support import DATA

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

CORPUS = (DATA / "tiny_corpus.txt").read_text()
LONG_TEXT = " ".join(["the cat sat on the mat"] * 60)  # 360+ byte tokens


def _texts(cell) -> list[str]:
    """Each output of a cell as text: stream text, or a display's text/plain (what a saved notebook keeps)."""
    texts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            texts.append(output.text)
        elif "data" in output:
            texts.append(output.data.get("text/plain", "") + output.data.get("text/html", ""))
    return texts


def test_status_lines_bars_and_closing_lines_in_a_kernel(tmp_path):
    cells = [
        "%load_ext llm_magics",
        f"%%llm train --from-scratch --steps 2 --batch-size 2 --seq-len 32\n{CORPUS}",
        f"%%llm train --steps 3 --batch-size 2 --seq-len 32 --no-widget\n{CORPUS}",
        f"%%llm finetune --steps 2 --batch-size 2 --seq-len 32 --no-widget --no-progress\n{CORPUS}",
        "%%llm generate --max-new-tokens 4 --greedy\nThe cat",
        f"%%llm attention\n{LONG_TEXT}",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    load, chart, train, finetune, generate, attention = (_texts(c) for c in notebook.cells)

    # %load_ext: the status line comes first, before anything torch or transformers print while importing.
    assert load and load[0].startswith("llm-magics: loading torch and transformers"), load

    # The first live chart of the kernel: a status line, blanked once plotly has been imported (a saved
    # notebook keeps the blanked display, not the stale line), then the chart.
    assert chart[0] == "" and len(chart) > 1, chart
    assert not any("preparing the live chart" in text for text in chart), chart

    # Progress bars (notebook widgets): the saved text of each finished one is its final state.
    bars = [t for t in train if "%|" in t]
    assert [b.split(":")[0] for b in bars] == ["reading", "tokenizing", "train"], train
    assert all(b.lstrip().split(":")[1].lstrip().startswith("100%") for b in bars), bars

    assert finetune[0].startswith("finetune: tuning from-scratch"), finetune

    closing = re.search(r"\[(\d+) tokens, [\d.]+ tok/s, stopped at (EOS|max tokens)\]", "".join(generate))
    assert closing, generate
    assert (closing.group(2) == "max tokens") == (int(closing.group(1)) == 4)

    assert attention[0].startswith("attention: capturing every layer and head over"), attention
    tokens = int(re.search(r"over (\d+) tokens", attention[0]).group(1))
    assert tokens >= 256
