"""Attribution: which input tokens drove each output token, computed by Captum's attribution methods.

The quantity explained is Captum's LLM one: the log-probability of the target token (for a classifier, of
the label). Each target token t_i of a causal model is attributed to the prompt AND the earlier targets
t_<i (the sequence the model saw when it produced t_i). Captum's `LLMGradientAttribution` /
`LLMAttribution` wrappers attribute to the prompt only and loop over the targets inside one call; we call
the same Captum methods (`IntegratedGradients`, `LayerIntegratedGradients` over the embedding layer,
`Saliency`, `InputXGradient`, `Occlusion`, `FeatureAblation`, `ShapleyValueSampling`) once per target,
so that a Stop between targets keeps the finished ones, and integration steps / perturbations run in
batches sized from a memory budget (`batch_size` overrides it; Captum's default puts all of IG's steps in one
batch: several GB at 100 tokens).

Smaller and faster, with the same Captum calls: while attributing every parameter's requires_grad is off
(restored after, also on error or Stop), so the backward pass computes the gradient to the inputs only and no
layer keeps its input for a weight gradient. Every position's logits are still computed: with
`logits_to_keep=1` the one-row vocabulary projection's backward rounds differently in float32, and IG's
attributions then moved by up to 2e-3 from the plain forward's (4x further from a float64 reference).

Per-token scores: gradient methods sum over the embedding dimension (as the IG authors do); occlusion
replaces one token's embedding by zeros; feature ablation and Shapley sampling replace token ids by the
baseline token (the pad token, else id 0). Integrated gradients report their convergence delta:
sum(attributions) - (f(input) - f(baseline)). A target has not converged when |delta| is more than
CONVERGENCE_TOLERANCE of its scale, the larger of |f(input) - f(baseline)| (= sum(attributions) - delta) and
its largest |score|: its scores are then not to be read, and the summary and the view say so in one line with
a number of steps that would converge (IG's error shrinks about as 1/steps: the steps scaled by
|delta| / (tolerance x scale), capped at --steps' declared maximum when it has one).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..base.drawing import draw
from ..base.errors import LLMError, no_model
from ..base.interrupts import StopFlag
from ..loading import CAUSAL, CLASSIFIER, LoadedModel, context_length
from ..options import ATTRIBUTION_METHODS, INTEGRATION_STEPS, SHAPLEY_SAMPLES, check_bounds, defaults, options

METHODS = ATTRIBUTION_METHODS  # declared with the --method option
INTEGRATED = ("integrated-gradients", "layer-integrated-gradients")
TOP_K = 5
CONVERGENCE_TOLERANCE = 0.05  # |delta| above this share of a target's scale: IG has not converged
# what each method's score is a share of: the unit named by the view's colour legend
UNITS = {
    "integrated-gradients": "attribution to log p(target)",
    "layer-integrated-gradients": "attribution to log p(target)",
    "saliency": "|gradient of log p(target)|, summed over the embedding",
    "input-x-gradient": "input x gradient of log p(target)",
    "occlusion": "drop in log p(target) with the token's embedding zeroed",
    "feature-ablation": "drop in log p(target) with the token replaced by the pad token",
    "shapley-sampling": "Shapley value of log p(target)",
}
ACTIVATION_BUDGET = 5 * 2**27  # bytes of activations kept for backward by one internal batch of steps (640 MiB)


@dataclass
class AttributionResult:
    method: str
    tokens: list[str]  # the input tokens: prompt, then the targets (each target sees the columns before it)
    targets: list[str]  # the explained output tokens (or the label)
    scores: np.ndarray  # (targets, tokens); NaN where a target could not see the column
    step_scores: list[dict] = field(default_factory=list)  # per target: probability, entropy, top alternatives
    deltas: list[float] = field(default_factory=list)  # integrated gradients: convergence delta per target
    prompt_length: int = 0
    interrupted: bool = False
    steps: int | None = None
    ids: list[int] = field(default_factory=list)  # the token ids of `tokens`

    def to_frame(self):
        import pandas as pd

        rows = []
        for t, target in enumerate(self.targets):
            for i, token in enumerate(self.tokens):
                if not math.isnan(self.scores[t, i]):
                    rows.append(
                        {
                            "target_index": t,
                            "target": target,
                            "input_index": i,
                            "input": token,
                            "score": float(self.scores[t, i]),
                            "probability": self.step_scores[t]["probability"] if self.step_scores else None,
                        }
                    )
        return pd.DataFrame(rows)

    def normalized(self) -> np.ndarray:
        """Each row scaled to its largest absolute score (the view's --normalize)."""
        peak = np.nanmax(np.abs(self.scores), axis=1, keepdims=True)
        return self.scores / np.where(peak > 0, peak, 1)

    def convergence(self) -> list[dict]:
        """Integrated gradients, per target: its delta, f(input) - f(baseline) (the sum of its scores minus the
        delta), its largest absolute score (peak), its scale (the larger of abs(difference) and peak) and
        whether abs(delta) <= CONVERGENCE_TOLERANCE x scale (converged). Empty for the other methods."""
        rows = []
        for t, delta in enumerate(self.deltas[: len(self.targets)]):
            row = self.scores[t]
            difference = float(np.nansum(row)) - delta
            peak = float(np.nanmax(np.abs(row))) if np.isfinite(row).any() else 0.0
            scale = max(abs(difference), peak)
            rows.append(
                {
                    "target": self.targets[t],
                    "delta": delta,
                    "difference": difference,
                    "peak": peak,
                    "scale": scale,
                    "converged": abs(delta) <= CONVERGENCE_TOLERANCE * scale,
                }
            )
        return rows

    def convergence_warning(self) -> str:
        """One line when some target's IG has not converged (see `convergence`), naming the worst one and a
        --steps that would converge it; "" otherwise."""
        bad = [row for row in self.convergence() if not row["converged"]]
        if not bad:
            return ""
        worst = max(bad, key=lambda row: abs(row["delta"]) / max(row["scale"], 1e-30))
        steps = self.steps or INTEGRATION_STEPS
        ratio = abs(worst["delta"]) / max(CONVERGENCE_TOLERANCE * worst["scale"], 1e-30)
        suggested = max(steps + 1, math.ceil(steps * ratio))
        high = next(o.bounds.high for o in options("attribute") if o.name == "steps" and o.bounds is not None)
        if high is not None:
            suggested = min(suggested, int(high))
        others = f" and {len(bad) - 1} other target(s)" if len(bad) > 1 else ""
        advice = (
            f"try --steps {suggested}"
            if suggested > steps
            else f"--steps is at its maximum ({steps}): read these scores as approximate"
        )
        return (
            f"IG has not converged for {worst['target']!r}{others} (delta {abs(worst['delta']):.3g} against a "
            f"difference of {abs(worst['difference']):.3g} and a largest |score| of {worst['peak']:.3g}: over "
            f"{CONVERGENCE_TOLERANCE:.0%} of the larger): {advice}"
        )

    def summary(self) -> str:
        note = (
            f"; stopped after {len(self.targets)} target token(s), the finished ones are kept"
            if self.interrupted
            else ""
        )
        delta = f", largest |convergence delta| {max(abs(d) for d in self.deltas):.4f}" if self.deltas else ""
        warning = self.convergence_warning()
        warning = f"\n{warning}" if warning else ""
        return (
            f"attribution ({self.method}): {len(self.targets)} target(s) x {len(self.tokens)} tokens{delta}{note}"
            f"{warning}"
        )

    # --- JSON ---
    def to_json(self) -> dict:
        data = asdict(self)
        data["scores"] = [[None if math.isnan(v) else v for v in row] for row in self.scores.tolist()]
        return data

    def save(self, path: str) -> str:
        Path(path).write_text(json.dumps(self.to_json()))
        return str(path)

    @classmethod
    def load(cls, path: str) -> AttributionResult:
        try:
            data = json.loads(Path(path).read_text())
            data["scores"] = np.array(
                [[np.nan if v is None else v for v in row] for row in data["scores"]], dtype=np.float64
            ).reshape(len(data["targets"]), len(data["tokens"]))
            return cls(**data)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise LLMError(f"{path} is not an attribution saved by AttributionResult.save ({error})") from None

    def view(self, normalize: bool = defaults("attribute").normalize):
        return draw(self, normalize)


# --- the explained quantity ---
class _LogProb(torch.nn.Module):
    """log p(target | sequence) from token ids or from input embeddings (one target per batch)."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.model, self.causal = loaded.model, loaded.causal

    def forward(self, inputs: torch.Tensor, target: int, embeds: bool = False) -> torch.Tensor:
        key = "inputs_embeds" if embeds else "input_ids"
        logits = self.model(**{key: inputs}).logits
        logits = logits[:, -1] if self.causal else logits
        return torch.log_softmax(logits.float(), dim=-1)[:, target]


def _baseline_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


@contextmanager
def _frozen(model: torch.nn.Module):
    """Every parameter's requires_grad off inside, each one's own flag back after (a LoRA model's adapters)."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def step_batch(loaded: LoadedModel, tokens: int, budget: int = ACTIVATION_BUDGET) -> int:
    """How many integration steps (or perturbations) of a `tokens`-long input one forward pass takes so that
    the activations kept for backward stay near `budget` bytes. Per token and layer, with the weights frozen,
    a decoder keeps about 8 hidden-sized and 4 intermediate-sized tensors (norm inputs, q/k/v, attention
    output, the MLP's gate, up and activation: about 130 MB per 110-token SmolLM2 sequence, measured), and a
    causal model's vocabulary logits exist for every position for a moment."""
    config = loaded.model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden)
    per_token = int(config.num_hidden_layers) * (8 * hidden + 4 * intermediate) * loaded.dtype.itemsize
    if loaded.causal:
        per_token += int(config.vocab_size) * 4  # the logits (float32)
    return max(1, budget // (tokens * per_token))


def _per_token(
    method: str, loaded: LoadedModel, ids: torch.Tensor, target: int, steps: int, batch_size: int | None
) -> tuple[torch.Tensor, float | None]:
    import warnings

    batch = batch_size or step_batch(loaded, ids.shape[1])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*required_grads.*|.*requires_grad.*")
        return _captum(method, loaded, ids, target, steps, batch)


def _captum(
    method: str, loaded: LoadedModel, ids: torch.Tensor, target: int, steps: int, batch_size: int
) -> tuple[torch.Tensor, float | None]:
    """One target's scores over the positions of ids (1, n) with Captum's `method`, and IG's delta."""
    from captum.attr import (
        FeatureAblation,
        InputXGradient,
        IntegratedGradients,
        LayerIntegratedGradients,
        Occlusion,
        Saliency,
        ShapleyValueSampling,
    )

    f = _LogProb(loaded)
    embedding = loaded.model.get_input_embeddings()
    base = _baseline_id(loaded.tokenizer)
    delta = None
    if method in ("layer-integrated-gradients", "feature-ablation", "shapley-sampling"):
        baseline = torch.full_like(ids, base)
        if method == "layer-integrated-gradients":
            attr, delta = LayerIntegratedGradients(f, embedding).attribute(
                ids,
                baselines=baseline,
                additional_forward_args=(target,),
                n_steps=steps,
                internal_batch_size=batch_size,
                return_convergence_delta=True,
            )
            return attr.sum(-1)[0].detach(), float(delta)
        with torch.no_grad():
            if method == "feature-ablation":
                attr = FeatureAblation(f).attribute(
                    ids, baselines=base, additional_forward_args=(target,), perturbations_per_eval=batch_size
                )
            else:
                attr = ShapleyValueSampling(f).attribute(
                    ids,
                    baselines=base,
                    additional_forward_args=(target,),
                    n_samples=steps,
                    perturbations_per_eval=batch_size,
                )
        return attr[0].float(), None
    x = embedding(ids).detach().requires_grad_(True)
    if method == "integrated-gradients":
        attr, delta = IntegratedGradients(f).attribute(
            x,
            baselines=torch.zeros_like(x),
            additional_forward_args=(target, True),
            n_steps=steps,
            internal_batch_size=batch_size,
            return_convergence_delta=True,
        )
        return attr.sum(-1)[0].detach(), float(delta)
    if method == "saliency":  # Captum warns that the embeddings did not ask for gradients: it asks for them
        return Saliency(f).attribute(x, additional_forward_args=(target, True), abs=True).sum(-1)[0].detach(), None
    if method == "input-x-gradient":
        return InputXGradient(f).attribute(x, additional_forward_args=(target, True)).sum(-1)[0].detach(), None
    with torch.no_grad():  # occlusion: one token's embedding replaced by zeros
        attr = Occlusion(f).attribute(
            x,
            sliding_window_shapes=(1, x.shape[-1]),
            strides=(1, x.shape[-1]),
            baselines=0,
            additional_forward_args=(target, True),
            perturbations_per_eval=batch_size,
        )
    return attr.mean(-1)[0].float(), None


def _step_scores(probs: torch.Tensor, target: int, decode) -> dict:
    top = probs.topk(min(TOP_K, probs.shape[-1]))
    entropy = float(-(probs * torch.log(probs.clamp_min(1e-30))).sum())
    return {
        "probability": float(probs[target]),
        "entropy": entropy,
        "top": [[decode(i), float(p)] for i, p in zip(top.indices.tolist(), top.values.tolist())],
    }


def attribute(
    loaded: LoadedModel | None,
    text: str,
    method: str = defaults("attribute").method,
    target: str | None = None,
    max_new_tokens: int = defaults("attribute").max_new_tokens,
    steps: int | None = None,
    batch_size: int | None = None,
    stop: StopFlag | None = None,
    on_target=None,
) -> AttributionResult:
    """Attribute each target token (the given --target, else the greedy continuation; for a classifier the
    predicted label or the --target label) to the tokens before it. batch_size: integration steps (or
    perturbations) per forward pass; None sizes it from ACTIVATION_BUDGET and the input's length."""
    if loaded is None:
        raise no_model("attribute")
    if method not in METHODS:
        raise LLMError(f"unknown method {method!r}: use {', '.join(METHODS)}")
    if loaded.kind not in (CAUSAL, CLASSIFIER):
        raise LLMError(
            f"attribute explains an output: it needs a causal language model or a classifier, and "
            f"{loaded.name} is a plain encoder; fine-tune it with --task classify or load default"
        )
    if not text or not text.strip():
        raise LLMError("the text is empty: give the prompt (or sentence) to explain")
    check_bounds({"steps": steps, "max_new_tokens": max_new_tokens}, "attribute")
    if batch_size is not None and batch_size < 1:
        raise LLMError(f"batch_size must be at least 1 (got {batch_size}); None sizes it from memory")
    steps = steps or (INTEGRATION_STEPS if method in INTEGRATED else SHAPLEY_SAMPLES)
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer(text, return_tensors="pt")["input_ids"].to(loaded.device)
    limit = context_length(model)
    was_training = model.training
    model.eval()
    try:
        with _frozen(model):
            if loaded.kind == CLASSIFIER:
                return _classifier(loaded, ids, method, target, steps, batch_size, limit)
            return _causal(loaded, ids, method, target, max_new_tokens, steps, batch_size, limit, stop, on_target)
    finally:
        model.train(was_training)


def _check_length(n: int, limit: int | None, what: str):
    if limit and n > limit:
        raise LLMError(f"{what} is {n} tokens, longer than the model's context of {limit}")


def _causal(loaded, ids, method, target, max_new_tokens, steps, batch_size, limit, stop, on_target):
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt_length = ids.shape[1]
    _check_length(prompt_length, limit, "the text")
    if target is not None:
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        if not target_ids:
            raise LLMError(f"--target {target!r} tokenizes to nothing: give the text whose tokens to explain")
        _check_length(prompt_length + len(target_ids), limit, "the text plus --target")
    else:
        check_bounds({"max_new_tokens": max_new_tokens}, "attribute", only=("max_new_tokens",))
        _check_length(prompt_length + max_new_tokens, limit, "the text plus --max-new-tokens")
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=_baseline_id(tokenizer),
            )
        target_ids = out[0, prompt_length:].tolist()
        if tokenizer.eos_token_id in target_ids:  # the answer ends at EOS (kept as the last target)
            target_ids = target_ids[: target_ids.index(tokenizer.eos_token_id) + 1]
    sequence = torch.cat([ids, torch.tensor([target_ids], device=ids.device)], dim=1)
    vocabulary: dict[int, str] = {}

    def decode(token: int) -> str:
        if token not in vocabulary:
            vocabulary[token] = tokenizer.decode([token])
        return vocabulary[token]

    with torch.no_grad():
        probs = torch.softmax(model(input_ids=sequence).logits[0, prompt_length - 1 : -1].float(), -1)
    columns = sequence.shape[1]
    rows, step_scores, deltas, interrupted = [], [], [], False
    for index, token in enumerate(target_ids):
        if stop is not None and stop.requested:
            interrupted = True
            break
        seen = sequence[:, : prompt_length + index]
        scores, delta = _per_token(method, loaded, seen, token, steps, batch_size)
        row = np.full(columns, np.nan)
        row[: seen.shape[1]] = scores.cpu().double().numpy()
        rows.append(row)
        step_scores.append(_step_scores(probs[index], token, decode))
        if delta is not None:
            deltas.append(delta)
        if on_target is not None:
            on_target(index + 1, len(target_ids))
    done = len(rows)
    return AttributionResult(
        method=method,
        tokens=[decode(i) for i in sequence[0].tolist()],
        targets=[decode(i) for i in target_ids[:done]],
        scores=np.array(rows).reshape(done, columns),
        step_scores=step_scores,
        deltas=deltas,
        prompt_length=prompt_length,
        interrupted=interrupted,
        steps=steps,
        ids=sequence[0].tolist(),
    )


def _classifier(loaded, ids, method, target, steps, batch_size, limit):
    model, tokenizer = loaded.model, loaded.tokenizer
    _check_length(ids.shape[1], limit, "the text")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0].float(), -1)
    if target is None:
        label = int(probs.argmax())
    elif target in labels:
        label = labels.index(target)
    else:
        raise LLMError(f"--target {target!r} is not one of the classifier's labels: {', '.join(labels)}")
    scores, delta = _per_token(method, loaded, ids, label, steps, batch_size)
    step = _step_scores(probs, label, lambda i: labels[i])
    return AttributionResult(
        method=method,
        tokens=[tokenizer.decode([i]) for i in ids[0].tolist()],
        targets=[labels[label]],
        scores=scores.cpu().double().numpy()[None],
        step_scores=[step],
        deltas=[] if delta is None else [delta],
        prompt_length=ids.shape[1],
        steps=steps,
        ids=ids[0].tolist(),
    )
