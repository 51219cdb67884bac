"""Numbers checked against an independent oracle: the same quantity computed another way (a plain
transformers loop, sacrebleu / rouge-score / scikit-learn called directly, a hand-written autograd or
rollout) on the same inputs. Each test fails when the library and its reference disagree."""

import json

import pytest
import torch

from llm_magics import Session
from support import DATA, run

TINY = {
    "model_type": "llama",
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
TEXT = "The cat sat on the mat because it was warm."


@pytest.fixture
def tiny(tmp_path):
    """A tiny trained-for-a-few-steps Llama (3 layers, grouped-query attention), byte tokenizer."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    s = Session()
    s.train(
        text=(DATA / "tiny_corpus.txt").read_text(),
        from_scratch=True,
        config=str(config),
        steps=3,
        seq_len=32,
        lr=1e-2,
        progress=False,
        seed=0,
    )
    return s


# ---- attention rollout and gradient x input on a tiny model ----


def test_rollout_equals_a_hand_written_rollout_of_eager_attentions(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from llm_magics.inspect.attention import capture

    captured = capture(tiny.loaded, TEXT, rollout=True)
    tiny.save(str(tmp_path / "saved"))  # the same weights, with transformers' own eager attention
    eager = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", attn_implementation="eager")
    ids = tiny.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        attentions = eager(input_ids=ids, output_attentions=True).attentions
    n = ids.shape[1]
    rollout = torch.eye(n, dtype=torch.float64)
    for layer in attentions:  # Abnar & Zuidema: mean heads, add the residual, chain
        a = layer[0].double().mean(0)
        a = 0.5 * a + 0.5 * torch.eye(n, dtype=torch.float64)
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    torch.testing.assert_close(captured.rollout.double(), rollout, atol=1e-5, rtol=0)
    row = rollout[-1].clone()  # the explained row: the sinks' columns dropped, renormalised
    row[captured.sinks] = 0
    torch.testing.assert_close(captured.rollout_row().double(), row / row.sum(), atol=1e-5, rtol=0)


def test_gradient_times_input_equals_a_one_hot_autograd(tiny):
    """--explain's g·x for each token (Captum's InputXGradient of the predicted token's log-probability),
    computed as the derivative with respect to the token's one-hot entry
    (d f / d onehot[i, id_i] = grad_embedding_i · embedding_i): another graph."""
    from llm_magics.inspect.attention import explain

    explanation = explain(tiny.loaded, TEXT)
    tokens, scores, predicted = explanation["tokens"], torch.tensor(explanation["saliency"]), explanation["predicted"]
    model = tiny.model
    ids = tiny.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    table = model.get_input_embeddings().weight.detach()
    one_hot = torch.nn.functional.one_hot(ids[0], table.shape[0]).to(table.dtype).requires_grad_(True)
    logits = model(inputs_embeds=(one_hot @ table)[None]).logits
    torch.log_softmax(logits[0, -1], -1)[int(logits[0, -1].argmax())].backward()
    raw = one_hot.grad.gather(1, ids[0][:, None])[:, 0].abs()
    raw[explanation["sinks"]] = 0
    assert len(tokens) == ids.shape[1] and predicted == tiny.tokenizer.decode([int(logits[0, -1].argmax())])
    torch.testing.assert_close(scores, raw / raw.sum(), atol=1e-5, rtol=1e-4)


# ---- chat: the system prompt reaches the template ----


@pytest.mark.slow
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


# ---- classifier: accuracy and F1 from scikit-learn on the same predictions ----


@pytest.fixture(scope="module")
def classifier():
    """MiniLM with a sentiment head after a few steps: right on some reviews, wrong on others."""
    import llm_magics

    s = llm_magics.session  # the kernel's session, so that the magic sees the same classifier
    s.load("minilm")
    s.finetune(
        data=str(DATA / "sentiment_train.jsonl"),
        task="classify",
        labels="negative,positive",
        steps=3,
        batch_size=8,
        lr=1e-4,
        progress=False,
        seed=0,
    )
    return s


@pytest.mark.slow
def test_accuracy_and_f1_equal_scikit_learn_and_the_magic_prints_it(classifier, shell, capsys):
    from sklearn.metrics import accuracy_score, f1_score

    path = DATA / "sentiment_train.jsonl"  # 44 reviews: three batches of 16
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    model, tokenizer = classifier.model, classifier.tokenizer
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    truth, predicted = [], []
    with torch.no_grad():  # one review at a time, no padding: another path than the batched one
        for record in records:
            inputs = tokenizer(record["text"], return_tensors="pt").to(classifier.loaded.device)
            predicted.append(int(model(**inputs).logits.argmax(-1)))
            truth.append(labels.index(record["label"]))
    accuracy = accuracy_score(truth, predicted)
    f1 = f1_score(truth, predicted, average="macro", zero_division=0)
    assert 0 < accuracy < 1  # a score that could be off in either direction

    result = classifier.eval("accuracy", data=str(path), progress=False)
    assert result.examples == len(records) and not result.partial
    assert result.value == pytest.approx(accuracy, abs=1e-12)
    assert result.details["f1"] == pytest.approx(f1, abs=1e-12)
    assert classifier.eval("f1", data=str(path), progress=False).value == pytest.approx(f1, abs=1e-12)
    capsys.readouterr()
    run(shell, f"eval --metric accuracy --data {path}")
    out = capsys.readouterr().out
    assert f"accuracy: {accuracy:.4f} on {len(records)} examples (f1 {f1:.4f})" in out


def test_a_stop_after_the_first_evaluation_batch_keeps_exactly_one_batch(classifier):
    """The stop is requested from inside the first batch's forward pass: deterministic, no timer."""
    import math

    calls = []

    def stop_after_first_batch(module, args, output):
        calls.append(1)
        classifier.stop()

    handle = classifier.model.register_forward_hook(stop_after_first_batch)
    try:
        result = classifier.eval("accuracy", data=str(DATA / "sentiment_train.jsonl"), progress=False)
    finally:
        handle.remove()
    assert calls == [1] and result.partial and math.isnan(result.value)
    assert (result.examples, result.total) == (16, 44)
    assert result.summary() == "accuracy: partial: 16 of 44 examples, stopped (not a score)"
