"""The logit lens' saved-notebook table: each layer's likeliest next token per position."""

from __future__ import annotations

import html

from ..base.html import short_token


def lens_table(lens: dict, tokens: list[str], error: str) -> str:
    if error:
        return f"<div>{html.escape(error)}</div>"
    start = lens.get("start", 0)  # the widget reads out a window of positions
    tokens = tokens[start : start + len(lens["tokens"][0])]
    # Whole tokens (no "·strugg" cuts): the table widens instead.
    header = "".join(
        f'<th style="padding:2px 4px;font-weight:400;white-space:pre">{short_token(t, 64)}</th>' for t in tokens
    )
    body = []
    for name, guesses, probs in zip(lens["rows"], lens["tokens"], lens["probs"]):
        cells = "".join(
            f'<td title="{html.escape(", ".join(f"{t!r} {p:.3f}" for t, p in zip(g, q)))}" style="padding:1px 4px;'
            f'white-space:pre;background:rgba(25,118,210,{0.85 * q[0]:.3f})">{short_token(g[0], 64)}</td>'
            for g, q in zip(guesses, probs)
        )
        body.append(
            '<tr><th style="text-align:right;padding:1px 6px;font-weight:400;white-space:nowrap">'
            f"{name}</th>"
            f"{cells}</tr>"
        )
    return (
        target_table(lens.get("target"))
        + '<table class="llm-lens-static" style="border-collapse:collapse;font-family:monospace;font-size:11px">'
        f"<tr><th></th>{header}</tr>{''.join(body)}</table>"
        "<div>each cell: the layer's likeliest next token after the column's token; "
        "shade = its probability</div>"
    )


def target_table(target: dict | None) -> str:
    """Target mode: the followed token's probability and rank after the last position, layer by layer."""
    if not target:
        return ""
    rows = "".join(
        f'<tr><td style="padding:0 6px">{"embeddings" if r == 0 else f"layer {r - 1}"}</td>'
        f'<td style="padding:0 6px;text-align:right">{p:.4f}</td>'
        f'<td style="padding:0 6px;text-align:right">{rank}</td></tr>'
        for r, (p, rank) in enumerate(zip(target["probs"], target["ranks"]))
    )
    return (
        f'<div class="llm-lens-target-static"><b>target {short_token(target["token"], 64)}</b>: its probability '
        f'and rank as the next token after the last position<table style="font-family:monospace;font-size:11px">'
        f"<tr><th>row</th><th>probability</th><th>rank</th></tr>{rows}</table></div>"
    )
