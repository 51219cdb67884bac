"""--track through accelerate's trackers: what the tracker wrote, read back with its own reader."""

from pathlib import Path

import pytest

from llm_magics import LLMError, Session
from support import DATA, one_error_line, run

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5


def test_tensorboard_event_files_hold_the_history_step_for_step():
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = Session()
    result = s.train(
        text=CORPUS,
        from_scratch=True,
        steps=8,
        seq_len=16,
        batch_size=2,
        progress=False,
        eval_data=str(DATA / "tiny_corpus.txt"),
        eval_every=4,
        track="tensorboard",
    )
    (events,) = Path(result.run_dir).glob("trackers/llm_magics/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    loss = accumulator.Scalars("loss")
    lr = accumulator.Scalars("lr")
    evals = accumulator.Scalars("eval_loss")
    assert [e.step for e in loss] == [row["step"] for row in result.history] == list(range(1, 9))
    assert [e.value for e in loss] == pytest.approx([row["loss"] for row in result.history], rel=1e-6)  # float32
    assert [e.value for e in lr] == pytest.approx([row["lr"] for row in result.history], rel=1e-6)
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in evals] == [
        (row["step"], row["eval_loss"]) for row in result.history if "eval_loss" in row
    ]


def test_trackio_local_store_holds_the_history():
    """trackio's local store (it fixes its folder when first imported, so the default one); our run is
    removed from it afterwards."""
    pytest.importorskip("trackio")
    s = Session()
    result = s.train(text=CORPUS, from_scratch=True, steps=5, seq_len=16, batch_size=2, progress=False, track="trackio")
    from trackio.sqlite_storage import SQLiteStorage

    try:
        logs = SQLiteStorage.get_logs("llm_magics", result.record_id)  # the run is named by its run-history id
    finally:
        SQLiteStorage.delete_run("llm_magics", result.record_id)
    assert [row["step"] for row in logs] == list(range(1, 6))
    assert [row["loss"] for row in logs] == pytest.approx([row["loss"] for row in result.history], rel=1e-9)
    assert [row["lr"] for row in logs] == pytest.approx([row["lr"] for row in result.history], rel=1e-9)


def test_unknown_or_missing_trackers_are_one_line(shell, capsys, monkeypatch):
    run(shell, "train --from-scratch --steps 2 --seq-len 16 --no-widget --no-progress --track tensorbored", CORPUS)
    assert one_error_line(capsys) == (
        "llm train: unknown tracker 'tensorbored' in --track: use tensorboard, "
        "trackio, wandb, mlflow, aim (comma-separated)"
    )
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_aim_available", lambda: False)  # as on a machine without aim
    with pytest.raises(
        LLMError, match=r'--track aim needs aim, which is not installed: pip install "llm-magics\[aim\]"'
    ):
        Session().train(text=CORPUS, from_scratch=True, steps=2, seq_len=16, progress=False, track="tensorboard,aim")


@pytest.mark.slow
def test_tensorboard_with_two_processes_logs_once_from_rank_0_the_history():
    """--processes 2: accelerate logs on the main process only, so one events file, and what it holds is the
    history the kernel shows (the mean of both ranks' losses, the lr) step for step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = Session().train(
        text=CORPUS,
        from_scratch=True,
        steps=4,
        seq_len=16,
        batch_size=2,
        processes=2,
        device="cpu",
        progress=False,
        track="tensorboard",
        eval_data=str(DATA / "tiny_corpus.txt"),
        eval_every=2,
    )
    assert all(len(row["rank_losses"]) == 2 for row in result.history)  # both ranks trained
    folder = Path(result.run_dir) / "trackers" / "llm_magics"
    (scalars,) = folder.glob("events.out.tfevents.*")  # one writer of the scalars
    # every events file (the scalars, and the options as hparams in a sub-folder) was written by one
    # process: events.out.tfevents.TIME.HOST.PID.N; rank 1 wrote nothing
    assert len({f.name.split(".")[-2] for f in folder.rglob("events.out.tfevents.*")}) == 1
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    loss, lr = accumulator.Scalars("loss"), accumulator.Scalars("lr")
    assert [e.step for e in loss] == [row["step"] for row in result.history] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([row["loss"] for row in result.history], rel=1e-6)
    assert [e.value for e in lr] == pytest.approx([row["lr"] for row in result.history], rel=1e-6)
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in accumulator.Scalars("eval_loss")] == [
        (row["step"], row["eval_loss"]) for row in result.history if "eval_loss" in row
    ]
