"""Gradient accumulation with records of mixed lengths, in one process: the training step's loss and gradients
over 2 micro-batches of 4 equal one batch of the same 8, token-weighted (every scored token counts once),
against a cross-entropy written out here. A mean of the micro-batches' means would weigh the short
records' tokens more."""

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llm_magics.data import pad_batch
from llm_magics.training import loop
from support import TINY_CONFIG

IGNORE = -100
VOCAB = 97
# 8 records: the first four short, the last four long; some with a prompt that is not scored.
LENGTHS, PROMPTS = [3, 2, 4, 3, 19, 23, 17, 21], [0, 1, 0, 2, 0, 5, 3, 0]


@pytest.fixture(scope="module")
def model():
    config = LlamaConfig(**{k: v for k, v in TINY_CONFIG.items() if k != "model_type"}, vocab_size=VOCAB)
    config.initializer_range = 0.5  # a peaked random model: its loss differs a lot from record to record
    torch.manual_seed(0)
    return LlamaForCausalLM(config).float()


def _records() -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    records = []
    for length, prompt in zip(LENGTHS, PROMPTS):
        ids = torch.randint(1, VOCAB, (length,), generator=generator).tolist()
        records.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return records


def _token_weighted_loss(model, batch: dict) -> torch.Tensor:
    """The mean negative log-likelihood of every scored next token of the batch (position t predicts t + 1)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    scored = labels != IGNORE
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    nll = -log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return nll[scored].sum() / scored.sum()


def _gradients(model) -> dict:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def _step(model, micro_batches: list[dict]):
    """The project's training step (loop._one_step) over these micro-batches, in one process on the CPU."""
    options = SimpleNamespace(grad_accum=len(micro_batches), compile=False)
    accelerator = loop._accelerator(SimpleNamespace(device=torch.device("cpu")), options)
    batches = SimpleNamespace(next_batch=iter(micro_batches).__next__)
    model.zero_grad()
    loss, _, tokens = loop._one_step(accelerator, model, batches, options, torch.device("cpu"))
    return float(loss), _gradients(model), tokens


def test_two_micro_batches_of_mixed_lengths_equal_one_batch_token_weighted(model):
    records = _records()
    micro = [pad_batch(records[:4], 0), pad_batch(records[4:], 0)]
    whole = pad_batch(records, 0)
    model.zero_grad()
    expected_loss = _token_weighted_loss(model, whole)
    expected_loss.backward()
    expected = float(expected_loss.detach())
    expected_gradients = _gradients(model)

    loss, gradients, tokens = _step(model, micro)
    assert loss == pytest.approx(expected, abs=1e-6)
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected_gradients[name].float(), rtol=0, atol=1e-6, msg=name)
    assert tokens == sum(LENGTHS)
    # the same step over one micro-batch of 8 gives the same too
    one_loss, one_gradients, _ = _step(model, [whole])
    assert one_loss == pytest.approx(loss, abs=1e-6)
    for name, gradient in one_gradients.items():
        torch.testing.assert_close(gradient, gradients[name], rtol=0, atol=1e-6, msg=name)

    # the check can fail: a mean of the two micro-batches' means is far from the token-weighted loss here
    with torch.no_grad():
        mean_of_means = float(_token_weighted_loss(model, micro[0]) + _token_weighted_loss(model, micro[1])) / 2
    assert abs(mean_of_means - expected) > 1e-2
    assert max(g.abs().max() for g in expected_gradients.values()) > 1e-3  # gradients far above the tolerance
