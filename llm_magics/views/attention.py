"""The interactive attention widget (anywidget: its JS ships in this package, no CDN).

One forward pass keeps every layer's post-RoPE queries and keys; switching layer or head computes that
layer's softmax on demand (no new pass), one block of query rows at a time, so a long text never has every
head's n² map at once. What needs every layer (the model view's thumbnails, the head view's rollout and
sinks) is computed when such a view first opens; the lens reads out only the window of positions in view.
The browser draws a layer's data only once it has arrived: the weights travel with the layer and head they
belong to (`shown_layer`, `shown_head`), and until they match the selection the view shows a busy state
instead of the previous layer's picture.

Its mimebundle also carries a static 'text/html' snapshot of the current state (a PNG of the matrix with
its token labels, or the logit-lens table), so a saved notebook still shows it without a kernel.
"""

from __future__ import annotations

import base64
import html
import struct
import zlib

import anywidget
import numpy as np
import torch
import traitlets

from ..base.errors import LLMError
from ..base.html import short_token
from ..inspect import attention
from ..inspect.lens import Decoder, check_causal, lens_inputs, read_out, target_token
from ..loading import LoadedModel
from . import assets
from .lens import lens_table

VIEWS = ("head", "model", "matrix", "lens")
ALL_HEADS_UP_TO = 256
# The head view colours each head's lines up to ALL_HEADS_UP_TO tokens, the mean beyond.
LENS_WINDOW = 64  # the lens reads out this many positions at a time (the ones in view)
TOP_K = 5
STATIC_PIXELS = 384  # the saved snapshot's matrix is at most this many pixels a side
MATRIX_PIXELS = 512  # a longer text's matrix view gets a max-pooled overview, and exact tiles as it zooms in


def _image_bytes(image: torch.Tensor) -> bytes:
    """A picture already in 0..1 as uint8."""
    return (image * 255).round().to(torch.uint8).contiguous().numpy().tobytes()


def _as_bytes(maps: torch.Tensor) -> bytes:
    """Each row scaled to its own max, as uint8: small to send, and faint rows stay visible."""
    return _image_bytes(maps / maps.amax(dim=-1, keepdim=True).clamp_min(1e-12))


class AttentionView(anywidget.AnyWidget):
    _esm = assets.esm("attention.js")
    _css = assets.css("attention.css")

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
    # The matrix view of a text longer than MATRIX_PIXELS: `weights` is the overview, each pixel the max of
    # weights_pool² cells (row-scaled), and `tile` the square the user zoomed to, computed exactly once it
    # spans at most MATRIX_PIXELS tokens: tile_box = [layer, head, first row, first column, span, pool],
    # tile_peaks (span,) float32 its rows' maxima.
    weights_pool = traitlets.Int(1).tag(sync=True)
    tile = traitlets.Bytes(b"").tag(sync=True)
    tile_box = traitlets.List(traitlets.Int()).tag(sync=True)
    tile_peaks = traitlets.Bytes(b"").tag(sync=True)
    thumbnail_size = traitlets.Int(24).tag(sync=True)
    thumbnails = traitlets.Bytes(b"").tag(sync=True)  # (layers, heads, t, t) uint8
    rollout = traitlets.List(traitlets.Float()).tag(sync=True)  # rollout of rollout_target over the inputs
    rollout_target = traitlets.Unicode("").tag(sync=True)
    sinks = traitlets.List(traitlets.Int()).tag(sync=True)
    lens = traitlets.Dict().tag(sync=True)  # {rows, tokens (rows x n x k), probs[, target]}: filled on first use
    lens_error = traitlets.Unicode("").tag(sync=True)
    # The head view with head -1 draws these heads: on opening (and on a layer switch) the shown layer's
    # top 3 by attention entropy (the most spread-out heads, not the ones that all look at the sink).
    head_set = traitlets.List(traitlets.Int()).tag(sync=True)
    entropy_heads = traitlets.List(traitlets.Int()).tag(sync=True)  # that layer's top 3
    zoom = traitlets.List(traitlets.Float()).tag(sync=True)  # matrix view: [first row, first column, span]
    # The lens computes LENS_WINDOW positions from lens_start (-1: the last ones); scrolling asks for others.
    lens_start = traitlets.Int(-1).tag(sync=True)
    _maps: dict[tuple[int, int], torch.Tensor]  # (layer, head) -> that (n, n) map, the last two asked

    def __init__(
        self,
        loaded: LoadedModel,
        text: str,
        layer: int | None = None,
        head: int | None = None,
        view: str | None = None,
        thumbnail_size: int = 24,
        target: str | None = None,
    ):
        super().__init__()
        if view is not None and view not in VIEWS:
            raise LLMError(f"unknown view {view!r}: use {', '.join(VIEWS)}")
        attention.check_layer_head(loaded.model, layer, head)
        if view == "lens" or target is not None:
            check_causal(loaded)
        if target is not None:
            target_token(loaded.tokenizer, target)  # one line now, not on the first lens draw
        self._loaded, self._text, self._maps, self._target = loaded, text, {}, target
        self._handle, self._pending, self._hidden, self._entropy_layer = None, None, None, -1
        self._images: dict[str, torch.Tensor] = {}  # the pooled overview and the tile as sent, for the snapshot
        self._thumbnail_size = thumbnail_size
        self._capture: attention.AttentionCapture | None = None
        num_layers, num_heads = attention.model_shape(loaded.model)
        if view == "lens":  # one forward pass, the lens's: the attention is captured if another view opens
            ids, self._hidden = lens_inputs(loaded, text)
            tokens, causal = [Decoder(loaded.tokenizer)(i) for i in ids], True
        else:
            tokens, causal = self.capture.tokens, self.capture.causal
        n = len(tokens)
        if view is None:
            view = "head" if n <= ALL_HEADS_UP_TO else "matrix"
        try:
            check_causal(loaded)
        except LLMError as error:
            self.lens_error = str(error)
        with self.hold_sync():
            self.num_layers, self.num_heads = num_layers, num_heads
            self.causal = causal
            self.thumbnail_size = min(thumbnail_size, n)
            self.rollout_target = "the next token" if causal else tokens[0].strip()
            self.layer = num_layers - 1 if layer is None else layer
            self.head = -1 if head is None else head
            self.view = view
            self.tokens = tokens  # last: the selection is complete before anything is computed
            self._show()

    @property
    def capture(self) -> attention.AttentionCapture:
        """The one attention pass: every layer's queries and keys, nothing of size n² (the layer shown is
        computed block by block in _show, the overview of all layers only when a view needs it)."""
        if self._capture is None:
            self._capture = attention.capture(self._loaded, self._text, layers=[], keep_queries_keys=True)
        return self._capture

    @property
    def captured(self) -> attention.AttentionCapture | None:
        """The attention capture if it was made (a widget opened on the lens has none until another view)."""
        return self._capture

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

    # --- the saved output follows the view: its text/html is refreshed once the user settles ---
    def _ipython_display_(self):
        from IPython.display import display

        data, metadata = self._repr_mimebundle_()
        self._handle = display(data, metadata=metadata, raw=True, display_id=True)

    @traitlets.observe("layer", "head", "view", "head_set", "zoom", "selected_token", "lens")
    def _on_state(self, change):
        if self._handle is None:
            return
        import asyncio

        if self._pending is not None:
            self._pending.cancel()
        try:  # after a quiet second, so that a run of clicks re-renders the output once
            self._pending = asyncio.get_running_loop().call_later(1.0, self.refresh_snapshot)
        except RuntimeError:  # no event loop (plain Python): at once
            self.refresh_snapshot()

    def refresh_snapshot(self):
        """Write the current state into the displayed output's text/html (what a saved notebook keeps)."""
        self._pending = None
        if self._handle is not None:
            data, metadata = self._repr_mimebundle_()
            self._handle.update(data, metadata=metadata, raw=True)

    def layer_weights(self, layer: int) -> torch.Tensor:
        """(heads, n, n) for one layer, computed from the kept queries and keys (no new forward pass)."""
        return self.capture.layer_weights(layer)

    def _map(self, layer: int, head: int) -> torch.Tensor:
        """(n, n) of one head (-1: the mean of heads), computed block by block; the last two kept."""
        if (layer, head) not in self._maps:
            if len(self._maps) >= 2:  # a few n² maps at most, never every head's
                self._maps.pop(next(iter(self._maps)))
            self._maps[layer, head] = attention.layer_map(self.capture.queries_keys[layer], head)
        return self._maps[layer, head]

    @property
    def shown(self) -> torch.Tensor:
        return self._map(self.layer, self.head)

    def _overview(self):
        """The model view's thumbnails and the head view's rollout shading and sinks: every layer's attention,
        so computed the first time a view needs them (a long text opens on the matrix view without them)."""
        if self.thumbnails:
            return
        captured = self.capture
        position = len(self.tokens) - 1 if captured.causal else 0
        thumbnails, shares, row = attention.layer_overview(captured, self._thumbnail_size, position)
        ids = self._loaded.tokenizer(self._text)["input_ids"]
        captured.thumbnails, captured.shares = thumbnails, shares
        captured.sinks = attention.sink_positions(self._loaded, ids, shares)
        with self.hold_sync():
            self.sinks = captured.sinks
            self.rollout = attention.without_sinks(row, captured.sinks).tolist()
            self.thumbnails = _as_bytes(thumbnails)

    def _show(self):
        if self.view == "lens":
            self._fill_lens()
        if self.view in ("head", "model"):
            self._overview()
        if self.view == "head" and self._entropy_layer != self.layer:  # the head view opens on these
            entropy = attention.head_entropies(self.capture.queries_keys[self.layer])
            top = sorted(entropy.topk(min(3, self.num_heads)).indices.tolist())
            self._entropy_layer = self.layer
            with self.hold_sync():
                self.entropy_heads = top
                if self.head < 0:
                    self.head_set = top
        if self.view not in ("head", "matrix"):
            return  # the model view and the lens draw no single layer
        if self._pooled:
            self._show_overview()
            return
        if (self.shown_layer, self.shown_head) == (self.layer, self.head) and self.weights_pool == 1:
            return
        shown = self._map(self.layer, self.head)
        if self.head < 0 and len(self.tokens) <= ALL_HEADS_UP_TO:  # the head view colours each head's lines
            heads, stack = [-1] + list(range(self.num_heads)), torch.cat([shown[None], self.layer_weights(self.layer)])
        else:
            heads, stack = [self.head], shown[None]
        with self.hold_sync():
            self.weights = _as_bytes(stack)
            self.row_peaks = stack.amax(-1).float().contiguous().numpy().tobytes()
            self.weight_heads = heads
            self.weights_pool = 1
            self.shown_layer, self.shown_head = self.layer, self.head

    @property
    def _pooled(self) -> bool:
        return self.view == "matrix" and len(self.tokens) > MATRIX_PIXELS

    def _show_overview(self):
        """A long text's matrix view: the shown layer's pooled overview, then the tile in sight."""
        if (self.shown_layer, self.shown_head) != (self.layer, self.head) or self.weights_pool == 1:
            queries_keys = self.capture.queries_keys[self.layer]
            image, peaks, pool = attention.layer_image(queries_keys, self.head, pixels=MATRIX_PIXELS)
            self._images = {"overview": image}
            with self.hold_sync():
                self.weights = _image_bytes(image)
                self.row_peaks = peaks.contiguous().numpy().tobytes()
                self.weight_heads = [self.head]
                self.weights_pool = pool
                self.shown_layer, self.shown_head = self.layer, self.head
        self._show_tile()

    def _show_tile(self):
        """The square the user zoomed to, exact once it spans at most MATRIX_PIXELS tokens (only its rows are
        computed); none while the whole matrix is in sight."""
        r0, c0, span = self._zoom_box()
        if span >= len(self.tokens):
            self._images.pop("tile", None)
            self.tile_box = []
            return
        box = [self.layer, self.head, r0, c0, span]
        if self.tile_box[:5] == box:
            return
        image, peaks, pool = attention.layer_image(
            self.capture.queries_keys[self.layer], self.head, (r0, c0, span), MATRIX_PIXELS
        )
        self._images["tile"] = image
        with self.hold_sync():
            self.tile = _image_bytes(image)
            self.tile_peaks = peaks.contiguous().numpy().tobytes()
            self.tile_box = box + [pool]

    @traitlets.observe("zoom")
    def _on_zoom(self, change):
        if self.tokens and self._pooled and (self.shown_layer, self.shown_head) == (self.layer, self.head):
            self._show_tile()

    def _fill_lens(self):
        """The lens of LENS_WINDOW positions from lens_start (the last ones by default): each position costs
        a vocabulary-sized matmul per layer, so only the window in view is read out. The forward pass's
        residual streams are kept for the next window."""
        if self.lens_error:
            return
        n = len(self.tokens)
        start = max(0, n - LENS_WINDOW) if self.lens_start < 0 else min(self.lens_start, max(0, n - LENS_WINDOW))
        if self.lens and self.lens["start"] == start:
            return
        if self._hidden is None:
            self._hidden = lens_inputs(self._loaded, self._text)[1]
        target_id, pieces = target_token(self._loaded.tokenizer, self._target) if self._target else (None, 0)
        window = slice(start, min(n, start + LENS_WINDOW))
        ids, probs, _ = read_out(self._loaded, self._hidden, window, TOP_K, None)
        decode = Decoder(self._loaded.tokenizer)
        lens = {
            "rows": ["embeddings"] + [f"layer {i}" for i in range(len(self._hidden) - 1)],
            "start": start,
            "tokens": [[[decode(i) for i in position] for position in row] for row in ids.tolist()],
            "probs": np.round(probs.numpy(), 4).tolist(),
        }
        if target_id is not None:  # that token's probability and rank after the last position, per row
            _, _, (target_probs, target_ranks) = read_out(self._loaded, self._hidden, slice(n - 1, n), 1, target_id)
            lens["target"] = {
                "text": self._target,
                "token": decode(target_id),
                "pieces": pieces,
                "probs": target_probs[:, -1].tolist(),
                "ranks": target_ranks[:, -1].tolist(),
            }
        self.lens = lens

    @traitlets.observe("lens_start")
    def _on_lens_start(self, change):
        if self.view == "lens" and self.tokens:
            self._fill_lens()

    # --- the static snapshot a saved notebook keeps ---
    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)  # anywidget: (data, metadata)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        return {**data, "text/html": self.static_html()}, metadata

    def static_html(self) -> str:
        """The current state as self-contained HTML, no script: the view, layer, head(s) and zoom the user
        left, in colours that follow the theme (text inherits it, the pictures are transparent)."""
        heads = self._heads_label()
        if self.view == "lens" and (self.lens or self.lens_error):
            body, title = lens_table(self.lens, self.tokens, self.lens_error), "logit lens"
        elif self.view == "model":
            self._overview()
            assert self.capture.thumbnails is not None  # filled by _overview
            body = _thumbnail_grid(self.capture.thumbnails)
            title = f"model view · {self.num_layers} layers × {self.num_heads} heads"
        elif self.view == "head":
            body, title = self._head_lines(), f"head view · layer {self.layer} · {heads}"
        else:
            r0, c0, span = self._zoom_box()
            body = _matrix_figure(
                self._matrix_in_sight(r0, c0, span), self.tokens[r0 : r0 + span], self.tokens[c0 : c0 + span]
            )
            zoomed = (
                f" · zoomed to rows {r0}..{r0 + span - 1}, columns {c0}..{c0 + span - 1}"
                if span < len(self.tokens)
                else ""
            )
            title = f"layer {self.layer} · {heads}{zoomed}"
        zoom = ",".join(str(v) for v in self._zoom_box())
        return (
            f'<div class="llm-attention-static" data-view="{self.view}" data-layer="{self.layer}" '
            f'data-head="{self.head}" data-heads="{",".join(map(str, self.head_set))}" data-zoom="{zoom}" '
            f'style="font-family:sans-serif;font-size:12px;color:inherit;background:transparent;padding:4px">'
            f'<div style="font-weight:600;margin-bottom:4px">{html.escape(title)} · {len(self.tokens)} tokens '
            f'<span style="font-weight:400;opacity:0.75">(saved snapshot: run the cell '
            f"for the interactive view)</span></div>{body}</div>"
        )

    def _matrix_in_sight(self, r0: int, c0: int, span: int) -> np.ndarray:
        """The box's picture: the exact map's cells, or for a long text the tile (or the overview's pixels)."""
        if not self._pooled:
            return self.shown.numpy()[r0 : r0 + span, c0 : c0 + span]
        self._show()
        if "tile" in self._images:
            return self._images["tile"].numpy()
        pool = self.weights_pool
        rows, columns = slice(r0 // pool, -(-(r0 + span) // pool)), slice(c0 // pool, -(-(c0 + span) // pool))
        return self._images["overview"].numpy()[rows, columns]

    def _heads_label(self) -> str:
        if self.head >= 0:
            return f"head {self.head}"
        if self.view != "head" or not self.head_set:
            return "mean of heads"
        note = " (top 3 by attention entropy)" if self.head_set == self.entropy_heads else ""
        return f"heads {', '.join(map(str, self.head_set))}{note}"

    def _zoom_box(self) -> tuple[int, int, int]:
        n = len(self.tokens)
        if len(self.zoom) != 3:
            return 0, 0, n
        span = max(1, min(n, round(self.zoom[2])))
        r0 = max(0, min(n - span, int(self.zoom[0])))
        c0 = max(0, min(n - span, int(self.zoom[1])))
        return r0, c0, span

    def _head_lines(self) -> str:
        """The head view as SVG: the drawn heads' lines from the kept token (all tokens up to 40)."""
        n = len(self.tokens)
        drawn = [self.head] if self.head >= 0 else (self.head_set or [-1])
        sources = [self.selected_token] if self.selected_token >= 0 else (range(n) if n <= 40 else [n - 1])
        row, width, column = 18, 560, 150
        lines = []
        for h in drawn:
            weights = self._map(self.layer, h)
            scaled = weights / weights.amax(-1, keepdim=True).clamp_min(1e-12)
            colour = "#1976d2" if h < 0 else HEAD_COLOURS[h % len(HEAD_COLOURS)]
            for i in sources:
                for j in range(n):
                    v = float(scaled[i, j])
                    if v >= 0.04:
                        lines.append(
                            f"<line x1='{column}' y1='{i * row + 9}' x2='{width - column}' "
                            f"y2='{j * row + 9}' stroke='{colour}' stroke-opacity='{v:.2f}' "
                            f"stroke-width='2' data-head='{h}'/>"
                        )
        labels = "".join(
            f"<text x='{column - 6}' y='{i * row + 13}' text-anchor='end'>{short_token(t, 40)}</text>"
            f"<text x='{width - column + 6}' y='{i * row + 13}'>{short_token(t, 40)}</text>"
            for i, t in enumerate(self.tokens)
        )
        return (
            f"<svg class='llm-head-static' width='{width}' height='{n * row + 4}' "
            f"xmlns='http://www.w3.org/2000/svg' fill='currentColor' font-family='monospace' font-size='11'>"
            f"{''.join(lines)}{labels}</svg>"
        )


HEAD_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#ad494a",
]  # as attention.js (d3's category10, then two)


def _thumbnail_grid(thumbnails: torch.Tensor) -> str:
    """Every layer × head pooled map in one transparent PNG (a pixel gap between maps)."""
    layers, heads, t, _ = thumbnails.shape
    scaled = thumbnails / thumbnails.amax(-1, keepdim=True).clamp_min(1e-12)
    alpha = np.zeros((layers * (t + 1), heads * (t + 1)), dtype=np.float32)
    for layer in range(layers):
        for head in range(heads):
            alpha[layer * (t + 1) : layer * (t + 1) + t, head * (t + 1) : head * (t + 1) + t] = scaled[
                layer, head
            ].numpy()
    scale = 2
    image = _png(_rgba(np.kron(alpha, np.ones((scale, scale), dtype=np.float32))))
    return (
        f'<div style="font-size:11px;opacity:0.75">rows: layers 0..{layers - 1}, columns: heads 0..{heads - 1}'
        f'</div><img class="llm-model-static" alt="model view" src="{image}" style="image-rendering:pixelated">'
    )


def _png(rgba: np.ndarray) -> str:
    """An (h, w, 4) uint8 image as a PNG data URI (zlib only: no imaging library needed)."""
    height, width, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


ACCENT = np.array([25, 118, 210], dtype=np.float32)  # JupyterLab's --jp-brand-color1


def _rgba(values: np.ndarray) -> np.ndarray:
    """Share of the row's max (0..1) -> the accent colour with that opacity on a square-root scale (as the live
    view): transparent where there is no attention, so the theme's background shows (no white block in Dark)."""
    strength = np.sqrt(np.clip(values, 0, 1))[..., None]
    colour = np.broadcast_to(ACCENT, values.shape + (3,))
    return np.concatenate([colour, 255 * strength], -1).round().astype(np.uint8)


def _matrix_figure(
    matrix: np.ndarray, tokens: list[str], columns: list[str] | None = None, size: int | None = None
) -> str:
    columns = tokens if columns is None else columns
    n = len(tokens)
    size = size or min(480, max(200, 14 * n))
    scaled = matrix / np.clip(matrix.max(-1, keepdims=True), 1e-12, None)
    if max(scaled.shape) > STATIC_PIXELS:  # keep the saved notebook small: average-pool long texts
        scaled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(scaled)[None], STATIC_PIXELS)[0].numpy()
    image = _rgba(scaled)
    step = max(1, -(-n // (size // 12)))  # at most one label per 12 px
    cell, margin = size / n, 110
    rows = "".join(
        f'<div class="llm-axis-label llm-row-label" style="position:absolute;left:0;width:{margin - 4}px;'
        f'text-align:right;overflow:hidden;white-space:nowrap;top:{margin + (i + 0.5) * cell - 7:.1f}px">'
        f"{short_token(tokens[i], 14)}</div>"
        for i in range(0, n, step)
    )
    cols = "".join(
        f'<div class="llm-axis-label llm-col-label" style="position:absolute;top:0;'
        f"height:{margin - 4}px;"
        f"overflow:hidden;white-space:nowrap;writing-mode:vertical-rl;transform:rotate(180deg);"
        f'left:{margin + (j + 0.5) * cell - 7:.1f}px">{short_token(columns[j], 14)}</div>'
        for j in range(0, n, step)
    )
    legend = (
        '<div style="display:flex;align-items:center;gap:6px;margin-top:6px">0<span style="display:inline-block;'
        "width:140px;height:10px;border:1px solid rgba(128,128,128,0.6);"
        "background:linear-gradient(to right,"
        f'transparent,rgb({",".join(str(int(c)) for c in ACCENT)}))"></span>1 · attention as a share of '
        "its row's maximum (square-root scale); rows: query tokens, columns: key tokens</div>"
    )
    return (
        f'<div style="position:relative;width:{margin + size + 4}px;height:{margin + size + 2}px;'
        f'font-family:monospace;font-size:11px">{rows}{cols}<img alt="attention matrix" src="{_png(image)}" '
        f'style="position:absolute;left:{margin}px;top:{margin}px;width:{size}px;height:{size}px;'
        f'image-rendering:pixelated;border:1px solid rgba(128,128,128,0.6)"></div>{legend}'
    )


# --- bertviz, for an online browser ---------------------------------------------------------


def to_bertviz(captured: attention.AttentionCapture) -> list[torch.Tensor]:
    """The captured layers in bertviz's format: a list of (batch=1, heads, n, n) tensors."""
    return [captured.weights[layer].unsqueeze(0) for layer in captured.layers]


BERTVIZ_OFFLINE = (
    "bertviz's views load require.js, d3 and jQuery from cdnjs.cloudflare.com at display time, "
    "so they stay blank offline; showing llm-magics' own view of the same attention instead "
    "(llm_magics.views.attention.bertviz_html(...) still returns bertviz's HTML for an online browser)"
)


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
