"""Atomic folder writes: everything is written into a staging folder beside the target, then put in place
with interrupts deferred, so a full disk, a crash or an interrupt never leaves half a folder behind."""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .interrupts import deferred_interrupts


def replace_folder(staging: Path, target: Path) -> None:
    """The whole target becomes the staging folder (an earlier one is renamed aside, then dropped)."""
    replaced = target.with_name(target.name + ".replaced")
    if target.exists():
        shutil.rmtree(replaced, ignore_errors=True)
        target.rename(replaced)
    staging.rename(target)
    shutil.rmtree(replaced, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(target: Path, staging: Path, swap: Callable[[Path, Path], None] = replace_folder) -> Iterator[Path]:
    """Yield `staging` (created empty, beside `target`) to write into; when the block ends without an error,
    `swap(staging, target)` puts it in place, uncut by interrupts. Whatever happens, no staging is left."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        with deferred_interrupts():
            swap(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def why_not_written(error: OSError) -> str:
    """A failed write's reason in words: 'no space left on device', 'Read-only file system'..."""
    if error.errno == errno.ENOSPC:
        return "no space left on device"
    return error.strerror or str(error)
