"""Attention capture without switching the model to eager attention.

transformers routes every attention layer through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`.
For one forward pass we register our own entry: it hands every layer to the ordinary SDPA kernel and, for
the layers asked for, also computes softmax(QKᵀ·scale + mask) from the same post-RoPE queries and keys.
With `keep_queries_keys=True` it instead keeps every layer's queries and keys (O(layers × n × d), about
100 MB fp32 for SmolLM2 at 1,024 tokens) so that any layer's weights are computed later on demand, with
no new forward pass: that is what makes the widget's layer switch fast. Ordinary generation never pays.

Attention rollout (Abnar & Zuidema, 2020) is accumulated layer by layer in O(n²). Attention sinks — the
first position of a causal model, [CLS]/[SEP] of an encoder — draw most of every head's attention and
would swamp the rollout, so by default the attention *to* them is dropped and each row renormalised
before the residual path is added.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .errors import LLMError, no_model
from .generation import context_length
from .loading import LoadedModel

CAPTURE = "llm_magics_capture"


@dataclass
class LayerInputs:
    """What one layer's softmax needs: its post-RoPE queries and keys (batch 1) and its mask."""
    query: torch.Tensor  # (1, heads, n, d)
    key: torch.Tensor  # (1, kv_heads, n, d), not repeated for grouped-query attention
    scaling: float
    blocked: torch.Tensor | None = None  # bool, True where attention is masked out (shared across layers)
    additive: torch.Tensor | None = None  # a float mask added to the scores, for models that use one


def attention_probs(inputs: LayerInputs, heads: list[int] | None = None) -> torch.Tensor:
    """softmax(QKᵀ·scale + mask) for the given heads (default all): (heads, n, n) float32."""
    query, key = inputs.query[0].float(), inputs.key[0].float()
    num_heads, n, d = query.shape
    groups = num_heads // key.shape[0]
    if heads is not None:
        query, key = query[heads], key[[h // groups for h in heads]]
        scores = torch.matmul(query * inputs.scaling, key.transpose(-1, -2))
    else:  # each key head serves `groups` query heads: one matmul per key head, no repeated keys
        scores = torch.matmul((query * inputs.scaling).reshape(key.shape[0], groups * n, d),
                              key.transpose(-1, -2)).view(num_heads, n, -1)
    if inputs.additive is not None:
        scores = scores + inputs.additive[0].float()
    if inputs.blocked is not None:
        scores.masked_fill_(inputs.blocked, float("-inf"))
    return torch.softmax(scores, dim=-1)


def rollout_step(probs: torch.Tensor, previous: torch.Tensor | None, sinks: list[int]) -> torch.Tensor:
    """One layer of attention rollout: mean over heads, attention to the sinks dropped and the rows
    renormalised, half residual path, chained onto the layers below."""
    mean = probs.mean(0)
    if sinks:
        mean = mean.clone()
        mean[:, sinks] = 0
        mean = mean / mean.sum(-1, keepdim=True).clamp_min(1e-12)
    mixed = 0.5 * mean + 0.5 * torch.eye(mean.shape[-1], device=mean.device)
    mixed = mixed / mixed.sum(-1, keepdim=True)
    return mixed if previous is None else mixed @ previous


@dataclass
class AttentionCapture:
    tokens: list[str]
    layers: list[int]  # the layers captured, in order
    heads: list[int]  # the heads captured in each layer
    weights: dict[int, torch.Tensor]  # layer -> (heads, n, n) float32 on CPU, rows sum to 1
    num_layers: int
    num_heads: int
    causal: bool
    thumbnails: torch.Tensor | None = None  # (layers, heads, t, t) pooled maps for the model view
    rollout: torch.Tensor | None = None  # (n, n) attention rollout over all layers, sinks dropped
    sinks: list[int] = field(default_factory=list)  # positions treated as attention sinks by the rollout
    queries_keys: dict[int, LayerInputs] = field(default_factory=dict)  # kept with keep_queries_keys

    def layer_weights(self, layer: int) -> torch.Tensor:
        """(heads, n, n) of any layer: captured, or computed now from the kept queries and keys."""
        if layer in self.weights:
            return self.weights[layer]
        if layer not in self.queries_keys:
            raise LLMError(f"layer {layer} was not captured: capture it, or pass keep_queries_keys=True")
        return attention_probs(self.queries_keys[layer]).cpu()

    def head(self, layer: int, head: int) -> torch.Tensor:
        if layer not in self.weights:
            return self.layer_weights(layer)[head]
        return self.weights[layer][self.heads.index(head)]


class _Recorder:
    def __init__(self, layers: set[int], heads: list[int] | None, thumbnail_size: int | None, rollout: bool,
                 keep_queries_keys: bool = False, sinks: Sequence[int] = ()):
        self.layers, self.heads = layers, heads
        self.thumbnail_size, self.want_rollout = thumbnail_size, rollout
        self.keep_queries_keys, self.sinks = keep_queries_keys, list(sinks)
        self.weights: dict[int, torch.Tensor] = {}
        self.thumbnails: dict[int, torch.Tensor] = {}
        self.queries_keys: dict[int, LayerInputs] = {}
        self.masks: dict[tuple, torch.Tensor | None] = {}
        self.rollout: torch.Tensor | None = None
        self.causal = False

    def needs(self, layer: int) -> bool:
        return (layer in self.layers or self.thumbnail_size is not None or self.want_rollout
                or self.keep_queries_keys)

    def _blocked(self, attention_mask, causal: bool, n: int, m: int, device) -> torch.Tensor | None:
        """The bool mask of blocked positions, built once and shared by every layer."""
        key = (id(attention_mask), causal, n, m)
        if key not in self.masks:
            if attention_mask is not None and attention_mask.dtype == torch.bool:
                self.masks[key] = ~attention_mask[0, 0]
            elif attention_mask is None and causal and n > 1:
                self.masks[key] = torch.ones(n, m, dtype=torch.bool, device=device).triu(m - n + 1)
            else:
                self.masks[key] = None
        return self.masks[key]

    def record(self, layer: int, module, query, key, attention_mask, scaling):
        causal = bool(getattr(module, "is_causal", False))
        self.causal = self.causal or causal
        n, m = query.shape[2], key.shape[2]
        additive = attention_mask[:1] if attention_mask is not None and attention_mask.dtype != torch.bool else None
        inputs = LayerInputs(query[:1].detach().contiguous(), key[:1].detach().contiguous(),
                             scaling if scaling is not None else query.shape[-1] ** -0.5,
                             self._blocked(attention_mask, causal, n, m, query.device), additive)
        if self.keep_queries_keys:
            self.queries_keys[layer] = inputs
        if not (layer in self.layers or self.thumbnail_size is not None or self.want_rollout):
            return
        all_heads = self.heads is None or layer not in self.layers or self.thumbnail_size is not None \
            or self.want_rollout
        # Only the asked heads when nothing else needs all of them: O(heads asked × n²).
        probs = attention_probs(inputs, None if all_heads else self.heads)
        if layer in self.layers:
            chosen = probs[self.heads] if (all_heads and self.heads is not None) else probs
            self.weights[layer] = chosen.cpu()
        if self.thumbnail_size is not None:
            size = min(self.thumbnail_size, probs.shape[-1])
            self.thumbnails[layer] = torch.nn.functional.adaptive_avg_pool2d(probs, size).cpu()
        if self.want_rollout:
            self.rollout = rollout_step(probs, self.rollout, self.sinks)


_ACTIVE: _Recorder | None = None


def _capturing_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    layer = getattr(module, "layer_idx", None)
    if _ACTIVE is not None and layer is not None and _ACTIVE.needs(layer):
        _ACTIVE.record(layer, module, query, key, attention_mask, scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


AttentionInterface.register(CAPTURE, _capturing_attention)
AttentionMaskInterface.register(CAPTURE, sdpa_mask)


def _configs(model):
    seen = []
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and all(config is not c for c in seen):
            seen.append(config)
    return seen


@contextlib.contextmanager
def _capture_mode(model, recorder: _Recorder):
    global _ACTIVE
    configs = _configs(model)
    previous = [c._attn_implementation for c in configs]
    for config in configs:
        config._attn_implementation = CAPTURE
    _ACTIVE = recorder
    try:
        yield
    finally:
        _ACTIVE = None
        for config, value in zip(configs, previous):
            config._attn_implementation = value


def model_shape(model) -> tuple[int, int]:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    if not layers or not heads:
        raise LLMError("cannot tell this model's number of layers and heads")
    return layers, heads


def check_layer_head(model, layer: int | None = None, head: int | None = None):
    """One clear line when a layer or head is outside the model (head -1 means the mean of all heads)."""
    num_layers, num_heads = model_shape(model)
    if layer is not None and not 0 <= layer < num_layers:
        raise LLMError(f"layer {layer} is out of range: this model has layers 0..{num_layers - 1}")
    if head is not None and not -1 <= head < num_heads:
        raise LLMError(f"head {head} is out of range: this model has heads 0..{num_heads - 1}")


def sink_positions(loaded: LoadedModel, ids: list[int]) -> list[int]:
    """Where attention sinks sit: position 0 of a causal model; the special tokens of an encoder."""
    if loaded.kind == "causal":
        return [0]
    special = set(loaded.tokenizer.all_special_ids)
    return [i for i, token in enumerate(ids) if token in special]


def capture(loaded: LoadedModel | None, text: str, layers: list[int] | int | None = None,
            heads: list[int] | int | None = None, thumbnails: int | None = None,
            rollout: bool = False, keep_queries_keys: bool = False, drop_sinks: bool = True) -> AttentionCapture:
    """Attention of `text` for the asked layers (default: the last) and heads (default: all), in one
    forward pass. keep_queries_keys: also keep every layer's queries and keys, so that
    `AttentionCapture.layer_weights(layer)` gives any other layer later without a new pass."""
    if loaded is None:
        raise no_model("attention")
    if not text or not text.strip():
        raise LLMError("the text is empty: give the text whose attention to show")
    num_layers, num_heads = model_shape(loaded.model)
    layers = [num_layers - 1] if layers is None else ([layers] if isinstance(layers, int) else list(layers))
    heads = None if heads is None else ([heads] if isinstance(heads, int) else list(heads))
    for layer in layers:
        check_layer_head(loaded.model, layer=layer)
    for head in heads or []:
        if not 0 <= head < num_heads:
            raise LLMError(f"head {head} is out of range: this model has heads 0..{num_heads - 1}")
    inputs = loaded.tokenizer(text, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    limit = context_length(loaded.model)
    if limit and len(ids) > limit:
        raise LLMError(f"the text is {len(ids)} tokens, longer than the model's context of {limit}")
    sinks = sink_positions(loaded, ids) if drop_sinks else []
    recorder = _Recorder(set(layers), heads, thumbnails, rollout, keep_queries_keys, sinks)
    model = loaded.model
    with _capture_mode(model, recorder), torch.inference_mode():
        model(**{k: v.to(loaded.device) for k, v in inputs.items()})
    missing = [layer for layer in layers if layer not in recorder.weights]
    if missing:
        raise LLMError(f"{loaded.name} does not route attention through transformers' attention "
                       f"interface; layers {missing} could not be captured")
    tokens: list[str] = [loaded.tokenizer.decode([i]) for i in ids]  # type: ignore[misc]  # transformers types decode() as str | list[str]; one id list gives a str
    thumbs = torch.stack([recorder.thumbnails[i] for i in range(num_layers)]) if thumbnails else None
    return AttentionCapture(tokens=tokens, layers=layers, heads=heads or list(range(num_heads)),
                            weights=recorder.weights, num_layers=num_layers, num_heads=num_heads,
                            causal=recorder.causal, thumbnails=thumbs,
                            rollout=recorder.rollout.cpu() if recorder.rollout is not None else None,
                            sinks=sinks, queries_keys=recorder.queries_keys)


def saliency(loaded: LoadedModel, text: str) -> tuple[list[str], torch.Tensor, str]:
    """Gradient × input for the next-token prediction: one score per input token (|g·x|, summing to 1),
    and the predicted token it explains."""
    if loaded.kind != "causal":
        raise LLMError("saliency explains a next-token prediction: it needs a causal language model")
    from .quantization import require_full_precision

    require_full_precision(loaded, "gradient x input (--explain)")  # quantized layers have no backward
    inputs = loaded.tokenizer(text, return_tensors="pt").to(loaded.device)
    embeddings = loaded.model.get_input_embeddings()(inputs["input_ids"]).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = loaded.model(inputs_embeds=embeddings, attention_mask=inputs["attention_mask"]).logits
        top = logits[0, -1].max()
        top.backward()
    predicted: str = loaded.tokenizer.decode([int(logits[0, -1].argmax())])  # type: ignore[assignment]  # transformers types decode() as str | list[str]; one id list gives a str
    scores = (embeddings.grad * embeddings).sum(-1).abs()[0].detach().float().cpu()
    tokens: list[str] = [loaded.tokenizer.decode([i]) for i in inputs["input_ids"][0].tolist()]  # type: ignore[misc]  # transformers types decode() as str | list[str]; one id list gives a str
    return tokens, scores / scores.sum(), predicted


def explain(loaded: LoadedModel | None, text: str) -> dict:
    """Which input tokens a prediction draws on. Causal models: the next-token prediction after the last
    token (rollout row of the last position, and gradient × input). Encoders: rollout into the first
    token ([CLS], the sentence embedding of a classifier head), or the mean over all rows without one."""
    captured = capture(loaded, text, rollout=True)
    assert loaded is not None and captured.rollout is not None  # capture checked the model; rollout asked for
    tokens, last = captured.tokens, captured.tokens[-1]
    if loaded.kind == "causal":
        target = f"next token after {last.strip() or last!r}"
        row = captured.rollout[-1]
    elif 0 in captured.sinks:
        target, row = f"{tokens[0].strip()} (position 0, the sequence summary)", captured.rollout[0]
    else:
        target, row = "the whole sequence (mean over positions)", captured.rollout.mean(0)
    result = {"tokens": tokens, "rollout": row.tolist(), "target": target, "sinks": captured.sinks}
    if loaded.kind == "causal":
        _, scores, predicted = saliency(loaded, text)
        result["saliency"], result["predicted"] = scores.tolist(), predicted
    return result
