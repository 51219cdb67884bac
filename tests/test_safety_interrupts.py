"""A stop during %%llm eval stops the whole evaluation: partial, never reported or recorded as the score."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import llm_magics
from llm_magics import Session
from support import DATA, ROOT, interrupt_at_forward, one_error_line, run

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_stop_during_generation_metrics_discards_the_cut_answer(session):
    data = str(DATA / "instructions_heldout.jsonl")
    handle = _stop_at_forward(session, 2)  # in the middle of the first answer
    try:
        result = session.eval("rouge", data=data, max_new_tokens=48)
    finally:
        handle.remove()
    assert result.partial and (result.examples, result.total) == (0, 4) and math.isnan(result.value)


@pytest.mark.slow
def test_stopped_classifier_eval_is_partial_not_a_score():
    from llm_magics.base.interrupts import StopFlag
    from llm_magics.data import read_corpus
    from llm_magics.data.preparing import Preparation
    from llm_magics.evaluation import evaluate

    s = Session()
    s.load("minilm")
    test = str(DATA / "sentiment_test.jsonl")
    s.finetune(data=test, task="classify", labels="negative,positive", steps=1, progress=False)
    stop = StopFlag()
    stop.request("stop button")

    def run(stop):
        return evaluate(
            s.loaded,
            "accuracy",
            read_corpus(test),
            max_new_tokens=1,
            seq_len=2,
            stop=stop,
            max_tokens=None,
            prep=Preparation(stop, progress=False),
        )

    result = run(stop)
    assert result.partial and math.isnan(result.value) and result.examples == 0 and result.total == 16
    assert "partial: 0 of 16 examples, stopped" in result.summary()
    assert not run(StopFlag()).partial


IMPORT_SCRIPT = """
import importlib.abc, os, signal, sys

class InterruptOnce(importlib.abc.MetaPathFinder):
    # A real SIGINT from inside the first import of the module named in argv[1], as a user's interrupt
    # landing while `datasets` is being imported.
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1] and not InterruptOnce.fired:
            InterruptOnce.fired = True
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptOnce())
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "llm_magics")
assert "datasets" not in sys.modules
if len(sys.argv) > 2:  # the user's own `import datasets`, cut short by the interrupt
    try:
        import datasets
    except KeyboardInterrupt:
        print("user import interrupted", flush=True)
cell = "the cat sat on the mat.\\n\\nthe dog sat on the log.\\n\\n" * 20
for attempt in (1, 2):
    shell.user_ns.pop("_llm", None)
    line = "%%llm train --from-scratch --steps 2 --seq-len 16 --batch-size 2 --no-widget --no-progress"
    result = shell.run_cell(line + "\\n" + cell)
    value = shell.user_ns.get("_llm")
    error = type(result.error_in_exec).__name__ if result.error_in_exec else None
    print(f"attempt {attempt}: fired={InterruptOnce.fired} error={error} "
          f"steps={getattr(value, 'steps_done', None)}", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("whose", ["the first data command's", "the user's own"])
def test_interrupt_while_datasets_is_first_imported_keeps_data_reading_working(tmp_path, whose):
    """A fresh interpreter (datasets not imported yet); a real SIGINT is sent from inside the import of
    datasets.utils._dill (an import hook, not a timer). The interrupted command stops cleanly, and the next
    data command in the same interpreter trains."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLM_MAGICS_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-c", IMPORT_SCRIPT, "datasets.utils._dill"] + (
        ["user"] if whose == "the user's own" else []
    )
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    out = done.stdout
    assert done.returncode == 0 and "Traceback" not in out + done.stderr, out + done.stderr[-3000:]
    first, second = [line for line in out.splitlines() if line.startswith("attempt")]
    if whose == "the user's own":
        assert "user import interrupted" in out and first == "attempt 1: fired=True error=None steps=2"
    else:
        assert first == "attempt 1: fired=True error=None steps=0" and "train: stopped before the first step" in out
    assert second == "attempt 2: fired=True error=None steps=2"


class interrupt_inside:
    """Send a real SIGINT to this process the first time a function named `name` (in a file whose path holds
    `where`) is called: an interrupt that lands inside that work, with no timing involved."""

    def __init__(self, name: str, where: str = ""):
        self.name, self.where, self.fired = name, where, False

    def _profile(self, frame, event, arg):
        if (
            event == "call"
            and not self.fired
            and frame.f_code.co_name == self.name
            and self.where in frame.f_code.co_filename
        ):
            self.fired = True
            os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self):
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)


NOTHING_CHANGED = "interrupted; nothing was changed (the loaded model and any saved folder are as they were)"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["attention The cat sat on the mat", "lens The cat sat on the mat"])
def test_interrupt_during_attention_or_lens_is_one_line(shell, capsys, magic_session, command):
    model, last = magic_session.model, object()
    magic_session.last = last
    capsys.readouterr()
    with interrupt_inside("forward", "modeling_llama") as probe:
        assert run(shell, command) is None
    assert probe.fired
    assert one_error_line(capsys) == f"llm {command.split()[0]}: {NOTHING_CHANGED}"
    assert magic_session.model is model and magic_session.last is last
    assert run(shell, command) is not None  # and the same command works next time


@pytest.mark.slow
def test_interrupt_during_save_is_one_line_and_keeps_the_earlier_save(shell, capsys, magic_session, tmp_path):
    folder = tmp_path / "saved"
    run(shell, f"save {folder}")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    with interrupt_inside("save_pretrained") as probe:
        run(shell, f"save {folder}")
    assert probe.fired
    assert one_error_line(capsys) == f"llm save: {NOTHING_CHANGED}"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".saved.saving-")]  # no staging folder left
    assert run(shell, f"save {folder}") == str(folder)


DDP_SCRIPT = r"""
import json, os, signal, sys, time
import torch
from IPython.core.interactiveshell import InteractiveShell

mode, runs = sys.argv[1], int(sys.argv[2])  # mode: single or double
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "llm_magics")
import llm_magics
from llm_magics import Session

CORPUS = open(sys.argv[3]).read()
LINE = "train --from-scratch --processes 2 --steps 500 --seq-len 32 --batch-size 2 --no-widget --no-progress"

def interrupt(row, result):  # the whole process group, as Jupyter's interrupt does: kernel and workers
    if row["step"] == 2:
        os.killpg(0, signal.SIGINT)
        if mode == "double":
            time.sleep(0.05)
            os.killpg(0, signal.SIGINT)

references = {}
def reference(steps):  # one process, twice the batch, stopped after the same step
    if steps not in references:
        s = Session()
        s.train(text=CORPUS, from_scratch=True, steps=500, seq_len=32, batch_size=4, progress=False,
                on_step=[lambda row, res: s.stop() if row["step"] == steps else None])
        references[steps] = {k: v.clone() for k, v in s.model.state_dict().items()}
    return references[steps]

for attempt in range(runs):
    before = dict(os.environ)
    llm_magics.session.step_listeners.append(interrupt)
    shell.user_ns.pop("_llm", None)
    sys.stderr.flush()
    try:
        cell = shell.run_cell(f"%%llm {LINE}\n{CORPUS}")
    finally:
        llm_magics.session.step_listeners.remove(interrupt)
    result = shell.user_ns.get("_llm")
    report = {"attempt": attempt, "error": repr(cell.error_in_exec) if cell.error_in_exec else None,
              "env_restored": dict(os.environ) == before,
              "env_diff": sorted(set(os.environ.items()) ^ set(before.items()))[:6]}
    if result is not None:
        report.update(interrupted=result.interrupted, steps=result.steps_done)
        if mode == "single" and result.steps_done:
            ref = reference(result.steps_done)
            got = llm_magics.session.model.state_dict()
            report["worst"] = max((got[k].float() - ref[k].float()).abs().max().item() for k in ref)
    print("REPORT " + json.dumps(report), flush=True)
if mode == "double":  # afterwards a new run works: the port is free and MASTER_PORT is not left set
    shell.user_ns.pop("_llm", None)
    cell = shell.run_cell(f"%%llm {LINE.replace('--steps 500', '--steps 2')}\n{CORPUS}")
    after = shell.user_ns.get("_llm")
    print("REPORT " + json.dumps({"after": getattr(after, "steps_done", None),
                                  "error": repr(cell.error_in_exec) if cell.error_in_exec else None}), flush=True)
"""


def _interrupted_runs(tmp_path, mode: str, runs: int) -> list[dict]:
    """Run DDP_SCRIPT in its own process group (a fresh interpreter plays the kernel): Jupyter's interrupt
    button signals the kernel's whole group, so the forked workers get each SIGINT too."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLM_MAGICS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", DDP_SCRIPT, mode, str(runs), str(DATA / "tiny_corpus.txt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        start_new_session=True,
    )
    reports = [json.loads(line[len("REPORT ") :]) for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and reports, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("queue.Empty", "SystemError", "Connection closed"):
        assert name not in done.stdout + done.stderr
    return reports, done.stderr


@pytest.mark.slow
@pytest.mark.slow
def test_single_interrupt_during_processes_2_stops_every_rank_and_brings_the_weights_back_20_times(tmp_path):
    reports, _ = _interrupted_runs(tmp_path, "single", 20)
    assert len(reports) == 20
    for report in reports:
        # every rank stopped after the same step (a rank stopping alone would fail the others' all-reduce),
        # the weights came back and equal one process with the global batch stopped after that step (Adam
        # makes fp32 noise as large as a step's update, about lr * step / warmup = 1e-4, on near-zero grads)
        assert report["error"] is None and report["interrupted"] and 2 <= report["steps"] < 500, report
        assert report["worst"] < 1e-3 and report["env_restored"], report


@pytest.mark.slow
def test_double_interrupt_during_processes_2_is_one_line_and_restores_the_kernel(tmp_path):
    reports, stderr = _interrupted_runs(tmp_path, "double", 2)
    *interrupted, after = reports
    for report in interrupted:
        assert report["error"] is None and report["env_restored"], report  # MASTER_PORT & co. gone again
    lines = [line for line in stderr.splitlines() if line.startswith("llm train:")]
    assert (
        lines
        == [
            "llm train: stopped at once by a second interrupt: the training processes were ended and "
            "their steps are lost (the model in this kernel has none of them)"
        ]
        * 2
    )
    assert after == {"after": 2, "error": None}  # a new --processes 2 run binds a port and trains


def test_second_interrupt_during_training_is_one_line(shell, capsys):
    import llm_magics

    def interrupt_twice(row, result):  # two real SIGINTs inside step 2: the second does not wait for the step
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises at the next bytecode, well before this ends

    llm_magics.session.step_listeners.append(interrupt_twice)
    try:
        assert (
            run(
                shell,
                "train --from-scratch --steps 50 --seq-len 16 --batch-size 2 --no-widget --no-progress",
                CORPUS * 5,
            )
            is None
        )
    finally:
        llm_magics.session.step_listeners.remove(interrupt_twice)
    assert one_error_line(capsys) == (
        "llm train: interrupted at once: the model in memory keeps the last step it "
        "finished (see llm_magics.session.runs[-1])"
    )
    failed = llm_magics.session.runs[-1]
    assert failed.interrupted and failed.error == "interrupted" and failed.steps_done == 2


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
            s.train(
                text=CORPUS,
                steps=50,
                seq_len=16,
                batch_size=2,
                progress=False,
                on_step=[lambda row, result: steps.append(row["step"])],
            )
    finally:
        handle.remove()
    assert forwards[0] == 3 and steps == [1, 2]  # the third step never reached its update
    assert s.stop_flag is None and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert any(not torch.equal(before[k], v) for k, v in s.model.state_dict().items())  # steps 1-2 applied
