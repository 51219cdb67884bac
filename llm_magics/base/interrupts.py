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
    if threading.current_thread() is not threading.main_thread() or ignoring_interrupts():
        yield flag  # handlers can only be set from the main thread; a training worker ignores SIGINT
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


def ignoring_interrupts() -> bool:
    """This process ignores SIGINT: a `--processes` worker, which the kernel stops through a shared event
    (Jupyter's interrupt reaches the kernel's whole process group, workers included)."""
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


@contextlib.contextmanager
def deferred_interrupts():
    """SIGINT waits until the block has finished, then reaches the handler that was there before (which may
    raise KeyboardInterrupt or ask the run to stop). For imports: one cut half-way leaves a library
    half-initialised for the rest of the kernel."""
    if threading.current_thread() is not threading.main_thread() or ignoring_interrupts():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for frame in received[:2]:  # a double interrupt stays a double interrupt
            if callable(previous):
                previous(signal.SIGINT, frame)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


def import_whole(name: str):
    """`import name`, never cut by an interrupt; a module an earlier interrupt left half-imported (the user's
    own `import datasets` cut short) is dropped from sys.modules and imported again."""
    import importlib
    import sys

    with deferred_interrupts():
        try:
            module = importlib.import_module(name)
            if name == "datasets":
                for attribute in ("load_dataset", "Dataset", "utils"):  # missing in a half-initialised datasets
                    getattr(module, attribute)
            return module
        except (ImportError, AttributeError):
            for loaded in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
                del sys.modules[loaded]
            if name == "datasets":  # the first import registered its Arrow types; the second one will again
                import pyarrow as pa

                for dims in range(2, 6):
                    try:
                        pa.unregister_extension_type(f"datasets.features.features.Array{dims}DExtensionType")
                    except (KeyError, pa.ArrowException):
                        pass
            return importlib.import_module(name)
