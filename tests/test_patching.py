"""Activation patching: the batched sweep against a hand-written reference that runs one full forward per
patch with plain forward hooks (as TransformerLens does), on tiny random Llama / GPT-2 models and on the
real SmolLM2 weights."""

import pytest
import torch

from llm_magics.inspect.patching import patch
from llm_magics.loading import LoadedModel
from support import one_error_line, run

CLEAN = "The Eiffel Tower is in the city of"
CORRUPTED = "The Colosseum is in the city of"


def tiny_model(arch: str, tokenizer) -> LoadedModel:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
        )
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=3, n_head=4, n_positions=128)
        model = GPT2LMHeadModel(config)
    return LoadedModel(model.eval(), tokenizer, f"tiny {arch}", "", "causal", torch.device("cpu"), torch.float32)


def _parts(layer):
    attn = getattr(layer, "self_attn", None) or layer.attn
    return {
        "residual": layer,
        "attention": attn,
        "mlp": layer.mlp,
        "heads": getattr(attn, "o_proj", None) or getattr(attn, "c_proj", None),
    }


def reference(loaded, site, answer_id, wrong_id, layers):
    """One full forward pass per patch, hooks written out by hand: the definition, not the implementation."""
    model, tok = loaded.model, loaded.tokenizer
    blocks = model.model.layers if hasattr(model, "model") else model.transformer.h
    clean = tok(CLEAN, return_tensors="pt")["input_ids"]
    corrupted = tok(CORRUPTED, return_tensors="pt")["input_ids"]
    n, heads = clean.shape[1], model.config.num_attention_heads
    saved = {}

    def save(layer):
        module = _parts(blocks[layer])[site]
        if site == "heads":
            return module.register_forward_pre_hook(lambda m, args: saved.__setitem__(layer, args[0].clone()))
        return module.register_forward_hook(
            lambda m, args, out: saved.__setitem__(layer, (out[0] if isinstance(out, tuple) else out).clone())
        )

    def ld(ids):
        logits = model(input_ids=ids).logits[0, -1]
        return float(logits[answer_id] - logits[wrong_id])

    with torch.no_grad():
        handles = [save(layer) for layer in layers]
        clean_ld = ld(clean)
        for handle in handles:
            handle.remove()
        corrupted_ld = ld(corrupted)
        scores = {}
        for layer in layers:
            module = _parts(blocks[layer])[site]
            for index in range(heads if site == "heads" else n):
                if site == "heads":
                    width = saved[layer].shape[-1] // heads

                    def hook(m, args, index=index, width=width, layer=layer):
                        x = args[0].clone()
                        x[0, -1, index * width : (index + 1) * width] = saved[layer][
                            0, -1, index * width : (index + 1) * width
                        ]
                        return (x,)

                    handle = module.register_forward_pre_hook(hook)
                else:

                    def hook(m, args, out, index=index, layer=layer):
                        x = (out[0] if isinstance(out, tuple) else out).clone()
                        x[0, index] = saved[layer][0, index]
                        return (x,) + tuple(out[1:]) if isinstance(out, tuple) else x

                    handle = module.register_forward_hook(hook)
                try:
                    scores[layer, index] = (ld(corrupted) - corrupted_ld) / (clean_ld - corrupted_ld)
                finally:
                    handle.remove()
    return scores, clean_ld, corrupted_ld


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("site", ["residual", "attention", "mlp", "heads"])
def test_batched_sweep_equals_one_forward_per_patch(tokenizer, arch, site):
    loaded = tiny_model(arch, tokenizer)
    result = patch(loaded, CLEAN, CORRUPTED, answer=" Paris", wrong=" Rome", site=site, batch_size=4)
    answer_id, wrong_id = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" Paris", " Rome"))
    expected, clean_ld, corrupted_ld = reference(loaded, site, answer_id, wrong_id, range(3))
    assert result.clean_ld == pytest.approx(clean_ld, abs=1e-4)
    assert result.corrupted_ld == pytest.approx(corrupted_ld, abs=1e-4)
    columns = loaded.model.config.num_attention_heads if site == "heads" else len(result.tokens)
    assert result.scores.shape == (3, columns)
    for (layer, index), score in expected.items():
        assert float(result.scores[layer, index]) == pytest.approx(score, abs=1e-4), (layer, index)


@pytest.mark.slow
def test_real_weights_residual_and_heads_match_the_reference(session):
    """SmolLM2 on two layers: the clean answer comes back in full when the last position's residual of the
    last layer is patched, and every patched score equals the one-forward-per-patch reference."""
    for site, layers in (("residual", [3, 29]), ("heads", [29])):
        result = session.patch(CLEAN, CORRUPTED, site=site, layers=layers)
        assert result.answer == " Paris" and result.wrong == " Rome"
        ids = session.tokenizer([" Paris", " Rome"], add_special_tokens=False)["input_ids"]
        expected, _, _ = reference(session.loaded, site, ids[0][0], ids[1][0], layers)
        for (layer, index), score in expected.items():
            assert float(result.scores[layer, index]) == pytest.approx(score, abs=1e-4), (site, layer, index)
        assert torch.isnan(result.scores[0]).all()  # not asked for
        if site == "residual":
            residual = result
    assert float(residual.scores[29, -1]) == pytest.approx(1.0, abs=1e-4)
    assert residual.scores[29, :-1].abs().max() < 1e-4  # other positions cannot reach the last one any more
    frame = residual.to_frame()
    assert {"layer", "position", "token", "score", "top_token", "top_prob"} <= set(frame.columns)
    assert residual.top_tokens[29][len(residual.tokens) - 1][0] == " Paris"  # the fully restored run


def test_stop_keeps_the_finished_layers(tokenizer):
    from llm_magics.base.interrupts import StopFlag

    loaded, flag = tiny_model("llama", tokenizer), StopFlag()
    result = patch(
        loaded,
        CLEAN,
        CORRUPTED,
        answer=" Paris",
        wrong=" Rome",
        on_layer=lambda done, total: flag.request() if done == 2 else None,
        stop=flag,
    )
    assert result.interrupted
    assert not torch.isnan(result.scores[:2]).any() and torch.isnan(result.scores[2]).all()
    assert "stopped after 2 of 3 layers" in result.summary()


@pytest.mark.slow
def test_bad_input_is_one_line(shell, magic_session, capsys):
    run(shell, "patch", f"{CLEAN}\nThe Colosseum in Rome is in the city of\n")
    line = one_error_line(capsys)
    assert "9 tokens" in line and "11" in line and "same token count" in line
    run(shell, "patch --answer ' Paris' --wrong ' Paris'", f"{CLEAN}\n{CORRUPTED}\n")
    assert "' Paris'" in one_error_line(capsys)
    run(shell, "patch --answer ''", f"{CLEAN}\n{CORRUPTED}\n")
    assert "tokenizes to nothing" in one_error_line(capsys)
    run(shell, "patch", f"{CLEAN}\n")
    assert "two prompts" in one_error_line(capsys)
    magic_session.load("minilm")
    run(shell, "patch", f"{CLEAN}\n{CORRUPTED}\n")
    assert "encoder" in one_error_line(capsys)


def test_magic_stores_the_result(shell, magic_session, capsys):
    run(shell, "patch --site mlp --layers 28-29 --answer ' Paris' --wrong ' Rome'", f"{CLEAN}\n{CORRUPTED}\n")
    result = shell.user_ns["_llm"]
    assert result.site == "mlp" and result.scores.shape == (30, 9)
    assert not torch.isnan(result.scores[28:]).any() and torch.isnan(result.scores[:28]).all()
    assert "patching mlp" in capsys.readouterr().out


def test_view_click_shows_that_patched_runs_top5(tokenizer):
    """A cell click (the browser sets `selected`) fills `detail` with that patched run's top-5 next tokens,
    which equal a softmax of the same patched run computed with the reference hooks."""
    loaded = tiny_model("llama", tokenizer)
    result = patch(loaded, CLEAN, CORRUPTED, answer=" Paris", wrong=" Rome")
    view = result.view()
    assert view.rows == ["layer 0", "layer 1", "layer 2"] and len(view.columns) == 9
    assert view.detail == []
    view.set_state({"selected": [1, 4]})  # what the front end's click message does
    assert view.detail_title.startswith("layer 1, 4 ")
    tokens = [t for t, _ in view.detail]
    probs = [p for _, p in view.detail]
    assert len(tokens) == 5 and probs == sorted(probs, reverse=True)
    # independent oracle: the same patch done by hand, one full forward
    model = loaded.model
    clean, corrupted = (tokenizer(t, return_tensors="pt")["input_ids"] for t in (CLEAN, CORRUPTED))
    kept = {}
    handle = model.model.layers[1].register_forward_hook(lambda m, a, out: kept.__setitem__("x", out.clone()))
    with torch.no_grad():
        model(input_ids=clean)
        handle.remove()

        def put(m, a, out):
            out = out.clone()
            out[0, 4] = kept["x"][0, 4]
            return out

        handle = model.model.layers[1].register_forward_hook(put)
        probs_ref = torch.softmax(model(input_ids=corrupted).logits[0, -1], -1)
        handle.remove()
    top = probs_ref.topk(5)
    assert tokens == [tokenizer.decode([i]) for i in top.indices.tolist()]
    assert probs == pytest.approx(top.values.tolist(), abs=1e-4)
    snapshot = view.static_html()
    assert "activation patching" in snapshot and "outline:2px" in snapshot and tokens[0].replace(" ", "·") in snapshot
    view.set_state({"selected": []})
    assert view.detail == []
