"""Activation patching (causal tracing, Meng et al. 2022; TransformerLens's `patching.py`), batched.

Two prompts of the same token count: a clean one the model answers right and a corrupted one. For every
layer L and position p (or head h), one activation of the corrupted run is replaced by the clean run's and
we measure how much of the clean answer comes back:

    LD    = logit[answer] - logit[wrong] at the last position
    score = (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted)

Sites: `residual` (decoder layer L's output at p, transformers' `hidden_states[L + 1]`), `attention` /
`mlp` (that layer's attention or MLP output at p), `heads` (one head's output, i.e. its slice of the
attention output projection's input, at the last position).

TransformerLens runs one full forward per patch. Here the patches of one layer form one batch, and each
batch starts from the corrupted run's cached input to layer L: the layers below L are never recomputed
(the model's lower layers are swapped out of its layer list for the duration, and a pre-hook on layer L
feeds it the cached residual stream).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import cast

import torch

from ..base.checks import parse_layer_ranges
from ..base.drawing import draw
from ..base.errors import LLMError, no_model
from ..base.interrupts import StopFlag
from ..loading import LoadedModel, context_length, require_causal
from ..options import PATCH_SITES, defaults
from .attention import model_shape

SITES = PATCH_SITES  # declared with the --site option
TOP_K = 5


@dataclass
class PatchingResult:
    site: str
    tokens: list[str]  # the clean prompt's tokens
    corrupted_tokens: list[str]
    answer: str
    wrong: str
    scores: torch.Tensor  # (layers, positions) or (layers, heads); NaN where a stop left it undone
    clean_ld: float
    corrupted_ld: float
    top_ids: torch.Tensor  # (layers, columns, 5) each patched run's likeliest next tokens
    top_probs: torch.Tensor
    top_tokens: list[list[list[str]]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def columns(self) -> list[str]:
        """The heatmap's column names: positions (token i) or heads."""
        if self.site == "heads":
            return [f"head {h}" for h in range(self.scores.shape[1])]
        return [f"{i} {token}" for i, token in enumerate(self.tokens)]

    def to_frame(self):
        """One row per (layer, position or head): the score and the patched run's likeliest token."""
        import pandas as pd

        column = "head" if self.site == "heads" else "position"
        rows = []
        for layer in range(self.scores.shape[0]):
            for index in range(self.scores.shape[1]):
                row = {"layer": layer, column: index, "score": float(self.scores[layer, index])}
                if column == "position":
                    row["token"] = self.tokens[index]
                row["top_token"] = self.top_tokens[layer][index][0] if self.top_tokens else None
                row["top_prob"] = float(self.top_probs[layer, index, 0])
                rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        done = ~torch.isnan(self.scores)
        best = int(torch.where(done, self.scores, torch.tensor(float("-inf"))).flatten().argmax())
        layer, index = divmod(best, self.scores.shape[1])
        where = f"head {index}" if self.site == "heads" else f"position {index} ({self.tokens[index]!r})"
        note = f"; stopped after {int(done.all(1).sum())} of {self.scores.shape[0]} layers" if self.interrupted else ""
        return (
            f"patching {self.site}: LD clean {self.clean_ld:.3f}, corrupted {self.corrupted_ld:.3f} "
            f"({self.answer!r} vs {self.wrong!r}); highest score {float(self.scores[layer, index]):.3f} "
            f"at layer {layer}, {where}{note}"
        )

    def view(self):
        return draw(self)


# --- finding the parts of a decoder ---
def decoder_layers(model) -> tuple[torch.nn.Module, str, torch.nn.ModuleList]:
    """The module holding the decoder layers, the attribute name and the ModuleList (Llama's `layers`,
    GPT-2's `h`...), through a LoRA wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for owner in (getattr(inner, "model", None), getattr(inner, "transformer", None), inner):
        for name in ("layers", "h", "blocks"):
            layers = getattr(owner, name, None) if owner is not None else None
            if isinstance(layers, torch.nn.ModuleList) and owner is not None:
                return owner, name, layers
    raise LLMError(f"cannot find the decoder layers of {type(inner).__name__}")


def _child(layer: torch.nn.Module, names: tuple[str, ...], what: str) -> torch.nn.Module:
    for name in names:
        module = getattr(layer, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise LLMError(f"cannot find the {what} of {type(layer).__name__} (looked for {', '.join(names)})")


def attention_module(layer):
    return _child(layer, ("self_attn", "attn", "attention", "self_attention"), "attention block")


def mlp_module(layer):
    return _child(layer, ("mlp", "feed_forward", "ffn"), "MLP")


def out_projection(layer):
    return _child(attention_module(layer), ("o_proj", "c_proj", "out_proj", "dense"), "attention output projection")


def site_module(layer, site: str):
    """The module whose output (input for heads) a site patches."""
    return {
        "residual": lambda: layer,
        "attention": lambda: attention_module(layer),
        "mlp": lambda: mlp_module(layer),
        "heads": lambda: out_projection(layer),
    }[site]()


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, tensor):
    return (tensor,) + tuple(output[1:]) if isinstance(output, tuple) else tensor


# --- input checks ---
def token_id(tokenizer, text: str, what: str) -> int:
    """The first token of `text` as typed (write ' Paris' for the word after a space)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise LLMError(f"{what} {text!r} tokenizes to nothing: give a word or a token")
    return ids[0]


def encode_pair(loaded: LoadedModel, clean: str, corrupted: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not clean.strip() or not corrupted.strip():
        raise LLMError("patching needs two prompts: the clean one on the first line, the corrupted one on the second")
    tokenizer = loaded.tokenizer
    clean_ids = tokenizer(clean, return_tensors="pt")["input_ids"]
    corrupted_ids = tokenizer(corrupted, return_tensors="pt")["input_ids"]
    if clean_ids.shape[1] != corrupted_ids.shape[1]:
        raise LLMError(
            f"the clean prompt is {clean_ids.shape[1]} tokens and the corrupted one "
            f"{corrupted_ids.shape[1]}: patching compares positions, so they need the same token count"
        )
    limit = context_length(loaded.model)
    if limit and clean_ids.shape[1] > limit:
        raise LLMError(f"the text is {clean_ids.shape[1]} tokens, longer than the model's context of {limit}")
    return clean_ids.to(loaded.device), corrupted_ids.to(loaded.device)


# --- one run, with every site's activations kept ---
@dataclass
class _Run:
    layer_inputs: list[torch.Tensor]  # (1, n, d) the residual stream entering each layer
    sites: dict[str, list[torch.Tensor]]  # per site, per layer: (1, n, d) or (1, n, heads*head_dim) for heads
    logits: torch.Tensor  # (vocab,) at the last position


def _cached_run(model, ids: torch.Tensor, site: str) -> _Run:
    _, _, layers = decoder_layers(model)
    inputs: list[torch.Tensor | None] = [None] * len(layers)  # filled by the hooks below
    outputs: list[torch.Tensor | None] = [None] * len(layers)
    handles = []
    for index, layer in enumerate(layers):

        def keep_input(module, args, kwargs, index=index):
            inputs[index] = (args[0] if args else kwargs["hidden_states"]).detach()

        handles.append(layer.register_forward_pre_hook(keep_input, with_kwargs=True))
        module = site_module(layer, site)
        if site == "heads":

            def keep(module, args, index=index):
                outputs[index] = args[0].detach()

            handles.append(module.register_forward_pre_hook(keep))
        else:

            def keep_output(module, args, output, index=index):
                outputs[index] = _first(output).detach()

            handles.append(module.register_forward_hook(keep_output))
    try:
        logits = model(input_ids=ids, use_cache=False).logits[0, -1].float()
    finally:
        for handle in handles:
            handle.remove()
    return _Run(cast(list[torch.Tensor], inputs), {site: cast(list[torch.Tensor], outputs)}, logits)  # all filled


@contextlib.contextmanager
def _from_layer(model, start: int, residual: torch.Tensor):
    """Run only layers start.. of the model, fed `residual` (batch, n, d) as layer start's input."""
    owner, name, layers = decoder_layers(model)

    def feed(module, args, kwargs):
        if args:
            return (residual,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": residual}

    handle = layers[start].register_forward_pre_hook(feed, with_kwargs=True)
    setattr(owner, name, torch.nn.ModuleList(list(layers)[start:]))
    try:
        yield
    finally:
        setattr(owner, name, layers)
        handle.remove()


def patched_logits(
    model, ids: torch.Tensor, layer: int, site: str, corrupted: _Run, clean: _Run, patches: list[int]
) -> torch.Tensor:
    """Last-position logits (len(patches), vocab) of the corrupted run with, in batch row i, the clean
    activation at position patches[i] (or head patches[i] at the last position) of `layer` patched in;
    the layers below `layer` are not run again."""
    _, _, layers = decoder_layers(model)
    batch = len(patches)
    rows = torch.arange(batch, device=ids.device)
    clean_site = clean.sites[site][layer][0]
    module = site_module(layers[layer], site)
    if site == "heads":
        heads = model_shape(model)[1]
        width = clean_site.shape[-1] // heads
        mask = torch.zeros(batch, clean_site.shape[-1], dtype=torch.bool, device=ids.device)
        for row, head in enumerate(patches):
            mask[row, head * width : (head + 1) * width] = True

        def patch(module, args):
            x = args[0].clone()
            x[:, -1] = torch.where(mask, clean_site[-1].expand(batch, -1), x[:, -1])
            return (x,) + tuple(args[1:])

        handle = module.register_forward_pre_hook(patch)
    else:
        positions = torch.tensor(patches, device=ids.device)

        def patch_output(module, args, output):
            x = _first(output).clone()
            x[rows, positions] = clean_site[positions].to(x.dtype)
            return _replace_first(output, x)

        handle = module.register_forward_hook(patch_output)
    start = corrupted.layer_inputs[layer].expand(batch, -1, -1)
    try:
        with _from_layer(model, layer, start):
            return model(input_ids=ids.expand(batch, -1), use_cache=False, logits_to_keep=1).logits[:, -1].float()
    finally:
        handle.remove()


def patch(
    loaded: LoadedModel | None,
    clean: str,
    corrupted: str,
    answer: str | None = None,
    wrong: str | None = None,
    site: str = defaults("patch").site,
    layers: list[int] | str | None = None,
    batch_size: int = 64,
    stop: StopFlag | None = None,
    on_layer=None,
) -> PatchingResult:
    """Every layer × position (heads: layer × head) patched from the clean run into the corrupted one.
    layers: only these layers (the other rows stay NaN); batch_size: patched runs per forward pass."""
    if loaded is None:
        raise no_model("patch")
    require_causal(loaded, "patch", "patching measures a next-token logit difference")
    if site not in SITES:
        raise LLMError(f"unknown site {site!r}: use {', '.join(SITES)}")
    model, tokenizer = loaded.model, loaded.tokenizer
    clean_ids, corrupted_ids = encode_pair(loaded, clean, corrupted)
    num_layers, num_heads = model_shape(model)
    if isinstance(layers, str):  # '0,5,20-29', as --layers takes it
        layers = parse_layer_ranges("--layers", layers)
    layers = list(range(num_layers)) if layers is None else list(layers)
    if not layers:
        raise LLMError("--layers names no layer: give layer numbers and ranges, e.g. 0,5,20-29")
    for layer in layers:
        if not 0 <= layer < num_layers:
            raise LLMError(f"layer {layer} is out of range: this model has layers 0..{num_layers - 1}")
    if batch_size < 1:
        raise LLMError(f"batch_size must be at least 1, not {batch_size}")
    with torch.inference_mode():
        clean_run = _cached_run(model, clean_ids, site)
        corrupted_run = _cached_run(model, corrupted_ids, site)
        answer_id = token_id(tokenizer, answer, "--answer") if answer is not None else int(clean_run.logits.argmax())
        wrong_id = token_id(tokenizer, wrong, "--wrong") if wrong is not None else int(corrupted_run.logits.argmax())
        answer_text: str = tokenizer.decode([answer_id])  # type: ignore[assignment]  # transformers types decode() as str | list[str]; one id list gives a str
        wrong_text: str = tokenizer.decode([wrong_id])  # type: ignore[assignment]  # transformers types decode() as str | list[str]; one id list gives a str
        if answer_id == wrong_id:
            how = (
                "--answer and --wrong are"
                if answer is not None and wrong is not None
                else "the clean and corrupted runs' top next tokens are both"
            )
            raise LLMError(
                f"{how} {answer_text!r}: the logit difference needs two different tokens (give --answer and --wrong)"
            )

        def ld(logits):
            return logits[..., answer_id] - logits[..., wrong_id]

        clean_ld, corrupted_ld = float(ld(clean_run.logits)), float(ld(corrupted_run.logits))
        if abs(clean_ld - corrupted_ld) < 1e-6:
            raise LLMError(
                f"the clean and corrupted runs give the same logit difference ({clean_ld:.3f}) for "
                f"{answer_text!r} vs {wrong_text!r}: there is nothing to restore"
            )
        columns = num_heads if site == "heads" else clean_ids.shape[1]
        scores = torch.full((num_layers, columns), float("nan"))
        top_ids = torch.zeros(num_layers, columns, TOP_K, dtype=torch.long)
        top_probs = torch.zeros(num_layers, columns, TOP_K)
        interrupted = False
        for done, layer in enumerate(layers):
            if stop is not None and stop.requested:
                interrupted = True
                break
            for first in range(0, columns, batch_size):
                patches = list(range(first, min(columns, first + batch_size)))
                logits = patched_logits(model, corrupted_ids, layer, site, corrupted_run, clean_run, patches)
                scores[layer, patches] = ((ld(logits) - corrupted_ld) / (clean_ld - corrupted_ld)).cpu()
                top = torch.softmax(logits, -1).topk(TOP_K, -1)
                top_ids[layer, patches], top_probs[layer, patches] = top.indices.cpu(), top.values.cpu()
            if on_layer is not None:
                on_layer(done + 1, len(layers))
    vocabulary: dict[int, str] = {}

    def decode(token: int) -> str:
        if token not in vocabulary:
            vocabulary[token] = tokenizer.decode([token])  # type: ignore[assignment]  # transformers types decode() as str | list[str]; one id list gives a str
        return vocabulary[token]

    return PatchingResult(
        site=site,
        tokens=[decode(i) for i in clean_ids[0].tolist()],
        corrupted_tokens=[decode(i) for i in corrupted_ids[0].tolist()],
        answer=answer_text,
        wrong=wrong_text,
        scores=scores,
        clean_ld=clean_ld,
        corrupted_ld=corrupted_ld,
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=[[[decode(i) for i in cell] for cell in row] for row in top_ids.tolist()],
        interrupted=interrupted,
    )
