"""tqdm progress bars (a widget in notebooks, text in terminals): training steps, sweeps over layers or targets."""

from __future__ import annotations

from typing import Any


def progress_bar(**kwargs):
    """tqdm.auto's bar. In a notebook the widget is shown with a display id and its display is refreshed
    when the bar closes: a saved notebook (which keeps the widget's text, not its live state) then shows
    the final state instead of the 0% the bar was first displayed with."""
    from tqdm.auto import tqdm
    from tqdm.autonotebook import tqdm as chosen  # tqdm.notebook's class in a kernel, the text one elsewhere

    if chosen.__module__ != "tqdm.notebook":
        return tqdm(**kwargs)
    return _refreshed_notebook_bar()(**kwargs)


def _refreshed_notebook_bar():
    from IPython.display import display
    from tqdm.notebook import tqdm

    class RefreshedBar(tqdm):
        def __init__(self, **kwargs):
            super().__init__(display=False, **kwargs)
            container = getattr(self, "container", None)
            self.handle = display(container, display_id=True) if container is not None else None

        def close(self):
            super().close()
            if self.handle is not None:
                self.handle.update(self.container)
                self.handle = None

        def discard(self):
            """Closed and taken off the page: a failed command's one line stands alone."""
            handle, self.handle = self.handle, None
            super().close()
            self.container.close()
            if handle is not None:
                handle.update({"text/plain": ""}, raw=True)

    return RefreshedBar


def discard_open_bars() -> None:
    """After a command failed: close every progress bar it left open, and take ours off the page.

    A bar left open stays on the page as a dead 0%, and in a notebook its widget is later collected while
    the page still holds it (tqdm's repr then raises ReferenceError tracebacks into the next cell's output).
    In a terminal, closing ends the bar's line, so the error prints on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        discard = getattr(bar, "discard", None)
        if discard is not None:
            discard()
        else:  # a library's bar (datasets'): closed, and hidden where it is a widget
            bar.leave = False
            bar.close()


class ProgressBar:
    """One bar for everything we count: a run's steps (as a step callback), or any `count(done, total)`
    (the layers of a patching sweep, the targets of an attribution)."""

    def __init__(self, description: str = "training", unit: str = "step"):
        self.description, self.unit = description, unit
        self.bar: Any = None  # a tqdm bar once the first count arrives

    def count(self, done: int, total: int) -> None:
        if self.bar is None:  # a resumed run's bar starts at the step it resumed from
            self.bar = progress_bar(
                total=total, initial=max(done - 1, 0), desc=self.description, unit=self.unit, dynamic_ncols=True
            )
        self.bar.update(done - self.bar.n)

    def __call__(self, row: dict, result) -> None:
        self.count(row["step"], result.total_steps)
        postfix = {"loss": f"{row['loss']:.4f}"}
        if "eval_loss" in row:
            postfix["eval"] = f"{row['eval_loss']:.4f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
