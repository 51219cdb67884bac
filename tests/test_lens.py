"""The logit lens against a reference computed with plain transformers (output_hidden_states=True)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from llm_magics import LLMError, Session
from llm_magics.inspect.lens import logit_lens
from llm_magics.views.attention import AttentionView
from support import run, tol

TEXT = "The cat sat on the mat because it was"


@pytest.mark.slow
def test_lens_equals_final_norm_and_unembedding_of_each_hidden_state(session):
    loaded = session.loaded
    lens = session.lens(TEXT)
    assert session.last is lens
    # Reference: a separately loaded copy, its hidden states read out by hand.
    # On the lens's device and dtype (the suite's), compared at that dtype's tolerance (support.tol).
    reference = AutoModelForCausalLM.from_pretrained(loaded.source, attn_implementation="eager", dtype=loaded.dtype)
    reference.to(loaded.device)
    inputs = loaded.tokenizer(TEXT, return_tensors="pt").to(loaded.device)
    with torch.no_grad():
        out = reference(**inputs, output_hidden_states=True)
        hidden = out.hidden_states
        assert len(hidden) == reference.config.num_hidden_layers + 1 == len(lens.rows)
        for row, state in enumerate(hidden):
            # transformers' last hidden state has the final norm applied already: not a second time.
            normed = state[0] if row == len(hidden) - 1 else reference.model.norm(state[0])
            probs = torch.softmax(reference.lm_head(normed), dim=-1)
            top = probs.topk(5, dim=-1)
            torch.testing.assert_close(lens.top_probs[row], top.values.float().cpu(), **tol(1e-4))
            assert torch.equal(lens.top_ids[row, :, 0], top.indices[:, 0].cpu())
        # The last row is the model's own next-token distribution.
        torch.testing.assert_close(
            lens.top_probs[-1], torch.softmax(out.logits[0].float(), -1).topk(5).values.cpu(), **tol(1e-4)
        )
    assert lens.rows[0] == "embeddings" and lens.rows[-1] == "layer 29"
    assert lens.tokens[-1] == " was" and len(lens.top_tokens[-1]) == len(lens.tokens)
    assert lens.top_tokens[-1][-1][0] == loaded.tokenizer.decode([int(out.logits[0, -1].argmax())])
    # Early layers guess differently from the last: the lens shows the prediction forming.
    assert not torch.equal(lens.top_ids[1, :, 0], lens.top_ids[-1, :, 0])


@pytest.mark.slow
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


@pytest.mark.slow
def test_lens_target_mode_against_a_hand_softmax(session):
    """--target: the token's probability and rank in every layer, against softmax(final_norm(h) @ W_U) by
    hand (the last hidden state is already normed) for every row and position."""
    loaded = session.loaded
    lens = session.lens(TEXT, target=" tired")
    target = loaded.tokenizer(" tired", add_special_tokens=False)["input_ids"][0]
    assert lens.target == " tired" and lens.target_pieces == 1
    model = loaded.model
    norm, unembedding = model.model.norm, model.lm_head.weight
    with torch.no_grad():
        inputs = loaded.tokenizer(TEXT, return_tensors="pt").to(loaded.device)
        hidden = model(**inputs, output_hidden_states=True).hidden_states
        for row, state in enumerate(hidden):
            normed = state[0] if row == len(hidden) - 1 else norm(state[0])
            logits = (normed @ unembedding.T).double().cpu()
            probs = torch.softmax(logits, -1)
            torch.testing.assert_close(lens.target_probs[row].double(), probs[:, target], **tol(1e-5, 1e-3))
            ranks = (logits > logits[:, target : target + 1]).sum(-1) + 1
            assert (lens.target_ranks[row] - ranks).abs().max() <= 1  # ties within float rounding only
    assert lens.target_ranks.shape == lens.target_probs.shape == (31, len(lens.tokens))
    assert lens.target_ranks[-1, -1] < lens.target_ranks[1, -1]  # the last layer ranks ' tired' higher


@pytest.mark.slow
def test_lens_target_magic_and_its_errors(shell, capsys, magic_session):
    view = run(shell, "lens --target ' tired' The cat sat on the mat because it was")
    view._fill_lens()
    target = view.lens["target"]
    assert target["token"] == " tired" and len(target["probs"]) == len(target["ranks"]) == 31
    assert target["ranks"][-1] >= 1 and 0 <= target["probs"][-1] <= 1
    assert "target ·tired" in view.static_html() and "llm-lens-target-static" in view.static_html()
    capsys.readouterr()
    run(shell, "lens --target '' The cat sat")
    err = capsys.readouterr().err.strip()
    assert (
        err == "llm lens: --target '' tokenizes to nothing: give the token whose probability to follow, "
        "e.g. --target ' Paris'"
    )
    # A long word: whole tokens in the saved table, never cut.
    view = run(shell, "lens The struggling mathematicians")
    assert all(t.replace(" ", "·") in view.static_html() for t in view.tokens)


@pytest.mark.slow
def test_widget_lens_reads_out_only_the_window_in_view(session):
    """A text longer than the lens window: the widget reads out LENS_WINDOW positions (the last ones, then the
    ones asked with lens_start), each equal to the same columns of the full logit lens; the target still
    follows the last position."""
    from llm_magics.views.attention import LENS_WINDOW

    loaded = session.loaded
    text = " ".join(["The cat sat on the mat because it was tired."] * 8)
    full = logit_lens(loaded, text, target=" sleep")
    n = len(full.tokens)
    assert n > LENS_WINDOW + 8
    passes = []
    hook = loaded.model.register_forward_hook(lambda *args: passes.append(1))
    try:
        view = AttentionView(loaded, text, view="lens", target=" sleep")
    finally:
        hook.remove()
    assert len(passes) == 1 and view.captured is None  # the lens's pass only: no attention captured yet
    for start in (n - LENS_WINDOW, 0, 5):
        if start != n - LENS_WINDOW:
            view.lens_start = start
        lens = view.lens
        assert lens["start"] == start and len(lens["tokens"][0]) == LENS_WINDOW
        assert lens["tokens"] == [row[start : start + LENS_WINDOW] for row in full.top_tokens]
        torch.testing.assert_close(
            torch.tensor(lens["probs"]), full.top_probs[:, start : start + LENS_WINDOW], **tol(1e-4)
        )
        assert lens["target"]["ranks"] == full.target_ranks[:, -1].tolist()
    view.lens_start = n  # past the end: the last window
    assert view.lens["start"] == n - LENS_WINDOW
    static = view.static_html()
    assert static.count('<th style="padding:2px 4px') == LENS_WINDOW  # the window's columns only
    view.view = "matrix"  # an attention view captures the attention now
    assert view.captured is not None and (view.shown_layer, view.shown_head) == (29, -1)
