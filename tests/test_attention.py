"""Attention capture against transformers' own eager output_attentions, on both packaged models."""
import re

import numpy as np
import pytest
import torch
import traitlets
from transformers import AutoModel, AutoModelForCausalLM

import llm_magics
from support import run
from llm_magics import LLMError, Session
from llm_magics.attention import capture
from llm_magics.views.attention import AttentionView

TEXT = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module", params=["default", "minilm"])
def model_pair(request, default_model_dir):
    s = Session()
    loaded = s.load(request.param)
    auto = AutoModelForCausalLM if loaded.kind == "causal" else AutoModel
    eager = auto.from_pretrained(loaded.source, attn_implementation="eager")
    with torch.no_grad():
        reference = eager(**loaded.tokenizer(TEXT, return_tensors="pt"), output_attentions=True).attentions
    return s, loaded, reference


def test_capture_equals_eager_output_attentions(model_pair):
    s, loaded, reference = model_pair
    last = len(reference) - 1
    captured = capture(loaded, TEXT, layers=[0, last])
    assert sorted(captured.weights) == [0, last]  # only the asked layers are kept
    for layer in (0, last):
        weights = captured.weights[layer]
        torch.testing.assert_close(weights, reference[layer][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5, rtol=0)
    upper = torch.triu(captured.weights[0], diagonal=1)
    if loaded.kind == "causal":
        assert captured.causal and upper.abs().max() == 0
    else:
        assert not captured.causal and upper.abs().max() > 0.01
    assert loaded.model.config._attn_implementation == "sdpa"  # ordinary runs stay on SDPA


def test_only_asked_heads_are_computed(model_pair):
    s, loaded, reference = model_pair
    captured = capture(loaded, TEXT, layers=1, heads=[0, 2])
    assert captured.weights[1].shape[0] == 2
    torch.testing.assert_close(captured.head(1, 2), reference[1][0, 2], atol=1e-5, rtol=0)


def test_kept_queries_and_keys_give_every_layer(model_pair):
    s, loaded, reference = model_pair
    captured = capture(loaded, TEXT, keep_queries_keys=True)
    assert sorted(captured.queries_keys) == list(range(len(reference)))
    for layer in range(len(reference)):
        torch.testing.assert_close(captured.layer_weights(layer), reference[layer][0], atol=1e-5, rtol=0)


def test_rollout_drops_the_attention_sink(model_pair):
    s, loaded, reference = model_pair
    captured = capture(loaded, TEXT, thumbnails=8, rollout=True)
    layers, heads = len(reference), reference[0].shape[1]
    assert captured.thumbnails.shape == (layers, heads, 8, 8)
    torch.testing.assert_close(captured.rollout.sum(-1), torch.ones(captured.rollout.shape[0]), atol=1e-4, rtol=0)
    raw = capture(loaded, TEXT, rollout=True, drop_sinks=False).rollout
    explanation = s.explain(TEXT)
    assert len(explanation["rollout"]) == len(explanation["tokens"])
    sinks = explanation["sinks"]
    if loaded.kind == "causal":
        assert sinks == [0] and explanation["target"] == "next token after '.'"
        # Without the sink handling position 0 takes the biggest share; with it, none.
        assert raw[-1].argmax() == 0 and explanation["rollout"][0] == 0
        assert sum(explanation["saliency"]) == pytest.approx(1.0, abs=1e-4)
        assert explanation["predicted"]
    else:
        assert sinks == [0, len(explanation["tokens"]) - 1]  # [CLS] and [SEP]
        assert explanation["target"].startswith("[CLS]")
        assert max(explanation["rollout"][i] for i in sinks) < max(raw[0][i] for i in sinks)


def test_layer_switch_reuses_the_one_forward_pass(model_pair):
    s, loaded, reference = model_pair
    passes = []
    hook = loaded.model.register_forward_hook(lambda *args: passes.append(1))
    try:
        view = AttentionView(loaded, TEXT)
        assert len(passes) == 1
        n = len(view.tokens)
        for layer in range(view.num_layers):
            for head in (-1, 3):
                view.layer, view.head = layer, head
                assert (view.shown_layer, view.shown_head) == (layer, head)  # the data names itself
                expected = reference[layer][0]
                torch.testing.assert_close(view.layer_weights(layer), expected, atol=1e-5, rtol=0)
                sent = np.frombuffer(view.weights, np.uint8).reshape(-1, n, n)
                maps = expected.mean(0) if head < 0 else expected[head]
                assert view.weight_heads[0] == head
                peaks = np.frombuffer(view.row_peaks, np.float32).reshape(-1, n)[0]
                np.testing.assert_allclose(peaks, maps.max(-1).values.numpy(), atol=1e-5)
                scaled = (maps / maps.max(-1, keepdim=True).values * 255).round().numpy()
                assert np.abs(sent[0] - scaled).max() <= 1
        assert len(passes) == 1  # no new forward pass for any layer or head
    finally:
        hook.remove()
    # "all heads" in a short text also sends each head for the head view's per-head colours.
    view.head = -1
    assert view.weight_heads == [-1] + list(range(view.num_heads))
    view.view = "model"
    assert len(view.thumbnails) == view.num_layers * view.num_heads * view.thumbnail_size ** 2
    with pytest.raises(traitlets.TraitError):
        view.layer = 99


def test_saved_notebook_keeps_a_static_picture(model_pair):
    s, loaded, reference = model_pair
    view = AttentionView(loaded, TEXT, layer=1, head=2, view="matrix")
    data, metadata = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data  # the live widget when the kernel runs
    static = data["text/html"]
    assert "<script" not in static and "data:image/png;base64," in static
    assert 'data-layer="1"' in static and "layer 1 · head 2" in static
    for token in ("cat", "mat", "tired"):
        assert re.search(f">·?{token}<", static)  # row and column labels
    assert static.count("llm-row-label") == static.count("llm-col-label") == len(view.tokens)
    if loaded.kind == "causal":
        view.view = "lens"
        lens = view._repr_mimebundle_()[0]["text/html"]
        assert "logit lens" in lens and "llm-lens-static" in lens and "layer 29" in lens


def test_bad_attention_input():
    s = Session()
    loaded = s.load("minilm")
    with pytest.raises(LLMError, match="layer 6 is out of range: this model has layers 0..5"):
        capture(loaded, TEXT, layers=6)
    with pytest.raises(LLMError, match="head 12 is out of range"):
        capture(loaded, TEXT, heads=[12])
    with pytest.raises(LLMError, match="head 12 is out of range: this model has heads 0..11"):
        AttentionView(loaded, TEXT, head=12)
    with pytest.raises(LLMError, match="text is empty"):
        capture(loaded, "  ")
    with pytest.raises(LLMError, match="longer than the model's context of 512"):
        capture(loaded, "word " * 700)


def test_attention_magic(shell, capsys, magic_session):
    view = run(shell, "attention --layer 2 --head 1 The cat sat on the mat")
    assert isinstance(view, AttentionView) and view.layer == 2 and view.head == 1
    assert view.tokens[-1].strip() == "mat"
    capsys.readouterr()
    for line, expected in [("attention --head 99 The cat", "llm attention: head 99 is out of range: this model has heads 0..8"),
                           ("attention --layer 99 The cat", "llm attention: layer 99 is out of range: this model has layers 0..29")]:
        run(shell, line)
        err = capsys.readouterr().err
        assert err.strip() == expected  # one line, no traceback
    view = run(shell, "attention --backend bertviz --layer 1 --view head", "The cat sat")
    assert isinstance(view, AttentionView) and view.layer == 1  # our view, not a blank box
    assert "cdnjs" in capsys.readouterr().out  # ... and one line saying why
    # --explain: two shaded token rows, each naming the token it explains, with a colour scale.
    from IPython.core import display_functions

    shown = []
    original = display_functions.publish_display_data
    display_functions.publish_display_data = lambda data, **kwargs: shown.append(data)
    try:
        shell.run_cell("%%llm attention --explain\nThe cat sat on the mat")
    finally:
        display_functions.publish_display_data = original
    assert isinstance(shell.user_ns["_llm"], AttentionView)
    html = [d["text/html"] for d in shown if "llm-explain" in d.get("text/html", "")]
    assert len(html) == 2
    assert "attention rollout → next token after &#x27;mat&#x27;" in html[0] and "sinks dropped" in html[0]
    assert "gradient × input → next token after &#x27;mat&#x27;" in html[1]
    assert all("linear-gradient" in h for h in html)
    result = run(shell, "generate --greedy --max-new-tokens 4 --attention", "The capital of France is")
    assert result is llm_magics.last and result.new_tokens == 4

