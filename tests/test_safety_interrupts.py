"""A stop during %%llm eval stops the whole evaluation: partial, never reported or recorded as the score."""
import math

import torch

import llm_magics
from conftest import DATA, interrupt_at_forward, run
from llm_magics import Session

CORPUS = (DATA / "tiny_corpus.txt").read_text()
LONG = CORPUS * 60  # about 1,500 windows of 8 bytes: seconds of work for the tiny model


def _stop_at_forward(session: Session, calls: int):
    """Session.stop() (the Stop button's call) from inside the model's forward number `calls`: the stop
    lands at an exact point of the evaluation, whatever the machine's speed."""
    count = [0]

    def hook(module, args, output):
        count[0] += 1
        if count[0] == calls:
            session.stop()

    return session.model.register_forward_hook(hook)


def test_session_stop_makes_the_evaluation_partial():
    s = Session()
    s.train(text=CORPUS * 5, from_scratch=True, steps=2, seq_len=16, batch_size=2, progress=False)
    full = s.eval("perplexity", text=CORPUS, seq_len=8)
    assert not full.partial and math.isfinite(full.value) and s.runs[-1].metrics["eval_perplexity"] == full.value
    handle = _stop_at_forward(s, 3)
    try:
        result = s.eval("perplexity", text=LONG, seq_len=8)
    finally:
        handle.remove()
    assert result.partial and result.examples == 3 and result.total > 1000  # windows 1-3 scored, then stopped
    assert math.isnan(result.value)  # never a number that looks like the score
    assert s.runs[-1].metrics["eval_perplexity"] == full.value  # the stopped one is not recorded
    assert result.summary().startswith(f"perplexity: partial: 3 of {result.total} windows, stopped")
    assert s.stop_flag is None


def test_kernel_interrupt_stops_eval_in_the_magic(shell, capsys):
    run(shell, "train --from-scratch --steps 2 --seq-len 16 --batch-size 2 --no-widget --no-progress", CORPUS * 5)
    recorded = dict(llm_magics.session.runs[-1].metrics)
    capsys.readouterr()
    handle = interrupt_at_forward(llm_magics.session.model, 3)  # a real SIGINT in the third window
    try:
        result = run(shell, "eval --metric perplexity --seq-len 8", LONG)
    finally:
        handle.remove()
    out, err = capsys.readouterr()
    assert result.partial and math.isnan(result.value) and result.examples == 3
    assert "partial: 3 of" in out and "stopped" in out and "Traceback" not in err
    assert llm_magics.session.runs[-1].metrics == recorded


def test_stop_during_generation_metrics_discards_the_cut_answer(session):
    data = str(DATA / "instructions_heldout.jsonl")
    handle = _stop_at_forward(session, 2)  # in the middle of the first answer
    try:
        result = session.eval("rouge", data=data, max_new_tokens=48)
    finally:
        handle.remove()
    assert result.partial and (result.examples, result.total) == (0, 4) and math.isnan(result.value)


def test_stopped_classifier_eval_is_partial_not_a_score():
    from llm_magics.data import read_corpus
    from llm_magics.evaluation import evaluate
    from llm_magics.interrupts import StopFlag

    s = Session()
    s.load("minilm")
    test = str(DATA / "sentiment_test.jsonl")
    s.finetune(data=test, task="classify", labels="negative,positive", steps=1, progress=False)
    stop = StopFlag()
    stop.request("stop button")
    result = evaluate(s.loaded, "accuracy", read_corpus(test), stop=stop)
    assert result.partial and math.isnan(result.value) and result.examples == 0 and result.total == 16
    assert "partial: 0 of 16 examples, stopped" in result.summary()
    assert not evaluate(s.loaded, "accuracy", read_corpus(test)).partial


def test_a_second_interrupt_stops_at_once():
    """The first SIGINT asks for a stop after the current step; a second one, in the same step, does not
    wait for it: KeyboardInterrupt there and then (the step's update is never applied)."""
    import os
    import signal

    import pytest

    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, seq_len=16, batch_size=2, progress=False)
    forwards, steps = [0], []

    def interrupt_twice_in_the_third_step(module, args, output):
        forwards[0] += 1
        if forwards[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # graceful: finish this step
            os.kill(os.getpid(), signal.SIGINT)  # impatient: stop now

    handle = s.model.register_forward_hook(interrupt_twice_in_the_third_step)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    try:
        with pytest.raises(KeyboardInterrupt):
            s.train(text=CORPUS, steps=50, seq_len=16, batch_size=2, progress=False,
                    on_step=[lambda row, result: steps.append(row["step"])])
    finally:
        handle.remove()
    assert forwards[0] == 3 and steps == [1, 2]  # the third step never reached its update
    assert s.stop_flag is None and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert any(not torch.equal(before[k], v) for k, v in s.model.state_dict().items())  # steps 1-2 applied
