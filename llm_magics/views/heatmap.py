"""The heatmap widget of the "why" views (activation patching, attribution), in the attention views' family:
anywidget with its JS in this package, JupyterLab's theme colours, and a static 'text/html' snapshot of the
current state (normalisation and selected cell included) for saved notebooks.

A click on a cell sets `selected`; the kernel answers with `detail`: the patched run's top-5 next tokens
(patching) or the output token's top alternatives and step scores (attribution).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import anywidget
import traitlets

from ..base.drawing import draws
from ..base.html import short_token
from ..inspect.attribution import UNITS, AttributionResult
from ..inspect.patching import PatchingResult
from . import assets

POSITIVE, NEGATIVE = (25, 118, 210), (230, 97, 0)  # blue / orange: a colour-blind-safe pair


class HeatmapView(anywidget.AnyWidget):
    _esm = assets.esm("heatmap.js")
    _css = assets.css("heatmap.css")

    title = traitlets.Unicode("").tag(sync=True)
    hint = traitlets.Unicode("").tag(sync=True)
    units = traitlets.Unicode("").tag(sync=True)  # what the numbers are, named by the colour legend
    warning = traitlets.Unicode("").tag(sync=True)  # one line shown above the grid (IG has not converged)
    rows = traitlets.List(traitlets.Unicode()).tag(sync=True)
    columns = traitlets.List(traitlets.Unicode()).tag(sync=True)
    row_notes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    values = traitlets.List(traitlets.List()).tag(sync=True)  # rows x columns; None where there is no value
    normalizable = traitlets.Bool(False).tag(sync=True)
    normalize = traitlets.Bool(False).tag(sync=True)  # each row scaled to its largest |value|
    selected = traitlets.List(traitlets.Int()).tag(sync=True)  # [row, column] or []
    detail_title = traitlets.Unicode("").tag(sync=True)
    detail = traitlets.List(traitlets.List()).tag(sync=True)  # [[token, probability], ...] for the selection

    def __init__(self, describe: Callable[[int, int], tuple[str, list]] | None = None, **traits):
        super().__init__(**traits)
        self._describe = describe

    @traitlets.validate("selected")
    def _valid_selection(self, proposal):
        cell = list(proposal["value"])
        if cell and not (len(cell) == 2 and 0 <= cell[0] < len(self.rows) and 0 <= cell[1] < len(self.columns)):
            raise traitlets.TraitError(f"selected must be [row, column] inside {len(self.rows)} x {len(self.columns)}")
        return cell

    @traitlets.observe("selected")
    def _on_select(self, change):
        if not change["new"] or self._describe is None:
            self.detail_title, self.detail = "", []
            return
        with self.hold_sync():
            self.detail_title, self.detail = self._describe(*change["new"])

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        return {**data, "text/html": self.static_html()}, metadata

    def shown_values(self) -> list[list[float | None]]:
        if not self.normalize:
            return self.values
        shown = []
        for row in self.values:
            peak = max((abs(v) for v in row if v is not None), default=0.0)
            shown.append([v if v is None or not peak else v / peak for v in row])
        return shown

    def static_html(self) -> str:
        """The current state as self-contained HTML (no script), following the notebook's theme."""
        values = self.shown_values()
        finite = [abs(v) for row in values for v in row if v is not None]
        peak = max(finite, default=1.0) or 1.0
        selected = tuple(self.selected) if self.selected else None
        head = "".join(
            f'<th class="llm-col" style="writing-mode:vertical-rl;transform:rotate(180deg);'
            f'font-weight:400;max-height:110px;overflow:hidden;white-space:pre">{short_token(c)}</th>'
            for c in self.columns
        )
        body = []
        for r, (name, row) in enumerate(zip(self.rows, values)):
            note = f" {self.row_notes[r]}" if r < len(self.row_notes) and self.row_notes[r] else ""
            cells = []
            for c, v in enumerate(row):
                raw = self.values[r][c]
                outline = "outline:2px solid #ffb74d;" if selected == (r, c) else ""
                title = "" if raw is None else f' title="{html.escape(self.columns[c])}: {raw:.4f}"'
                cells.append(f'<td{title} style="width:18px;height:16px;{outline}background:{_colour(v, peak)}"></td>')
            body.append(
                f'<tr><th style="text-align:right;font-weight:400;white-space:pre;padding-right:4px">'
                f"{short_token(name)}{html.escape(note)}</th>{''.join(cells)}</tr>"
            )
        detail = ""
        if self.detail:
            items = "".join(f"<tr><td>{short_token(t)}</td><td>{p:.4f}</td></tr>" for t, p in self.detail)
            detail = (
                f'<div style="margin-top:6px"><b>{html.escape(self.detail_title)}</b>'
                f'<table style="font-family:monospace;font-size:11px">{items}</table></div>'
            )
        scale = "each row scaled to its largest |value|" if self.normalize else f"largest |value| {peak:.4g}"
        warning = (
            f'<div class="llm-warning" style="color:var(--jp-error-color1, #d32f2f);font-weight:600;margin-bottom:4px">'
            f"⚠ {html.escape(self.warning)}</div>"
            if self.warning
            else ""
        )
        return (
            f'<div class="llm-heatmap-static" data-normalize="{int(self.normalize)}" style="font-family:sans-serif;'
            f"font-size:12px;color:inherit;background:transparent;"
            f'padding:4px"><div style="font-weight:600;margin-bottom:4px">{html.escape(self.title)} '
            f'<span style="font-weight:400;opacity:0.75">(saved snapshot: run the cell '
            f"for the interactive view)</span></div>{warning}"
            f'<table style="border-collapse:separate;border-spacing:1px;font-family:monospace;font-size:11px">'
            f"<tr><th></th>{head}</tr>{''.join(body)}</table>"
            f"{_legend(self.units, scale)}"
            f"{detail}</div>"
        )


def _legend(units: str, scale: str) -> str:
    """The colour scale's key: which colour is positive, which negative, what the numbers are."""

    def swatch(rgb) -> str:
        r, g, b = rgb
        return (
            f'<span style="display:inline-block;width:12px;height:12px;vertical-align:middle;'
            f'background:rgb({r},{g},{b});margin:0 3px"></span>'
        )

    what = f"{html.escape(units)}; " if units else ""
    return (
        f'<div class="llm-legend" style="opacity:0.85;margin-top:2px">'
        f'{swatch(POSITIVE)}<span class="llm-legend-positive">blue: positive</span> '
        f'{swatch(NEGATIVE)}<span class="llm-legend-negative">orange: negative</span> · {what}{scale}</div>'
    )


def _colour(value: float | None, peak: float) -> str:
    if value is None:
        return "transparent"
    share = min(1.0, abs(value) / peak)
    r, g, b = POSITIVE if value >= 0 else NEGATIVE
    return f"rgba({r},{g},{b},{0.08 + 0.92 * math.sqrt(share):.3f})"


def _cells(matrix) -> list[list[float | None]]:
    return [[None if math.isnan(float(v)) else round(float(v), 6) for v in row] for row in matrix.tolist()]


@draws(PatchingResult)
def patching_view(result: PatchingResult) -> HeatmapView:
    """Layers x positions (or heads); a click shows that patched run's top-5 next tokens."""

    def describe(row: int, column: int):
        where = result.columns[column]
        if math.isnan(float(result.scores[row, column])):
            return f"layer {row} was not patched", []
        probs = result.top_probs[row, column].tolist()
        return (
            f"layer {row}, {where} patched: top next tokens",
            [[token, round(p, 6)] for token, p in zip(result.top_tokens[row][column], probs)],
        )

    return HeatmapView(
        describe=describe,
        units="share of the clean run's logit difference restored (0 = corrupted, 1 = clean)",
        title=f"activation patching · {result.site} · {result.answer!r} vs "
        f"{result.wrong!r} · score 0 = corrupted, 1 = clean",
        rows=[f"layer {i}" for i in range(result.scores.shape[0])],
        columns=result.columns,
        values=_cells(result.scores),
        hint="click a cell for that patched run's top-5 next tokens",
    )


@draws(AttributionResult)
def attribution_view(result, normalize: bool = False) -> HeatmapView:
    """Output tokens x input tokens, each row labelled with its step scores; hover gives the values, a
    click the output token's likeliest alternatives."""

    def describe(row: int, column: int):
        step = result.step_scores[row]
        return (
            f"output {row} {result.targets[row]!r}: p = {step['probability']:.4f}, entropy "
            f"{step['entropy']:.3f} nats; its likeliest alternatives",
            [[t, round(p, 6)] for t, p in step["top"]],
        )

    notes = [f"p={s['probability']:.2f} H={s['entropy']:.2f}" for s in result.step_scores]
    delta = f" · IG delta ≤ {max(abs(d) for d in result.deltas):.3g}" if result.deltas else ""
    return HeatmapView(
        describe=describe,
        title=f"attribution · {result.method}{delta} · rows: output tokens (p, entropy), columns: input tokens",
        units=UNITS.get(result.method, ""),
        warning=result.convergence_warning(),
        rows=result.targets,
        columns=result.tokens,
        row_notes=notes,
        values=_cells(result.scores),
        normalizable=True,
        normalize=normalize,
        hint="hover a cell for its score; click for the output token's alternatives",
    )
