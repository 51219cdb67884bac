"""The interactive attention widget (anywidget: its JS ships in this package, no CDN).

One forward pass keeps every layer's post-RoPE queries and keys; switching layer or head computes that
layer's softmax on demand (no new pass). The browser draws a layer's data only once it has arrived: the
weights travel with the layer and head they belong to (`shown_layer`, `shown_head`), and until they match
the selection the view shows a busy state instead of the previous layer's picture.

Its mimebundle also carries a static 'text/html' snapshot of the current state (a PNG of the matrix with
its token labels, or the logit-lens table), so a saved notebook still shows it without a kernel.
"""
from __future__ import annotations

import base64
import html
import struct
import zlib
from pathlib import Path

import anywidget
import numpy as np
import torch
import traitlets

from .. import attention
from ..errors import LLMError
from ..lens import check_causal, logit_lens
from ..loading import LoadedModel
from .html import short_token
from .lens import lens_table

VIEWS = ("head", "model", "matrix", "lens")
ALL_HEADS_UP_TO = 256
# The head view colours each head's lines up to ALL_HEADS_UP_TO tokens, the mean beyond.
STATIC_PIXELS = 384  # the saved snapshot's matrix is at most this many pixels a side


def _as_bytes(maps: torch.Tensor) -> bytes:
    """Each row scaled to its own max, as uint8: small to send, and faint rows stay visible."""
    peak = maps.amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return (maps / peak * 255).round().to(torch.uint8).contiguous().numpy().tobytes()


class AttentionView(anywidget.AnyWidget):
    _esm = Path(__file__).parent / "attention.js"

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    num_layers = traitlets.Int(0).tag(sync=True)
    num_heads = traitlets.Int(0).tag(sync=True)
    causal = traitlets.Bool(False).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(-1).tag(sync=True)  # -1: mean over heads
    view = traitlets.Unicode("head").tag(sync=True)  # head | model | matrix | lens
    selected_token = traitlets.Int(-1).tag(sync=True)
    # The shown layer's maps, (k, n, n) uint8 rows scaled to their max, for the heads in weight_heads
    # (-1 = the mean); row_peaks (k, n) float32 are those maxima. shown_* say whose data it is.
    weights = traitlets.Bytes(b"").tag(sync=True)
    weight_heads = traitlets.List(traitlets.Int()).tag(sync=True)
    row_peaks = traitlets.Bytes(b"").tag(sync=True)
    shown_layer = traitlets.Int(-1).tag(sync=True)
    shown_head = traitlets.Int(-2).tag(sync=True)
    thumbnail_size = traitlets.Int(24).tag(sync=True)
    thumbnails = traitlets.Bytes(b"").tag(sync=True)  # (layers, heads, t, t) uint8
    rollout = traitlets.List(traitlets.Float()).tag(sync=True)  # rollout of rollout_target over the inputs
    rollout_target = traitlets.Unicode("").tag(sync=True)
    sinks = traitlets.List(traitlets.Int()).tag(sync=True)
    lens = traitlets.Dict().tag(sync=True)  # {rows, tokens (rows x n x k), probs}: filled on first use
    lens_error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, loaded: LoadedModel, text: str, layer: int | None = None, head: int | None = None,
                 view: str | None = None, thumbnail_size: int = 24):
        super().__init__()
        if view is not None and view not in VIEWS:
            raise LLMError(f"unknown view {view!r}: use {', '.join(VIEWS)}")
        attention.check_layer_head(loaded.model, layer, head)
        if view == "lens":
            check_causal(loaded)
        self._loaded, self._text = loaded, text
        self._maps: dict[int, torch.Tensor] = {}
        self.capture = attention.capture(loaded, text, layers=layer, thumbnails=thumbnail_size, rollout=True,
                                         keep_queries_keys=True)
        captured = self.capture
        assert captured.thumbnails is not None and captured.rollout is not None  # both asked for above
        n = len(captured.tokens)
        if view is None:
            view = "head" if n <= ALL_HEADS_UP_TO else "matrix"
        try:
            check_causal(loaded)
        except LLMError as error:
            self.lens_error = str(error)
        with self.hold_sync():
            self.tokens = captured.tokens
            self.num_layers, self.num_heads = captured.num_layers, captured.num_heads
            self.causal = captured.causal
            self.thumbnail_size = captured.thumbnails.shape[-1]
            self.thumbnails = _as_bytes(captured.thumbnails)
            self.sinks = captured.sinks
            if captured.causal:
                self.rollout, self.rollout_target = captured.rollout[-1].tolist(), "the next token"
            else:
                self.rollout, self.rollout_target = captured.rollout[0].tolist(), captured.tokens[0].strip()
            self.layer = captured.layers[0]
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

    @traitlets.observe("layer", "head", "view")
    def _on_selection(self, change):
        if self.tokens:
            self._show()

    def layer_weights(self, layer: int) -> torch.Tensor:
        """(heads, n, n) for one layer, computed from the kept queries and keys (no new forward pass)."""
        if layer not in self._maps:
            if len(self._maps) >= 2:  # keep the memory at a few layers' n² maps
                self._maps.pop(next(iter(self._maps)))
            self._maps[layer] = self.capture.layer_weights(layer)
        return self._maps[layer]

    @property
    def shown(self) -> torch.Tensor:
        maps = self.layer_weights(self.layer)
        return maps.mean(0) if self.head < 0 else maps[self.head]

    def _show(self):
        if self.view == "lens":
            self._fill_lens()
        if self.shown_layer == self.layer and self.shown_head == self.head:
            return
        maps = self.layer_weights(self.layer)
        if self.head >= 0:
            heads, stack = [self.head], maps[self.head:self.head + 1]
        elif len(self.tokens) <= ALL_HEADS_UP_TO:  # the head view colours each head's lines
            heads, stack = [-1] + list(range(self.num_heads)), torch.cat([maps.mean(0, keepdim=True), maps])
        else:
            heads, stack = [-1], maps.mean(0, keepdim=True)
        with self.hold_sync():
            self.weights = _as_bytes(stack)
            self.row_peaks = stack.amax(-1).float().contiguous().numpy().tobytes()
            self.weight_heads = heads
            self.shown_layer, self.shown_head = self.layer, self.head

    def _fill_lens(self):
        if self.lens or self.lens_error:
            return
        result = logit_lens(self._loaded, self._text)
        self.lens = {"rows": result.rows, "tokens": result.top_tokens,
                     "probs": np.round(result.top_probs.numpy(), 4).tolist()}

    # --- the static snapshot a saved notebook keeps ---
    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)  # anywidget: (data, metadata)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        return {**data, "text/html": self.static_html()}, metadata

    def static_html(self) -> str:
        """The current state as self-contained HTML: no script, no widget manager needed."""
        head = "mean of heads" if self.head < 0 else f"head {self.head}"
        if self.view == "lens" and (self.lens or self.lens_error):
            body, title = lens_table(self.lens, self.tokens, self.lens_error), "logit lens"
        else:
            body, title = _matrix_figure(self.shown.numpy(), self.tokens), f"layer {self.layer} · {head}"
        return (f'<div class="llm-attention-static" data-layer="{self.layer}" data-head="{self.head}" '
                f'style="font-family:sans-serif;font-size:12px;color:var(--jp-ui-font-color1,#222);'
                f'background:var(--jp-layout-color0,#fff);padding:4px">'
                f'<div style="font-weight:600;margin-bottom:4px">{html.escape(title)} · {len(self.tokens)} tokens '
                f'<span style="font-weight:400;color:var(--jp-ui-font-color2,#666)">(saved snapshot: run the cell '
                f'for the interactive view)</span></div>{body}</div>')


def _png(rgb: np.ndarray) -> str:
    """An (h, w, 3) uint8 image as a PNG data URI (zlib only: no imaging library needed)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


ACCENT = np.array([25, 118, 210], dtype=np.float32)  # JupyterLab's --jp-brand-color1


def _colours(values: np.ndarray) -> np.ndarray:
    """Share of the row's max (0..1) -> white..accent, on a square-root scale (as the live view)."""
    strength = np.sqrt(np.clip(values, 0, 1))[..., None]
    return (255 - strength * (255 - ACCENT)).round().astype(np.uint8)


def _matrix_figure(matrix: np.ndarray, tokens: list[str], size: int | None = None) -> str:
    n = len(tokens)
    size = size or min(480, max(200, 14 * n))
    scaled = matrix / np.clip(matrix.max(-1, keepdims=True), 1e-12, None)
    if n > STATIC_PIXELS:  # keep the saved notebook small: average-pool long texts
        scaled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(scaled)[None], STATIC_PIXELS)[0].numpy()
    image = _colours(scaled)
    step = max(1, -(-n // (size // 12)))  # at most one label per 12 px
    cell, margin = size / n, 110
    rows = "".join(f'<div class="llm-axis-label llm-row-label" style="position:absolute;left:0;width:{margin - 4}px;'
                   f'text-align:right;overflow:hidden;white-space:nowrap;top:{margin + (i + 0.5) * cell - 7:.1f}px">'
                   f'{short_token(tokens[i], 14)}</div>' for i in range(0, n, step))
    cols = "".join(f'<div class="llm-axis-label llm-col-label" style="position:absolute;top:0;'
                   f'height:{margin - 4}px;'
                   f'overflow:hidden;white-space:nowrap;writing-mode:vertical-rl;transform:rotate(180deg);'
                   f'left:{margin + (j + 0.5) * cell - 7:.1f}px">{short_token(tokens[j], 14)}</div>'
                   for j in range(0, n, step))
    legend = ('<div style="display:flex;align-items:center;gap:6px;margin-top:6px">0<span style="display:inline-block;'
              'width:140px;height:10px;border:1px solid var(--jp-border-color1,#bbb);'
              'background:linear-gradient(to right,'
              f'#fff,rgb({",".join(str(int(c)) for c in ACCENT)}))"></span>1 · attention as a share of its row\'s '
              'maximum (square-root scale); rows: query tokens, columns: key tokens</div>')
    return (f'<div style="position:relative;width:{margin + size + 4}px;height:{margin + size + 2}px;'
            f'font-family:monospace;font-size:11px">{rows}{cols}<img alt="attention matrix" src="{_png(image)}" '
            f'style="position:absolute;left:{margin}px;top:{margin}px;width:{size}px;height:{size}px;'
            f'image-rendering:pixelated;border:1px solid var(--jp-border-color1,#bbb)"></div>{legend}')


# --- bertviz, for an online browser ---------------------------------------------------------

def to_bertviz(captured: attention.AttentionCapture) -> list[torch.Tensor]:
    """The captured layers in bertviz's format: a list of (batch=1, heads, n, n) tensors."""
    return [captured.weights[layer].unsqueeze(0) for layer in captured.layers]


BERTVIZ_OFFLINE = ("bertviz's views load require.js, d3 and jQuery from cdnjs.cloudflare.com at display time, "
                   "so they stay blank offline; showing llm-magics' own view of the same attention instead "
                   "(llm_magics.views.attention.bertviz_html(...) still returns bertviz's HTML for an online browser)")


def bertviz_html(captured: attention.AttentionCapture, view: str = "head"):
    """bertviz's own view of the capture. It loads require.js and d3 from a CDN: offline it stays blank."""
    try:
        from bertviz import head_view, model_view
    except ImportError:
        raise LLMError("bertviz is not installed: pip install bertviz") from None
    show = {"head": head_view, "model": model_view}.get(view)
    if show is None:
        raise LLMError("bertviz has a head and a model view: use view='head' or view='model'")
    return show(attention=to_bertviz(captured), tokens=captured.tokens, html_action="return")
