"""The sampling playground: a control for every sampling setting, a Generate button, and the last runs side
by side with each token shaded by its probability (hover lists the alternatives)."""

from __future__ import annotations

import html

import ipywidgets as widgets

from .. import options
from ..generation import SamplingSettings, token_probabilities

SLIDER_RANGES = {o.name: o.range for o in options.options("playground") if o.range}  # (low, high, step)


def _probability_colour(prob: float) -> str:
    return f"hsla({int(120 * prob)},70%,50%,0.35)"


PROBABILITY_LEGEND = (
    "<div class='llm-token-legend' style='font-size:12px;display:flex;align-items:center;gap:6px;"
    "color:var(--jp-ui-font-color1)'>token probability: <span>0</span><span style='display:inline-block;"
    "width:120px;height:10px;border-radius:3px;background:linear-gradient(to right,"
    + ",".join(_probability_colour(p / 4) for p in range(5))
    + ")'></span><span>1</span>"
    "<span style='color:var(--jp-ui-font-color2)'>· hover a token for its alternatives</span></div>"
)


def _slider(settings: SamplingSettings, name: str, description: str, style: dict) -> widgets.Widget:
    """A slider over the setting's declared range (llm_magics/options.py)."""
    low, high, step = SLIDER_RANGES[name]
    kind = widgets.FloatSlider if isinstance(step, float) else widgets.IntSlider
    return kind(value=getattr(settings, name), min=low, max=high, step=step, description=description, style=style)


def tokens_by_probability_html(tokens: list[dict]) -> str:
    """Each token shaded from red (unlikely) to green (likely); hover lists the alternatives."""
    spans = []
    for t in tokens:
        alternatives = "&#10;".join(f"{html.escape(repr(a))}: {p:.3f}" for a, p in t["top"])
        spans.append(
            f'<span class="llm-token" title="p={t["prob"]:.3f}&#10;{alternatives}" '
            f'style="background:{_probability_colour(t["prob"])};border-radius:3px;padding:0 1px">'
            f"{html.escape(t['token'])}</span>"
        )
    return (
        "<div style='font-family:var(--jp-code-font-family,monospace);line-height:1.8;white-space:pre-wrap;"
        "overflow-wrap:break-word;color:var(--jp-content-font-color1)'>" + "".join(spans) + "</div>"
    )


# --- the panel ---------------------------------------------------------------------------------


def _speed_note(session) -> str:
    """On CPU without --quantize: say that the flag exists and what it would gain; else nothing."""
    from ..quantization import gain_hint, quantization_of

    loaded = session.loaded
    if loaded is not None and (quantization := quantization_of(loaded.model)) is not None:
        return (
            f"<small style='color:var(--jp-ui-font-color2,#666)'>quantized weights: "
            f"{html.escape(quantization.describe())}</small>"
        )
    hint = gain_hint(loaded)
    return (
        f"<small style='color:var(--jp-ui-font-color2,#666)'>full precision: {html.escape(hint)}</small>"
        if hint
        else ""
    )


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
        self.prompt = widgets.Textarea(
            value=prompt, description="prompt", layout=widgets.Layout(width="98%"), style=style
        )
        self.temperature = _slider(settings, "temperature", "temperature", style)
        self.top_k = _slider(settings, "top_k", "top-k", style)
        self.top_p = _slider(settings, "top_p", "top-p", style)
        self.repetition_penalty = _slider(settings, "repetition_penalty", "repetition penalty", style)
        self.max_new_tokens = _slider(settings, "max_new_tokens", "max new tokens", style)
        self.num_samples = _slider(settings, "num_return_sequences", "samples", style)
        self.seed = widgets.IntText(
            value=settings.seed if settings.seed is not None else 0,
            description="seed",
            style=style,
            layout=widgets.Layout(width="260px"),
        )
        self.pin_seed = widgets.Checkbox(
            value=settings.seed is not None, description="pin seed", indent=False, layout=widgets.Layout(width="auto")
        )
        self.greedy = widgets.Checkbox(
            value=not settings.do_sample, description="greedy", indent=False, layout=widgets.Layout(width="auto")
        )
        self.button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.button.add_class("llm-generate")
        self.button.on_click(lambda _: self.generate(new_seed=not self.pin_seed.value))
        self.legend = widgets.HTML(PROBABILITY_LEGEND)
        # Columns wrap onto new rows rather than being clipped in a narrow output.
        self.outputs = widgets.Box(layout=widgets.Layout(width="100%", display="flex", flex_flow="row wrap"))
        controls = widgets.VBox([self.temperature, self.top_k, self.top_p, self.repetition_penalty])
        more = widgets.VBox(
            [
                self.max_new_tokens,
                self.num_samples,
                widgets.HBox([self.seed, self.pin_seed]),
                widgets.HBox([self.greedy, self.button]),
            ]
        )
        self.speed_note = widgets.HTML(_speed_note(session))
        self.widget = widgets.VBox(
            [
                self.prompt,
                widgets.HBox([controls, more], layout=widgets.Layout(flex_flow="row wrap")),
                self.legend,
                self.speed_note,
                self.outputs,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.widget.add_class("llm-playground")

    def _ipython_display_(self):
        from IPython.display import display

        self._handle = display(self.mimebundle(), raw=True, display_id=True)

    def mimebundle(self) -> dict:
        """The widget, with its current runs as self-contained text/html for a notebook reopened without
        the kernel (shown by the llm-magics extension, GitHub and nbviewer)."""
        return {**self.widget._repr_mimebundle_(), "text/html": self.fallback_html()}

    def fallback_html(self) -> str:
        columns = "".join(
            f"<div style='flex:1 1 320px;min-width:0;border:1px solid var(--jp-border-color2,#ccc);"
            f"padding:4px'>{self._column_html(run)}</div>"
            for run in self.runs
        )
        prompt = html.escape(self.prompt.value)
        return (
            f"<div class='llm-playground-fallback' style='color:var(--jp-ui-font-color1,inherit)'>"
            f"<div><b>Sampling playground</b> · prompt: <b style='white-space:pre-wrap'>{prompt}</b></div>"
            f"{PROBABILITY_LEGEND}<div style='display:flex;flex-flow:row wrap;gap:4px'>{columns}</div></div>"
        )

    def settings(self) -> SamplingSettings:
        return SamplingSettings(
            max_new_tokens=self.max_new_tokens.value,
            temperature=self.temperature.value,
            top_k=self.top_k.value,
            top_p=self.top_p.value,
            repetition_penalty=self.repetition_penalty.value,
            num_return_sequences=self.num_samples.value,
            seed=self.seed.value,
            do_sample=not self.greedy.value,
        )

    def generate(self, new_seed: bool = False):
        """Generate with the current settings (after drawing a fresh seed when `new_seed`)."""
        import random

        from ..errors import LLMError

        if new_seed:
            self.seed.value = random.SystemRandom().randrange(2**31)  # not the stream generate seeds
        settings = self.settings()
        self.button.icon, self.button.description, self.button.disabled = "spinner spin", "Generating…", True
        try:
            result = self.session.generate(self.prompt.value, output_scores=True, **vars(settings))
        except LLMError as error:
            self.outputs.children = (
                widgets.HTML(f"<span style='color:var(--jp-error-color1,#b00)'>{html.escape(str(error))}</span>"),
                *self.outputs.children,
            )
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
        parts = [
            f"<div class='llm-run-label' style='font-size:12px;color:var(--jp-ui-font-color2)'>"
            f"{html.escape(label)} · seed={s.seed} · rep={s.repetition_penalty:g} · "
            f"{result.new_tokens} tokens · {result.tokens_per_second:.1f} tok/s</div>"
        ]
        for row, ids in enumerate(result.token_ids):
            tokens = token_probabilities(self.session.tokenizer, ids, result.scores, row)
            parts.append(tokens_by_probability_html(tokens))
        return "<hr>".join(parts)

    def _column(self, result) -> widgets.HTML:
        column = widgets.HTML(
            self._column_html(result),
            layout=widgets.Layout(
                flex="1 1 320px", min_width="0", border="1px solid var(--jp-border-color2)", padding="4px", margin="2px"
            ),
        )
        column.add_class("llm-run-column")
        return column
