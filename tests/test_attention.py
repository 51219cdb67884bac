"""Attention capture against transformers' own eager output_attentions, on both packaged models."""
import numpy as np
import pytest
import torch
import traitlets
from transformers import AutoModel, AutoModelForCausalLM

import llm_magics
from conftest import run
from llm_magics import LLMError, Session
from llm_magics.attention import capture
from llm_magics.attention_view import AttentionView

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


def test_rollout_and_thumbnails(model_pair):
    s, loaded, reference = model_pair
    captured = capture(loaded, TEXT, thumbnails=8, rollout=True)
    layers, heads = len(reference), reference[0].shape[1]
    assert captured.thumbnails.shape == (layers, heads, 8, 8)
    torch.testing.assert_close(captured.rollout.sum(-1), torch.ones(captured.rollout.shape[0]), atol=1e-4, rtol=0)
    explanation = s.explain(TEXT)
    assert len(explanation["rollout"]) == len(explanation["tokens"])
    if loaded.kind == "causal":
        assert sum(explanation["saliency"]) == pytest.approx(1.0, abs=1e-4)


def test_widget_follows_layer_and_head(model_pair):
    s, loaded, reference = model_pair
    view = AttentionView(loaded, TEXT)
    n = len(view.tokens)

    def shown():
        return np.frombuffer(view.weights, np.uint8).reshape(n, n)

    def expected(layer, head):
        maps = reference[layer][0]
        maps = maps.mean(0) if head < 0 else maps[head]
        return (maps / maps.max(-1, keepdim=True).values * 255).round().numpy()

    assert view.layer == len(reference) - 1 and view.head == -1
    assert np.abs(shown() - expected(view.layer, -1)).max() <= 1
    view.layer = 2
    assert np.abs(shown() - expected(2, -1)).max() <= 1
    view.head = 3
    assert np.abs(shown() - expected(2, 3)).max() <= 1
    view.view = "model"
    assert len(view.thumbnails) == view.num_layers * view.num_heads * view.thumbnail_size ** 2
    with pytest.raises(traitlets.TraitError):
        view.layer = 99


def test_bad_attention_input():
    s = Session()
    loaded = s.load("minilm")
    with pytest.raises(LLMError, match="layer 6 is out of range: this model has layers 0..5"):
        capture(loaded, TEXT, layers=6)
    with pytest.raises(LLMError, match="head 12 is out of range"):
        capture(loaded, TEXT, heads=[12])
    with pytest.raises(LLMError, match="text is empty"):
        capture(loaded, "  ")
    with pytest.raises(LLMError, match="longer than the model's context of 512"):
        capture(loaded, "word " * 700)


def test_attention_magic(shell, capsys, magic_session):
    view = run(shell, "attention --layer 2 --head 1 The cat sat on the mat")
    assert isinstance(view, AttentionView) and view.layer == 2 and view.head == 1
    assert view.tokens[-1].strip() == "mat"
    run(shell, "attention --layer 40 hello")
    assert "layer 40 is out of range" in capsys.readouterr().err
    html = run(shell, "attention --backend bertviz --layer 1 --view head", "The cat sat")
    assert "require" in html.data  # bertviz pulls require.js / d3 from a CDN
    shell.run_cell("%%llm attention --explain\nThe capital of France is")
    assert isinstance(shell.user_ns["_llm"], AttentionView)
    result = run(shell, "generate --greedy --max-new-tokens 4 --attention", "The capital of France is")
    assert result is llm_magics.last and result.new_tokens == 4
