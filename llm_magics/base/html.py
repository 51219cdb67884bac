"""HTML and plot helpers every view shares: the theme-following plot layout, a self-contained SVG line
chart (the saved-notebook fallback), plain text from markup, durations."""

from __future__ import annotations

import html
import math
import re

# The charts follow the page's theme: transparent backgrounds, neutral grid lines, and a grey font that the
# llm-magics JupyterLab extension recolours from the theme's CSS variables (it finds our figures by `meta`).
PLOT_META = "llm-magics"
GRID = "rgba(128,128,128,0.25)"
PLOT_THEME = dict(
    paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", font=dict(color="#808080"), meta=PLOT_META
)
PLOT_CONFIG = {"responsive": True, "displaylogo": False}
# Learning-rate ticks: 0.001, 2e−4 (SI's "3m" and "500µ" read as minutes beside an ETA).
LR_TICKS = dict(exponentformat="e", showexponent="all")


def plain_text(markup: str) -> str:
    return html.unescape(re.sub("<[^>]+>", "", markup))


def svg_chart(series: list[tuple[str, list, list, str]], width: int = 800, height: int = 260) -> str:
    """A small self-contained line chart (inline SVG, scales to the output width, colours from the theme)."""
    points = [(x, y) for _, xs, ys, _ in series for x, y in zip(xs, ys) if math.isfinite(y)]
    if not points:
        return ""
    left, right, top, bottom = 50, 10, 24, 28
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def at(x, y):
        return (
            left + (x - x0) / (x1 - x0) * (width - left - right),
            top + (y1 - y) / (y1 - y0) * (height - top - bottom),
        )

    text = "fill='currentColor' font-size='11'"
    parts = [
        f"<svg viewBox='0 0 {width} {height}' width='100%' style='max-width:{width}px' "
        f"xmlns='http://www.w3.org/2000/svg' role='img'>",
        f"<rect x='{left}' y='{top}' width='{width - left - right}' height='{height - top - bottom}' "
        f"fill='none' stroke='{GRID}'/>",
        f"<text x='{left - 4}' y='{top + 4}' text-anchor='end' {text}>{y1:.3g}</text>",
        f"<text x='{left - 4}' y='{height - bottom}' text-anchor='end' {text}>{y0:.3g}</text>",
        f"<text x='{left}' y='{height - 8}' {text}>{x0:g}</text>",
        f"<text x='{width - right}' y='{height - 8}' text-anchor='end' {text}>step {x1:g}</text>",
    ]
    legend_x = left
    for name, xs, ys, colour in series:
        coords = " ".join("{:.1f},{:.1f}".format(*at(x, y)) for x, y in zip(xs, ys) if math.isfinite(y))
        if not coords:
            continue
        parts.append(f"<polyline points='{coords}' fill='none' stroke='{colour}' stroke-width='1.5'/>")
        if len(xs) < 30:
            parts.extend(
                "<circle cx='{:.1f}' cy='{:.1f}' r='3' fill='{c}'/>".format(*at(x, y), c=colour) for x, y in zip(xs, ys)
            )
        parts.append(
            f"<rect x='{legend_x}' y='8' width='14' height='3' fill='{colour}'/>"
            f"<text x='{legend_x + 18}' y='13' {text}>{html.escape(name)}</text>"
        )
        legend_x += 30 + 7 * len(name)
    return "".join(parts) + "</svg>"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def colour_legend(peak: float, colour: str) -> str:
    return (
        '<div style="display:flex;align-items:center;gap:6px;font-size:11px;margin-top:4px">0'
        f'<span style="display:inline-block;width:120px;height:10px;border:1px solid '
        f'var(--jp-border-color1,#bdbdbd);background:linear-gradient(to right,transparent,{colour})"></span>'
        f"{peak:.3f}</div>"
    )


def short_token(token: str, limit: int = 24) -> str:
    """A token as a short, visible, escaped label: spaces as ·, newlines as \\n, at most `limit` characters."""
    return html.escape(token.replace("\n", "\\n").replace(" ", "·")[:limit] or "∅")


def explain_html(explanation: dict) -> str:
    """--explain: attention rollout and gradient × input side by side, one row each over the same tokens
    and on one colour scale (both are shares of 1 over the non-sink tokens), the sinks named, and a line
    saying how far the two agree (Spearman's rank correlation)."""
    tokens, sinks = explanation["tokens"], explanation["sinks"]
    rows = [("attention rollout", explanation["rollout"])]
    if "saliency" in explanation:
        rows.append(("gradient × input", explanation["saliency"]))
    peak = max(max(scores) for _, scores in rows) or 1.0
    colour = "255,140,0"
    header = "".join(
        f'<th class="llm-explain-token" style="font-weight:400;padding:1px 3px;white-space:pre'
        f'{";text-decoration:line-through" if i in sinks else ""}">{short_token(t, 40)}</th>'
        for i, t in enumerate(tokens)
    )
    body = []
    for name, scores in rows:
        cells = "".join(
            f'<td title="{html.escape(tokens[i])}: {v:.4f}{" (sink, dropped)" if i in sinks else ""}" '
            f'style="padding:1px 3px;text-align:center;background:rgba({colour},{0.85 * v / peak:.3f})">'
            f"{v:.2f}</td>"
            for i, v in enumerate(scores)
        )
        body.append(
            f'<tr class="llm-explain-row" data-name="{name}"><th style="text-align:right;'
            f'font-weight:400;white-space:nowrap;padding-right:6px">{name}</th>{cells}</tr>'
        )
    if sinks:
        named = ", ".join(
            f"{short_token(t, 40)} ({i}, {100 * s:.0f}% of attention)"
            for i, t, s in zip(sinks, explanation["sink_tokens"], explanation.get("sink_shares") or [0] * len(sinks))
        )
        sink_line = f"attention sinks (dropped from both rows, struck through): {named}"
    else:
        sink_line = "no attention sink found (no position draws more than 30% of the attention on average)"
    lines = [sink_line]
    if "agreement" in explanation:
        rho = explanation["agreement"]
        verdict = ("agree" if rho >= 0.6 else "partly agree" if rho >= 0.3 else "disagree") if rho == rho else "?"
        predicted = html.escape(repr(explanation["predicted"]))
        lines.append(
            f"rollout and gradient × input {verdict}: Spearman rank correlation ρ = {rho:.2f} over the "
            f"{len(tokens) - len(sinks)} non-sink tokens (predicted: {predicted})"
        )
    notes = "".join(f'<div class="llm-explain-note">{line}</div>' for line in lines)
    return (
        f'<div class="llm-explain" style="font-family:monospace;font-size:12px;'
        f'color:var(--jp-ui-font-color1,#1f1f1f);background:var(--jp-layout-color0,transparent)">'
        f'<b style="font-family:sans-serif">why: {html.escape(explanation["target"])}</b>'
        f'<div style="overflow-x:auto"><table style="border-collapse:collapse"><tr><th></th>{header}</tr>'
        f"{''.join(body)}</table></div>{notes}{colour_legend(peak, f'rgba({colour},0.85)')}"
        f'<div style="font-family:sans-serif;font-size:11px">both rows: share of 1 over the non-sink tokens, '
        f"one scale</div></div>"
    )
