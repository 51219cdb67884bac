"""What a run prints: one progress bar per stage with our labels, nothing from the libraries underneath."""

import json
import logging
import re

import pytest

from llm_magics import Session
from support import DATA, run

CORPUS = (DATA / "tiny_corpus.txt").read_text()


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_reading_a_file_shows_our_bars_not_datasets(shell, capfd, magic_session, tmp_path, cache):
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": line}) + "\n" for line in CORPUS.splitlines() if line.strip()))
    run(shell, f"train --from-scratch --data {data} --steps 2 --batch-size 2 --seq-len 32 --no-widget")
    err = capfd.readouterr().err
    assert "Generating train split" not in err and "examples/s" not in err, err
    for label in ("reading:", "tokenizing:", "train:"):
        assert label in err, err


def test_a_bad_json_line_is_our_one_line_and_datasets_logs_nothing(shell, capsys, magic_session, tmp_path, cache):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"text": "fine"}\n{"text": broken}\n')
    records = Records()
    logging.getLogger("datasets").addHandler(records)
    try:
        run(shell, f"train --from-scratch --data {data} --steps 1 --no-widget --no-progress")
    finally:
        logging.getLogger("datasets").removeHandler(records)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "line 2" in err, err
    assert not [m for m in records.messages if "Failed to load JSON" in m], records.messages


def test_finetune_bar_says_finetune(capsys):
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, batch_size=2, seq_len=32, progress=False)
    capsys.readouterr()
    s.finetune(text=CORPUS, steps=2, batch_size=2, seq_len=32)
    err = capsys.readouterr().err
    assert "finetune:" in err and "lm:" not in err, err


@pytest.mark.slow
def test_generate_ends_with_tokens_speed_and_why_it_stopped(shell, capsys, magic_session):
    run(shell, "generate --max-new-tokens 3 --greedy The capital of France is")
    assert re.search(r"\[3 tokens, [\d.]+ tok/s, stopped at max tokens\]", capsys.readouterr().out)
    result = run(shell, "chat --max-new-tokens 60 --greedy Reply with one word: hello")
    out = capsys.readouterr().out
    # The oracle: the generated ids themselves end with the tokenizer's end-of-text token.
    assert result.token_ids[0][-1] == magic_session.tokenizer.eos_token_id and result.new_tokens < 60
    assert re.search(rf"\[{result.new_tokens} tokens, [\d.]+ tok/s, stopped at EOS\]", out), out
