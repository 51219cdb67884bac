"""A generation or chat turn as it streams into the cell (one HTML output updated in place)."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from ..base.status import in_notebook

if TYPE_CHECKING:
    from IPython.display import DisplayHandle


class StreamedText:
    """A generation as it streams: the prompt in bold (or a chat turn labelled user / assistant), then the
    continuation, word-wrapped (never mid-word).

    In a notebook it is one HTML output updated in place (display_id), at most `max_updates_per_second`
    times; elsewhere the text is printed as it comes. Nothing is shown before the first piece, so a
    request that fails on its input leaves no half output.
    """

    def __init__(
        self, prompt: str, chat: bool = False, notebook: bool | None = None, max_updates_per_second: float = 10.0
    ):
        self.prompt, self.chat, self.text = prompt, chat, ""
        self.notebook = in_notebook() if notebook is None else notebook
        self.min_interval = 1.0 / max_updates_per_second
        self._handle: DisplayHandle | None = None
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
        assert self._handle is not None and self._last_update is not None  # _start showed it
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
            assert self._handle is not None  # _start showed it
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
        return {
            "text/plain": plain + (f"\n{note}" if note else ""),
            "text/html": "<div class='llm-generation' style='white-space:pre-wrap;overflow-wrap:break-word;"
            "word-break:normal;font-family:var(--jp-content-font-family,inherit);"
            f"color:var(--jp-content-font-color1,inherit);line-height:1.5'><div>{body}</div>{extra}</div>",
        }


def _turn(role: str, text: str) -> str:
    return (
        f"<div class='llm-turn llm-{role}'><span class='llm-role' style='display:inline-block;min-width:5.5em;"
        f"font-weight:bold;color:var(--jp-ui-font-color2)'>{role}</span>{html.escape(text)}</div>"
    )
