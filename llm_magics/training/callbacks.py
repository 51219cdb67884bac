"""What a run tells the things that follow it (the live chart, the run record, the progress bar, trackers,
early stopping, the user's own callbacks): one declared protocol, every method optional.

A plain function `(row, result)` is an `on_step`; an object written before this protocol (its `__call__`
is the step, `on_prepare` / `on_record` / `close` where it has them) is wrapped by `as_callback` once,
so the loop and the run never probe what a callback can do."""

from __future__ import annotations

from collections.abc import Callable


class StepCallback:
    """Subclass and override what you need; the defaults do nothing."""

    def on_record(self, record) -> None:
        """The run's record (`llm_magics.runs.RunRecord`), before anything runs."""

    def on_prepare(self, stage: str, done: int, total: int | None, **details) -> None:
        """Data preparation: reading, tokenizing (the same calls as `on_prepare=` hooks)."""

    def on_step(self, row: dict, result) -> None:
        """After each optimizer step: the step's row (step, loss, lr, tokens, elapsed; eval scores on an
        evaluation step) and the live `TrainResult`."""

    def on_eval(self, step: int, scores: dict, result) -> None:
        """An evaluation at `step` (eval_loss, or accuracy and f1); set `result.stopped_early` to end the run."""

    def on_end(self, result) -> None:
        """The loop has ended (finished, stopped or stopped early), its last checkpoint written."""

    def close(self) -> None:
        """The command is over, whatever happened (release bars and widgets)."""

    def __call__(self, row: dict, result) -> None:  # a callback is also a plain step function
        self.on_step(row, result)


class _Wrapped(StepCallback):
    """A plain step function, or an object with `__call__` and some of the protocol's methods."""

    def __init__(self, wrapped: Callable):
        self.wrapped = wrapped
        for name in ("on_record", "on_prepare", "on_eval", "on_end", "close"):
            method = getattr(wrapped, name, None)
            if callable(method):
                setattr(self, name, method)

    def on_step(self, row: dict, result) -> None:
        self.wrapped(row, result)


def as_callback(callback) -> StepCallback:
    return callback if isinstance(callback, StepCallback) else _Wrapped(callback)


def as_callbacks(callbacks) -> list[StepCallback]:
    return [as_callback(c) for c in callbacks]
