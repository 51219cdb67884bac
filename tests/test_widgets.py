"""The widgets driven through their Python API: real training runs and real generations behind them."""
import time

import pytest

from conftest import DATA, run
from llm_magics import Session
from llm_magics.widgets import SamplingPanel, TrainingView

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5


def test_live_training_view_plots_every_step_throttled():
    s = Session()
    view = TrainingView(s, "tiny")
    eval_file = DATA / "tiny_corpus.txt"
    start = time.perf_counter()
    result = s.train(text=CORPUS, from_scratch=True, steps=60, seq_len=32, eval_data=str(eval_file),
                     eval_every=20, on_step=[view], progress=False)
    elapsed = time.perf_counter() - start
    raw, smoothed, evals, lr = view.figure.data
    assert list(raw.x) == list(range(1, 61)) and list(raw.y) == [r["loss"] for r in result.history]
    assert smoothed.y[-1] < smoothed.y[0]
    assert list(evals.x) == [20, 40, 60] and len(lr.y) == 60
    assert view.redraws <= elapsed * 4 + 3  # at most ~4 redraws a second
    assert "60/60" in view.header.value and "done" in view.header.value
    assert view.progress.value == 60 and view.stop_button.disabled
    assert list(result.history_frame()["step"]) == list(range(1, 61))
    bundle = view.static_figure()  # what replaces the live widget in the saved notebook
    figure = bundle["application/vnd.plotly.v1+json"]
    assert [len(trace["x"]) for trace in figure["data"]] == [60, 60, 3, 60]
    assert "60/60" in bundle["text/plain"]


def test_long_runs_are_thinned_for_the_browser():
    s = Session()
    view = TrainingView(s, "tiny", max_points=50)
    result = s.train(text=CORPUS, from_scratch=True, steps=300, seq_len=16, batch_size=2, on_step=[view],
                     progress=False)
    raw = view.figure.data[0]
    assert len(raw.x) <= 51 and raw.x[0] == 1 and raw.x[-1] == 300
    assert len(view.losses) == 300 and len(result.history) == 300  # the full history is kept


def test_stop_button_ends_training_with_model_usable(tmp_path):
    s = Session()
    view = TrainingView(s, "tiny")

    def press_stop(row, result):
        if row["step"] == 7:
            view.stop_button.click()

    result = s.train(text=CORPUS, from_scratch=True, steps=500, seq_len=32, checkpoint_every=50,
                     output_dir=str(tmp_path), on_step=[view, press_stop], progress=False)
    assert result.interrupted and result.steps_done == 7
    assert result.checkpoint == str(tmp_path / "checkpoint-7")
    assert "stopped" in view.header.value
    assert s.generate("The cat", max_new_tokens=4, do_sample=False).interrupted is False


def test_sampling_panel_reruns_with_changed_settings(session):
    panel = SamplingPanel(session, "Once upon a time")
    panel.seed.value = 1
    first = panel.generate()
    assert len(panel.outputs.children) == 1 and first.settings.temperature == pytest.approx(0.7)
    panel.temperature.value = 1.5
    panel.seed.value = 2
    panel.num_samples.value = 2
    second = panel.generate()
    assert second.settings.temperature == pytest.approx(1.5) and second.settings.seed == 2
    assert len(second.texts) == 2 and second.texts[0] != first.text
    assert len(panel.outputs.children) == 2  # both runs side by side, newest first
    assert "T=1.5" in panel.outputs.children[0].value and "T=0.7" in panel.outputs.children[1].value
    panel.greedy.value = True
    panel.num_samples.value = 1
    greedy = panel.generate()
    assert greedy.settings.do_sample is False and len(panel.outputs.children) == 3


def test_token_probabilities_come_from_generate_scores(session):
    from llm_magics.widgets import token_probabilities

    result = session.generate("The capital of France is", max_new_tokens=6, do_sample=False, output_scores=True)
    tokens = token_probabilities(session.tokenizer, result.token_ids[0], result.scores)
    assert len(tokens) == 6
    for token in tokens:
        assert 0 < token["prob"] <= 1
        probabilities = [p for _, p in token["top"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert token["top"][0][0] == token["token"]  # greedy picks the likeliest
    assert any("Paris" in t["token"] for t in tokens)


def test_generate_widget_magic_prefills_controls(shell, magic_session):
    panel = run(shell, "generate --widget --temperature 0.9 --top-k 20 --seed 5 --max-new-tokens 8", "Hello")
    assert isinstance(panel, SamplingPanel)
    assert panel.temperature.value == pytest.approx(0.9) and panel.top_k.value == 20 and panel.seed.value == 5
    assert panel.runs and panel.runs[0].new_tokens <= 8


def test_train_magic_with_widget(shell):
    result = run(shell, "train --from-scratch --steps 20 --seq-len 32 --widget", CORPUS)
    assert result.steps_done == 20 and len(result.history) == 20
