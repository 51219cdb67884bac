"""The logit lens' saved-notebook table: each layer's likeliest next token per position."""
from __future__ import annotations

import html

from .html import short_token


def lens_table(lens: dict, tokens: list[str], error: str) -> str:
    if error:
        return f"<div>{html.escape(error)}</div>"
    header = "".join(f'<th style="padding:2px 4px;font-weight:400">{short_token(t)}</th>' for t in tokens)
    body = []
    for name, guesses, probs in zip(lens["rows"], lens["tokens"], lens["probs"]):
        cells = "".join(
            f'<td title="{html.escape(", ".join(f"{t!r} {p:.3f}" for t, p in zip(g, q)))}" style="padding:1px 4px;'
            f'background:rgba(25,118,210,{0.85 * q[0]:.3f})">{short_token(g[0])}</td>' for g, q in zip(guesses, probs))
        body.append('<tr><th style="text-align:right;padding:1px 6px;font-weight:400;white-space:nowrap">'
                    f'{name}</th>'
                    f'{cells}</tr>')
    return (f'<table class="llm-lens-static" style="border-collapse:collapse;font-family:monospace;font-size:11px">'
            f'<tr><th></th>{header}</tr>{"".join(body)}</table>'
            '<div>each cell: the layer\'s likeliest next token after the column\'s token; '
            'shade = its probability</div>')
