"""%%llm eval with the field's metric libraries, on real models; each score checked against the same
library (or a plain transformers loop) called directly on the same inputs."""

import json
import math

import pytest
import torch

from llm_magics import LLMError, Session
from support import DATA, run

pytestmark = pytest.mark.slow


def test_perplexity_drops_after_training(tmp_path):
    s = Session()
    corpus = (DATA / "tiny_corpus.txt").read_text()
    s.train(text=corpus * 5, from_scratch=True, steps=2, seq_len=32, progress=False)
    before = s.eval("perplexity", data=str(DATA / "tiny_corpus.txt"))
    s.train(text=corpus * 5, from_scratch=False, steps=60, seq_len=32, lr=3e-3, progress=False)
    after = s.eval("perplexity", data=str(DATA / "tiny_corpus.txt"))
    assert after.value < 0.5 * before.value
    assert s.runs[-1].metrics["eval_perplexity"] == after.value


# ---- perplexity: exp(mean NLL) of a plain transformers loop over the same windows ----


def test_perplexity_equals_a_plain_transformers_loop(session, cache, tmp_path):
    docs = [
        "The cat sat on the mat.",
        "It was a sunny day and the children played in the park.",
        "Dogs bark, birds sing, and the river runs to the sea.",
    ]
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(docs))
    seq_len = 8
    result = session.eval("perplexity", data=str(path), seq_len=seq_len, progress=False)

    tokenizer, model = session.tokenizer, session.model
    ids = []
    for doc in docs:  # each document's ids, then EOS (the documented packing)
        ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), seq_len):  # non-overlapping windows, the last one shorter
            window = torch.tensor([ids[start : start + seq_len]], device=session.loaded.device)
            if window.shape[1] < 2:
                continue
            logits = model(input_ids=window).logits.double()
            logp = torch.log_softmax(logits[0, :-1], -1).gather(-1, window[0, 1:, None])
            nll -= float(logp.sum())
            count += window.shape[1] - 1
    assert result.total == math.ceil((len(ids) - 1) / seq_len)
    assert result.value == pytest.approx(math.exp(nll / count), rel=1e-4)


# ---- BLEU / ROUGE: sacrebleu and rouge-score on the same (greedy) generations ----


def reference_answers(session, prompts, max_new_tokens):
    """Greedy answers with plain transformers: chat template, generate, decode the new tokens."""
    tokenizer, model = session.tokenizer, session.model
    answers = []
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        ).to(session.loaded.device)
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
        answers.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return answers


def test_bleu_and_rouge_equal_sacrebleu_and_rouge_score_on_the_same_generations(session):
    import sacrebleu
    from rouge_score import rouge_scorer

    path = DATA / "instructions_heldout.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    answers = reference_answers(session, [r["prompt"] for r in records], 16)
    references = [r["response"] for r in records]

    bleu = session.eval("bleu", data=str(path), max_new_tokens=16)
    expected = sacrebleu.corpus_bleu(answers, [references])
    assert bleu.examples == len(records) and bleu.value == pytest.approx(expected.score, abs=1e-9)
    assert bleu.details["brevity_penalty"] == pytest.approx(expected.bp, abs=1e-9)

    rouge = session.eval("rouge", data=str(path), max_new_tokens=16)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, ans) for ref, ans in zip(references, answers)]
    for name in ("rouge1", "rouge2", "rougeL"):
        assert rouge.details[name] == pytest.approx(sum(s[name].fmeasure for s in scores) / len(scores), abs=1e-9)
    assert rouge.value == rouge.details["rougeL"] and 0 < rouge.value < 1


def test_eval_magic_and_errors(shell, capsys, magic_session):
    result = run(shell, f"eval --metric perplexity --data {DATA / 'tiny_corpus.txt'}")
    assert result.metric == "perplexity" and "perplexity:" in capsys.readouterr().out
    run(shell, f"eval --metric accuracy --data {DATA / 'sentiment_test.jsonl'}")
    assert "needs a classifier" in capsys.readouterr().err
    run(shell, "eval --metric bleu", '{"text": "no prompt here"}')
    assert "needs 'prompt' and 'response'" in capsys.readouterr().err
    with pytest.raises(LLMError, match="unknown --metric"):
        magic_session.eval("meteor", text="x")
