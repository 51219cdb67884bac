"""Attention capture without switching the model to eager attention.

transformers routes every attention layer through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`.
For one forward pass we register our own entry: it hands every layer to the ordinary SDPA kernel and, for
the layers asked for, also computes softmax(QKᵀ·scale + mask) from the same post-RoPE queries and keys.
With `keep_queries_keys=True` it instead keeps every layer's queries and keys (O(layers × n × d), about
100 MB fp32 for SmolLM2 at 1,024 tokens) so that any layer's weights are computed later on demand, with
no new forward pass: that is what makes the widget's layer switch fast. Ordinary generation never pays.

Attention rollout (Abnar & Zuidema, 2020) is accumulated layer by layer in O(n²), over the full attention.
Attention sinks draw most of every head's attention and would swamp it. They are detected, not assumed:
any position whose mean attention share (over layers, heads and the queries that can see it) exceeds
SINK_SHARE, plus an encoder's special tokens. Their columns are dropped from the explained rollout row and
the row renormalised. (Dropping them inside the chain instead makes the first surviving position of a
causal model absorb the paths: 0.99 of the mass on the second token.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..base.errors import LLMError, no_model
from ..loading import LoadedModel, context_length, last_logits_only

CAPTURE = "llm_magics_capture"


@dataclass
class LayerInputs:
    """What one layer's softmax needs: its post-RoPE queries and keys (batch 1) and its mask."""

    query: torch.Tensor  # (1, heads, n, d)
    key: torch.Tensor  # (1, kv_heads, n, d), not repeated for grouped-query attention
    scaling: float
    blocked: torch.Tensor | None = None  # bool, True where attention is masked out (shared across layers)
    additive: torch.Tensor | None = None  # a float mask added to the scores, for models that use one


def _scores(inputs: LayerInputs, heads: list[int] | None, rows: slice, columns: int | None = None) -> torch.Tensor:
    """QKᵀ·scale + mask for the query rows `rows` of the given heads (default all) against the first `columns`
    keys (default all): (heads, rows, columns) float32."""
    columns = inputs.key.shape[2] if columns is None else columns
    query, key = inputs.query[0, :, rows].float(), inputs.key[0, :, :columns].float()
    num_heads, r, d = query.shape
    groups = num_heads // key.shape[0]
    if heads is not None:
        query, key = query[heads], key[[h // groups for h in heads]]
        scores = torch.matmul(query * inputs.scaling, key.transpose(-1, -2))
    else:  # each key head serves `groups` query heads: one matmul per key head, no repeated keys
        scores = torch.matmul(
            (query * inputs.scaling).reshape(key.shape[0], groups * r, d), key.transpose(-1, -2)
        ).view(num_heads, r, -1)
    if inputs.additive is not None:
        scores = scores + inputs.additive[0, ..., rows, :columns].float()
    if inputs.blocked is not None:
        scores.masked_fill_(inputs.blocked[rows, :columns], float("-inf"))
    return scores


def attention_probs(inputs: LayerInputs, heads: list[int] | None = None, rows: slice = slice(None)) -> torch.Tensor:
    """softmax(QKᵀ·scale + mask) for the given heads (default all) and query rows (default all):
    (heads, rows, n) float32."""
    return torch.softmax(_scores(inputs, heads, rows), dim=-1)


ROW_BLOCK = 256  # query rows per block: every head's scores for one block, 9 × 256 × 4,096 floats = 38 MB


_extent: list = [None, None]  # [the last blocked mask seen, each of its rows' visible keys]: every layer shares it


def _visible_columns(inputs: LayerInputs, rows: slice) -> int:
    """How many leading keys any of these query rows can see (a causal block sees none after its last row).
    Each row's extent is found once per mask (every layer shares the mask), not once per block."""
    m = inputs.key.shape[2]
    if inputs.blocked is None or inputs.additive is not None:
        return m
    if _extent[0] is not inputs.blocked:  # 1 + the last unblocked key of each row (0: none)
        last = m - (~inputs.blocked).flip(-1).to(torch.uint8).argmax(-1)
        _extent[:] = [inputs.blocked, torch.where(inputs.blocked.all(-1), 0, last)]
    extent = int(_extent[1][rows].max())
    return extent if extent > 0 else m


def score_blocks(
    inputs: LayerInputs, heads: list[int] | None = None, first: int = 0, last: int | None = None, block: int = 0
):
    """(rows, columns, the heads' masked scores QKᵀ·scale of those query rows over the first `columns` keys),
    block by block from row `first` to `last`: a long text never has every head's (n, n) map in memory at
    once. The keys after `columns` are masked for every row of the block (a causal model's upper triangle):
    their weights are 0, not computed."""
    last = inputs.query.shape[2] if last is None else last
    block = block or ROW_BLOCK
    for start in range(first, last, block):
        rows = slice(start, min(last, start + block))
        columns = _visible_columns(inputs, rows)
        yield rows, columns, _scores(inputs, heads, rows, columns)


def row_blocks(inputs: LayerInputs, heads: list[int] | None = None):
    """score_blocks, as attention probabilities."""
    for rows, columns, scores in score_blocks(inputs, heads):
        yield rows, columns, torch.softmax(scores, dim=-1)


def layer_map(inputs: LayerInputs, head: int) -> torch.Tensor:
    """The (n, n) map of one head (head -1: the mean of the heads), block by block."""
    n, m = inputs.query.shape[2], inputs.key.shape[2]
    shown = torch.zeros(n, m, device=inputs.query.device)
    for rows, columns, probs in row_blocks(inputs, None if head < 0 else [head]):
        shown[rows, :columns] = probs.mean(0) if head < 0 else probs[0]
    return shown.cpu()


def layer_image(
    inputs: LayerInputs, head: int, box: tuple[int, int, int] | None = None, pixels: int = 512
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """What the matrix view draws of one head (-1: the mean of heads) in the square box (first row, first
    column, span; default the whole map): each row scaled to its own maximum over all keys, then max-pooled
    in f × f blocks so that at most `pixels` cells a side remain (f = 1: the exact map). Only the box's rows
    are computed, block by block, so a zoomed tile of a long text costs its rows, not n².
    Returns (image (ceil(span / f),) * 2 in 0..1, the rows' maxima (span,), f)."""
    n = inputs.query.shape[2]
    r0, c0, span = box or (0, 0, n)
    f = -(-span // pixels)
    device = inputs.query.device
    image, peaks = torch.zeros((-(-span // f),) * 2, device=device), torch.zeros(span, device=device)
    blocks = score_blocks(inputs, None if head < 0 else [head], r0, r0 + span, f * max(1, ROW_BLOCK // f))
    for rows, columns, scores in blocks:
        if head >= 0:  # one head's softmax row over its max is exp(score - max score); its max is 1 / Σ exp
            scaled = scores[0].sub_(scores[0].amax(-1, keepdim=True)).exp_()
            peak = 1 / scaled.sum(-1)
        else:
            shown = torch.softmax(scores, dim=-1).mean(0)
            peak = shown.amax(-1)
            scaled = shown.div_(peak[:, None].clamp_min(1e-12))
        top = rows.start - r0
        peaks[top : top + len(peak)] = peak
        part = scaled[:, c0 : min(columns, c0 + span)]  # the keys no row of the block sees stay 0
        if part.shape[1] == 0:
            continue
        pooled = part if f == 1 else torch.nn.functional.max_pool2d(part[None], f, ceil_mode=True)[0]
        image[top // f : top // f + pooled.shape[0], : pooled.shape[1]] = pooled
    return image.cpu(), peaks.cpu(), f


def head_entropies(inputs: LayerInputs) -> torch.Tensor:
    """Each head's mean row entropy (the head view's top 3), block by block."""
    entropy = torch.zeros(inputs.query.shape[1], device=inputs.query.device)
    for _, _, probs in row_blocks(inputs):
        entropy -= torch.special.xlogy(probs, probs).sum(-1).sum(-1)
    return (entropy / inputs.query.shape[2]).cpu()


def _pooling(n: int, t: int, device: torch.device) -> torch.Tensor:
    """(n, t): a map @ this averages its n columns into adaptive_avg_pool1d's t bins (one matmul, no copy)."""
    pool = torch.zeros(n, t, device=device)
    for b in range(t):
        first, last = b * n // t, -(-(b + 1) * n // t)
        pool[first:last, b] = 1 / (last - first)
    return pool


def layer_overview(captured: AttentionCapture, thumbnail_size: int, position: int):
    """From the kept queries and keys, one block of rows at a time: every layer × head map pooled to
    thumbnail_size² (as adaptive_avg_pool2d), each position's mean attention share (sink detection) and the
    rollout row of `position` (the chain read top-down, e_pᵀ·M_L···M_1, instead of the whole (n, n) product).
    Each block's probabilities are read by two matmuls: the column pooling, and (rollout row; ones) for the
    rollout step and the column sums. Returns (thumbnails (layers, heads, t, t), shares (n,), rollout row (n,),
    sinks included)."""
    n, heads = len(captured.tokens), captured.num_heads
    t = min(thumbnail_size, n)
    device = next(iter(captured.queries_keys.values())).query.device  # computed there, handed back on the CPU
    pool = _pooling(n, t, device)
    shares = torch.zeros(n, device=device)  # attention into each position from the others (causal: the later ones)
    thumbnails = torch.zeros(captured.num_layers, heads, t, t, device=device)
    row = torch.zeros(n, device=device)
    row[position] = 1.0
    for layer in reversed(range(captured.num_layers)):
        pooled_columns = torch.empty(heads, n, t, device=device)
        through = torch.zeros(n, device=device)  # row @ (mean of heads)
        for rows, columns, probs in row_blocks(captured.queries_keys[layer]):
            pooled_columns[:, rows] = probs @ pool[:columns]  # the skipped keys' zeros add nothing
            weights = torch.stack([row[rows], torch.ones(probs.shape[1], device=device)])
            sums = (weights @ probs).sum(0) / heads  # (2, columns): the rollout step, the mean's column sums
            through[:columns] += sums[0]
            shares[:columns] += sums[1]  # a causal row gives nothing to later keys: only its own is taken off
            shares[rows] -= probs.diagonal(offset=rows.start, dim1=1, dim2=2).mean(0)
        thumbnails[layer] = torch.nn.functional.adaptive_avg_pool1d(pooled_columns.transpose(1, 2), t).transpose(1, 2)
        mixed = 0.5 * through + 0.5 * row  # rollout_step's half residual path (its rows already sum to 1)
        row = mixed / mixed.sum().clamp_min(1e-12)
    counts = n - 1 - torch.arange(n, device=device) if captured.causal else torch.full((n,), n - 1, device=device)
    shares = torch.where(counts > 0, shares / captured.num_layers / counts.clamp_min(1), torch.zeros_like(shares))
    return thumbnails.cpu(), shares.clamp_min(0).cpu(), row.cpu()


SINK_SHARE = 0.3  # a position drawing more than this share of attention on average is a sink


def rollout_step(probs: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """One layer of attention rollout: mean over heads, half residual path, chained onto the layers below."""
    mean = probs.mean(0)
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
    rollout: torch.Tensor | None = None  # (n, n) attention rollout over all layers (sinks included)
    sinks: list[int] = field(default_factory=list)  # detected attention sinks, dropped by rollout_row
    queries_keys: dict[int, LayerInputs] = field(default_factory=dict)  # kept with keep_queries_keys
    shares: torch.Tensor | None = None  # (n,) mean attention share of each position (sink detection)

    def rollout_row(self, position: int | None = None) -> torch.Tensor:
        """The rollout of one position (default: the last for a causal model, [CLS]/the first for an
        encoder) over the inputs, the sinks' columns dropped and the row renormalised."""
        if position is None:
            position = len(self.tokens) - 1 if self.causal else 0
        assert self.rollout is not None, "captured without rollout=True"
        return without_sinks(self.rollout[position], self.sinks)

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
    def __init__(
        self,
        layers: set[int],
        heads: list[int] | None,
        thumbnail_size: int | None,
        rollout: bool,
        keep_queries_keys: bool = False,
    ):
        self.layers, self.heads = layers, heads
        self.thumbnail_size, self.want_rollout = thumbnail_size, rollout
        self.keep_queries_keys = keep_queries_keys
        self.mean_map: torch.Tensor | None = None  # sum over layers of the head-mean map (sink detection)
        self.weights: dict[int, torch.Tensor] = {}
        self.thumbnails: dict[int, torch.Tensor] = {}
        self.queries_keys: dict[int, LayerInputs] = {}
        self.masks: dict[tuple, torch.Tensor | None] = {}
        self.rollout: torch.Tensor | None = None
        self.causal = False

    def needs(self, layer: int) -> bool:
        return layer in self.layers or self.thumbnail_size is not None or self.want_rollout or self.keep_queries_keys

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
        inputs = LayerInputs(
            query[:1].detach().contiguous(),
            key[:1].detach().contiguous(),
            scaling if scaling is not None else query.shape[-1] ** -0.5,
            self._blocked(attention_mask, causal, n, m, query.device),
            additive,
        )
        if self.keep_queries_keys:
            self.queries_keys[layer] = inputs
        if not (layer in self.layers or self.thumbnail_size is not None or self.want_rollout):
            return
        all_heads = (
            self.heads is None or layer not in self.layers or self.thumbnail_size is not None or self.want_rollout
        )
        # Only the asked heads when nothing else needs all of them: O(heads asked × n²).
        probs = attention_probs(inputs, None if all_heads else self.heads)
        if layer in self.layers:
            chosen = probs[self.heads] if (all_heads and self.heads is not None) else probs
            self.weights[layer] = chosen.cpu()
        if self.thumbnail_size is not None:
            size = min(self.thumbnail_size, probs.shape[-1])
            self.thumbnails[layer] = torch.nn.functional.adaptive_avg_pool2d(probs, size).cpu()
        if self.want_rollout:
            self.rollout = rollout_step(probs, self.rollout)
            mean = probs.mean(0)
            self.mean_map = mean if self.mean_map is None else self.mean_map + mean


_ACTIVE: _Recorder | None = None


def _capturing_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    layer = getattr(module, "layer_idx", None)
    if _ACTIVE is not None and layer is not None and _ACTIVE.needs(layer):
        _ACTIVE.record(layer, module, query, key, attention_mask, scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


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


def attention_shares(mean_map: torch.Tensor, causal: bool) -> torch.Tensor:
    """Each position's mean share of attention over the queries that can see it (for a causal model the
    later ones; a position's own row is left out), from a head- and layer-mean (n, n) map."""
    n = mean_map.shape[0]
    seen = torch.ones(n, n, dtype=torch.bool).tril(-1) if causal else ~torch.eye(n, dtype=torch.bool)
    counts = seen.sum(0)
    shares = (mean_map.float().cpu() * seen).sum(0) / counts.clamp_min(1)
    return torch.where(counts > 0, shares, torch.zeros_like(shares))


def sink_positions(loaded: LoadedModel, ids: list[int], shares: torch.Tensor | None) -> list[int]:
    """The attention sinks: every position whose mean attention share exceeds SINK_SHARE (not only
    position 0), and an encoder's special tokens ([CLS], [SEP])."""
    found = set() if shares is None else {int(i) for i in torch.nonzero(shares > SINK_SHARE).flatten()}
    if not loaded.causal:
        special = set(loaded.tokenizer.all_special_ids)
        found |= {i for i, token in enumerate(ids) if token in special}
    return sorted(found)


def without_sinks(row: torch.Tensor, sinks: list[int]) -> torch.Tensor:
    """A rollout row with the sinks' columns set to 0 and renormalised to sum to 1."""
    row = row.clone()
    if sinks and len(sinks) < row.shape[0]:
        row[sinks] = 0
    return row / row.sum().clamp_min(1e-12)


def capture(
    loaded: LoadedModel | None,
    text: str,
    layers: list[int] | int | None = None,
    heads: list[int] | int | None = None,
    thumbnails: int | None = None,
    rollout: bool = False,
    keep_queries_keys: bool = False,
    drop_sinks: bool = True,
) -> AttentionCapture:
    """Attention of `text` for the asked layers (default: the last; [] for none) and heads (default: all), in
    one forward pass. keep_queries_keys: also keep every layer's queries and keys, so that
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
    recorder = _Recorder(set(layers), heads, thumbnails, rollout, keep_queries_keys)
    model = loaded.model
    with _capture_mode(model, recorder), torch.inference_mode():
        model(**{k: v.to(loaded.device) for k, v in inputs.items()}, **last_logits_only(model))
    missing = [layer for layer in layers if layer not in recorder.weights]
    if keep_queries_keys and len(recorder.queries_keys) < num_layers:
        missing = [layer for layer in range(num_layers) if layer not in recorder.queries_keys]
    if missing:
        raise LLMError(
            f"{loaded.name} does not route attention through transformers' attention "
            f"interface; layers {missing} could not be captured"
        )
    tokens = [str(loaded.tokenizer.decode([i])) for i in ids]  # one id decodes to one str
    shares = None if recorder.mean_map is None else attention_shares(recorder.mean_map / num_layers, recorder.causal)
    sinks = sink_positions(loaded, ids, shares) if drop_sinks else []
    thumbs = torch.stack([recorder.thumbnails[i] for i in range(num_layers)]) if thumbnails else None
    return AttentionCapture(
        tokens=tokens,
        layers=layers,
        heads=heads or list(range(num_heads)),
        weights=recorder.weights,
        num_layers=num_layers,
        num_heads=num_heads,
        causal=recorder.causal,
        thumbnails=thumbs,
        rollout=recorder.rollout.cpu() if recorder.rollout is not None else None,
        sinks=sinks,
        queries_keys=recorder.queries_keys,
        shares=shares,
    )


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties get their mean rank)."""
    import pandas as pd

    ranks_a, ranks_b = pd.Series(list(a)).rank(), pd.Series(list(b)).rank()
    return float(ranks_a.corr(ranks_b))


def explain(loaded: LoadedModel | None, text: str) -> dict:
    """Which input tokens a prediction draws on. Causal models: the next-token prediction after the last
    token (the rollout row of the last position, and gradient × input of the predicted token through
    attribution.py's Captum input-x-gradient). Encoders: rollout into the first token ([CLS], the sentence
    embedding of a classifier head). Both scores as shares of 1 over the non-sink tokens (one scale), their
    Spearman rank correlation, and the detected sinks by name."""
    if loaded is not None and loaded.causal:
        from ..quantization import require_full_precision

        require_full_precision(loaded, "gradient x input (--explain)")  # quantized layers have no backward
    captured = capture(loaded, text, rollout=True)
    assert loaded is not None  # capture refused None
    tokens, last, sinks = captured.tokens, captured.tokens[-1], captured.sinks
    if loaded.causal:
        target = f"next token after {last.strip() or last!r}"
    else:
        target = f"{tokens[0].strip()} (position 0, the sequence summary)"
    row = captured.rollout_row()
    result: dict[str, Any] = {
        "tokens": tokens,
        "rollout": row.tolist(),
        "target": target,
        "sinks": sinks,
        "sink_shares": [float(captured.shares[i]) for i in sinks] if captured.shares is not None else [],
        "sink_tokens": [tokens[i] for i in sinks],
    }
    if loaded.causal:
        from .attribution import attribute

        attribution = attribute(loaded, text, method="input-x-gradient", max_new_tokens=1)
        raw = torch.from_numpy(np.abs(attribution.scores[0, : len(tokens)])).float()
        scores = without_sinks(raw, sinks)
        kept = [i for i in range(len(tokens)) if i not in sinks]
        result.update(
            saliency=scores.tolist(),
            predicted=attribution.targets[0],
            agreement=spearman([row[i] for i in kept], [scores[i] for i in kept]) if len(kept) > 1 else float("nan"),
        )
    return result
