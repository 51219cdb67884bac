"""The sampling playground: a control for every sampling setting, a Generate button, and the last runs side
by side with each token shaded by its probability (hover lists the alternatives)."""

from __future__ import annotations

import html
import re
import time

import ipywidgets as widgets

from .. import options
from ..generation import SamplingSettings, token_probabilities

SLIDER_LABELS = {
    "temperature": "temperature",
    "top_k": "top-k",
    "top_p": "top-p",
    "repetition_penalty": "repetition penalty",
    "max_new_tokens": "max new tokens",
    "num_return_sequences": "samples",
}
SLIDER_RANGES = {o.name: o.range for o in options.options("playground") if o.range}  # (low, high, step)
SLIDER_WIDTH = "430px"  # 130 px of label, ~290 px of track: max new tokens (1-512) moves < 2 tokens a pixel
STREAM_INTERVAL = 0.08  # seconds between two updates of the column a generation streams into

# Matplotlib's cividis (made for colour-vision deficiencies) at 0, 1/4, 1/2, 3/4 and 1; between the stops
# the colour is interpolated. Opaque, with black or white text, whichever contrasts more (always >= 4.5).
CIVIDIS = ((0x00, 0x22, 0x4E), (0x43, 0x4E, 0x6C), (0x7D, 0x7C, 0x78), (0xBC, 0xAE, 0x6C), (0xFE, 0xE8, 0x38))


def _luminance(rgb: tuple) -> float:
    linear = [c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: tuple, b: tuple) -> float:
    """WCAG contrast ratio of two sRGB colours."""
    la, lb = _luminance(a), _luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def probability_colours(prob: float) -> tuple[tuple, tuple]:
    """(background, text) for a token of probability `prob`: cividis, and black or white text."""
    x = min(max(prob, 0.0), 1.0) * (len(CIVIDIS) - 1)
    i = min(int(x), len(CIVIDIS) - 2)
    background = tuple(round(a + (b - a) * (x - i)) for a, b in zip(CIVIDIS[i], CIVIDIS[i + 1]))
    black, white = (0, 0, 0), (255, 255, 255)
    return background, max(black, white, key=lambda text: contrast(background, text))


def _css(rgb: tuple) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


PROBABILITY_LEGEND = (
    "<div class='llm-token-legend' style='font-size:12px;display:flex;align-items:center;gap:6px;"
    "color:var(--jp-ui-font-color1)'>token probability: <span>0</span><span style='display:inline-block;"
    "width:120px;height:10px;border-radius:3px;background:linear-gradient(to right,"
    + ",".join(_css(c) for c in CIVIDIS)
    + ")'></span><span>1</span>"
    "<span style='color:var(--jp-ui-font-color2)'>· hover a token for its alternatives</span></div>"
)

# The hover card: hidden by its own style attribute, shown by this rule (!important beats the attribute). Where
# a renderer drops <style> (an untrusted notebook, GitHub) it stays hidden and the token's title says the same.
CARD_STYLE = (
    "<style>.llm-token:hover>.llm-token-card,.llm-token:focus>.llm-token-card{display:block!important}"
    ".llm-token:focus{outline:2px solid var(--jp-brand-color1,#1976d2)}</style>"
)
# The saved notebook's output has little above its columns (no controls) and is clipped at its edges: there the
# card opens in the text's flow, under the token, and pushes the lines below down instead of floating.
FALLBACK_CARD_STYLE = (
    "<style>.llm-playground-fallback .llm-token-card{position:static!important;transform:none!important;"
    "margin:2px 0}</style>"
)
_CARD = (
    "display:none;position:absolute;left:0;z-index:1000;width:max-content;max-width:calc(100% - 8px);"
    "transform:translateY(calc(-100% - 2em));padding:4px 8px;border-radius:4px;font-size:12px;line-height:1.5;"
    "white-space:normal;background:var(--jp-layout-color1,#fff);color:var(--jp-ui-font-color1,#1f1f1f);"
    "border:1px solid var(--jp-border-color1,#bdbdbd);box-shadow:0 2px 6px rgba(0,0,0,0.3)"
)


def _slider(settings: SamplingSettings, name: str, description: str, style: dict) -> tuple[widgets.Widget, ...]:
    """A slider over the setting's declared range (llm_magics/options.py), a box to type the value in (linked
    to it, same range), and the two in a row."""
    low, high, step = SLIDER_RANGES[name]
    floats = isinstance(step, float)
    kind = widgets.FloatSlider if floats else widgets.IntSlider
    box_kind = widgets.BoundedFloatText if floats else widgets.BoundedIntText
    value = getattr(settings, name)
    slider = kind(
        value=value,
        min=low,
        max=high,
        step=step,
        description=description,
        style=style,
        readout=False,
        layout=widgets.Layout(width=SLIDER_WIDTH),
    )
    box = box_kind(value=value, min=low, max=high, step=step, layout=widgets.Layout(width="80px"))
    box.add_class("llm-setting-box")
    box.add_class(f"llm-box-{name}")
    widgets.link((slider, "value"), (box, "value"))
    return slider, box, widgets.HBox([slider, box])


def _card(token: dict) -> str:
    rows = "".join(
        f"<span style='display:flex;gap:12px;justify-content:space-between'>"
        f"<span class='llm-alt-token' style='white-space:pre'>{'<b>' if text == token['token'] else ''}"
        f"{html.escape(repr(text))}{'</b>' if text == token['token'] else ''}</span>"
        f"<span class='llm-alt-prob'>{p:.3f}</span></span>"
        for text, p in token["top"]
    )
    return (
        f"<span class='llm-token-card' style='{_CARD}'>"
        f"<span class='llm-card-chosen' style='display:block;white-space:pre'><b>{html.escape(repr(token['token']))}"
        f"</b> p={token['prob']:.3f} · rank <span class='llm-card-rank'>{token['rank']}</span></span>"
        f"<span style='display:block;color:var(--jp-ui-font-color2,#555)'>alternatives</span>{rows}</span>"
    )


def tokens_by_probability_html(tokens: list[dict], title: bool = False) -> str:
    """Each token shaded by its probability (cividis); hovering or focusing one shows a card with its
    alternatives, their probabilities and the token's rank. `title`: the same in the native tooltip too
    (the saved notebook, for renderers that drop the card's stylesheet)."""
    spans = []
    for t in tokens:
        background, text = probability_colours(t["prob"])
        tooltip = ""
        if title:
            alternatives = "&#10;".join(f"{html.escape(repr(a))}: {p:.3f}" for a, p in t["top"])
            tooltip = f' title="p={t["prob"]:.3f} (rank {t["rank"]})&#10;{alternatives}"'
        spans.append(
            f'<span class="llm-token" tabindex="0" data-id="{t["id"]}" data-prob="{t["prob"]:.6f}"{tooltip} '
            f'style="background:{_css(background)};color:{_css(text)};border-radius:3px;padding:0 1px">'
            f"{html.escape(t['token'])}{_card(t)}</span>"
        )
    return (
        "<div class='llm-tokens' style='position:relative;font-family:var(--jp-code-font-family,monospace);"
        "line-height:1.8;white-space:pre-wrap;overflow-wrap:break-word;color:var(--jp-content-font-color1)'>"
        + "".join(spans)
        + "</div>"
    )


# --- the panel ---------------------------------------------------------------------------------


def _speed_note(session) -> str:
    """On CPU without --quantize: say that the flag exists and what it would gain; else nothing."""
    from ..quantization import gain_hint, quantization_of

    loaded = session.loaded
    if loaded is not None and (quantization := quantization_of(loaded.model)) is not None:
        return (
            f"<small style='color:var(--jp-ui-font-color2,#555)'>quantized weights: "
            f"{html.escape(quantization.describe())}</small>"
        )
    hint = gain_hint(loaded)
    return (
        f"<small style='color:var(--jp-ui-font-color2,#555)'>full precision: {_code_spans(hint)}</small>"
        if hint
        else ""
    )


def _code_spans(text: str) -> str:
    """Escaped HTML of a message, its `backticked` parts as <code> (the text output keeps the backticks)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


class SamplingPanel:
    """Controls for every sampling setting, a Generate button, and the last runs side by side.

    Each click draws a new seed unless "pin seed" is ticked (a --seed given on the command line pins it);
    every column shows the seed it used, so any sample can be reproduced.
    """

    def __init__(
        self,
        session,
        prompt: str = "",
        settings: SamplingSettings | None = None,
        keep: int = 3,
        chat: bool = False,
        system: str | None = None,
    ):
        """chat, system: the chat template box ticked and the system prompt's text (`--chat`, `--system`)."""
        settings = settings or SamplingSettings()
        self.session, self.keep = session, keep
        self.runs: list = []
        self._tokens: dict[int, list[list[dict]]] = {}  # id of a kept run -> its shaded tokens (see _shaded)
        self.columns: list[widgets.HTML] = []  # one per run, newest first
        self._handle = None
        style = {"description_width": "130px"}
        self.prompt = widgets.Textarea(
            value=prompt, description="prompt", layout=widgets.Layout(width="98%"), style=style
        )
        sliders = {name: _slider(settings, name, label, style) for name, label in SLIDER_LABELS.items()}
        self.boxes = {name: box for name, (_, box, _) in sliders.items()}  # typed values, linked to the sliders
        rows = {name: row for name, (_, _, row) in sliders.items()}
        self.temperature = sliders["temperature"][0]
        self.top_k = sliders["top_k"][0]
        self.top_p = sliders["top_p"][0]
        self.repetition_penalty = sliders["repetition_penalty"][0]
        self.max_new_tokens = sliders["max_new_tokens"][0]
        self.num_samples = sliders["num_return_sequences"][0]
        self.seed = widgets.IntText(
            value=settings.seed if settings.seed is not None else 0,
            description="seed",
            style=style,
            layout=widgets.Layout(width="260px"),
        )
        self.pin_seed = widgets.Checkbox(
            value=settings.seed is not None, description="pin seed", indent=False, layout=widgets.Layout(width="auto")
        )
        self.stop = widgets.Text(
            value=settings.stop_text(),
            description="stop",
            placeholder="comma-separated; \\n = newline",
            style=style,
            layout=widgets.Layout(width=SLIDER_WIDTH),
        )
        # A model with a chat template: the prompt can be the user's turn, after a system prompt.
        self.chat = widgets.Checkbox(
            value=chat, description="chat template", indent=False, layout=widgets.Layout(width="auto")
        )
        self.system = widgets.Text(
            value=system or "",
            description="system prompt",
            placeholder="(chat template only)",
            style=style,
            layout=widgets.Layout(width="98%"),
        )
        self.chat_row = widgets.HBox([self.chat, self.system], layout=widgets.Layout(width="100%"))
        if not getattr(getattr(session, "tokenizer", None), "chat_template", None):
            self.chat_row.layout.display = "none"
        self.greedy = widgets.Checkbox(
            value=not settings.do_sample, description="greedy", indent=False, layout=widgets.Layout(width="auto")
        )
        self.button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.button.add_class("llm-generate")
        self.button.on_click(lambda _: self.generate(new_seed=not self.pin_seed.value))
        self.legend = widgets.HTML(PROBABILITY_LEGEND)
        # Columns wrap onto new rows rather than being clipped; nothing clips a token's hover card.
        self.outputs = widgets.Box(
            layout=widgets.Layout(width="100%", display="flex", flex_flow="row wrap", overflow="visible")
        )
        controls = widgets.VBox([rows[name] for name in ("temperature", "top_k", "top_p", "repetition_penalty")])
        more = widgets.VBox(
            [
                rows["max_new_tokens"],
                rows["num_return_sequences"],
                widgets.HBox([self.seed, self.pin_seed]),
                self.stop,
                widgets.HBox([self.greedy, self.button]),
            ]
        )
        self.speed_note = widgets.HTML(_speed_note(session))
        self.widget = widgets.VBox(
            [
                self.prompt,
                self.chat_row,
                widgets.HBox([controls, more], layout=widgets.Layout(flex_flow="row wrap")),
                self.legend,
                self.speed_note,
                self.outputs,
            ],
            layout=widgets.Layout(width="100%", overflow="visible"),
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
            f"padding:4px'>{self._column_html(run, title=True)}</div>"
            for run in self.runs
        )
        prompt = html.escape(self.prompt.value)
        return (
            f"<div class='llm-playground-fallback' style='color:var(--jp-ui-font-color1,inherit)'>{FALLBACK_CARD_STYLE}"
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
            stop=self.stop.value if self.stop.value.strip() else None,
            do_sample=not self.greedy.value,
        )

    def generate(self, new_seed: bool = False):
        """Generate with the current settings (after drawing a fresh seed when `new_seed`). A new column
        opens at once and fills as the tokens arrive (one sample; several come together), then shows each
        token shaded by its probability."""
        import random

        from ..base.errors import LLMError

        if new_seed:
            self.seed.value = random.SystemRandom().randrange(2**31)  # not the stream generate seeds
        settings = self.settings()
        prompt = self.prompt.value
        chat, system = self.chat.value, self.system.value or None
        # Busy first, then the new column: the button answers the click before anything else changes.
        self.button.icon, self.button.description, self.button.disabled = "spinner spin", "Generating…", True
        column = self._new_column(_header_html(prompt, settings, chat, system) + _footer_html("generating…"))
        previous = self.outputs.children
        self.outputs.children = (column, *self.columns[: self.keep - 1])
        pieces: list[str] = []
        last_update = [0.0]

        def on_text(text: str):
            pieces.append(text)
            now = time.monotonic()
            if now - last_update[0] >= STREAM_INTERVAL:
                last_update[0] = now
                column.value = (
                    _header_html(prompt, settings, chat, system)
                    + _streamed_html("".join(pieces))
                    + _footer_html(f"generating… {sum(map(len, pieces)):,} characters")
                )

        try:
            result = self.session.generate(
                prompt,
                on_text=on_text if settings.num_return_sequences == 1 else None,
                output_scores=True,
                chat=chat,
                system=system,
                **vars(settings),
            )
        except LLMError as error:
            self.outputs.children = (
                widgets.HTML(f"<span style='color:var(--jp-error-color1,#d32f2f)'>{html.escape(str(error))}</span>"),
                *previous,
            )
            return None
        finally:
            self.button.icon, self.button.description, self.button.disabled = "play", "Generate", False
        column.value = self._column_html(result)
        self.runs = [result, *self.runs][: self.keep]
        self._tokens = {id(run): self._tokens[id(run)] for run in self.runs if id(run) in self._tokens}
        self.columns = [column, *self.columns][: self.keep]
        self.outputs.children = tuple(self.columns)
        if self._handle is not None:
            self._handle.update(self.mimebundle(), raw=True)
        return result

    def _column_html(self, result, title: bool = False) -> str:
        """The run's prompt and settings (header), its tokens shaded by probability, how it ended (footer)."""
        parts = []
        for tokens in self._shaded(result):
            parts.append(tokens_by_probability_html(tokens, title))
        footer = f"{result.new_tokens} tokens · {result.tokens_per_second:.1f} tok/s · stopped: {result.stop_reason}"
        header = _header_html(result.prompt, result.settings, result.chat, result.system)
        return CARD_STYLE + header + "<hr>".join(parts) + _footer_html(footer)

    def _shaded(self, result) -> list[list[dict]]:
        """Each sample's tokens with their probabilities, rank and alternatives, computed once per run (the
        live column and the saved notebook's fallback, which shows every kept run, both use them)."""
        key = id(result)
        if key not in self._tokens:
            rows = []
            for row, ids in enumerate(result.token_ids):
                tokens = token_probabilities(self.session.tokenizer, ids, result.scores, row)
                if result.stopped_at and result.stopped_at[row] is not None:
                    tokens = _up_to(tokens, len(result.texts[row]))
                rows.append(tokens)
            self._tokens[key] = rows
        return self._tokens[key]

    def _new_column(self, value: str) -> widgets.HTML:
        column = widgets.HTML(
            value,
            layout=widgets.Layout(
                flex="1 1 320px",
                min_width="0",
                border="1px solid var(--jp-border-color2)",
                padding="4px",
                margin="2px",
                overflow="visible",
            ),
        )
        column.add_class("llm-run-column")
        return column


def _header_html(prompt: str, s: SamplingSettings, chat: bool = False, system: str | None = None) -> str:
    """What a column was made from: its prompt (an excerpt), every setting, seed included, and for the
    chat template its system prompt."""
    sampling = "greedy" if not s.do_sample else f"T={s.temperature:g} top-k={s.top_k} top-p={s.top_p:g}"
    excerpt = _excerpt(prompt)
    return (
        f"<div class='llm-run-label' style='font-size:12px;color:var(--jp-ui-font-color2)'>"
        f"{html.escape(sampling)} · seed={s.seed} · rep={s.repetition_penalty:g} · max={s.max_new_tokens}"
        + (f" · stop={html.escape(repr(s.stop_strings()))}" if s.stop_strings() else "")
        + f"<br><span class='llm-run-prompt' style='white-space:pre-wrap'>{'chat · ' if chat else ''}prompt: "
        f"{html.escape(repr(excerpt))}"
        + (f" · system: {html.escape(repr(_excerpt(system)))}" if chat and system else "")
        + "</span></div>"
    )


def _excerpt(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 3] + "…"


def _up_to(tokens: list[dict], length: int) -> list[dict]:
    """The tokens that make the first `length` characters (a text cut at a stop sequence)."""
    kept, shown = [], 0
    for token in tokens:
        if shown >= length:
            break
        kept.append(token)
        shown += len(token["token"])
    return kept


def _footer_html(text: str) -> str:
    return (
        f"<div class='llm-run-footer' style='font-size:12px;color:var(--jp-ui-font-color2)'>{html.escape(text)}</div>"
    )


def _streamed_html(text: str) -> str:
    return (
        "<div class='llm-tokens llm-streaming' style='font-family:var(--jp-code-font-family,monospace);"
        f"line-height:1.8;white-space:pre-wrap;overflow-wrap:break-word'>{html.escape(text)}</div>"
    )
