"""What data preparation reports and how it stops: progress (tqdm + `on_prepare(stage, done, total)`
hooks such as the live chart's header) and the run's stop flag (kernel interrupt, Stop button)."""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from typing import TYPE_CHECKING

from ..base.interrupts import StopFlag, ignoring_interrupts, import_whole

if TYPE_CHECKING:
    from tqdm import tqdm


class Preparation:
    """Handed to reading and tokenizing: `report()` feeds the progress bar and every hook; `stopped` is
    the run's stop flag. Hooks are callables `(stage, done, total)`."""

    def __init__(self, stop: StopFlag | None = None, hooks=(), *, progress: bool):
        self.stop = stop or StopFlag()
        self.hooks = list(hooks)
        self.progress = progress
        self._bar: tqdm | None = None
        self._stage: str | None = None

    @property
    def stopped(self) -> bool:
        return self.stop.requested

    def report(self, stage: str, done: int, total: int | None, unit: str = "docs", bar: bool = True):
        """Stage 'reading' or 'tokenizing': `done` of `total` (None when unknown) so far. bar=False when
        the library doing the work shows its own tqdm bar (datasets' readers)."""
        if self.progress and bar:
            if self._stage != stage:
                self.close()
                from ..base.progress import progress_bar

                self._bar = progress_bar(total=total, desc=stage, unit=unit, unit_scale=True, dynamic_ncols=True)
                self._stage = stage
            assert self._bar is not None  # opened with the stage
            self._bar.update(done - self._bar.n)
        for hook in self.hooks:
            hook(stage, done, total)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar, self._stage = None, None

    @contextlib.contextmanager
    def interruptible(self):
        """Around library calls that cannot check our flag (datasets' readers): an interrupt or
        Session.stop() raises KeyboardInterrupt inside them at once; we swallow it and set the flag.
        The library's own cleanup (its `.incomplete` dirs, temp files) keeps the cache consistent."""
        import_whole("datasets")  # an interrupt inside its first import would break it for the kernel
        if threading.current_thread() is not threading.main_thread() or ignoring_interrupts():
            yield
            return
        active = [True]
        previous = signal.getsignal(signal.SIGINT)

        def raise_now(signum, frame):
            self.stop.request("interrupted")
            if active[0]:
                raise KeyboardInterrupt

        finished = threading.Event()

        def watch():  # Session.stop() from another thread only sets the flag: turn it into an interrupt
            while not finished.wait(0.05):
                if self.stop.requested:
                    _thread.interrupt_main(signal.SIGINT)
                    return

        signal.signal(signal.SIGINT, raise_now)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield
        except KeyboardInterrupt:
            self.stop.request("interrupted")
        finally:
            active[0] = False
            finished.set()
            watcher.join()
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def datasets_bars(enabled: bool):
    """datasets' own tqdm bars on or off for a while (ours report tokenizing; off when progress is off)."""
    datasets = import_whole("datasets")

    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()
