"""The live training chart: loss, smoothed loss, eval loss and lr as they come (plotly FigureWidget,
throttled), a Stop button, and a static fallback for saved notebooks."""

from __future__ import annotations

import html
import secrets
import time

import ipywidgets as widgets
import plotly.graph_objects as go

from ..base.html import GRID, LR_TICKS, PLOT_CONFIG, PLOT_META, PLOT_THEME, duration, plain_text, svg_chart  # noqa: F401
from ..base.live import DRAWN

# The raw loss: opaque and thin, a light blue that contrasts with Dark's background (7.5:1 on #111) and
# lies under the darker smoothed line in Light. A translucent colour vanished in Dark.
RAW_LOSS = "#6fa8dc"
SMOOTHED_LOSS = "#1f77b4"
# Log-scale toggles for loss and lr, switched by plotly in the browser (args on, args2 off): they work
# while the kernel trains and in the saved figure, and the kernel's redraws never touch the axis types.
LOG_TOGGLES = dict(
    type="buttons",
    direction="left",
    showactive=True,
    x=1,
    xanchor="right",
    y=1.0,
    yanchor="bottom",
    pad=dict(t=2, b=2),
    font=dict(size=11),
    bgcolor="rgba(128,128,128,0.15)",
    buttons=[
        dict(label="log loss", method="relayout", args=[{"yaxis.type": "log"}], args2=[{"yaxis.type": "linear"}]),
        dict(label="log lr", method="relayout", args=[{"yaxis2.type": "log"}], args2=[{"yaxis2.type": "linear"}]),
    ],
)
# The smoothing values the static figure's slider offers (the live chart's slider goes 0-0.99 by 0.01).
STATIC_SMOOTHINGS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class TrainingView:
    """Live loss / eval loss / learning-rate chart with tokens/s, ETA, a progress bar and Stop.

    Called once per optimizer step; redraws at most `max_redraws_per_second` so it never slows training.
    The smoothed loss is an exponential moving average debiased as TensorBoard does (divided by
    1 - smoothing^t), so it starts at the loss instead of climbing from zero or lagging far above it.
    """

    HEIGHT = 340
    # Once a second: each redraw sends every trace and the page redraws the whole plot; faster, a browser
    # sharing a busy CPU with the kernel falls behind the messages and stops answering clicks.
    MAX_REDRAWS_PER_SECOND = 1.0
    # With the llm-magics extension the page reports each redraw it has drawn (base/live.py): none is sent
    # while the last is not drawn, for up to this long (a page closed meanwhile reports nothing).
    PAGE_WAIT_SECONDS = 10.0
    SLIDER_HEIGHT = 70  # under the static figure: its smoothing slider

    def __init__(
        self,
        session,
        title: str = "training",
        max_redraws_per_second: float = MAX_REDRAWS_PER_SECOND,
        smoothing: float = 0.9,
        max_points: int = 1000,
        compare: str | None = "auto",
    ):
        self.session, self.title = session, title
        self.compare = compare  # earlier runs to overlay, faded: auto, last, all, none or ID,ID
        self.compared: list[dict] = []
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
        self.chart_id = secrets.token_hex(6)  # the page reports the redraws it has drawn under this id
        self.best_step: int | None = None  # marked on the chart (early stopping)
        self._last_draw: float | None = None  # None: never drawn (perf_counter's origin is arbitrary)
        self._result = None
        self._handle = None  # the cell output, replaced by a static figure when training ends
        self.figure = go.FigureWidget(layout=self._layout(title=None))
        self.figure.add_scatter(name="loss", mode="lines", line=dict(color=RAW_LOSS, width=1))
        self.figure.add_scatter(name="loss (smoothed)", mode="lines", line=dict(color=SMOOTHED_LOSS, width=2))
        self.figure.add_scatter(name="eval loss", mode="lines+markers", line=dict(color="#e4572e"), marker=dict(size=7))
        self.figure.add_scatter(name="learning rate", mode="lines", yaxis="y2", line=dict(color="#9a9a9a", dash="dot"))
        self.header = widgets.HTML(f"<b>{html.escape(title)}</b>: starting…")
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="60%"))
        self.stop_button = widgets.Button(
            description="Stop",
            button_style="danger",
            icon="stop",
            tooltip="Stop after the current step (the model and checkpoint are kept)",
        )
        # The kernel is busy training, so the click message itself waits until the cell ends: in JupyterLab
        # and Notebook 7 the llm-magics extension turns a click on this class into a kernel interrupt,
        # which the loop handles as a stop after the current step. The Python handler serves API use.
        self.stop_button.add_class("llm-stop-training")
        self.stop_button.on_click(lambda _: self.session.stop())
        # The smoothing, recomputed from the raw losses when moved (by the kernel: while a cell trains it
        # reads widget messages only once the cell ends; the static figure carries its own slider).
        self.smoothing_slider = widgets.FloatSlider(
            value=smoothing,
            min=0.0,
            max=0.99,
            step=0.01,
            description="smoothing",
            readout_format=".2f",
            continuous_update=False,
        )
        self.smoothing_slider.add_class("llm-smoothing")
        self.smoothing_slider.observe(lambda change: self.set_smoothing(change["new"]), names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.header]),
                widgets.HBox([self.progress, self.stop_button]),
                self.smoothing_slider,
                self.figure,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.widget.add_class("llm-training-view")

    def _layout(self, title) -> dict:
        """The same size and places live and static: full output width, legend above the plot, title above it."""
        return dict(
            autosize=True,
            height=self.HEIGHT,
            margin=dict(l=55, r=60, t=70, b=40),
            **PLOT_THEME,
            title=title,
            xaxis=dict(title="step", gridcolor=GRID, zerolinecolor=GRID, tickformat="d"),
            yaxis=dict(title="loss", gridcolor=GRID, zerolinecolor=GRID),
            # lr: from 0, never a negative or odd tick
            yaxis2=dict(
                title="learning rate",
                overlaying="y",
                side="right",
                showgrid=False,
                autorange=True,
                rangemode="tozero",
                **LR_TICKS,
                tickmode="auto",
                nticks=5,
                zeroline=False,
            ),
            legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"),
            updatemenus=[LOG_TOGGLES],
        )

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
        self.smoothed.append(self._next_smoothed(row["loss"]))
        self.lrs.append(row["lr"])
        if "eval_loss" in row:
            self.eval_steps.append(row["step"])
            self.eval_losses.append(row["eval_loss"])
        now = time.perf_counter()
        due = self._last_draw is None or (now - self._last_draw >= self.min_interval and not self._page_behind(now))
        if due or row["step"] == result.total_steps:
            self.redraw()
            self._last_draw = time.perf_counter()

    def _page_behind(self, now: float) -> bool:
        """A page with the extension has not yet drawn the last redraw (and has had less than the wait)."""
        drawn = DRAWN.get(self.chart_id)
        waited = now - self._last_draw if self._last_draw is not None else 0.0
        return drawn is not None and drawn < self.redraws and waited < self.PAGE_WAIT_SECONDS

    def redraw(self) -> None:
        result = self._result
        if result is None or not self.steps:
            return
        keep = self._shown_indices()
        steps = [self.steps[i] for i in keep]
        with self.figure.batch_update():
            raw, smooth, evals, lr = self.figure.data[:4]
            raw.x, raw.y = steps, [self.losses[i] for i in keep]
            smooth.x, smooth.y = steps, [self.smoothed[i] for i in keep]
            evals.x, evals.y = self.eval_steps, self.eval_losses
            lr.x, lr.y = steps, [self.lrs[i] for i in keep]
            self.figure.layout.xaxis.dtick = self._step_dtick()
            self.figure.layout.datarevision = f"{self.chart_id}:{self.redraws + 1}"  # what the page reports drawn
            self._mark_best(getattr(result, "best_step", None))
        self.header.value = self._header_html()
        step, total = self.steps[-1], result.total_steps
        with self.progress.hold_sync():  # one message
            self.progress.max, self.progress.value = total, step
        self.redraws += 1

    def _step_dtick(self) -> int | None:
        """Integer step ticks: plotly's own spacing is whole past 10 steps, below it would tick halves. The
        span is the whole x axis, overlaid earlier runs included: a 60-step run under a 5-step one is not
        ticked at every step."""
        steps = [*self.steps, *(row["step"] for info in self.compared for row in info["history"])]
        return 1 if max(steps) - min(steps) < 10 else None

    def _next_smoothed(self, loss: float) -> float:
        """TensorBoard's debiased EMA, one step on: the average so far divided by 1 - smoothing^t."""
        s, count = self.smoothing, len(self.losses)
        if count == 1 or s == 0:
            return loss
        # the undebiased average before this step, recovered from the last debiased value
        average = self.smoothed[-1] * (1 - s ** (count - 1))
        return (s * average + (1 - s) * loss) / (1 - s**count)

    def set_smoothing(self, smoothing: float) -> None:
        """The slider moved: recompute every smoothed line (this run's and the overlaid runs') from the raw
        losses, and redraw now."""
        from .. import runs as run_history

        self.smoothing = float(smoothing)
        self.smoothed = run_history.smoothed(self.losses, self.smoothing)
        with self.figure.batch_update():
            for trace, info in zip(self.figure.data[4:], self.compared):
                trace.y = run_history.smoothed([row["loss"] for row in info["history"]], self.smoothing)
        self.redraw()

    def on_record(self, record) -> None:
        """The run's folder is made: overlay the earlier runs asked for, each named by the options in which
        it differs from the others and from this run (e.g. `lr=0.003`)."""
        from .. import runs as run_history

        self.compared = run_history.select(
            self.compare, record.info["kind"], record.info["options"], record.root, exclude=record.id
        )
        if not self.compared:
            return
        names = run_history.differing_options([record.info, *self.compared])
        self.this_run = run_history.label(record.info, names) if names else "this run"
        with self.figure.batch_update():
            self.figure.data[1].name = f"loss (smoothed, {self.this_run})"
            for info in self.compared:
                history = info["history"]
                self.figure.add_scatter(
                    x=[row["step"] for row in history],
                    y=run_history.smoothed([row["loss"] for row in history], self.smoothing),
                    name=run_history.label(info, names) if names else info["id"],
                    mode="lines",
                    opacity=0.45,
                    line=dict(width=1.5, dash="dot"),
                    legendgroup="earlier runs",
                    meta="llm-compare",
                )

    def _mark_best(self, best_step: int | None) -> None:
        """Early stopping: a dashed line at the step of the best eval loss (the weights it restores)."""
        if best_step is None or self.best_step == best_step:
            return
        self.best_step = best_step
        self.figure.layout.shapes = [
            dict(
                type="line",
                xref="x",
                yref="paper",
                x0=best_step,
                x1=best_step,
                y0=0,
                y1=1,
                line=dict(color="#e4572e", dash="dash", width=1),
            )
        ]
        self.figure.layout.annotations = [
            dict(
                x=best_step,
                xref="x",
                y=1,
                yref="paper",
                text=f"best step {best_step}",
                showarrow=False,
                xanchor="left",
                yanchor="top",
                font=dict(size=11, color="#e4572e"),
            )
        ]

    def _header_html(self) -> str:
        result = self._result
        if result is None:
            return f"<b>{html.escape(self.title)}</b>: starting…"
        step, total = self.steps[-1], result.total_steps
        seconds_per_step = result.seconds / max(len(self.steps), 1)
        eta = seconds_per_step * (total - step)
        state = "stopped" if result.interrupted else ("done" if step >= total else f"ETA {duration(eta)}")
        evaluated = f" · eval loss {self.eval_losses[-1]:.4f} (step {self.eval_steps[-1]})" if self.eval_losses else ""
        return (
            f"<b>{html.escape(self.title)}</b>: step {step}/{total} · loss {self.losses[-1]:.4f}{evaluated}"
            f" · {result.tokens_per_second:,.0f} tokens/s · {state}"
        )

    def _shown_indices(self) -> list[int]:
        """All steps, or at most max_points evenly spaced ones (the last always): long runs stay light."""
        count = len(self.steps)
        if count <= self.max_points:
            return list(range(count))
        stride = count / self.max_points
        return sorted({int(i * stride) for i in range(self.max_points)} | {count - 1})

    def close(self) -> None:
        DRAWN.pop(self.chart_id, None)
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
        figure.update_layout(
            datarevision=None,  # the live chart's redraw tag (for the page's reports): not in the saved figure
            sliders=[self._static_smoothing_slider()],
            height=self.HEIGHT + self.SLIDER_HEIGHT,
            margin=dict(b=40 + self.SLIDER_HEIGHT),
        )
        figure.update_layout(
            title=dict(
                text=plain_text(self.header.value), font=dict(size=13), x=0, xanchor="left", y=0.98, yanchor="top"
            )
        )
        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict())
        bundle["application/vnd.plotly.v1+json"]["config"] = PLOT_CONFIG
        bundle["text/html"] = self.fallback_html()
        bundle["text/plain"] = plain_text(self.header.value)
        return bundle

    def _static_smoothing_slider(self) -> dict:
        """plotly's own slider under the static figure: each step restyles the smoothed lines (this run's and
        the overlaid runs') with the EMA at that smoothing, precomputed here, so it works without the kernel."""
        from .. import runs as run_history

        keep = self._shown_indices()
        values = sorted(set(STATIC_SMOOTHINGS) | {round(self.smoothing, 2)})
        histories = [[row["loss"] for row in info["history"]] for info in self.compared]
        steps = []
        for value in values:
            mine = run_history.smoothed(self.losses, value)
            ys = [[mine[i] for i in keep], *(run_history.smoothed(losses, value) for losses in histories)]
            steps.append(
                dict(label=f"{value:g}", method="restyle", args=[{"y": ys}, [1, *range(4, 4 + len(histories))]])
            )
        return dict(
            active=values.index(round(self.smoothing, 2)),
            steps=steps,
            x=0,
            xanchor="left",
            len=1.0,
            y=-0.2,
            yanchor="top",
            pad=dict(t=10, b=0),
            font=dict(size=11),
            currentvalue=dict(prefix="smoothing ", font=dict(size=11)),
        )

    def fallback_html(self) -> str:
        """The header and an inline SVG of the chart: what a notebook shows without the kernel or plotly."""
        return (
            f"<div class='llm-training-fallback' style='font-family:var(--jp-ui-font-family,sans-serif);"
            f"color:var(--jp-ui-font-color1,inherit)'><div>{self._header_html()}</div>"
            + svg_chart(
                [
                    ("loss", self.steps, self.losses, RAW_LOSS),
                    ("loss (smoothed)", self.steps, self.smoothed, SMOOTHED_LOSS),
                    ("eval loss", self.eval_steps, self.eval_losses, "#e4572e"),
                ]
            )
            + "</div>"
        )
