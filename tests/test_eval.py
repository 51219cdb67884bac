"""%%llm eval with the field's metric libraries, on real models."""
import pytest

from support import DATA, run
from llm_magics import LLMError, Session


def test_perplexity_drops_after_training(tmp_path):
    s = Session()
    corpus = (DATA / "tiny_corpus.txt").read_text()
    s.train(text=corpus * 5, from_scratch=True, steps=2, seq_len=32, progress=False)
    before = s.eval("perplexity", data=str(DATA / "tiny_corpus.txt"))
    s.train(text=corpus * 5, from_scratch=False, steps=60, seq_len=32, lr=3e-3, progress=False)
    after = s.eval("perplexity", data=str(DATA / "tiny_corpus.txt"))
    assert after.value < 0.5 * before.value
    assert s.runs[-1].metrics["eval_perplexity"] == after.value


def test_perplexity_of_the_pretrained_model_is_sane(session):
    result = session.eval("perplexity", text="The cat sat on the mat. It was a sunny day and the children played.")
    assert 1 < result.value < 200


def test_bleu_and_rouge_on_generations(session):
    data = str(DATA / "instructions_heldout.jsonl")
    bleu = session.eval("bleu", data=data, max_new_tokens=16)
    rouge = session.eval("rouge", data=data, max_new_tokens=16)
    assert 0 <= bleu.value <= 100 and bleu.examples == 4
    assert 0 < rouge.details["rouge1"] <= 1 and rouge.value == rouge.details["rougeL"]


def test_eval_magic_and_errors(shell, capsys, magic_session):
    result = run(shell, f"eval --metric perplexity --data {DATA / 'tiny_corpus.txt'}")
    assert result.metric == "perplexity" and "perplexity:" in capsys.readouterr().out
    run(shell, f"eval --metric accuracy --data {DATA / 'sentiment_test.jsonl'}")
    assert "needs a classifier" in capsys.readouterr().err
    run(shell, "eval --metric bleu", '{"text": "no prompt here"}')
    assert "needs 'prompt' and 'response'" in capsys.readouterr().err
    with pytest.raises(LLMError, match="unknown --metric"):
        magic_session.eval("meteor", text="x")
