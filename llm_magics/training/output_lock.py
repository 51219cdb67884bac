"""One run at a time per --output-dir: an advisory lock (flock) held for the whole run, so two kernels
writing checkpoints into one folder cannot rotate each other's checkpoints away. The lock goes with the
process (also when it is killed), so a stale lock file never blocks a later run."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..base.errors import LLMError

LOCK_FILE = ".llm_magics.lock"


class OutputDirLock:
    def __init__(self, folder: Path):
        self.folder = folder
        self.fd: int | None = None

    def acquire(self) -> OutputDirLock:
        """Take the lock, or refuse in one line naming the process that holds it."""
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LLMError(
                f"--output-dir {self.folder} is in use by another run (process {holder}): wait for it "
                "to end, or pick another --output-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
