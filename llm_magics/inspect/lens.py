"""The logit lens (nostalgebraist, 2020): what the model would predict if it stopped after each layer.

Every layer's residual stream (transformers' `output_hidden_states`) is read out through the model's own
final norm and unembedding, giving a next-token distribution per layer and position; we keep its top-k.
The same thing as Ecco's `layer_predictions` or TransformerLens's `accumulated_resid` + `ln_final` +
`unembed`, for any causal model transformers loads. transformers' last hidden state already has the final
norm applied, so it goes straight to the unembedding (its read-out equals the model's own logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base.errors import LLMError, no_model
from ..loading import LoadedModel, context_length, last_logits_only, require_causal

_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm")


@dataclass
class LensResult:
    tokens: list[str]  # the input tokens; column i guesses the token after tokens[i]
    rows: list[str]  # "embeddings", then "layer 0" .. "layer L-1" (the last row is the model's output)
    top_ids: torch.Tensor  # (rows, positions, k) token ids, likeliest first
    top_probs: torch.Tensor  # (rows, positions, k) their probabilities
    top_tokens: list[list[list[str]]]  # the ids decoded
    target: str | None = None  # target mode: the followed token (the first of the target text's tokens)
    target_pieces: int = 0  # how many tokens the target text has (only the first is followed)
    target_probs: torch.Tensor | None = None  # (rows, positions) its probability
    target_ranks: torch.Tensor | None = None  # (rows, positions) its rank, 1 = the top guess

    def guess(self, row: int, position: int) -> str:
        return self.top_tokens[row][position][0]


def final_norm(model) -> torch.nn.Module:
    """The norm applied before the unembedding (Llama's `norm`, GPT-2's `ln_f`, ...)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # through a LoRA wrapper
    base = getattr(inner, "base_model", inner)
    for name in _NORM_NAMES:
        norm = getattr(base, name, None)
        if isinstance(norm, torch.nn.Module):
            return norm
    raise LLMError(f"cannot find the final norm of {type(inner).__name__} (looked for {', '.join(_NORM_NAMES)})")


def check_causal(loaded: LoadedModel):  # the attention view's lens tab asks too
    require_causal(loaded, "lens", "the logit lens reads next-token guesses out of each layer")


def target_token(tokenizer, target: str) -> tuple[int, int]:
    """The id the lens' target mode follows (the target text's first token) and the text's token count."""
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise LLMError(
            f"--target {target!r} tokenizes to nothing: give the token whose probability to follow, "
            f"e.g. --target ' Paris'"
        )
    return ids[0], len(ids)


def lens_inputs(loaded: LoadedModel | None, text: str) -> tuple[list[int], tuple[torch.Tensor, ...]]:
    """The checks, then one forward pass: the input ids and every layer's residual stream (batch 1)."""
    if loaded is None:
        raise no_model("lens")
    check_causal(loaded)
    if not text or not text.strip():
        raise LLMError("the text is empty: give the text to read the layers' guesses of")
    inputs = loaded.tokenizer(text, return_tensors="pt").to(loaded.device)
    n = inputs["input_ids"].shape[1]
    limit = context_length(loaded.model)
    if limit and n > limit:
        raise LLMError(f"the text is {n} tokens, longer than the model's context of {limit}")
    with torch.inference_mode():
        hidden = loaded.model(**inputs, output_hidden_states=True, **last_logits_only(loaded.model)).hidden_states
    return inputs["input_ids"][0].tolist(), tuple(state[0] for state in hidden)


def read_out(
    loaded: LoadedModel, hidden: tuple[torch.Tensor, ...], positions: slice, top_k: int, target_id: int | None
):
    """The top-k of every layer's read-out at `positions` only (each position costs a vocabulary-sized
    matmul per layer): (ids, probs) (rows, positions, k), and with a target its (probs, ranks) (rows, positions)."""
    norm, unembed = final_norm(loaded.model), loaded.model.get_output_embeddings()
    ids, probs, target_probs, target_ranks = [], [], [], []
    with torch.inference_mode():
        for index, state in enumerate(hidden):
            state = state[positions]
            state = state if index == len(hidden) - 1 else norm(state)  # the last one is already normed
            # One row at a time: the full (rows, n, vocab) distribution would be GBs at 1k tokens.
            logits = unembed(state).float()
            distribution = torch.softmax(logits, dim=-1)
            top = distribution.topk(top_k, dim=-1)
            ids.append(top.indices.cpu())
            probs.append(top.values.cpu())
            if target_id is not None:
                target_probs.append(distribution[:, target_id].cpu())
                # Ranked by logit: tiny probabilities underflow to equal zeros, logits stay apart.
                target_ranks.append(((logits > logits[:, target_id : target_id + 1]).sum(-1) + 1).cpu())
    target = (torch.stack(target_probs), torch.stack(target_ranks)) if target_id is not None else None
    return torch.stack(ids), torch.stack(probs), target


class Decoder:
    """Token ids to text, each id decoded once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocabulary: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        if token not in self.vocabulary:
            self.vocabulary[token] = str(self.tokenizer.decode([token]))  # one id: one str
        return self.vocabulary[token]


def logit_lens(loaded: LoadedModel | None, text: str, top_k: int = 5, target: str | None = None) -> LensResult:
    """Top-k next-token guesses of every layer at every position of `text`, in one forward pass; with a
    target, also that token's probability and rank in every layer's distribution."""
    input_ids, hidden = lens_inputs(loaded, text)
    assert loaded is not None  # lens_inputs refused None
    target_id, pieces = target_token(loaded.tokenizer, target) if target is not None else (None, 0)
    top_ids, top_probs, followed = read_out(loaded, hidden, slice(None), top_k, target_id)
    decode = Decoder(loaded.tokenizer)
    return LensResult(
        tokens=[decode(i) for i in input_ids],
        rows=["embeddings"] + [f"layer {i}" for i in range(len(hidden) - 1)],
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=[[[decode(i) for i in position] for position in row] for row in top_ids.tolist()],
        target=decode(target_id) if target_id is not None else None,
        target_pieces=pieces,
        target_probs=followed[0] if followed else None,
        target_ranks=followed[1] if followed else None,
    )
