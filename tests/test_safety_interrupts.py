"""A stop during %%llm eval stops the whole evaluation: partial, never reported or recorded as the score."""
import math
import threading
import time

import llm_magics
from support import DATA, interrupt_after, run
from llm_magics import Session

CORPUS = (DATA / "tiny_corpus.txt").read_text()
LONG = CORPUS * 60  # about 1,500 windows of 8 bytes: seconds of work for the tiny model


def _stop_when_started(session: Session, after: float = 0.2) -> threading.Thread:
    def stop():
        while session.stop_flag is None:
            time.sleep(0.005)
        time.sleep(after)
        session.stop()

    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    return thread


def test_session_stop_makes_the_evaluation_partial():
    s = Session()
    s.train(text=CORPUS * 5, from_scratch=True, steps=2, seq_len=16, batch_size=2, progress=False)
    full = s.eval("perplexity", text=CORPUS, seq_len=8)
    assert not full.partial and math.isfinite(full.value) and s.runs[-1].metrics["eval_perplexity"] == full.value
    _stop_when_started(s)
    result = s.eval("perplexity", text=LONG, seq_len=8)
    assert result.partial and 0 < result.examples < result.total
    assert math.isnan(result.value)  # never a number that looks like the score
    assert s.runs[-1].metrics["eval_perplexity"] == full.value  # the stopped one is not recorded
    assert result.summary().startswith(f"perplexity: partial: {result.examples} of {result.total} windows, stopped")
    assert s.stop_flag is None


def test_kernel_interrupt_stops_eval_in_the_magic(shell, capsys):
    run(shell, "train --from-scratch --steps 2 --seq-len 16 --batch-size 2 --no-widget --no-progress", CORPUS * 5)
    recorded = dict(llm_magics.session.runs[-1].metrics)
    capsys.readouterr()
    interrupt_after(0.3)
    result = run(shell, "eval --metric perplexity --seq-len 8", LONG)
    out, err = capsys.readouterr()
    assert result.partial and math.isnan(result.value)
    assert "partial:" in out and "stopped" in out and "Traceback" not in err
    assert llm_magics.session.runs[-1].metrics == recorded


def test_stop_during_generation_metrics_discards_the_cut_answer(session):
    data = str(DATA / "instructions_heldout.jsonl")
    _stop_when_started(session, after=0.5)
    result = session.eval("rouge", data=data, max_new_tokens=48)
    assert result.partial and result.examples < result.total == 4 and math.isnan(result.value)


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
