"""Captum called the plain way, as its documentation shows: the model's logits at every position, Captum's
default batching. The baseline of bench/attribution.py and the oracle of tests/test_attribution_oracle.py."""

import numpy as np
import torch


class PlainLogProb(torch.nn.Module):
    """log p(target | sequence): the log-softmax of the last position's logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs, target, embeds=False):
        logits = self.model(**{"inputs_embeds" if embeds else "input_ids": inputs}).logits
        return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target]


def plain_captum(method: str, model, ids: torch.Tensor, target: int, steps: int, baseline_id: int) -> np.ndarray:
    """One target's per-token scores over ids (1, n) with the Captum twin of `method` (our name for it):
    gradient methods summed over the embedding dimension, occlusion's window averaged; `steps` is IG's
    n_steps and Shapley sampling's n_samples; `baseline_id` the token the id-based methods put in."""
    from captum import attr

    f, embedding = PlainLogProb(model), model.get_input_embeddings()
    x = embedding(ids).detach().requires_grad_(True)
    if method == "integrated-gradients":
        a = attr.IntegratedGradients(f).attribute(
            x, torch.zeros_like(x), additional_forward_args=(target, True), n_steps=steps
        )
    elif method == "layer-integrated-gradients":
        a = attr.LayerIntegratedGradients(f, embedding).attribute(
            ids, torch.full_like(ids, baseline_id), additional_forward_args=(target,), n_steps=steps
        )
    elif method == "saliency":
        a = attr.Saliency(f).attribute(x, additional_forward_args=(target, True))  # abs=True is Captum's default
    elif method == "input-x-gradient":
        a = attr.InputXGradient(f).attribute(x, additional_forward_args=(target, True))
    elif method == "occlusion":  # one token's embedding replaced by zeros: the mean over the window's cells
        with torch.no_grad():
            a = attr.Occlusion(f).attribute(
                x, (1, x.shape[-1]), strides=(1, x.shape[-1]), baselines=0, additional_forward_args=(target, True)
            )
        return a.mean(-1)[0].detach().double().numpy()
    elif method == "feature-ablation":
        with torch.no_grad():
            a = attr.FeatureAblation(f).attribute(ids, baselines=baseline_id, additional_forward_args=(target,))
        return a[0].detach().double().numpy()
    else:
        with torch.no_grad():
            a = attr.ShapleyValueSampling(f).attribute(
                ids, baselines=baseline_id, additional_forward_args=(target,), n_samples=steps
            )
        return a[0].detach().double().numpy()
    return a.sum(-1)[0].detach().double().numpy()
