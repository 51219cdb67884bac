"""Attribution with Captum's methods: every method on a causal and an encoder classifier (tiny random
models, few steps), IG completeness against an independent forward pass, stop keeps the finished targets,
JSON round trip, the view, and one line per user mistake."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_patching import tiny_model

from llm_magics import LLMError
from llm_magics.base.interrupts import StopFlag
from llm_magics.inspect.attribution import METHODS, AttributionResult, attribute, step_batch
from llm_magics.loading import LoadedModel
from support import one_error_line, run

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="module")
def causal(tokenizer):
    return tiny_model("llama", tokenizer)


@pytest.fixture(scope="module")
def classifier():
    from transformers import BertConfig, BertForSequenceClassification

    from llm_magics.loading import load_model

    tokenizer = load_model("minilm").tokenizer
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config).eval()
    return LoadedModel(model, tokenizer, "tiny bert", "", "classifier", torch.device("cpu"), torch.float32)


def log_prob(loaded, ids, target):
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits
    logits = logits[0, -1] if loaded.kind == "causal" else logits[0]
    return float(torch.log_softmax(logits, -1)[target])


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "integrated-gradients" else m for m in METHODS]
)
def test_every_method_on_a_causal_model(causal, method):
    result = attribute(causal, PROMPT, method=method, max_new_tokens=2, steps=4)
    n = result.prompt_length
    assert len(result.targets) == 2 and len(result.tokens) == n + 2
    assert result.scores.shape == (2, n + 2)
    assert not np.isnan(result.scores[0, :n]).any() and np.isnan(result.scores[0, n:]).all()
    assert not np.isnan(result.scores[1, : n + 1]).any() and np.isnan(result.scores[1, n + 1])  # sees target 0
    assert np.abs(result.scores[:, :n]).sum() > 0
    # the greedy continuation, and its step scores, against a plain forward pass
    ids = causal.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    first = causal.tokenizer.decode([int(causal.model(input_ids=ids).logits[0, -1].argmax())])
    assert result.targets[0] == first
    target_id = causal.tokenizer(first, add_special_tokens=False)["input_ids"][0]
    assert result.step_scores[0]["probability"] == pytest.approx(math.exp(log_prob(causal, ids, target_id)), abs=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_an_encoder_classifier(classifier, method):
    result = attribute(classifier, "a truly wonderful film", method=method, steps=4)
    ids = classifier.tokenizer("a truly wonderful film", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        predicted = classifier.model.config.id2label[int(classifier.model(input_ids=ids).logits.argmax())]
    assert result.targets == [predicted]
    assert result.scores.shape == (1, ids.shape[1]) and not np.isnan(result.scores).any()
    other = attribute(
        classifier,
        "a truly wonderful film",
        method=method,
        steps=4,
        target="negative" if predicted == "positive" else "positive",
    )
    assert other.targets != result.targets


@pytest.mark.parametrize("method", ["integrated-gradients", "layer-integrated-gradients"])
def test_integrated_gradients_completeness_within_the_reported_delta(causal, classifier, method):
    """sum(attributions) = f(input) - f(baseline) up to the reported delta, with f and the baseline computed
    here by plain forward passes; and the delta shrinks with more steps."""
    for loaded, text in ((causal, PROMPT), (classifier, "a truly wonderful film")):
        coarse = attribute(loaded, text, method=method, steps=4, max_new_tokens=1)
        fine = attribute(loaded, text, method=method, steps=64, max_new_tokens=1)
        ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
        target = (
            ids.new_tensor(loaded.tokenizer(fine.targets[0], add_special_tokens=False)["input_ids"][:1])
            if loaded.kind == "causal"
            else list(loaded.model.config.id2label.values()).index(fine.targets[0])
        )
        target = int(target)
        with torch.no_grad():
            if method == "integrated-gradients":  # baseline: all-zero input embeddings
                emb = loaded.model.get_input_embeddings()(ids)
                logits = loaded.model(inputs_embeds=torch.zeros_like(emb)).logits
            else:  # baseline: the pad (or id 0) token everywhere
                pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
                logits = loaded.model(input_ids=torch.full_like(ids, pad)).logits
        logits = logits[0, -1] if loaded.kind == "causal" else logits[0]
        difference = log_prob(loaded, ids, target) - float(torch.log_softmax(logits, -1)[target])
        for result in (coarse, fine):
            total = float(np.nansum(result.scores[0]))
            assert abs(total - difference) == pytest.approx(abs(result.deltas[0]), abs=1e-4)
        assert abs(fine.deltas[0]) <= abs(coarse.deltas[0]) + 1e-6


def test_stop_keeps_the_finished_targets(causal):
    flag = StopFlag()
    result = attribute(
        causal,
        PROMPT,
        method="saliency",
        max_new_tokens=4,
        stop=flag,
        on_target=lambda done, total: flag.request() if done == 2 else None,
    )
    assert result.interrupted and len(result.targets) == 2 and result.scores.shape[0] == 2
    assert "stopped after 2 target token(s)" in result.summary()


@pytest.fixture
def lora(tokenizer):
    """A tiny causal model with a LoRA adapter: only the adapter's weights ask for gradients."""
    from peft import LoraConfig, get_peft_model

    loaded = tiny_model("llama", tokenizer)
    model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    return LoadedModel(model, tokenizer, "tiny lora", "", "causal", torch.device("cpu"), torch.float32)


def flags(model):
    return {name: parameter.requires_grad for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("method", ["integrated-gradients", "layer-integrated-gradients"])
def test_requires_grad_flags_are_restored_after_attribute_and_after_a_stop(lora, method):
    before = flags(lora.model)
    assert any(before.values()) and not all(before.values())  # adapters trainable, base weights frozen
    during = []
    result = attribute(
        lora,
        PROMPT,
        method=method,
        max_new_tokens=2,
        steps=4,
        on_target=lambda done, total: during.append(any(flags(lora.model).values())),
    )
    assert len(result.targets) == 2 and during == [False, False]  # no weight asks for a gradient inside
    assert flags(lora.model) == before
    stop = StopFlag()
    result = attribute(
        lora, PROMPT, method=method, max_new_tokens=3, steps=4, stop=stop, on_target=lambda done, total: stop.request()
    )
    assert result.interrupted and len(result.targets) == 1
    assert flags(lora.model) == before

    def fail(done, total):
        raise RuntimeError("an error half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        attribute(lora, PROMPT, method=method, max_new_tokens=2, steps=4, on_target=fail)
    assert flags(lora.model) == before


@pytest.mark.parametrize("method", ["integrated-gradients", "layer-integrated-gradients"])
def test_the_budgeted_step_batch_gives_the_same_attributions_as_one_step_per_pass(causal, method):
    n = len(causal.tokenizer(PROMPT)["input_ids"])
    assert step_batch(causal, n + 1) >= 8  # the budget puts all 8 steps in one pass; batch_size=1 runs 8 passes
    budgeted = attribute(causal, PROMPT, method=method, max_new_tokens=2, steps=8)
    one = attribute(causal, PROMPT, method=method, max_new_tokens=2, steps=8, batch_size=1)
    assert budgeted.targets == one.targets
    np.testing.assert_allclose(budgeted.scores, one.scores, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(budgeted.deltas, one.deltas, atol=1e-5)
    # the budget: a larger batch for more memory, a smaller one for a longer input, never below one
    large = step_batch(causal, n, budget=2**22)
    assert 1 <= step_batch(causal, n, budget=2**20) < large and step_batch(causal, 4 * n, budget=2**22) < large
    assert step_batch(causal, n, budget=1) == 1
    with pytest.raises(LLMError, match="batch_size must be at least 1"):
        attribute(causal, PROMPT, method=method, batch_size=0)


def test_json_round_trip_frame_and_view(causal, tmp_path):
    result = attribute(causal, PROMPT, method="input-x-gradient", max_new_tokens=2)
    path = result.save(tmp_path / "attr.json")
    back = AttributionResult.load(path)
    assert back.tokens == result.tokens and back.targets == result.targets
    np.testing.assert_allclose(back.scores, result.scores, equal_nan=True)
    frame = result.to_frame()
    assert len(frame) == 2 * result.prompt_length + 1 and {"target", "input", "score"} <= set(frame.columns)
    view = result.view()
    assert view.rows == result.targets and view.columns == result.tokens and view.normalizable
    assert view.row_notes[0].startswith("p=")
    before = view.static_html()
    view.set_state({"normalize": True})
    assert view.static_html() != before and 'data-normalize="1"' in view.static_html()
    row = [v for v in view.shown_values()[0] if v is not None]
    assert max(abs(v) for v in row) == pytest.approx(1.0)
    view.set_state({"selected": [0, 1]})
    assert [t for t, _ in view.detail] == [t for t, _ in result.step_scores[0]["top"]]
    with pytest.raises(LLMError, match="not an attribution"):
        AttributionResult.load(tmp_path / "missing.json")


@pytest.mark.slow
def test_bad_input_is_one_line(shell, magic_session, capsys):
    run(shell, "attribute --method gradient-magic The capital of France is")
    assert "unknown method 'gradient-magic'" in one_error_line(capsys)
    run(shell, "attribute --target '' The capital of France is")
    assert "tokenizes to nothing" in one_error_line(capsys)
    run(shell, "attribute " + "word " * 8200)
    assert "longer than the model's context" in one_error_line(capsys)


@pytest.mark.slow
def test_magic_on_real_weights(shell, magic_session, capsys):
    result = run(shell, "attribute --method input-x-gradient --target ' Paris' The capital of France is")
    assert result.targets == [" Paris"] and result.scores.shape == (1, result.prompt_length + 1)
    assert "attribution (input-x-gradient)" in capsys.readouterr().out


def ig_captum(loaded, text: str, target: int, steps: int) -> tuple[np.ndarray, float]:
    """Integrated gradients on the input embeddings (baseline all zeros) of log p(target), called the plain
    Captum way: the per-token scores and Captum's convergence delta."""
    from captum.attr import IntegratedGradients

    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    x = loaded.model.get_input_embeddings()(ids).detach().requires_grad_(True)

    def f(embeds):
        return torch.log_softmax(loaded.model(inputs_embeds=embeds).logits[:, -1].float(), -1)[:, target]

    attr, delta = IntegratedGradients(f).attribute(x, torch.zeros_like(x), n_steps=steps, return_convergence_delta=True)
    return attr.sum(-1)[0].detach().numpy(), float(delta)


def test_an_unconverged_ig_says_so_in_the_summary_and_the_view(causal):
    """Two steps on the tiny llama leave a delta far above 5% of the target's scale (the larger of
    |f(x) - f(baseline)|, computed here by plain forward passes, and the largest |score|): the summary and
    the view (widget and static HTML) each carry one line naming the target and a larger --steps."""
    result = attribute(causal, PROMPT, method="integrated-gradients", max_new_tokens=1, steps=2)
    ids = causal.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    target = result.ids[-1]
    with torch.no_grad():
        zeros = torch.zeros_like(causal.model.get_input_embeddings()(ids))
        baseline = float(torch.log_softmax(causal.model(inputs_embeds=zeros).logits[0, -1], -1)[target])
    difference = log_prob(causal, ids, target) - baseline
    scale = max(abs(difference), float(np.nanmax(np.abs(result.scores[0]))))
    assert abs(result.deltas[0]) > 0.05 * scale  # the case: far from converged
    line = result.convergence_warning()
    assert line.startswith(f"IG has not converged for {result.targets[0]!r} (delta {abs(result.deltas[0]):.3g}")
    assert f"difference of {abs(difference):.3g}" in line
    suggested = int(line.rsplit("--steps ", 1)[1])
    assert suggested > 2
    assert line in result.summary().splitlines()
    view = result.view()
    assert view.get_state()["warning"] == line
    assert html_text(view.static_html()).count(line) == 1
    # a converged result (a delta inside 5% of its scale) and a method without a delta say nothing
    # the rule on numbers worked by hand: scores [1, 1] sum to 2, so f(x) - f(b) = 2 - delta; a delta of 0.09
    # is inside 5% of |2 - 0.09| = 1.91 (0.0955), 0.11 outside 5% of 1.89 (0.0945); -0.10 inside 5% of 2.10
    for delta, converged in ((0.09, True), (0.11, False), (-0.10, True), (-0.11, False)):
        made = AttributionResult(
            "integrated-gradients", [" a", " b"], [" c"], np.ones((1, 2)), deltas=[delta], steps=10
        )
        assert made.convergence()[0]["converged"] is converged, delta
        assert (made.convergence_warning() == "") is converged
    saliency = attribute(causal, PROMPT, method="saliency", max_new_tokens=1)
    assert saliency.convergence_warning() == "" and saliency.view().get_state()["warning"] == ""
    assert "has not converged" not in saliency.summary()


def test_more_steps_shrink_the_delta_as_captum_computes_it(causal):
    """Our deltas are Captum's (IntegratedGradients called the plain way, return_convergence_delta=True), and
    raising --steps from 2 to 128 makes Captum's delta smaller."""
    coarse = attribute(causal, PROMPT, method="integrated-gradients", max_new_tokens=1, steps=2)
    fine = attribute(causal, PROMPT, method="integrated-gradients", max_new_tokens=1, steps=128)
    target = coarse.ids[-1]
    deltas = {}
    for result, steps in ((coarse, 2), (fine, 128)):
        scores, delta = ig_captum(causal, PROMPT, target, steps)
        n = result.prompt_length
        np.testing.assert_allclose(result.scores[0, :n], scores, atol=1e-4 * max(1.0, np.abs(scores).max()))
        assert result.deltas[0] == pytest.approx(delta, abs=1e-4)
        deltas[steps] = abs(delta)
    assert deltas[128] < deltas[2]


def html_text(markup: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_the_heatmap_has_a_colour_legend_with_the_sign_and_the_units(causal):
    """The legend's swatch beside 'positive' is the colour of a positive cell, the one beside 'negative' that
    of a negative cell, and it names what the numbers are; the widget carries the units for its JS legend."""
    import re

    result = attribute(causal, PROMPT, method="integrated-gradients", max_new_tokens=2, steps=4)
    view = result.view()
    markup = view.static_html()
    legend = re.search(r'<div class="llm-legend".*?</div>', markup).group(0)
    swatches = dict(
        (label, rgb)
        for rgb, label in re.findall(r"background:rgb\((\d+,\d+,\d+)\).*?</span><span[^>]*>\w+: (\w+)</span>", legend)
    )
    assert set(swatches) == {"positive", "negative"} and swatches["positive"] != swatches["negative"]
    assert "attribution to log p(target)" in html_text(legend)
    assert view.get_state()["units"] == "attribution to log p(target)"
    cells = re.findall(r'title="[^"]*: (-?[\d.]+)" style="[^"]*background:rgba\((\d+,\d+,\d+),', markup)
    signs = {("positive" if float(v) > 0 else "negative"): rgb for v, rgb in cells if float(v) != 0}
    assert set(signs) == {"positive", "negative"}  # the case has both signs
    assert signs == swatches
    js = (Path(__file__).parents[1] / "llm_magics" / "views" / "heatmap.js").read_text()
    assert "llm-legend-positive" in js and "llm-legend-negative" in js and "model.get('units')" in js
