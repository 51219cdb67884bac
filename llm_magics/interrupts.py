"""Graceful stop for long work: a kernel interrupt (SIGINT) or a Stop button sets a flag
that train/generate loops check between steps, so the model is never left half-updated."""
from __future__ import annotations

import contextlib
import signal
import threading


class StopFlag:
    def __init__(self):
        self._event = threading.Event()
        self.reason = None

    def request(self, reason: str = "stopped") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


@contextlib.contextmanager
def graceful_interrupts(flag: StopFlag | None = None):
    """The first SIGINT asks the loop to stop at the next step; a second one interrupts at once."""
    flag = flag or StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread
        return

    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.request("interrupted")

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
