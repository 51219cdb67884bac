"""The logit lens against a reference computed with plain transformers (output_hidden_states=True)."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from support import run
from llm_magics import LLMError, Session
from llm_magics.views.attention import AttentionView
from llm_magics.lens import logit_lens

TEXT = "The cat sat on the mat because it was"


def test_lens_equals_final_norm_and_unembedding_of_each_hidden_state(session):
    loaded = session.loaded
    lens = session.lens(TEXT)
    assert session.last is lens
    # Reference: a separately loaded copy, its hidden states read out by hand.
    reference = AutoModelForCausalLM.from_pretrained(loaded.source, attn_implementation="eager")
    inputs = loaded.tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        out = reference(**inputs, output_hidden_states=True)
        hidden = out.hidden_states
        assert len(hidden) == reference.config.num_hidden_layers + 1 == len(lens.rows)
        for row, state in enumerate(hidden):
            # transformers' last hidden state has the final norm applied already: not a second time.
            normed = state[0] if row == len(hidden) - 1 else reference.model.norm(state[0])
            probs = torch.softmax(reference.lm_head(normed), dim=-1)
            top = probs.topk(5, dim=-1)
            torch.testing.assert_close(lens.top_probs[row], top.values, atol=1e-4, rtol=0)
            assert torch.equal(lens.top_ids[row, :, 0], top.indices[:, 0])
        # The last row is the model's own next-token distribution.
        torch.testing.assert_close(lens.top_probs[-1], torch.softmax(out.logits[0], -1).topk(5).values,
                                   atol=1e-4, rtol=0)
    assert lens.rows[0] == "embeddings" and lens.rows[-1] == "layer 29"
    assert lens.tokens[-1] == " was" and len(lens.top_tokens[-1]) == len(lens.tokens)
    assert lens.top_tokens[-1][-1][0] == loaded.tokenizer.decode([int(out.logits[0, -1].argmax())])
    # Early layers guess differently from the last: the lens shows the prediction forming.
    assert not torch.equal(lens.top_ids[1, :, 0], lens.top_ids[-1, :, 0])


def test_lens_magic_and_widget_tab(shell, capsys, magic_session):
    view = run(shell, "lens The cat sat on the mat")
    assert isinstance(view, AttentionView) and view.view == "lens"
    assert view.lens["rows"][-1] == "layer 29" and len(view.lens["tokens"][0]) == len(view.tokens)
    top5 = view.lens["probs"][-1][-1]  # the top 5 of a distribution: descending, summing to at most 1
    assert top5 == sorted(top5, reverse=True) and 0 < sum(top5) <= 1.0001
    cell = run(shell, "lens", "The cat sat on the mat")
    assert cell.lens["tokens"] == view.lens["tokens"]  # %%llm lens: the cell body is the text


def test_lens_needs_a_causal_model(shell, capsys):
    s = Session()
    loaded = s.load("minilm")
    with pytest.raises(LLMError, match="needs a causal language model, and .* is an encoder"):
        logit_lens(loaded, TEXT)
    view = AttentionView(loaded, TEXT)
    view.view = "lens"  # the widget's tab says why, in one line
    assert "needs a causal language model" in view.lens_error and not view.lens
    import llm_magics

    llm_magics.session.load("minilm")
    run(shell, "lens Paris is the capital of France.")
    err = capsys.readouterr().err.strip()
    assert err.startswith("llm lens: the logit lens") and "\n" not in err
