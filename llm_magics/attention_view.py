"""The interactive attention widget (anywidget: its JS ships in this package, no CDN)."""
from __future__ import annotations

from pathlib import Path

import anywidget
import torch
import traitlets

from . import attention
from .errors import LLMError
from .loading import LoadedModel


def _as_bytes(maps: torch.Tensor) -> bytes:
    """Each row scaled to its own max, as uint8: small to send, and faint rows stay visible."""
    peak = maps.amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return (maps / peak * 255).round().to(torch.uint8).contiguous().numpy().tobytes()


class AttentionView(anywidget.AnyWidget):
    _esm = Path(__file__).parent / "static" / "attention.js"

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    num_layers = traitlets.Int(0).tag(sync=True)
    num_heads = traitlets.Int(0).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(-1).tag(sync=True)  # -1: mean over heads
    view = traitlets.Unicode("head").tag(sync=True)  # head | model | matrix
    selected_token = traitlets.Int(-1).tag(sync=True)
    weights = traitlets.Bytes(b"").tag(sync=True)  # (n, n) uint8 of the shown layer/head
    thumbnail_size = traitlets.Int(24).tag(sync=True)
    thumbnails = traitlets.Bytes(b"").tag(sync=True)  # (layers, heads, t, t) uint8
    rollout = traitlets.List(traitlets.Float()).tag(sync=True)  # last token's rollout over the inputs

    def __init__(self, loaded: LoadedModel, text: str, layer: int | None = None, head: int | None = None,
                 view: str | None = None, thumbnail_size: int = 24):
        super().__init__()
        self._loaded, self._text, self._layers = loaded, text, {}
        overview = attention.capture(loaded, text, layers=layer, thumbnails=thumbnail_size, rollout=True)
        self._layers[overview.layers[0]] = overview.weights[overview.layers[0]]
        n = len(overview.tokens)
        if view is None:
            view = "head" if n <= 256 else "matrix"
        if view not in ("head", "model", "matrix"):
            raise LLMError(f"unknown view {view!r}: use head, model or matrix")
        self.capture = overview
        with self.hold_sync():
            self.tokens = overview.tokens
            self.num_layers, self.num_heads = overview.num_layers, overview.num_heads
            self.thumbnail_size = overview.thumbnails.shape[-1]
            self.thumbnails = _as_bytes(overview.thumbnails)
            self.rollout = overview.rollout[-1].tolist()
            self.layer = overview.layers[0]
            self.head = -1 if head is None else head
            self.view = view
            self._show()

    @traitlets.validate("layer")
    def _valid_layer(self, proposal):
        if not 0 <= proposal["value"] < max(self.num_layers, 1):
            raise traitlets.TraitError(f"layer must be in 0..{self.num_layers - 1}")
        return proposal["value"]

    @traitlets.validate("head")
    def _valid_head(self, proposal):
        if not -1 <= proposal["value"] < max(self.num_heads, 1):
            raise traitlets.TraitError(f"head must be -1 (mean) or in 0..{self.num_heads - 1}")
        return proposal["value"]

    @traitlets.observe("layer", "head")
    def _on_selection(self, change):
        if self.tokens:
            self._show()

    def layer_weights(self, layer: int) -> torch.Tensor:
        """(heads, n, n) for one layer, captured on first use (one layer at a time)."""
        if layer not in self._layers:
            self._layers[layer] = attention.capture(self._loaded, self._text, layers=layer).weights[layer]
        return self._layers[layer]

    @property
    def shown(self) -> torch.Tensor:
        maps = self.layer_weights(self.layer)
        return maps.mean(0) if self.head < 0 else maps[self.head]

    def _show(self):
        self.weights = _as_bytes(self.shown)
