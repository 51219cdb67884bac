"""Atomic folder writes (llm_magics.base.files.staged_folder), the one helper behind save, checkpoints and the
GGUF conversion cache: on real folders, with a real SIGINT during the swap."""

import os
import signal

import pytest

from llm_magics.base.files import staged_folder


def test_a_finished_write_replaces_the_folder_whole(tmp_path):
    target, staging = tmp_path / "model", tmp_path / "model.partial"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with staged_folder(target, staging) as folder:
        assert folder == staging and folder.is_dir() and not any(folder.iterdir())
        (folder / "new.bin").write_text("new")
        assert (target / "old.bin").read_text() == "old"  # nothing changes until the block ends
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["new.bin"]


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path):
    target, staging = tmp_path / "model", tmp_path / "model.partial"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with staged_folder(target, staging) as folder:
            (folder / "half.bin").write_text("half")
            raise OSError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["old.bin"]


def test_an_interrupt_during_the_swap_waits_until_it_is_done(tmp_path):
    """The swap moves two files; a SIGINT after the first arrives only once both are in place."""
    target, staging = tmp_path / "model", tmp_path / "staging"
    target.mkdir()

    def swap(staging, target):
        os.replace(staging / "a", target / "a")
        os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt here would leave the folder half-swapped
        os.replace(staging / "b", target / "b")

    with pytest.raises(KeyboardInterrupt):
        with staged_folder(target, staging, swap) as folder:
            (folder / "a").write_text("a")
            (folder / "b").write_text("b")
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"]
    assert not staging.exists()
