"""The run history on disk: real training runs written as they go, read back after a restart."""

import json
import os
import subprocess
import sys

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from llm_magics import LLMError, Session
from llm_magics import runs as run_history
from support import DATA, ROOT, one_error_line, run

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5
TINY = dict(from_scratch=True, config="tiny", steps=6, seq_len=16, batch_size=2, progress=False)


def test_a_run_is_a_folder_with_options_data_history_and_status(private_runs_dir):
    s = Session()
    result = s.train(
        text=CORPUS, eval_data=str(DATA / "tiny_corpus.txt"), eval_every=3, lr=2e-3, checkpoint_every=6, **TINY
    )
    folder = private_runs_dir / result.record_id
    assert result.run_dir == str(folder)
    info = json.loads((folder / "run.json").read_text())
    assert info["kind"] == "train" and info["status"] == "finished" and info["steps"] == 6
    assert info["options"]["lr"] == 2e-3 and info["options"]["seq_len"] == 16 and info["options"]["from_scratch"]
    assert info["model"].startswith("from-scratch tiny llama")
    # the data with the datasets cache key it was read under, the eval file with its size
    body, held_out = info["data"]
    assert body["role"] == "data" and body["origin"] == "the cell body" and body["cache_key"]
    assert held_out["files"][0]["bytes"] == (DATA / "tiny_corpus.txt").stat().st_size
    # checkpoints live in the run's folder when no --output-dir is given
    assert info["checkpoints"] == [str(folder / "checkpoints" / "checkpoint-6")]
    assert info["metrics"]["eval_loss"] == result.metrics["eval_loss"]
    lines = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 7))
    assert [line["loss"] for line in lines] == [row["loss"] for row in result.history]
    assert [line["lr"] for line in lines] == [row["lr"] for row in result.history]
    assert [line["step"] for line in lines if "eval_loss" in line] == [3, 6]
    # tokens/s of each step: its tokens over its own time (an independent count: batch x seq_len)
    for before, line in zip([{"elapsed": 0.0}] + lines, lines):
        assert line["tokens_per_second"] == pytest.approx(2 * 16 / (line["elapsed"] - before["elapsed"]))
    frame = run_history.load(result.record_id)
    assert list(frame["loss"]) == list(result.history_frame()["loss"])
    assert frame.attrs["status"] == "finished"


def test_a_new_session_reads_the_runs_back_and_the_table_names_what_differs(private_runs_dir, capsys):
    first = Session().train(text=CORPUS, lr=1e-3, **TINY)
    second = Session().train(text=CORPUS, lr=3e-3, **TINY)
    restarted = Session()  # what a kernel restart sees: nothing in memory, the folders on disk
    assert [r.record_id for r in restarted.runs] == [first.record_id, second.record_id]
    assert [r.final_loss for r in restarted.runs] == [first.final_loss, second.final_loss]
    assert restarted.runs[-1].history_frame()["lr"].tolist() == [row["lr"] for row in second.history]
    table = restarted.run_table()
    assert list(table["id"]) == [second.record_id, first.record_id]  # newest first
    assert "lr" in table.columns and "seq_len" not in table.columns  # only the options that differ
    assert list(table["lr"]) == [3e-3, 1e-3] and list(table["status"]) == ["finished", "finished"]
    assert list(table["final_loss"]) == [second.final_loss, first.final_loss]
    assert run_history.label(run_history.find(second.record_id), ["lr"]) == "lr=0.003"
    removed = restarted.delete_run(first.record_id)
    assert removed["id"] == first.record_id and not (private_runs_dir / first.record_id).exists()
    assert [r.record_id for r in restarted.runs] == [second.record_id]
    with pytest.raises(LLMError, match="run id 'nope' is unknown in"):
        run_history.load("nope")


def test_stopped_and_failed_runs_say_so(tmp_path):
    s = Session(runs_dir=str(tmp_path / "runs"))

    class StopAt3:
        def __call__(self, row, result):
            if row["step"] == 3:
                s.stop()

    stopped = s.train(text=CORPUS, on_step=[StopAt3()], **{**TINY, "steps": 20})
    assert run_history.find(stopped.record_id, tmp_path / "runs")["status"] == "stopped at step 3"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LLMError):
        s.train(text=CORPUS, output_dir=str(blocker), checkpoint_every=2, **TINY)
    failed = run_history.all_runs(tmp_path / "runs")[-1]
    assert failed["status"].startswith("failed: --output-dir") and "is a file" in failed["status"]


@pytest.mark.slow
def test_a_crashed_kernel_leaves_a_readable_partial_run(tmp_path):
    """A real crash: the process dies at step 4 without any clean-up."""
    script = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from llm_magics import Session
s = Session(runs_dir={str(tmp_path)!r})
def crash(row, result):
    if row["step"] == 4:
        os._exit(3)
s.train(text={CORPUS!r}, on_step=[crash], from_scratch=True, steps=50, seq_len=16, batch_size=2, progress=False)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    (info,) = run_history.all_runs(tmp_path)
    assert [row["step"] for row in info["history"]] == [1, 2, 3, 4]
    assert info["status"] == "unfinished at step 4 (the kernel ended)"
    assert Session(runs_dir=str(tmp_path)).runs[0].steps_done == 4


def test_bad_run_ids_and_unwritable_runs_dir_are_one_line(shell, capsys, tmp_path):
    run(shell, f"runs --delete nope --runs-dir {tmp_path}")
    assert (
        one_error_line(capsys) == f"llm runs: run id 'nope' is unknown in {tmp_path}: `%llm runs` lists the runs there"
    )
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    run(shell, f"train --from-scratch --steps 2 --seq-len 16 --no-widget --no-progress --runs-dir {blocker}", CORPUS)
    assert one_error_line(capsys).startswith(f"llm train: --runs-dir {blocker} is not writable:")


def test_the_runs_magic_lists_and_deletes(shell, capsys, tmp_path):
    where = tmp_path / "r"
    trained = run(
        shell,
        f"train --from-scratch --steps 3 --seq-len 16 --batch-size 2 --no-widget --no-progress --runs-dir {where}",
        CORPUS,
    )
    frame = run(shell, f"runs --runs-dir {where}")
    assert list(frame["id"]) == [trained.record_id] and frame["final_loss"][0] == trained.final_loss
    capsys.readouterr()
    run(shell, f"runs --runs-dir {where} --delete {trained.record_id}")
    out = capsys.readouterr().out
    assert out.startswith(f"Deleted run {trained.record_id} (train, 3 steps, finished) from {where}")
    run(shell, f"runs --runs-dir {where}")
    assert "No runs recorded" in capsys.readouterr().out


def _execute(cells: list[str], folder) -> list:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return notebook.cells


@pytest.mark.slow
def test_runs_survive_a_kernel_restart(tmp_path, monkeypatch):
    """Two real kernels one after the other in the notebook's folder: the second one (after the 'restart')
    lists the first one's run from llm_runs/ beside the notebook, with its final loss."""
    monkeypatch.delenv("LLM_MAGICS_RUNS_DIR")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    first = _execute(
        [
            "%load_ext llm_magics",
            f"%%llm train --from-scratch --steps 4 --seq-len 16 --batch-size 2 --no-widget --no-progress\n"
            f"{CORPUS[:2000]}",
            "print(_llm.record_id, repr(_llm.final_loss))",
        ],
        tmp_path,
    )
    record_id, final_loss = first[2].outputs[0]["text"].split()
    assert (tmp_path / "llm_runs" / record_id / "history.jsonl").is_file()
    second = _execute(
        [
            "%load_ext llm_magics",
            "%llm runs",
            "import llm_magics\nprint(llm_magics.session.runs[-1].record_id, "
            "repr(llm_magics.session.runs[-1].final_loss))",
        ],
        tmp_path,
    )
    table = second[1].outputs[0]["data"]["text/plain"]
    assert record_id in table and "finished" in table
    assert f"{float(final_loss):.6f}"[:6] in table  # pandas rounds the shown float
    assert second[2].outputs[0]["text"].split() == [record_id, final_loss]


def test_a_graceful_stop_is_evaluated_at_its_step_and_nothing_unmeasured_is_drawn():
    """Stopped at step 5 with evaluations every 4 steps: the chart's eval points are the measured ones, 4
    and 5 (the score of the weights it stopped with), never step 4's value repeated at 5."""
    import math

    from llm_magics.views.training_chart import TrainingView

    s = Session()
    eval_file = str(DATA / "tiny_corpus.txt")
    view = TrainingView(s, "stopped")

    def stop_at_5(row, result):
        if row["step"] == 5:
            s.stop()

    result = s.train(text=CORPUS, eval_data=eval_file, eval_every=4, on_step=[view, stop_at_5], **{**TINY, "steps": 30})
    view.close()
    assert result.interrupted and result.steps_done == 5
    assert [e["step"] for e in result.eval_history] == [4, 5]
    # the oracle: the loaded model's perplexity on the same file over the same 16-token windows
    perplexity = s.eval("perplexity", data=eval_file, seq_len=16)
    assert result.eval_history[-1]["eval_loss"] == pytest.approx(math.log(perplexity.value), rel=1e-4)
    evals = view.figure.data[2]
    assert list(evals.x) == [4, 5] and list(evals.y) == [e["eval_loss"] for e in result.eval_history]
    assert "eval loss" in view.header.value and "(step 5)" in view.header.value
    assert "(measured at step 5)" in result.summary()
    assert [s for s, _ in run_history.eval_losses(run_history.find(result.record_id))] == [4, 5]
    # without --eval-data a stop draws no eval point at all
    bare = TrainingView(s, "no eval")

    def stop_at_3(row, result):
        if row["step"] == 3:
            s.stop()

    s.train(text=CORPUS, on_step=[bare, stop_at_3], **{**TINY, "steps": 30})
    bare.close()
    assert list(bare.figure.data[2].x or []) == [] and "eval loss" not in bare.header.value


def _weights(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_on_a_rising_eval_loss_restores_the_best_step(restore, tmp_path):
    """Trained on 'ab' repeated and evaluated on English: the eval loss soon rises. A hand-written hook keeps
    the weights of every step (keyed by the optimizer steps done: tokens / tokens per step, so it also holds
    where rows arrive one step late on a GPU); the model after the run equals the best step's copy."""
    import math

    from llm_magics.views.training_chart import TrainingView

    eval_file = tmp_path / "english.txt"
    eval_file.write_text((DATA / "tiny_corpus.txt").read_text()[:600])
    s = Session()
    kept = {}

    def keep(row, result):
        kept[result.tokens // (2 * 16)] = _weights(s.model)

    view = TrainingView(s, "early")
    result = s.train(
        text="ab" * 2000,
        eval_data=str(eval_file),
        eval_every=2,
        early_stopping=2,
        on_step=[keep, view],
        restore_best=restore,
        **{**TINY, "steps": 60, "lr": 1e-2},
    )
    view.close()
    losses = [e["eval_loss"] for e in result.eval_history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert max(losses[best:]) > losses[best]  # the corpus does make the eval loss rise
    assert result.stopped_early and not result.interrupted and result.steps_done < 60
    assert result.best_step == result.eval_history[best]["step"]
    assert result.steps_done == result.best_step + 2 * 2  # two evaluations of patience, every 2 steps
    expected = kept[result.best_step if restore else result.steps_done]
    final = _weights(s.model)
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    if restore:
        assert result.restored_step == result.best_step
        assert f"the model holds step {result.best_step}'s weights" in result.summary()
        perplexity = s.eval("perplexity", data=str(eval_file), seq_len=16)  # oracle: the restored weights' score
        assert math.log(perplexity.value) == pytest.approx(losses[best], rel=1e-4)
    else:
        assert result.restored_step is None and "--no-restore-best" in result.summary()
    assert view.best_step == result.best_step and view.figure.layout.shapes[0].x0 == result.best_step
    assert (
        run_history.find(result.record_id)["status"]
        == f"stopped early at step {result.steps_done} (best eval loss at step {result.best_step})"
    )


def test_early_stopping_needs_eval_data_and_eval_every(shell, capsys):
    run(shell, "train --from-scratch --steps 4 --seq-len 16 --no-widget --no-progress --early-stopping 2", CORPUS)
    assert (
        one_error_line(capsys)
        == "llm train: --early-stopping needs --eval-data FILE and --eval-every N: it watches the eval loss"
    )


def _ema(values, smoothing=0.9):
    out, average = [], 0.0
    for t, value in enumerate(values, 1):
        average = smoothing * average + (1 - smoothing) * value
        out.append(average / (1 - smoothing**t))
    return out


def test_compare_overlays_earlier_runs_named_by_their_differences(shell, capsys, tmp_path):
    from llm_magics.views.training_chart import TrainingView

    s = Session(runs_dir=str(tmp_path))
    first = s.train(text=CORPUS, lr=1e-3, **TINY)
    second = s.train(text=CORPUS, lr=2e-3, **TINY)
    view = TrainingView(s, "third", compare="all")
    s.train(text=CORPUS, lr=3e-3, on_step=[view], **TINY)
    overlays = view.figure.data[4:]
    assert [t.name for t in overlays] == ["lr=0.001", "lr=0.002"]
    assert view.figure.data[1].name == "loss (smoothed, lr=0.003)"
    for trace, earlier in zip(overlays, [first, second]):
        assert list(trace.x) == list(range(1, 7)) and trace.opacity < 1
        assert list(trace.y) == pytest.approx(_ema([row["loss"] for row in earlier.history]))
    # the smoothing slider recomputes the overlaid runs' lines too, live and in the static figure's slider
    view.smoothing_slider.value = 0.5
    for trace, earlier in zip(view.figure.data[4:], [first, second]):
        assert list(trace.y) == pytest.approx(_ema([row["loss"] for row in earlier.history], 0.5))
    step = next(
        step
        for step in view.static_figure()["application/vnd.plotly.v1+json"]["layout"]["sliders"][0]["steps"]
        if step["label"] == "0.3"
    )
    assert step["args"][1] == [1, 4, 5]
    assert step["args"][0]["y"][2] == pytest.approx(_ema([row["loss"] for row in second.history], 0.3))
    # the default: the previous run of the same kind on the same data only
    auto = TrainingView(s, "fourth")
    s.train(text=CORPUS, lr=4e-3, on_step=[auto], **TINY)
    assert [t.name for t in auto.figure.data[4:]] == ["lr=0.003"]
    # a static overlay of finished runs, with an SVG fallback for saved notebooks
    bundle = run_history.plot("lr", [first.record_id, second.record_id], tmp_path)
    traces = bundle["application/vnd.plotly.v1+json"]["data"]
    assert [t["name"] for t in traces] == [f"{first.record_id}: lr=0.001", f"{second.record_id}: lr=0.002"]
    assert traces[1]["y"] == [row["lr"] for row in second.history]
    assert bundle["text/html"].count("<polyline") == 2
    run(
        shell,
        f"train --from-scratch --steps 2 --seq-len 16 --no-widget --no-progress --runs-dir {tmp_path} --compare nope",
        CORPUS,
    )
    assert one_error_line(capsys).startswith("llm train: run id 'nope' is unknown")


@pytest.mark.parametrize("damage", ["[1, 2]", '{"id": "cut sho', "", "null"])
def test_an_unreadable_record_is_one_line_and_hides_no_other_run(private_runs_dir, shell, capsys, damage):
    """A run.json that is not a JSON object, or is cut short, keeps its run listed (from its history) and
    every other run listed and plottable (issue 27)."""
    damaged = Session().train(text=CORPUS, **TINY)
    intact = Session().train(text=CORPUS, lr=3e-3, **TINY)
    (private_runs_dir / damaged.record_id / "run.json").write_text(damage)
    restarted = Session()
    by_id = {r.record_id: r for r in restarted.runs}
    assert set(by_id) == {damaged.record_id, intact.record_id}
    assert [row["loss"] for row in by_id[damaged.record_id].history] == [row["loss"] for row in damaged.history]
    assert by_id[intact.record_id].final_loss == intact.final_loss
    capsys.readouterr()
    shell.run_line_magic("llm", "runs")
    out = capsys.readouterr().out
    history = private_runs_dir / damaged.record_id / "history.jsonl"
    assert out.splitlines()[0] == f"run {damaged.record_id}: record unreadable, history kept at {history}"
    assert "Traceback" not in out
    bundle = run_history.plot("loss", None, private_runs_dir)
    assert damaged.record_id in bundle["text/plain"] and intact.record_id in bundle["text/plain"]
    frame = run_history.load(damaged.record_id)  # the history can still be read back
    assert list(frame["loss"]) == [row["loss"] for row in damaged.history]


def test_runs_dir_that_is_a_file_is_one_line(tmp_path, shell, capsys):
    not_a_folder = tmp_path / "runs.txt"
    not_a_folder.write_text("x")
    shell.run_line_magic("llm", f"runs --runs-dir {not_a_folder}")
    assert one_error_line(capsys) == f"llm runs: --runs-dir {not_a_folder} is not a folder"
