"""The step-callback protocol (llm_magics.training.callbacks) on real training runs, and the run kinds."""

import json
from pathlib import Path

import pytest

from llm_magics import Session
from llm_magics import runs as run_history
from llm_magics.base.kinds import RunKind
from llm_magics.training.callbacks import StepCallback
from support import DATA

CORPUS = (DATA / "tiny_corpus.txt").read_text()
TINY = dict(from_scratch=True, seq_len=16, batch_size=2, progress=False)


class Journal(StepCallback):
    """Writes down every call the run makes, in order."""

    def __init__(self):
        self.calls = []

    def on_record(self, record):
        self.calls.append(("record", record.id))

    def on_prepare(self, stage, done, total, **details):
        self.calls.append(("prepare", stage))

    def on_step(self, row, result):
        self.calls.append(("step", row["step"]))

    def on_eval(self, step, scores, result):
        self.calls.append(("eval", step, scores["eval_loss"]))

    def on_end(self, result):
        self.calls.append(("end", result.steps_done))

    def close(self):
        self.calls.append(("close",))


def test_every_callback_method_is_called_in_order(tmp_path):
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text(CORPUS[:600])
    journal, plain = Journal(), []
    result = Session().train(
        text=CORPUS,
        eval_data=str(eval_file),
        eval_every=2,
        steps=4,
        on_step=[journal, lambda row, result: plain.append(row["step"])],
        **TINY,
    )
    calls = journal.calls
    assert calls[0] == ("record", result.record_id)
    assert {c[1] for c in calls if c[0] == "prepare"} >= {"reading", "tokenizing"}
    assert [c[1] for c in calls if c[0] == "step"] == [1, 2, 3, 4] == plain  # a plain function is an on_step
    evals = [c for c in calls if c[0] == "eval"]
    assert [(step, loss) for _, step, loss in evals] == [(e["step"], e["eval_loss"]) for e in result.eval_history]
    assert [e[1] for e in evals] == [2, 4]
    assert calls[-2:] == [("end", 4), ("close",)]
    assert calls.index(("eval", 2, evals[0][2])) < calls.index(("step", 3))


def test_an_on_eval_can_stop_the_run(tmp_path):
    """What early stopping does, from a user's callback: the run ends after the step it evaluated."""
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text(CORPUS[:600])

    class StopAtFirstEval(StepCallback):
        def on_eval(self, step, scores, result):
            result.stopped_early = True

    result = Session().train(
        text=CORPUS, eval_data=str(eval_file), eval_every=3, steps=12, on_step=[StopAtFirstEval()], **TINY
    )
    assert result.steps_done == 3 and result.stopped_early and not result.interrupted
    assert result.metrics["eval_loss"] == result.eval_history[-1]["eval_loss"]


def test_run_kinds_are_plain_names_on_disk_and_in_messages():
    s = Session()
    result = s.train(text=CORPUS, steps=1, **TINY)
    assert result.kind is RunKind.TRAIN and result.summary().startswith("train: 1/1 steps")
    info = json.loads((Path(result.run_dir) / "run.json").read_text())
    assert info["kind"] == "train"
    assert run_history.to_result(run_history.find(result.record_id)).kind is RunKind.TRAIN  # after a restart
    assert [f"{k}" for k in RunKind] == ["train", "finetune", "classify", "lr-find", "eval"]
    assert RunKind.of("finetune", task="classify") is RunKind.CLASSIFY and RunKind.of("train") is RunKind.TRAIN
    with pytest.raises(ValueError):
        RunKind.of("generate")
