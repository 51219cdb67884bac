"""`%%llm lr-find`: fastai's learning-rate range test on the model and data of a train or finetune run.

The lr grows exponentially from `start_lr` to `end_lr` over `num_steps` optimizer steps (step k uses
start_lr * (end_lr / start_lr) ** (k / num_steps), k = 0..num_steps-1, as fastai's `LRFinder`); the loss is
smoothed with fastai's debiased moving average (beta 0.98) and the sweep stops once the smoothed loss passes
4x its best. The suggestions follow fastai's `valley` (the default), `minimum` (the lowest loss's lr / 10)
and `steep` (the steepest descent in log lr), computed on the points fastai uses (the first tenth of the
planned steps and the last five points left out). The sweep runs on a copy of the model, and the global
RNG state is put back afterwards, so the session's model and random streams are exactly as before.
"""

from __future__ import annotations

import math

import numpy as np

from .base.errors import LLMError

SUGGESTIONS = ("valley", "minimum", "steep")
BETA = 0.98  # fastai's AvgSmoothLoss
STOP_FACTOR = 4.0


class SweepWatcher:
    """A step callback: the lr each step used, the smoothed loss, and a stop at 4x the best smoothed loss.
    When the run ends (close) it computes the suggestions into the run's result."""

    def __init__(self, session, start_lr: float, end_lr: float, num_steps: int, suggestion: str):
        self.session, self.suggestion = session, suggestion
        self.start_lr, self.end_lr, self.num_steps = start_lr, end_lr, num_steps
        self.lrs: list[float] = []
        self.losses: list[float] = []  # smoothed
        self.best = math.inf
        self._average, self._count = 0.0, 0
        self.result = None

    def lr_at(self, step: int) -> float:
        """The lr optimizer step `step` (1-based) used."""
        return self.start_lr * (self.end_lr / self.start_lr) ** ((step - 1) / self.num_steps)

    def __call__(self, row: dict, result) -> None:
        self.result = result
        self._count += 1
        self._average = BETA * self._average + (1 - BETA) * row["loss"]
        smoothed = self._average / (1 - BETA**self._count)
        self.lrs.append(self.lr_at(row["step"]))
        self.losses.append(smoothed)
        row["lr_used"], row["smoothed_loss"] = self.lrs[-1], smoothed
        if smoothed < self.best:
            self.best = smoothed
        if not math.isfinite(smoothed) or smoothed > STOP_FACTOR * self.best:
            self.session.stop()  # diverged: the rest of the sweep would tell nothing

    def close(self) -> None:
        result = self.result
        if result is None:
            return
        suggestions = suggest(self.lrs, self.losses, self.num_steps)
        result.metrics = {f"lr_{name}": lr for name, (lr, _) in suggestions.items()}
        result.suggestions = suggestions
        result.suggested_lr = suggestions[self.suggestion][0] if suggestions else None
        result.sweep = {"lr": list(self.lrs), "smoothed_loss": list(self.losses)}


def suggest(lrs: list[float], losses: list[float], num_steps: int) -> dict[str, tuple[float, tuple[float, float]]]:
    """{name: (suggested lr, (lr, loss) of the point to mark)} on fastai's window of the sweep."""
    xs, ys = np.asarray(lrs[num_steps // 10 : -5], dtype=float), np.asarray(losses[num_steps // 10 : -5], dtype=float)
    bad = np.flatnonzero(~np.isfinite(ys))
    if len(bad):
        xs, ys = xs[: bad[0]], ys[: bad[0]]
    if len(ys) < 2:
        return {}
    return {"valley": valley(xs, ys), "minimum": minimum(xs, ys), "steep": steep(xs, ys)}


def valley(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, tuple[float, float]]:
    """fastai's valley: the longest strictly decreasing run of losses (as a subsequence), and the lr two
    thirds of the way down it... precisely start + int(len/3) + int(len/6)."""
    n = len(losses)
    longest = np.ones(n, dtype=int)  # the longest decreasing subsequence ending at each point
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            longest[i] = 1 + longest[:i][higher].max()
    end = int(np.argmax(longest))  # the first point where the longest one ends
    start = end - int(longest[end])
    third = (end - start) / 3
    index = start + int(third) + int(third / 2)
    return float(lrs[index]), (float(lrs[index]), float(losses[index]))


def minimum(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, tuple[float, float]]:
    """fastai's minimum: a tenth of the lr at the lowest loss (the point marked is the minimum itself)."""
    index = int(np.argmin(losses))
    return float(lrs[index]) / 10, (float(lrs[index]), float(losses[index]))


def steep(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, tuple[float, float]]:
    """fastai's steep: where the loss falls fastest per unit of log lr."""
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    index = int(np.argmin(slopes))
    return float(lrs[index]), (float(lrs[index]), float(losses[index]))


def check(start_lr: float, end_lr: float, num_steps: int, suggestion: str) -> None:
    if not (0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise LLMError(f"--start-lr must be > 0 and below --end-lr; got {start_lr:g} and {end_lr:g}")
    if num_steps < 10:
        raise LLMError(
            f"--num-steps must be at least 10 (the suggestions skip the first tenth and the last 5); got {num_steps}"
        )
    if suggestion not in SUGGESTIONS:
        raise LLMError(f"unknown --suggestion {suggestion!r}: use {', '.join(SUGGESTIONS)}")


def figure(result) -> dict:
    """Smoothed loss against lr on a log axis, the suggestions marked: a plotly mime bundle (saved in the
    notebook) with an inline SVG fallback for viewers without plotly."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from .base.html import GRID, PLOT_CONFIG, PLOT_THEME, svg_chart

    sweep = getattr(result, "sweep", None) or {"lr": [], "smoothed_loss": []}
    fig = go.Figure(
        layout=dict(
            **PLOT_THEME,
            autosize=True,
            height=340,
            margin=dict(l=55, r=20, t=60, b=45),
            xaxis=dict(title="learning rate (log)", type="log", gridcolor=GRID, exponentformat="e"),
            yaxis=dict(title="smoothed loss", gridcolor=GRID),
            legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"),
        )
    )
    fig.add_scatter(
        x=sweep["lr"],
        y=sweep["smoothed_loss"],
        name="loss (smoothed)",
        mode="lines",
        line=dict(color="#1f77b4", width=2),
    )
    colours = {"valley": "#e4572e", "minimum": "#2ca02c", "steep": "#9467bd"}
    for name, (lr, (x, y)) in (getattr(result, "suggestions", None) or {}).items():
        fig.add_scatter(
            x=[x],
            y=[y],
            mode="markers",
            name=f"{name}: {lr:.2e}",
            marker=dict(size=11, color=colours[name], symbol="circle"),
        )
    text = (
        (
            f"lr-find: suggested lr {result.suggested_lr:.2e} (valley, minimum/10, steep: "
            + ", ".join(f"{lr:.1e}" for lr, _ in result.suggestions.values())
            + ")"
        )
        if getattr(result, "suggested_lr", None)
        else "lr-find: too few steps for a suggestion"
    )
    fig.update_layout(title=dict(text=text, font=dict(size=13), x=0, xanchor="left"))
    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
    bundle["application/vnd.plotly.v1+json"]["config"] = PLOT_CONFIG
    logs = [math.log10(lr) for lr in sweep["lr"]]
    bundle["text/html"] = (
        f"<div class='llm-lr-find'><div>{text}</div>"
        + svg_chart([("smoothed loss vs log10 lr", logs, sweep["smoothed_loss"], "#1f77b4")])
        + "</div>"
    )
    bundle["text/plain"] = text
    return bundle
