"""Notebook views: the live training chart and the sampling playground (ipywidgets + plotly)."""
from __future__ import annotations

import html
import math
import time

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from .generation import SamplingSettings


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class TrainingView:
    """Live loss / eval loss / learning-rate chart with tokens/s, ETA, a progress bar and Stop.

    Called once per optimizer step; redraws at most `max_redraws_per_second` so it never slows training.
    """

    def __init__(self, session, title: str = "training", max_redraws_per_second: float = 4.0,
                 smoothing: float = 0.9, max_points: int = 1000):
        self.session, self.title = session, title
        self.max_points = max_points  # per trace: the browser redraws the whole array on each update
        self.min_interval = 1.0 / max_redraws_per_second
        self.smoothing = smoothing
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.lrs: list[float] = []
        self.eval_steps: list[int] = []
        self.eval_losses: list[float] = []
        self.redraws = 0
        self._last_draw: float | None = None  # None: never drawn (perf_counter's origin is arbitrary)
        self._result = None
        self._handle = None  # the cell output, replaced by a static figure when training ends
        self.figure = go.FigureWidget(layout=go.Layout(
            height=320, margin=dict(l=50, r=50, t=30, b=40), xaxis_title="step", yaxis_title="loss",
            yaxis2=dict(title="learning rate", overlaying="y", side="right", showgrid=False),
            legend=dict(orientation="h", y=1.12), title=None))
        self.figure.add_scatter(name="loss", mode="lines", line=dict(color="rgba(31,111,209,0.3)"))
        self.figure.add_scatter(name="loss (smoothed)", mode="lines", line=dict(color="#1f6fd1", width=2))
        self.figure.add_scatter(name="eval loss", mode="lines+markers", line=dict(color="#d1401f"))
        self.figure.add_scatter(name="lr", mode="lines", yaxis="y2", line=dict(color="#999", dash="dot"))
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
                                    self.figure])

    def _ipython_display_(self):
        from IPython.display import display

        self._handle = display(self.widget, display_id=True)

    def __call__(self, row: dict, result) -> None:
        self._result = result
        self.steps.append(row["step"])
        self.losses.append(row["loss"])
        previous = self.smoothed[-1] if self.smoothed else row["loss"]
        self.smoothed.append(self.smoothing * previous + (1 - self.smoothing) * row["loss"])
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
            raw, smooth, evals, lr = self.figure.data
            raw.x, raw.y = steps, [self.losses[i] for i in keep]
            smooth.x, smooth.y = steps, [self.smoothed[i] for i in keep]
            evals.x, evals.y = self.eval_steps, self.eval_losses
            lr.x, lr.y = steps, [self.lrs[i] for i in keep]
        step, total = self.steps[-1], result.total_steps
        rate = result.tokens_per_second
        seconds_per_step = result.seconds / max(len(self.steps), 1)
        eta = seconds_per_step * (total - step)
        self.progress.max, self.progress.value = total, step
        state = "stopped" if result.interrupted else ("done" if step >= total else f"ETA {_duration(eta)}")
        self.header.value = (f"<b>{html.escape(self.title)}</b>: step {step}/{total} · loss {self.losses[-1]:.4f}"
                             f" · {rate:,.0f} tokens/s · {state}")
        self.redraws += 1

    def _shown_indices(self) -> list[int]:
        """All steps, or at most max_points evenly spaced ones (the last always): long runs stay light."""
        count = len(self.steps)
        if count <= self.max_points:
            return list(range(count))
        stride = count / self.max_points
        return sorted({int(i * stride) for i in range(self.max_points)} | {count - 1})

    def close(self) -> None:
        self.redraw()
        self.stop_button.disabled = True
        if self._handle is not None and self._result is not None:
            # Swap the live widget for a plain plotly figure: saved in the notebook as JSON and drawn by
            # the plotly JupyterLab/Notebook extension with its bundled plotly.js, no kernel or CDN needed.
            self._handle.update(self.static_figure(), raw=True)

    def static_figure(self) -> dict:
        """The final chart as a plotly mime bundle, the header as its title."""
        import re

        import plotly.io as pio

        figure = go.Figure(self.figure)
        figure.update_layout(title=dict(text=re.sub("<[^>]+>", "", self.header.value), font=dict(size=13)))
        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict())
        bundle["text/plain"] = re.sub("<[^>]+>", "", self.header.value)
        return bundle


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
    alternatives, from the scores `generate(output_scores=True)` returned (no second pass)."""
    tokens = []
    for step, token_id in enumerate(token_ids):
        if step >= len(scores):
            break
        probs = torch.softmax(scores[step][row].float(), dim=-1)
        top = torch.topk(probs, top_k)
        tokens.append({"token": tokenizer.decode([token_id]), "id": token_id, "prob": float(probs[token_id]),
                       "top": [(tokenizer.decode([i]), float(p)) for p, i in zip(top.values.tolist(),
                                                                              top.indices.tolist())]})
    return tokens


def tokens_by_probability_html(tokens: list[dict]) -> str:
    """Each token coloured from red (unlikely) to green (likely); hover lists the alternatives."""
    spans = []
    for t in tokens:
        hue = int(120 * t["prob"])
        alternatives = "&#10;".join(f"{html.escape(repr(a))}: {p:.3f}" for a, p in t["top"])
        spans.append(f'<span class="llm-token" title="p={t["prob"]:.3f}&#10;{alternatives}" '
                     f'style="background:hsla({hue},70%,75%,0.8);border-radius:3px;padding:0 1px;'
                     f'white-space:pre-wrap">{html.escape(t["token"])}</span>')
    return "<div style='font-family:monospace;line-height:1.8'>" + "".join(spans) + "</div>"


# --- sampling playground ----------------------------------------------------------------------

class SamplingPanel:
    """Controls for every sampling setting, a Generate button, and the last runs side by side."""

    def __init__(self, session, prompt: str = "", settings: SamplingSettings | None = None, keep: int = 3):
        settings = settings or SamplingSettings()
        self.session, self.keep = session, keep
        self.runs: list = []
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
                                    style=style)
        self.greedy = widgets.Checkbox(value=not settings.do_sample, description="greedy")
        self.button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.button.on_click(lambda _: self.generate())
        self.outputs = widgets.HBox(layout=widgets.Layout(width="100%", overflow="auto"))
        controls = widgets.VBox([self.temperature, self.top_k, self.top_p, self.repetition_penalty])
        more = widgets.VBox([self.max_new_tokens, self.num_samples, self.seed, widgets.HBox([self.greedy, self.button])])
        self.widget = widgets.VBox([self.prompt, widgets.HBox([controls, more]), self.outputs])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def settings(self) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=self.max_new_tokens.value, temperature=self.temperature.value,
                                top_k=self.top_k.value, top_p=self.top_p.value,
                                repetition_penalty=self.repetition_penalty.value,
                                num_return_sequences=self.num_samples.value, seed=self.seed.value,
                                do_sample=not self.greedy.value)

    def generate(self):
        from .errors import LLMError

        settings = self.settings()
        try:
            result = self.session.generate(self.prompt.value, output_scores=True, **vars(settings))
        except LLMError as error:
            self.outputs.children = (widgets.HTML(f"<span style='color:#b00'>{html.escape(str(error))}</span>"),
                                     *self.outputs.children)
            return None
        self.runs = [result, *self.runs][: self.keep]
        self.outputs.children = tuple(self._column(run) for run in self.runs)
        return result

    def _column(self, result) -> widgets.HTML:
        s = result.settings
        label = "greedy" if not s.do_sample else (f"T={s.temperature:g} top-k={s.top_k} top-p={s.top_p:g} "
                                                   f"seed={s.seed}")
        parts = [f"<div style='font-size:12px;color:#555'>{html.escape(label)} · rep={s.repetition_penalty:g} · "
                 f"{result.new_tokens} tokens · {result.tokens_per_second:.1f} tok/s</div>"]
        for row, ids in enumerate(result.token_ids):
            tokens = token_probabilities(self.session.tokenizer, ids, result.scores, row)
            parts.append(tokens_by_probability_html(tokens))
        return widgets.HTML("<hr>".join(parts), layout=widgets.Layout(min_width="320px", flex="1 1 0",
                                                                       border="1px solid #ddd", padding="4px"))
