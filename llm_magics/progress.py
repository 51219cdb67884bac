"""A tqdm progress bar (a widget in notebooks, text in terminals) fed by training steps."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm


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

    return RefreshedBar


class ProgressBar:
    def __init__(self, description: str = "training"):
        self.description = description
        self.bar: tqdm | None = None

    def __call__(self, row: dict, result) -> None:
        if self.bar is None:
            self.bar = progress_bar(total=result.total_steps, initial=row["step"] - 1, desc=self.description,
                            unit="step", dynamic_ncols=True)
        self.bar.update(row["step"] - self.bar.n)
        postfix = {"loss": f"{row['loss']:.4f}"}
        if "eval_loss" in row:
            postfix["eval"] = f"{row['eval_loss']:.4f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
