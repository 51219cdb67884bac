"""docs/errors.md's rows that can be typed in a cell, one after another in one notebook run by a real kernel
with widgets on (nbclient), as a new user types them (issue 27 item 0).

Each cell's output must be exactly its one line on stderr: no traceback (a progress bar left open by an
earlier error is collected later and tqdm's repr raises into a later cell), no widget left on the page, no
dead bar, no leftover "preparing…" line. An output that only blanks itself (a display updated to empty
text) shows nothing and is allowed."""

import json

import nbformat
import pytest
from nbclient import NotebookClient

from support import DATA

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

CORPUS = DATA / "tiny_corpus.txt"

# (cell, the start of its one line); written in the order a user would meet them
CELLS = [
    ("%llm finetune --data bad.jsonl --no-widget", "llm finetune: bad.jsonl, line 2: invalid JSON"),
    ("%llm train --data empty.txt --steps 5 --no-widget", "llm train: no data: empty.txt is empty"),
    ("%llm train --data /nonexistent/corpus.txt --steps 5", "llm train: data file not found: /nonexistent/corpus.txt"),
    ("%llm eval --metric perplexity --data numbers.json", "llm eval: numbers.json, row 1: needs a 'text' field"),
    ("%llm train --data notext.jsonl --steps 5", "llm train: notext.jsonl, line 1: needs a 'text', 'messages'"),
    (f"%llm train --data {CORPUS} --steps 5 --lr nan", "llm train: --lr must be a finite number; got nan"),
    ("%llm generate --temperature 0 Hello", "llm generate: --temperature must be > 0"),
    ("%llm generate --num-return-sequences 0 Hello", "llm generate: --num-return-sequences must be in [1, 64]"),
    ("%llm generate --seed -1 Hello", "llm generate: --seed must be a whole number from 0 to 4294967295; got -1"),
    ("%llm save a_file.txt", "llm save: a_file.txt exists and is not a directory"),
    (f"%llm train --data {CORPUS} --steps 5 --output-dir a_file.txt", "llm train: --output-dir a_file.txt is a file"),
    (f"%llm train --data {CORPUS} --steps 5 --resume nowhere", "llm train: --resume nowhere"),
    (f"%llm train --data {CORPUS} --steps 5 --early-stopping 2", "llm train: --early-stopping needs --eval-data"),
    (f"%llm train --data {CORPUS} --steps 5 --track tensorbored", "llm train: unknown tracker 'tensorbored'"),
    (f"%llm train --data {CORPUS} --steps 5 --compare nosuchrun", "llm train: run id 'nosuchrun' is unknown"),
    ("%llm runs --runs-dir a_file.txt", "llm runs: --runs-dir a_file.txt is not a folder"),
    ("%llm runs --delete nosuchrun", "llm runs: run id 'nosuchrun' is unknown"),
    ("%%llm patch\nThe Eiffel Tower is in", "llm patch: patching needs two prompts"),
    ("%llm attribute --method nosuch Hello", "llm attribute: unknown method 'nosuch'"),
    ("%llm lens --target '' Hello", "llm lens: --target '' tokenizes to nothing"),
    ("%llm load default --quantize fp8", "llm load: unknown --quantize 'fp8'"),
    ("%%llm eval --metric bleu --max-new-tokens 0\nHello", "llm eval: --max-new-tokens must be at least 1"),
    (f"%llm finetune --data {DATA / 'instructions.jsonl'} --lora --lora-r 0", "llm finetune: --lora-r must be"),
    (f"%llm lr-find --data {CORPUS} --num-steps 5", "llm lr-find: --num-steps must be at least 10"),
]


def _write_inputs(folder):
    (folder / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a\x01", "response": 3\n')
    (folder / "empty.txt").write_text("")
    (folder / "numbers.json").write_text(json.dumps([1, 2, 3] * 10))
    (folder / "notext.jsonl").write_text('{"title": "no text here"}\n' * 3)
    (folder / "a_file.txt").write_text("not a folder")


def _shown(output) -> bool:
    """Whether an output shows anything: a display blanked to empty text shows nothing."""
    if output["output_type"] != "display_data":
        return True
    data = output.get("data", {})
    return set(data) != {"text/plain"} or data["text/plain"].strip() != ""


def test_every_typed_error_row_is_exactly_one_line(tmp_path, default_model_dir):
    _write_inputs(tmp_path)
    setup = ["%load_ext llm_magics", "%llm load default"]
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in setup + [cell for cell, _ in CELLS]]
    )
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    problems = []
    for cell, (source, expected) in zip(notebook.cells[len(setup) :], CELLS):
        shown = [output for output in cell.outputs if _shown(output)]
        streams = [o for o in shown if o["output_type"] == "stream" and o["name"] == "stderr"]
        text = "".join(o["text"] for o in streams)
        if len(shown) != 1 or len(streams) != 1 or text.count("\n") != 1 or not text.startswith(expected):
            problems.append(f"{source!r}:\n  expected one line starting {expected!r}\n  got {shown}")
    assert not problems, "\n".join(problems)
