"""One-line status messages for waits that would otherwise be silent: imports that take seconds the first
time (torch, transformers, plotly), long captures. Printed at once, before the wait, never after it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def say(message: str) -> None:
    print(message, flush=True)


def before_first_import(module: str, message: str) -> None:
    """Say `message` when `module` has not been imported in this process yet (importing it is the wait)."""
    if module not in sys.modules:
        say(message)


@contextlib.contextmanager
def while_first_importing(module: str, message: str) -> Iterator[None]:
    """Say `message` while `module` is imported for the first time; in a notebook the line goes away once
    the wait is over (it would otherwise stay above the output for good)."""
    if module in sys.modules:
        yield
        return
    if not in_notebook():
        say(message)
        yield
        return
    from IPython.display import display

    handle = display({"text/plain": message}, raw=True, display_id=True)
    try:
        yield
    finally:
        handle.update({"text/plain": ""}, raw=True)
