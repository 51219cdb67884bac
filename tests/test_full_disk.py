"""A full or read-only disk under the runs dir, a save or a checkpoint: one line that says so, and the run is
recorded as failed, never left "running" (issue 27 item 3).

Real disks: a small tmpfs (mounting needs root; elsewhere those tests skip with one line saying why). The
/dev/full test needs no mount, so CI always covers a write that fails with ENOSPC."""

import subprocess

import pytest
import torch

from llm_magics import LLMError, Session
from llm_magics import runs as run_history
from llm_magics.training.callbacks import StepCallback
from support import DATA, one_error_line

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5
TINY = dict(from_scratch=True, config="tiny", seq_len=16, batch_size=2, progress=False)


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of `size` (a real full disk), unmounted after the test."""
    mounted = []

    def mount(size: str, read_only: bool = False):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'mount failed'})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _failed_and_listed(runs_dir, session: Session, message: str):
    """The run is in session.runs and in the runs table as failed with that message, never running."""
    assert session.runs[-1].error == message
    [info] = run_history.all_runs(runs_dir)
    assert info["status"] == f"failed: {message}"
    assert info["history"], "the steps written before the disk filled up are kept"


@pytest.mark.slow
def test_a_full_runs_dir_is_one_line_and_the_run_is_failed_not_running(small_disk, shell, capsys):
    disk = small_disk("12k")  # 3 pages: run.json, and a history that fills up after a few dozen steps
    shell.run_cell(
        f"%%llm train --from-scratch --config tiny --steps 400 --seq-len 16 --batch-size 2 --no-widget --no-progress "
        f"--runs-dir {disk}\n" + CORPUS
    )
    line = one_error_line(capsys)
    assert line.startswith(f"llm train: --runs-dir {disk}: no space left on device; the run stopped at step ")
    import llm_magics

    _failed_and_listed(disk, llm_magics.session, line.removeprefix("llm train: "))
    assert llm_magics.session.loaded is not None  # the trained model is still in the kernel


def test_a_write_that_fails_with_enospc_is_the_same_line(tmp_path):
    """/dev/full fails every write with ENOSPC: the history file is pointed at it after the run starts."""

    class FullDiskAfterStart(StepCallback):
        def on_record(self, record):
            record._history.close()
            record._history = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115

    session = Session()
    with pytest.raises(LLMError) as raised:
        session.train(text=CORPUS, steps=5, runs_dir=str(tmp_path), on_step=[FullDiskAfterStart()], **TINY)
    assert str(raised.value) == f"--runs-dir {tmp_path}: no space left on device; the run stopped at step 1"
    assert session.runs[-1].error == str(raised.value)
    [info] = run_history.all_runs(tmp_path)
    assert info["status"] == f"failed: {raised.value}"


def test_a_record_that_cannot_be_written_at_the_end_is_not_listed_as_running(small_disk):
    """The disk fills up between the last step and the final record: this kernel still lists the run as
    it ended (from memory), not as running."""
    disk = small_disk("16k")

    class FillTheDiskAtTheEnd(StepCallback):
        def on_end(self, result):
            filler = disk / "filler"
            try:
                with open(filler, "wb") as handle:
                    handle.write(b"x" * 65536)
            except OSError:
                pass

    session = Session()
    result = session.train(text=CORPUS, steps=3, runs_dir=str(disk), on_step=[FillTheDiskAtTheEnd()], **TINY)
    assert result.steps_done == 3
    [info] = run_history.all_runs(disk)
    assert info["status"] == "finished"
    assert not list(disk.glob(f"{result.record_id}/*.partial")), "no half-written record is left"


@pytest.mark.slow
def test_save_into_a_read_only_or_full_folder_is_one_line(small_disk, magic_session, shell, capsys):
    read_only = small_disk("1m", read_only=True)
    before = {k: v.clone() for k, v in magic_session.loaded.model.state_dict().items()}
    shell.run_line_magic("llm", f"save {read_only}/model")
    assert one_error_line(capsys) == f"llm save: {read_only}/model is not writable: Read-only file system"
    full = small_disk("64k")  # the staging folder is made, then the weights do not fit
    shell.run_line_magic("llm", f"save {full}/model")
    line = one_error_line(capsys)
    assert line.startswith(f"llm save: no space left on the disk: {full}/model was not saved"), line
    assert [p.name for p in full.iterdir()] == [], "no staging folder is left behind"
    after = magic_session.loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model is unchanged"


@pytest.mark.slow
def test_a_checkpoint_on_a_full_disk_says_no_space_left(small_disk, tmp_path, shell, capsys):
    disk = small_disk("200k")  # room for the run's record, not for a checkpoint of the tiny model
    shell.run_cell(
        f"%%llm train --from-scratch --config tiny --steps 4 --seq-len 16 --batch-size 2 --no-widget --no-progress "
        f"--checkpoint-every 2 --output-dir {disk}/out --runs-dir {tmp_path}\n" + CORPUS
    )
    line = one_error_line(capsys)
    assert "no space left on the disk: checkpoint checkpoint-2 was not written" in line, line
    assert "unexpected pos" not in line and "enforce fail" not in line
