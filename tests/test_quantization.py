"""--quantize: quality gates against the fp32 model (real weights), refusals, the encoder, the playground.

Oracles: the fp32 model run by plain transformers (its own loss and greedy `generate`), and the same
quantities on the full-precision Session."""

import math

import pytest
import torch

from llm_magics import Session
from llm_magics.base.errors import LLMError
from llm_magics.quantization import int4_cpu_config, is_quantized
from support import one_error_line, run

HELD_OUT = (
    "The lighthouse keeper climbed the narrow stairs every evening to light the lamp. Ships passing "
    "in the night relied on its beam to steer clear of the rocks below the cliff. One winter the "
    "storm was so strong that the windows shook, but the keeper stayed at his post until dawn, "
    "writing in his logbook about the waves, the wind and the lights of a distant fishing boat."
)
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,", "def add(a, b):\n   "]
GREEDY_TOKENS = 16
# Stated tolerances (docs/performance.md, "Quantization"): int8 vs fp32 attention weights (probabilities), the lens.
ATTENTION_TOLERANCE = 0.05
LENS_TOP1_AGREEMENT = 0.9  # of (layer, position) top guesses in the last four layers


@pytest.fixture(scope="module")
def full(default_model_dir):
    s = Session()
    s.load("default")
    return s


@pytest.fixture(scope="module")
def int8(default_model_dir):
    s = Session()
    s.load("default", quantize="int8")
    return s


def transformers_perplexity(model, tokenizer, text: str) -> float:
    """Oracle: exp of transformers' own mean next-token loss over the whole text."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return math.exp(model(input_ids=ids, labels=ids).loss.item())


@pytest.mark.slow
def test_int8_swaps_linear_layers_in_place_and_status_shows_the_saving(full, int8):
    model = int8.model
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(type(m.weight) is not torch.nn.Parameter for m in linear), "quantized tensors"
    assert is_quantized(model) and not is_quantized(full.model)
    status = int8.status()
    assert status["quantization"].startswith("int8")
    # independent count: fp32 bytes of every Linear weight, minus their int8 size (1 byte per weight)
    linears = [m.weight for m in full.model.modules() if type(m) is torch.nn.Linear]
    tied = full.model.get_input_embeddings().weight
    untied_fp32 = sum(w.numel() * 4 for w in linears if w is not tied)  # the tied lm_head keeps the embedding
    all_fp32 = sum(p.numel() * 4 for p in full.model.parameters())
    expected_after = (all_fp32 - untied_fp32 + sum(w.numel() for w in linears)) / 2**20
    assert abs(status["weights_mb"] - expected_after) / expected_after < 0.03, status
    assert full.status()["quantization"].startswith("none (`%llm load MODEL --quantize int8` would cut")


@pytest.mark.slow
def test_int8_perplexity_within_3_percent_of_fp32(full, int8):
    fp32 = transformers_perplexity(full.model, full.tokenizer, HELD_OUT)
    quantized = transformers_perplexity(int8.model, int8.tokenizer, HELD_OUT)
    print(f"perplexity on the held-out text: fp32 {fp32:.2f}, int8 {quantized:.2f}")
    assert abs(quantized - fp32) / fp32 < 0.03, (quantized, fp32)
    # what `%%llm eval --metric perplexity` reports moves the same way
    ours_fp32 = full.eval("perplexity", text=HELD_OUT, progress=False).value
    ours_int8 = int8.eval("perplexity", text=HELD_OUT, progress=False).value
    assert abs(ours_int8 - ours_fp32) / ours_fp32 < 0.03, (ours_int8, ours_fp32)


@pytest.mark.slow
def test_int8_greedy_continuations_match_fp32(full, int8):
    for prompt in PROMPTS:
        ids = full.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():  # oracle: plain transformers greedy decoding of the fp32 weights
            reference = full.model.generate(
                **ids, max_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=full.tokenizer.pad_token_id
            )[0, ids["input_ids"].shape[1] :]
        ours = int8.generate(prompt, max_new_tokens=GREEDY_TOKENS, do_sample=False)
        assert ours.token_ids[0][:GREEDY_TOKENS] == reference.tolist()[:GREEDY_TOKENS], prompt


# Teacher-forced top-1 agreement of int8 with fp32 over greedy continuations: `python bench/int8_agreement.py`
# measured it on 32 prompts (bench/RESULTS.md); the gate sits a little below that figure.
INT8_TOP1_AGREEMENT = 0.93
AGREEMENT_PROMPTS = [
    "def fibonacci(n):",
    "Photosynthesis is the process by which plants",
    "Shopping list:\n1. Milk\n2. Eggs\n3.",
    "La capitale de l'Italie est",
    "for i in range(10):\n    if i % 2 == 0:",
    "The planets of the solar system are Mercury, Venus,",
]


@pytest.mark.slow
def test_int8_top1_agrees_with_fp32_teacher_forced(full, int8):
    """fp32's greedy continuation (plain transformers `generate`), then both models read prompt + that
    continuation in one forward pass: int8's argmax equals fp32's at INT8_TOP1_AGREEMENT of the positions
    or more (a first difference does not cascade, unlike comparing the two greedy texts)."""
    agree = positions = 0
    for prompt in AGREEMENT_PROMPTS:
        ids = full.tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            sequence = full.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=24,
                min_new_tokens=24,
                do_sample=False,
                pad_token_id=full.tokenizer.pad_token_id,
            )
            span = slice(ids.shape[1] - 1, -1)
            exact = full.model(input_ids=sequence).logits[0, span].argmax(-1)
            quantized = int8.model(input_ids=sequence).logits[0, span].argmax(-1)
        agree += int((exact == quantized).sum())
        positions += exact.numel()
    print(f"int8 vs fp32 teacher-forced top-1 agreement: {agree}/{positions}")
    assert agree / positions >= INT8_TOP1_AGREEMENT, (agree, positions)


@pytest.mark.slow
def test_attention_and_lens_agree_with_fp32(full, int8):
    from llm_magics.inspect import attention

    text = "The cat sat on the mat because it was warm."
    layers = [0, 15, 29]
    exact = attention.capture(full.loaded, text, layers=layers)
    quantized = attention.capture(int8.loaded, text, layers=layers)
    for layer in layers:
        difference = (exact.weights[layer] - quantized.weights[layer]).abs().max().item()
        print(f"attention layer {layer}: max |int8 - fp32| = {difference:.4f}")
        assert difference < ATTENTION_TOLERANCE, (layer, difference)
    lens_exact, lens_quantized = full.lens(text), int8.lens(text)
    agree = (lens_exact.top_ids[-4:, :, 0] == lens_quantized.top_ids[-4:, :, 0]).float().mean().item()
    print(f"lens: top-1 agreement in the last four layers {agree:.3f}")
    assert agree >= LENS_TOP1_AGREEMENT, agree
    assert torch.equal(lens_exact.top_ids[-1, :, 0], lens_quantized.top_ids[-1, :, 0])  # the output row


def test_training_and_gradients_refuse_a_quantized_model(int8, tmp_path):
    fix = "run `%llm load MODEL` again without --quantize"
    with pytest.raises(LLMError, match="finetune needs full-precision weights.*" + fix.replace("`", ".")):
        int8.finetune(text="hello world", epochs=1, progress=False)
    with pytest.raises(LLMError, match="train needs full-precision weights"):
        int8.train(text="hello world " * 50, steps=1, progress=False)
    with pytest.raises(LLMError, match="save needs full-precision weights"):
        int8.save(str(tmp_path / "out"))
    with pytest.raises(LLMError, match="gradient x input"):
        int8.explain("The cat sat")
    assert not (tmp_path / "out").exists() and is_quantized(int8.model)


def test_bad_quantize_requests_are_one_line(int8, full, shell, capsys, magic_session):
    with pytest.raises(LLMError, match="unknown --quantize 'int3': use none, int8, int4 or int8-dynamic"):
        Session().load("default", quantize="int3")
    with pytest.raises(LLMError, match=r"already quantized \(int8\)"):
        int8.quantize("int8")
    model = magic_session.model
    run(shell, "load default --quantize fp8")
    assert "unknown --quantize 'fp8'" in one_error_line(capsys)
    assert magic_session.model is model  # the failed load changed nothing


@pytest.mark.slow
def test_int4_works_or_says_there_is_no_kernel(full, default_model_dir):
    s = Session()
    if int4_cpu_config() is None:
        with pytest.raises(LLMError, match="--quantize int4 has no CPU kernel"):
            s.load("default", quantize="int4")
        return
    s.load("default", quantize="int4")
    assert s.status()["quantization"].startswith("int4")
    fp32 = transformers_perplexity(full.model, full.tokenizer, HELD_OUT)
    int4 = transformers_perplexity(s.model, s.tokenizer, HELD_OUT)
    print(f"perplexity on the held-out text: fp32 {fp32:.2f}, int4 {int4:.2f}")
    assert abs(int4 - fp32) / fp32 < 0.25, (int4, fp32)  # docs/performance.md: the measured figure


@pytest.mark.slow
def test_magic_load_quantize_then_status(shell, capsys, magic_session):
    import llm_magics

    model = run(shell, "load default --quantize int8").model
    out = capsys.readouterr().out
    assert "quantized int8" in out and is_quantized(model)
    status = run(shell, "status")
    assert "MB saved" in capsys.readouterr().out and status["quantization"].startswith("int8")
    run(shell, "quantize int8")
    assert "already quantized" in one_error_line(capsys)
    assert llm_magics.session.model is model


def test_encoder_quantizes_to_int8(default_model_dir):
    full, quantized = Session(), Session()
    full.load("minilm")
    quantized.load("minilm", quantize="int8")
    text = "A quiet morning by the lake."
    ids = full.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        a = full.model(**ids).last_hidden_state.mean(1)
        b = quantized.model(**ids).last_hidden_state.mean(1)
    assert torch.nn.functional.cosine_similarity(a, b).item() > 0.99
    view = quantized.attention(text)  # attention view on a quantized encoder
    exact = full.attention(text)
    layer = exact.layer
    assert (view.layer_weights(layer) - exact.layer_weights(layer)).abs().max().item() < ATTENTION_TOLERANCE


def test_playground_on_quantized_model_and_the_hint_on_fp32(full, int8):
    from llm_magics.views.playground import SamplingPanel

    panel = SamplingPanel(int8, "Once upon a time", None)
    assert "quantized weights: int8" in panel.speed_note.value
    panel.greedy.value = True
    panel.max_new_tokens.value = 8
    panel.generate()
    assert len(panel.runs) == 1 and panel.runs[0].new_tokens == 8
    hint = SamplingPanel(full, "Once upon a time", None).speed_note.value
    assert ("--quantize int8" in hint) == (full.loaded.device.type == "cpu")
    assert "`" not in hint  # the command is set as code, not between literal backticks
