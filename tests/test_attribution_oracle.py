"""Every attribution method against its Captum twin called the plain way (Captum's default batching, the
model's logits at every position, the same baseline and steps) on a tiny random llama, to 1e-4 of the
largest score: integrated gradients (on the embeddings and through the embedding layer), saliency (the
absolute gradient, Captum's default), input x gradient, occlusion, feature ablation and Shapley sampling."""

import numpy as np
import pytest
import torch
from captum.attr import (
    FeatureAblation,
    InputXGradient,
    IntegratedGradients,
    LayerIntegratedGradients,
    Occlusion,
    Saliency,
    ShapleyValueSampling,
)

from llm_magics import Session
from llm_magics.inspect.attribution import METHODS
from support import tiny_causal_model

PROMPT, TARGET, STEPS = "The capital of France", " is Paris", 16
BATCH = 4  # steps or perturbations per forward pass: sized from memory, ours would take hundreds at once


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, default_model_dir):
    folder = tiny_causal_model(tmp_path_factory.mktemp("tiny") / "model", default_model_dir, initializer_range=0.1)
    s = Session()
    s.load(str(folder))
    return s


class LogProb(torch.nn.Module):
    """log p(target | sequence): the log-softmax of the last position's logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs, target, embeds=False):
        logits = self.model(**{"inputs_embeds" if embeds else "input_ids": inputs}).logits
        return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target]


def captum(method: str, session, ids: torch.Tensor, target: int) -> np.ndarray:
    """One target's per-token scores with the Captum method, as its documentation calls it."""
    f, embedding = LogProb(session.model), session.model.get_input_embeddings()
    pad = session.tokenizer.pad_token_id  # the baseline token of the id-based methods
    x = embedding(ids).detach().requires_grad_(True)
    if method == "integrated-gradients":
        a = IntegratedGradients(f).attribute(
            x, torch.zeros_like(x), additional_forward_args=(target, True), n_steps=STEPS
        )
    elif method == "layer-integrated-gradients":
        a = LayerIntegratedGradients(f, embedding).attribute(
            ids, torch.full_like(ids, pad), additional_forward_args=(target,), n_steps=STEPS
        )
    elif method == "saliency":
        a = Saliency(f).attribute(x, additional_forward_args=(target, True))  # abs=True is Captum's default
    elif method == "input-x-gradient":
        a = InputXGradient(f).attribute(x, additional_forward_args=(target, True))
    elif method == "occlusion":  # one token's embedding replaced by zeros: the mean over the window's cells
        a = Occlusion(f).attribute(
            x, (1, x.shape[-1]), strides=(1, x.shape[-1]), baselines=0, additional_forward_args=(target, True)
        )
        return a.mean(-1)[0].detach().double().numpy()
    elif method == "feature-ablation":
        return FeatureAblation(f).attribute(ids, baselines=pad, additional_forward_args=(target,))[0].double().numpy()
    else:
        a = ShapleyValueSampling(f).attribute(
            ids, baselines=pad, additional_forward_args=(target,), n_samples=STEPS // 4
        )
        return a[0].detach().double().numpy()
    return a.sum(-1)[0].detach().double().numpy()  # gradient methods: summed over the embedding dimension


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
    f, x = LogProb(tiny.model), tiny.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    signed = Saliency(f).attribute(x, additional_forward_args=(ours.ids[ours.prompt_length], True), abs=False)
    signed = signed.sum(-1)[0].detach().double().numpy()
    saliency = ours.scores[0, : ours.prompt_length]
    assert not np.allclose(saliency, signed, rtol=1e-3)  # the gradient has negative cells: abs changes the sum
    assert (saliency >= np.abs(signed) - 1e-6).all()  # sum |g| >= |sum g|


def test_integrated_gradients_complete_to_the_output_difference(tiny):
    """IG's completeness axiom, with the model itself as the oracle: the scores sum to f(input) - f(baseline),
    up to the reported convergence delta."""
    ours = tiny.attribute(PROMPT, method="integrated-gradients", target=TARGET, steps=32, batch_size=32, progress=False)
    f, embedding = LogProb(tiny.model), tiny.model.get_input_embeddings()
    with torch.no_grad():
        for row, (target, delta) in enumerate(zip(ours.ids[ours.prompt_length :], ours.deltas)):
            x = embedding(torch.tensor([ours.ids[: ours.prompt_length + row]]))
            gap = float(f(x, target, True) - f(torch.zeros_like(x), target, True))
            assert np.nansum(ours.scores[row]) - gap == pytest.approx(delta, abs=1e-5)
