"""Notebook views: the live training chart and the sampling playground (ipywidgets + plotly)."""
from __future__ import annotations

import html
import math
import time

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from .generation import SamplingSettings
from .status import in_notebook  # noqa: F401  (lives there: known without importing plotly)

# The charts follow the page's theme: transparent backgrounds, neutral grid lines, and a grey font that the
# llm-magics JupyterLab extension recolours from the theme's CSS variables (it finds our figures by `meta`).
PLOT_META = "llm-magics"
_GRID = "rgba(128,128,128,0.25)"
_THEME = dict(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", font=dict(color="#808080"),
              meta=PLOT_META)
_CONFIG = {"responsive": True, "displaylogo": False}


class TrainingView:
    """Live loss / eval loss / learning-rate chart with tokens/s, ETA, a progress bar and Stop.

    Called once per optimizer step; redraws at most `max_redraws_per_second` so it never slows training.
    The smoothed loss is an exponential moving average debiased as TensorBoard does (divided by
    1 - smoothing^t), so it starts at the loss instead of climbing from zero or lagging far above it.
    """

    HEIGHT = 340

    def __init__(self, session, title: str = "training", max_redraws_per_second: float = 4.0,
                 smoothing: float = 0.9, max_points: int = 1000, compare: str | None = "auto"):
        self.session, self.title = session, title
        self.compare = compare  # earlier runs to overlay, faded: auto, last, all, none or ID,ID
        self.compared: list[dict] = []
        self.max_points = max_points  # per trace: the browser redraws the whole array on each update
        self.min_interval = 1.0 / max_redraws_per_second
        self.smoothing = smoothing
        self._ema = 0.0
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.lrs: list[float] = []
        self.eval_steps: list[int] = []
        self.eval_losses: list[float] = []
        self.redraws = 0
        self.best_step: int | None = None  # marked on the chart (early stopping)
        self._last_draw: float | None = None  # None: never drawn (perf_counter's origin is arbitrary)
        self._result = None
        self._handle = None  # the cell output, replaced by a static figure when training ends
        self.figure = go.FigureWidget(layout=self._layout(title=None))
        # the raw loss: light enough to read the smoothed line over it, strong enough to see in Dark
        self.figure.add_scatter(name="loss", mode="lines", line=dict(color="rgba(80,150,220,0.55)"))
        self.figure.add_scatter(name="loss (smoothed)", mode="lines", line=dict(color="#1f77b4", width=2))
        self.figure.add_scatter(name="eval loss", mode="lines+markers", line=dict(color="#e4572e"),
                                marker=dict(size=7))
        self.figure.add_scatter(name="learning rate", mode="lines", yaxis="y2",
                                line=dict(color="#9a9a9a", dash="dot"))
        self.header = widgets.HTML(f"<b>{html.escape(title)}</b>: starting…")
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="60%"))
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop",
                                          tooltip="Stop after the current step (the model and checkpoint are kept)")
        # The kernel is busy training, so the click message itself waits until the cell ends: in JupyterLab
        # and Notebook 7 the llm-magics extension turns a click on this class into a kernel interrupt,
        # which the loop handles as a stop after the current step. The Python handler serves API use.
        self.stop_button.add_class("llm-stop-training")
        self.stop_button.on_click(lambda _: self.session.stop())
        self.widget = widgets.VBox([widgets.HBox([self.header]), widgets.HBox([self.progress, self.stop_button]),
                                    self.figure], layout=widgets.Layout(width="100%"))
        self.widget.add_class("llm-training-view")

    def _layout(self, title) -> dict:
        """The same size and places live and static: full output width, legend above the plot, title above it."""
        return dict(autosize=True, height=self.HEIGHT, margin=dict(l=55, r=60, t=70, b=40), **_THEME,
                    title=title, xaxis=dict(title="step", gridcolor=_GRID, zerolinecolor=_GRID, tickformat="d"),
                    yaxis=dict(title="loss", gridcolor=_GRID, zerolinecolor=_GRID),
                    # lr: from 0 with SI ticks (3m = 3e-3), never a negative or odd tick
                    yaxis2=dict(title="learning rate", overlaying="y", side="right", showgrid=False,
                                range=[0, 1], tickformat="~s", tickmode="auto", nticks=5, zeroline=False),
                    legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"))

    def _ipython_display_(self):
        from IPython.display import display

        self._handle = display(self.mimebundle(), raw=True, display_id=True)

    def mimebundle(self) -> dict:
        """The live widget, and text/html of its current state: a saved notebook reopened without the kernel
        has no widget model and shows that instead (the llm-magics extension in JupyterLab, natively on
        GitHub and nbviewer). When training ends the output becomes the static figure."""
        return {**self.widget._repr_mimebundle_(), "text/html": self.fallback_html()}

    def __call__(self, row: dict, result) -> None:
        self._result = result
        self.steps.append(row["step"])
        self.losses.append(row["loss"])
        self._ema = self.smoothing * self._ema + (1 - self.smoothing) * row["loss"]
        self.smoothed.append(self._ema / (1 - self.smoothing ** len(self.steps)))
        self.lrs.append(row["lr"])
        if "eval_loss" in row:
            self.eval_steps.append(row["step"])
            self.eval_losses.append(row["eval_loss"])
        now = time.perf_counter()
        due = self._last_draw is None or now - self._last_draw >= self.min_interval
        if due or row["step"] == result.total_steps:
            self.redraw()
            self._last_draw = time.perf_counter()

    def redraw(self) -> None:
        result = self._result
        if result is None:
            return
        keep = self._shown_indices()
        steps = [self.steps[i] for i in keep]
        with self.figure.batch_update():
            raw, smooth, evals, lr = self.figure.data[:4]
            raw.x, raw.y = steps, [self.losses[i] for i in keep]
            smooth.x, smooth.y = steps, [self.smoothed[i] for i in keep]
            evals.x, evals.y = self.eval_steps, self.eval_losses
            lr.x, lr.y = steps, [self.lrs[i] for i in keep]
            self.figure.layout.yaxis2.range = [0, (max(self.lrs) or 1.0) * 1.1]
            self._mark_best(getattr(result, "best_step", None))
        self.header.value = self._header_html()
        step, total = self.steps[-1], result.total_steps
        self.progress.max, self.progress.value = total, step
        self.redraws += 1

    def on_record(self, record) -> None:
        """The run's folder is made: overlay the earlier runs asked for, each named by the options in which
        it differs from the others and from this run (e.g. `lr=0.003`)."""
        from . import runs as run_history

        self.compared = run_history.select(self.compare, record.info["kind"], record.info["options"], record.root,
                                           exclude=record.id)
        if not self.compared:
            return
        names = run_history.differing_options([record.info, *self.compared])
        self.this_run = run_history.label(record.info, names) if names else "this run"
        with self.figure.batch_update():
            self.figure.data[1].name = f"loss (smoothed, {self.this_run})"
            for info in self.compared:
                history = info["history"]
                self.figure.add_scatter(x=[row["step"] for row in history],
                                        y=run_history.smoothed([row["loss"] for row in history], self.smoothing),
                                        name=run_history.label(info, names) if names else info["id"], mode="lines",
                                        opacity=0.45, line=dict(width=1.5, dash="dot"),
                                        legendgroup="earlier runs", meta="llm-compare")

    def _mark_best(self, best_step: int | None) -> None:
        """Early stopping: a dashed line at the step of the best eval loss (the weights it restores)."""
        if best_step is None or self.best_step == best_step:
            return
        self.best_step = best_step
        self.figure.layout.shapes = [dict(type="line", xref="x", yref="paper", x0=best_step, x1=best_step, y0=0,
                                          y1=1, line=dict(color="#e4572e", dash="dash", width=1))]
        self.figure.layout.annotations = [dict(x=best_step, xref="x", y=1, yref="paper", text=f"best step {best_step}",
                                               showarrow=False, xanchor="left", yanchor="top",
                                               font=dict(size=11, color="#e4572e"))]

    def _header_html(self) -> str:
        result = self._result
        if result is None:
            return f"<b>{html.escape(self.title)}</b>: starting…"
        step, total = self.steps[-1], result.total_steps
        seconds_per_step = result.seconds / max(len(self.steps), 1)
        eta = seconds_per_step * (total - step)
        state = "stopped" if result.interrupted else ("done" if step >= total else f"ETA {_duration(eta)}")
        evaluated = f" · eval loss {self.eval_losses[-1]:.4f} (step {self.eval_steps[-1]})" if self.eval_losses else ""
        return (f"<b>{html.escape(self.title)}</b>: step {step}/{total} · loss {self.losses[-1]:.4f}{evaluated}"
                f" · {result.tokens_per_second:,.0f} tokens/s · {state}")

    def _shown_indices(self) -> list[int]:
        """All steps, or at most max_points evenly spaced ones (the last always): long runs stay light."""
        count = len(self.steps)
        if count <= self.max_points:
            return list(range(count))
        stride = count / self.max_points
        return sorted({int(i * stride) for i in range(self.max_points)} | {count - 1})

    def close(self) -> None:
        self._pick_up_final_eval()
        self.redraw()
        self.stop_button.disabled = True
        if self._handle is not None and self._result is not None:
            # Swap the live widget for a plain plotly figure: saved in the notebook as JSON and drawn by
            # the plotly JupyterLab/Notebook extension with its bundled plotly.js, no kernel or CDN needed.
            self._handle.update(self.static_figure(), raw=True)

    def discard(self) -> None:
        """The run failed before its first step (bad data or option): leave no half-drawn chart behind."""
        if self._handle is not None:
            self._handle.update({"text/plain": ""}, raw=True)
        self.widget.close()

    def _pick_up_final_eval(self) -> None:
        """An evaluation at the step a run was stopped is in result.eval_history, not in a step row. Only
        measured points are drawn: a stop without --eval-data draws no eval point."""
        for entry in getattr(self._result, "eval_history", None) or []:
            if "eval_loss" in entry and entry["step"] not in self.eval_steps:
                self.eval_steps.append(entry["step"])
                self.eval_losses.append(entry["eval_loss"])

    def static_figure(self) -> dict:
        """The final chart as a plotly mime bundle (the header as its title, the same size as the live one),
        with a self-contained SVG of it as text/html for viewers without plotly (GitHub, nbviewer)."""
        import plotly.io as pio

        figure = go.Figure(self.figure)
        figure.update_layout(title=dict(text=_plain(self.header.value), font=dict(size=13), x=0, xanchor="left",
                                        y=0.98, yanchor="top"))
        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict())
        bundle["application/vnd.plotly.v1+json"]["config"] = _CONFIG
        bundle["text/html"] = self.fallback_html()
        bundle["text/plain"] = _plain(self.header.value)
        return bundle

    def fallback_html(self) -> str:
        """The header and an inline SVG of the chart: what a notebook shows without the kernel or plotly."""
        return (f"<div class='llm-training-fallback' style='font-family:var(--jp-ui-font-family,sans-serif);"
                f"color:var(--jp-ui-font-color1,inherit)'><div>{self._header_html()}</div>"
                + svg_chart([("loss", self.steps, self.losses, "rgba(31,119,180,0.45)"),
                             ("loss (smoothed)", self.steps, self.smoothed, "#1f77b4"),
                             ("eval loss", self.eval_steps, self.eval_losses, "#e4572e")]) + "</div>")


def _plain(markup: str) -> str:
    import re

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
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                top + (y1 - y) / (y1 - y0) * (height - top - bottom))

    text = "fill='currentColor' font-size='11'"
    parts = [f"<svg viewBox='0 0 {width} {height}' width='100%' style='max-width:{width}px' "
             f"xmlns='http://www.w3.org/2000/svg' role='img'>",
             f"<rect x='{left}' y='{top}' width='{width - left - right}' height='{height - top - bottom}' "
             f"fill='none' stroke='{_GRID}'/>",
             f"<text x='{left - 4}' y='{top + 4}' text-anchor='end' {text}>{y1:.3g}</text>",
             f"<text x='{left - 4}' y='{height - bottom}' text-anchor='end' {text}>{y0:.3g}</text>",
             f"<text x='{left}' y='{height - 8}' {text}>{x0:g}</text>",
             f"<text x='{width - right}' y='{height - 8}' text-anchor='end' {text}>step {x1:g}</text>"]
    legend_x = left
    for name, xs, ys, colour in series:
        coords = " ".join("{:.1f},{:.1f}".format(*at(x, y)) for x, y in zip(xs, ys) if math.isfinite(y))
        if not coords:
            continue
        parts.append(f"<polyline points='{coords}' fill='none' stroke='{colour}' stroke-width='1.5'/>")
        if len(xs) < 30:
            parts.extend("<circle cx='{:.1f}' cy='{:.1f}' r='3' fill='{}'/>".format(*at(x, y), colour)
                         for x, y in zip(xs, ys))
        parts.append(f"<rect x='{legend_x}' y='8' width='14' height='3' fill='{colour}'/>"
                     f"<text x='{legend_x + 18}' y='13' {text}>{html.escape(name)}</text>")
        legend_x += 30 + 7 * len(name)
    return "".join(parts) + "</svg>"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


# --- token probabilities -------------------------------------------------------------------

def token_probabilities(tokenizer, token_ids: list[int], scores: list[torch.Tensor], row: int = 0,
                        top_k: int = 5) -> list[dict]:
    """For each generated token: its probability under the sampling distribution and the top-k
    alternatives, from the scores `generate(output_scores=True)` returned (no second pass). Only real
    alternatives are listed: no token the sampler ruled out (p = 0) and no special token."""
    special = set(tokenizer.all_special_ids)
    tokens = []
    for step, token_id in enumerate(token_ids):
        if step >= len(scores):
            break
        probs = torch.softmax(scores[step][row].float(), dim=-1)
        top = torch.topk(probs, min(top_k + len(special), probs.numel()))
        alternatives = [(tokenizer.decode([i]), p) for p, i in zip(top.values.tolist(), top.indices.tolist())
                        if p > 0 and (i not in special or i == token_id)][:top_k]
        tokens.append({"token": tokenizer.decode([token_id]), "id": token_id, "prob": float(probs[token_id]),
                       "top": alternatives})
    return tokens


def _probability_colour(prob: float) -> str:
    return f"hsla({int(120 * prob)},70%,50%,0.35)"


PROBABILITY_LEGEND = (
    "<div class='llm-token-legend' style='font-size:12px;display:flex;align-items:center;gap:6px;"
    "color:var(--jp-ui-font-color1)'>token probability: <span>0</span><span style='display:inline-block;"
    "width:120px;height:10px;border-radius:3px;background:linear-gradient(to right,"
    + ",".join(_probability_colour(p / 4) for p in range(5)) + ")'></span><span>1</span>"
    "<span style='color:var(--jp-ui-font-color2)'>· hover a token for its alternatives</span></div>")


def tokens_by_probability_html(tokens: list[dict]) -> str:
    """Each token shaded from red (unlikely) to green (likely); hover lists the alternatives."""
    spans = []
    for t in tokens:
        alternatives = "&#10;".join(f"{html.escape(repr(a))}: {p:.3f}" for a, p in t["top"])
        spans.append(f'<span class="llm-token" title="p={t["prob"]:.3f}&#10;{alternatives}" '
                     f'style="background:{_probability_colour(t["prob"])};border-radius:3px;padding:0 1px">'
                     f'{html.escape(t["token"])}</span>')
    return ("<div style='font-family:var(--jp-code-font-family,monospace);line-height:1.8;white-space:pre-wrap;"
            "overflow-wrap:break-word;color:var(--jp-content-font-color1)'>" + "".join(spans) + "</div>")


# --- sampling playground ----------------------------------------------------------------------

def _speed_note(session) -> str:
    """On CPU without --quantize: say that the flag exists and what it would gain; else nothing."""
    from .quantization import gain_hint, quantization_of

    loaded = session.loaded
    if loaded is not None and quantization_of(loaded.model) is not None:
        return (f"<small style='color:var(--jp-ui-font-color2,#666)'>quantized weights: "
                f"{html.escape(quantization_of(loaded.model).describe())}</small>")
    hint = gain_hint(loaded)
    return f"<small style='color:var(--jp-ui-font-color2,#666)'>full precision: {html.escape(hint)}</small>" \
        if hint else ""


class SamplingPanel:
    """Controls for every sampling setting, a Generate button, and the last runs side by side.

    Each click draws a new seed unless "pin seed" is ticked (a --seed given on the command line pins it);
    every column shows the seed it used, so any sample can be reproduced.
    """

    def __init__(self, session, prompt: str = "", settings: SamplingSettings | None = None, keep: int = 3):
        settings = settings or SamplingSettings()
        self.session, self.keep = session, keep
        self.runs: list = []
        self._handle = None
        style = {"description_width": "130px"}
        self.prompt = widgets.Textarea(value=prompt, description="prompt", layout=widgets.Layout(width="98%"),
                                       style=style)
        self.temperature = widgets.FloatSlider(value=settings.temperature, min=0.05, max=2.0, step=0.05,
                                               description="temperature", style=style)
        self.top_k = widgets.IntSlider(value=settings.top_k, min=0, max=200, description="top-k", style=style)
        self.top_p = widgets.FloatSlider(value=settings.top_p, min=0.05, max=1.0, step=0.05,
                                         description="top-p", style=style)
        self.repetition_penalty = widgets.FloatSlider(value=settings.repetition_penalty, min=0.8, max=2.0,
                                                      step=0.05, description="repetition penalty", style=style)
        self.max_new_tokens = widgets.IntSlider(value=settings.max_new_tokens, min=1, max=512,
                                                description="max new tokens", style=style)
        self.num_samples = widgets.IntSlider(value=settings.num_return_sequences, min=1, max=8,
                                             description="samples", style=style)
        self.seed = widgets.IntText(value=settings.seed if settings.seed is not None else 0, description="seed",
                                    style=style, layout=widgets.Layout(width="260px"))
        self.pin_seed = widgets.Checkbox(value=settings.seed is not None, description="pin seed", indent=False,
                                         layout=widgets.Layout(width="auto"))
        self.greedy = widgets.Checkbox(value=not settings.do_sample, description="greedy", indent=False,
                                       layout=widgets.Layout(width="auto"))
        self.button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.button.add_class("llm-generate")
        self.button.on_click(lambda _: self.generate(new_seed=not self.pin_seed.value))
        self.legend = widgets.HTML(PROBABILITY_LEGEND)
        # Columns wrap onto new rows rather than being clipped in a narrow output.
        self.outputs = widgets.Box(layout=widgets.Layout(width="100%", display="flex", flex_flow="row wrap"))
        controls = widgets.VBox([self.temperature, self.top_k, self.top_p, self.repetition_penalty])
        more = widgets.VBox([self.max_new_tokens, self.num_samples, widgets.HBox([self.seed, self.pin_seed]),
                             widgets.HBox([self.greedy, self.button])])
        self.speed_note = widgets.HTML(_speed_note(session))
        self.widget = widgets.VBox([self.prompt, widgets.HBox([controls, more], layout=widgets.Layout(
            flex_flow="row wrap")), self.legend, self.speed_note, self.outputs], layout=widgets.Layout(width="100%"))
        self.widget.add_class("llm-playground")

    def _ipython_display_(self):
        from IPython.display import display

        self._handle = display(self.mimebundle(), raw=True, display_id=True)

    def mimebundle(self) -> dict:
        """The widget, with its current runs as self-contained text/html for a notebook reopened without
        the kernel (shown by the llm-magics extension, GitHub and nbviewer)."""
        return {**self.widget._repr_mimebundle_(), "text/html": self.fallback_html()}

    def fallback_html(self) -> str:
        columns = "".join(f"<div style='flex:1 1 320px;min-width:0;border:1px solid var(--jp-border-color2,#ccc);"
                          f"padding:4px'>{self._column_html(run)}</div>" for run in self.runs)
        prompt = html.escape(self.prompt.value)
        return (f"<div class='llm-playground-fallback' style='color:var(--jp-ui-font-color1,inherit)'>"
                f"<div><b>Sampling playground</b> · prompt: <b style='white-space:pre-wrap'>{prompt}</b></div>"
                f"{PROBABILITY_LEGEND}<div style='display:flex;flex-flow:row wrap;gap:4px'>{columns}</div></div>")

    def settings(self) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=self.max_new_tokens.value, temperature=self.temperature.value,
                                top_k=self.top_k.value, top_p=self.top_p.value,
                                repetition_penalty=self.repetition_penalty.value,
                                num_return_sequences=self.num_samples.value, seed=self.seed.value,
                                do_sample=not self.greedy.value)

    def generate(self, new_seed: bool = False):
        """Generate with the current settings (after drawing a fresh seed when `new_seed`)."""
        import random

        from .errors import LLMError

        if new_seed:
            self.seed.value = random.SystemRandom().randrange(2**31)  # not the stream generate seeds
        settings = self.settings()
        self.button.icon, self.button.description, self.button.disabled = "spinner spin", "Generating…", True
        try:
            result = self.session.generate(self.prompt.value, output_scores=True, **vars(settings))
        except LLMError as error:
            self.outputs.children = (widgets.HTML(f"<span style='color:var(--jp-error-color1,#b00)'>"
                                                  f"{html.escape(str(error))}</span>"), *self.outputs.children)
            return None
        finally:
            self.button.icon, self.button.description, self.button.disabled = "play", "Generate", False
        self.runs = [result, *self.runs][: self.keep]
        self.outputs.children = tuple(self._column(run) for run in self.runs)
        if self._handle is not None:
            self._handle.update(self.mimebundle(), raw=True)
        return result

    def _column_html(self, result) -> str:
        s = result.settings
        label = "greedy" if not s.do_sample else f"T={s.temperature:g} top-k={s.top_k} top-p={s.top_p:g}"
        parts = [f"<div class='llm-run-label' style='font-size:12px;color:var(--jp-ui-font-color2)'>"
                 f"{html.escape(label)} · seed={s.seed} · rep={s.repetition_penalty:g} · "
                 f"{result.new_tokens} tokens · {result.tokens_per_second:.1f} tok/s</div>"]
        for row, ids in enumerate(result.token_ids):
            tokens = token_probabilities(self.session.tokenizer, ids, result.scores, row)
            parts.append(tokens_by_probability_html(tokens))
        return "<hr>".join(parts)

    def _column(self, result) -> widgets.HTML:
        column = widgets.HTML(self._column_html(result), layout=widgets.Layout(
            flex="1 1 320px", min_width="0", border="1px solid var(--jp-border-color2)", padding="4px",
            margin="2px"))
        column.add_class("llm-run-column")
        return column


# --- streamed generation and chat ------------------------------------------------------------

class StreamedText:
    """A generation as it streams: the prompt in bold (or a chat turn labelled user / assistant), then the
    continuation, word-wrapped (never mid-word).

    In a notebook it is one HTML output updated in place (display_id), at most `max_updates_per_second`
    times; elsewhere the text is printed as it comes. Nothing is shown before the first piece, so a
    request that fails on its input leaves no half output.
    """

    def __init__(self, prompt: str, chat: bool = False, notebook: bool | None = None,
                 max_updates_per_second: float = 10.0):
        self.prompt, self.chat, self.text = prompt, chat, ""
        self.notebook = in_notebook() if notebook is None else notebook
        self.min_interval = 1.0 / max_updates_per_second
        self._handle = None
        self._started = False
        self._last_update: float | None = None

    def _start(self) -> None:
        from IPython.display import display

        self._started = True
        if self.notebook:
            self._handle = display(self.bundle(), raw=True, display_id=True)
            self._last_update = time.perf_counter()
        else:
            print("assistant: " if self.chat else self.prompt, end="", flush=True)

    def __call__(self, piece: str) -> None:
        if not self._started:
            self._start()
        self.text += piece
        if not self.notebook:
            print(piece, end="", flush=True)
            return
        if time.perf_counter() - self._last_update >= self.min_interval:
            self._handle.update(self.bundle(), raw=True)
            self._last_update = time.perf_counter()

    def finish(self, text: str | None = None, note: str = "") -> None:
        """The final text (the result's) and a note such as 'stopped after 5 tokens'."""
        if not self._started:
            self._start()
        if text is not None:
            self.text = text
        if self.notebook:
            self._handle.update(self.bundle(note), raw=True)
        else:
            print()
            if note:
                print(note)

    def bundle(self, note: str = "") -> dict:
        if self.chat:
            body = _turn("user", self.prompt) + _turn("assistant", self.text.strip())
            plain = f"user: {self.prompt}\nassistant: {self.text.strip()}"
        else:
            body = f"<b>{html.escape(self.prompt)}</b><span>{html.escape(self.text)}</span>"
            plain = self.prompt + self.text
        extra = f"<div style='color:var(--jp-ui-font-color2);font-size:12px'>{html.escape(note)}</div>" if note else ""
        return {"text/plain": plain + (f"\n{note}" if note else ""),
                "text/html": "<div class='llm-generation' style='white-space:pre-wrap;overflow-wrap:break-word;"
                             "word-break:normal;font-family:var(--jp-content-font-family,inherit);"
                             f"color:var(--jp-content-font-color1,inherit);line-height:1.5'><div>{body}</div>{extra}</div>"}


def _turn(role: str, text: str) -> str:
    return (f"<div class='llm-turn llm-{role}'><span class='llm-role' style='display:inline-block;min-width:5.5em;"
            f"font-weight:bold;color:var(--jp-ui-font-color2)'>{role}</span>{html.escape(text)}</div>")
