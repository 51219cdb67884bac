"""Attention capture without switching the model to eager attention.

transformers routes every attention layer through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`.
For one forward pass we register our own entry: it hands every layer to the ordinary SDPA kernel, and
for the layers asked for it also computes softmax(QKᵀ·scale + mask) from the same post-RoPE queries and
keys, for the asked heads only. Memory is therefore O(layers asked × heads asked × n²), and ordinary
generation never pays for it. Attention rollout is accumulated layer by layer in O(n²).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .errors import LLMError, no_model
from .generation import context_length
from .loading import LoadedModel

CAPTURE = "llm_magics_capture"


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
    rollout: torch.Tensor | None = None  # (n, n) attention rollout over all layers

    def head(self, layer: int, head: int) -> torch.Tensor:
        return self.weights[layer][self.heads.index(head)]


class _Recorder:
    def __init__(self, layers: set[int], heads: list[int] | None, thumbnail_size: int | None, rollout: bool):
        self.layers, self.heads = layers, heads
        self.thumbnail_size, self.want_rollout = thumbnail_size, rollout
        self.weights: dict[int, torch.Tensor] = {}
        self.thumbnails: dict[int, torch.Tensor] = {}
        self.rollout: torch.Tensor | None = None
        self.causal = False

    def needs(self, layer: int) -> bool:
        return layer in self.layers or self.thumbnail_size is not None or self.want_rollout

    def record(self, layer: int, module, query, key, attention_mask, scaling):
        groups = getattr(module, "num_key_value_groups", 1)
        key = repeat_kv(key, groups) if groups > 1 else key
        all_heads = (self.heads is None or layer not in self.layers or self.thumbnail_size is not None
                     or self.want_rollout)
        if not all_heads:  # only the asked heads: O(heads asked × n²)
            query, key = query[:, self.heads], key[:, self.heads]
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        scores = torch.matmul(query[:1].float(), key[:1].float().transpose(-1, -2)) * scale
        causal = getattr(module, "is_causal", False)
        if attention_mask is not None:
            mask = attention_mask[:1]
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool \
                else scores + mask.float()
        elif causal and query.shape[2] > 1:
            n, m = scores.shape[-2:]
            upper = torch.ones(n, m, dtype=torch.bool, device=scores.device).triu(m - n + 1)
            scores = scores.masked_fill(upper, float("-inf"))
        self.causal = self.causal or bool(causal)
        probs = torch.softmax(scores, dim=-1)[0]  # (heads, n, n)
        if layer in self.layers:
            chosen = probs[self.heads] if (all_heads and self.heads is not None) else probs
            self.weights[layer] = chosen.cpu()
        if self.thumbnail_size is not None:
            size = min(self.thumbnail_size, probs.shape[-1])
            self.thumbnails[layer] = torch.nn.functional.adaptive_avg_pool2d(probs, size).cpu()
        if self.want_rollout:
            # Abnar & Zuidema (2020): average heads, add the residual path, renormalise, chain layers.
            mixed = 0.5 * probs.mean(0) + 0.5 * torch.eye(probs.shape[-1], device=probs.device)
            mixed = mixed / mixed.sum(-1, keepdim=True)
            self.rollout = mixed if self.rollout is None else mixed @ self.rollout


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


def capture(loaded: LoadedModel | None, text: str, layers: list[int] | int | None = None,
            heads: list[int] | int | None = None, thumbnails: int | None = None,
            rollout: bool = False) -> AttentionCapture:
    """Attention of `text` for the asked layers (default: the last) and heads (default: all)."""
    if loaded is None:
        raise no_model("attention")
    if not text or not text.strip():
        raise LLMError("the text is empty: give the text whose attention to show")
    num_layers, num_heads = model_shape(loaded.model)
    layers = [num_layers - 1] if layers is None else ([layers] if isinstance(layers, int) else list(layers))
    heads = None if heads is None else ([heads] if isinstance(heads, int) else list(heads))
    for layer in layers:
        if not 0 <= layer < num_layers:
            raise LLMError(f"layer {layer} is out of range: this model has layers 0..{num_layers - 1}")
    for head in heads or []:
        if not 0 <= head < num_heads:
            raise LLMError(f"head {head} is out of range: this model has heads 0..{num_heads - 1}")
    inputs = loaded.tokenizer(text, return_tensors="pt")
    n = inputs["input_ids"].shape[1]
    limit = context_length(loaded.model)
    if limit and n > limit:
        raise LLMError(f"the text is {n} tokens, longer than the model's context of {limit}")
    recorder = _Recorder(set(layers), heads, thumbnails, rollout)
    model = loaded.model
    with _capture_mode(model, recorder), torch.inference_mode():
        model(**{k: v.to(loaded.device) for k, v in inputs.items()})
    missing = [layer for layer in layers if layer not in recorder.weights]
    if missing:
        raise LLMError(f"{loaded.name} does not route attention through transformers' attention "
                       f"interface; layers {missing} could not be captured")
    tokens = [loaded.tokenizer.decode([i]) for i in inputs["input_ids"][0].tolist()]
    thumbs = torch.stack([recorder.thumbnails[i] for i in range(num_layers)]) if thumbnails else None
    return AttentionCapture(tokens=tokens, layers=layers, heads=heads or list(range(num_heads)),
                            weights=recorder.weights, num_layers=num_layers, num_heads=num_heads,
                            causal=recorder.causal, thumbnails=thumbs,
                            rollout=recorder.rollout.cpu() if recorder.rollout is not None else None)


def saliency(loaded: LoadedModel, text: str) -> tuple[list[str], torch.Tensor]:
    """Gradient × input for the next-token prediction: one score per input token (sums of |g·x|)."""
    if loaded.kind != "causal":
        raise LLMError("saliency explains a next-token prediction: it needs a causal language model")
    inputs = loaded.tokenizer(text, return_tensors="pt").to(loaded.device)
    embeddings = loaded.model.get_input_embeddings()(inputs["input_ids"]).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = loaded.model(inputs_embeds=embeddings, attention_mask=inputs["attention_mask"]).logits
        top = logits[0, -1].max()
        top.backward()
    scores = (embeddings.grad * embeddings).sum(-1).abs()[0].detach().float().cpu()
    tokens = [loaded.tokenizer.decode([i]) for i in inputs["input_ids"][0].tolist()]
    return tokens, scores / scores.sum()


def to_bertviz(captured: AttentionCapture) -> list[torch.Tensor]:
    """The captured layers in bertviz's format: a list of (batch=1, heads, n, n) tensors."""
    return [captured.weights[layer].unsqueeze(0) for layer in captured.layers]


def bertviz_html(captured: AttentionCapture, view: str = "head"):
    """bertviz's own view of the capture. It loads require.js and d3 from a CDN: offline it stays blank."""
    try:
        from bertviz import head_view, model_view
    except ImportError:
        raise LLMError("--backend bertviz needs the bertviz package: pip install bertviz") from None
    show = {"head": head_view, "model": model_view}.get(view)
    if show is None:
        raise LLMError("bertviz has a head and a model view: use --view head or --view model")
    return show(attention=to_bertviz(captured), tokens=captured.tokens, html_action="return")


def tokens_html(tokens: list[str], scores: list[float], title: str) -> str:
    """Tokens shaded by a score (rollout or saliency), as self-contained HTML."""
    import html

    peak = max(scores) or 1.0
    spans = "".join(f'<span title="{s:.4f}" style="background:rgba(255,140,0,{0.85 * s / peak:.3f});'
                    f'padding:1px 2px;margin:1px;border-radius:3px">{html.escape(t)}</span>'
                    for t, s in zip(tokens, scores))
    return f'<div style="font-family:monospace;line-height:1.9"><b>{html.escape(title)}</b><br>{spans}</div>'
