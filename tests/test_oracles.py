"""Numbers checked against an independent oracle: the same quantity computed another way (a plain
transformers loop, sacrebleu / rouge-score / scikit-learn called directly, a hand-written autograd or
rollout) on the same inputs. Each test fails when the library and its reference disagree."""
import json
import math

import pytest
import torch

from conftest import DATA, run
from llm_magics import Session

TINY = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
TEXT = "The cat sat on the mat because it was warm."


@pytest.fixture
def tiny(tmp_path):
    """A tiny trained-for-a-few-steps Llama (3 layers, grouped-query attention), byte tokenizer."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    s = Session()
    s.train(text=(DATA / "tiny_corpus.txt").read_text(), from_scratch=True, config=str(config), steps=3,
            seq_len=32, lr=1e-2, progress=False, seed=0)
    return s


# ---- perplexity: exp(mean NLL) of a plain transformers loop over the same windows ----

def test_perplexity_equals_a_plain_transformers_loop(session, cache, tmp_path):
    docs = ["The cat sat on the mat.", "It was a sunny day and the children played in the park.",
            "Dogs bark, birds sing, and the river runs to the sea."]
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
            window = torch.tensor([ids[start:start + seq_len]], device=session.loaded.device)
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
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               return_dict=True, return_tensors="pt").to(session.loaded.device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        answers.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
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


# ---- attention rollout and gradient x input on a tiny model ----

def test_rollout_equals_a_hand_written_rollout_of_eager_attentions(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from llm_magics.attention import capture

    captured = capture(tiny.loaded, TEXT, rollout=True)
    tiny.save(str(tmp_path / "saved"))  # the same weights, with transformers' own eager attention
    eager = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", attn_implementation="eager")
    ids = tiny.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        attentions = eager(input_ids=ids, output_attentions=True).attentions
    n = ids.shape[1]
    rollout = torch.eye(n, dtype=torch.float64)
    for layer in attentions:  # Abnar & Zuidema: mean heads, drop the sink column, add the residual, chain
        a = layer[0].double().mean(0)
        a[:, 0] = 0
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)  # row 0 sees only the sink: it keeps the residual
        a = 0.5 * a + 0.5 * torch.eye(n, dtype=torch.float64)
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    assert captured.sinks == [0]
    torch.testing.assert_close(captured.rollout.double(), rollout, atol=1e-5, rtol=0)


def test_gradient_times_input_equals_a_one_hot_autograd(tiny):
    """g·x for each token, computed as the derivative of the top logit with respect to the token's
    one-hot entry (d logit / d onehot[i, id_i] = grad_embedding_i · embedding_i): another graph."""
    from llm_magics.attention import saliency

    tokens, scores, predicted = saliency(tiny.loaded, TEXT)
    model = tiny.model
    ids = tiny.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    table = model.get_input_embeddings().weight.detach()
    one_hot = torch.nn.functional.one_hot(ids[0], table.shape[0]).to(table.dtype).requires_grad_(True)
    logits = model(inputs_embeds=(one_hot @ table)[None]).logits
    logits[0, -1].max().backward()
    raw = one_hot.grad.gather(1, ids[0][:, None])[:, 0].abs()
    assert len(tokens) == ids.shape[1] and predicted == tiny.tokenizer.decode([int(logits[0, -1].argmax())])
    torch.testing.assert_close(scores, raw / raw.sum(), atol=1e-5, rtol=1e-4)


# ---- chat: the system prompt reaches the template ----

def test_system_prompt_is_in_the_templated_prompt(session, monkeypatch):
    tokenizer = session.tokenizer
    real = tokenizer.apply_chat_template
    prompts = []

    def recording(messages, *args, **kwargs):  # the real template; we only keep what it rendered
        out = real(messages, *args, **kwargs)
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        prompts.append(tokenizer.decode(ids[0] if hasattr(ids[0], "__len__") else ids))
        return out

    monkeypatch.setattr(tokenizer, "apply_chat_template", recording)
    system = "You are Captain Hook, a pirate. Always say Arr."
    session.chat("Who are you?", system=system, do_sample=False, max_new_tokens=5)
    session.chat("And your ship?", do_sample=False, max_new_tokens=5)  # the system prompt stays
    session.reset_chat()
    session.chat("Who are you?", do_sample=False, max_new_tokens=5)
    assert len(prompts) == 3
    assert f"<|im_start|>system\n{system}<|im_end|>" in prompts[0]
    assert f"<|im_start|>system\n{system}<|im_end|>" in prompts[1] and "Who are you?" in prompts[1]
    assert system not in prompts[2]
