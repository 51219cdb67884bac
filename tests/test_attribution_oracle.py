"""Every attribution method against its Captum twin called the plain way (Captum's default batching, the
model's logits at every position, the same baseline and steps) on a tiny random llama, to 1e-4 of the
largest score: integrated gradients (on the embeddings and through the embedding layer), saliency (the
absolute gradient, Captum's default), input x gradient, occlusion, feature ablation and Shapley sampling."""

import sys

import numpy as np
import pytest
import torch
from captum.attr import Saliency

from llm_magics import Session
from llm_magics.inspect.attribution import METHODS
from support import ROOT, tiny_causal_model

sys.path.insert(0, str(ROOT / "bench"))
from plain_captum import PlainLogProb, plain_captum  # noqa: E402

PROMPT, TARGET, STEPS = "The capital of France", " is Paris", 16
BATCH = 4  # steps or perturbations per forward pass: sized from memory, ours would take hundreds at once


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, default_model_dir):
    folder = tiny_causal_model(tmp_path_factory.mktemp("tiny") / "model", default_model_dir, initializer_range=0.1)
    s = Session()
    s.load(str(folder))
    return s


def captum(method: str, session, ids: torch.Tensor, target: int) -> np.ndarray:
    """One target's per-token scores with the Captum method, as its documentation calls it."""
    steps = STEPS // 4 if method == "shapley-sampling" else STEPS
    return plain_captum(method, session.model, ids, target, steps, session.tokenizer.pad_token_id)


def _close(ours: np.ndarray, theirs: np.ndarray):
    scale = np.abs(theirs).max()
    assert scale > 1e-3, scale  # scores big enough that 1e-4 of them tells a wrong method apart
    assert np.abs(ours - theirs).max() <= 1e-4 * scale, (ours, theirs)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_equals_its_captum_twin(tiny, method):
    steps = STEPS // 4 if method == "shapley-sampling" else STEPS  # samples: each costs a forward per token
    torch.manual_seed(0)  # Shapley sampling draws its permutations from torch's global generator
    ours = tiny.attribute(PROMPT, method=method, target=TARGET, steps=steps, batch_size=BATCH, progress=False)
    ids = torch.tensor([ours.ids])
    assert len(ours.targets) >= 2
    torch.manual_seed(0)
    for row, target in enumerate(ours.ids[ours.prompt_length :]):
        seen = ours.prompt_length + row
        theirs = captum(method, tiny, ids[:, :seen], target)
        _close(ours.scores[row, :seen], theirs)
        assert np.isnan(ours.scores[row, seen:]).all()  # a target sees only the tokens before it


def test_saliency_is_the_absolute_gradient(tiny):
    """Saliency differs from the signed gradient on this input, so the comparison above checks the abs."""
    ours = tiny.attribute(PROMPT, method="saliency", target=TARGET, batch_size=BATCH, progress=False)
    ids = torch.tensor([ours.ids[: ours.prompt_length]])
    f, x = PlainLogProb(tiny.model), tiny.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    signed = Saliency(f).attribute(x, additional_forward_args=(ours.ids[ours.prompt_length], True), abs=False)
    signed = signed.sum(-1)[0].detach().double().numpy()
    saliency = ours.scores[0, : ours.prompt_length]
    assert not np.allclose(saliency, signed, rtol=1e-3)  # the gradient has negative cells: abs changes the sum
    assert (saliency >= np.abs(signed) - 1e-6).all()  # sum |g| >= |sum g|


def test_integrated_gradients_complete_to_the_output_difference(tiny):
    """IG's completeness axiom, with the model itself as the oracle: the scores sum to f(input) - f(baseline),
    up to the reported convergence delta."""
    ours = tiny.attribute(PROMPT, method="integrated-gradients", target=TARGET, steps=32, batch_size=32, progress=False)
    f, embedding = PlainLogProb(tiny.model), tiny.model.get_input_embeddings()
    with torch.no_grad():
        for row, (target, delta) in enumerate(zip(ours.ids[ours.prompt_length :], ours.deltas)):
            x = embedding(torch.tensor([ours.ids[: ours.prompt_length + row]]))
            gap = float(f(x, target, True) - f(torch.zeros_like(x), target, True))
            assert np.nansum(ours.scores[row]) - gap == pytest.approx(delta, abs=1e-5)
