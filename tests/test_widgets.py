"""The widgets driven through their Python API: real training runs and real generations behind them."""

import html
import re
import time

import pytest

from llm_magics import LLMError, Session
from llm_magics.generation import SamplingSettings
from llm_magics.views.playground import SamplingPanel
from llm_magics.views.training_chart import TrainingView
from support import DATA, run, tol

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5


@pytest.mark.slow
def test_live_training_view_plots_every_step_throttled():
    s = Session()
    view = TrainingView(s, "tiny")
    eval_file = DATA / "tiny_corpus.txt"
    start = time.perf_counter()
    result = s.train(
        text=CORPUS,
        from_scratch=True,
        steps=60,
        seq_len=32,
        eval_data=str(eval_file),
        eval_every=20,
        on_step=[view],
        progress=False,
    )
    elapsed = time.perf_counter() - start
    raw, smoothed, evals, lr = view.figure.data
    assert list(raw.x) == list(range(1, 61)) and list(raw.y) == [r["loss"] for r in result.history]
    assert smoothed.y[-1] < smoothed.y[0]
    assert list(evals.x) == [20, 40, 60] and len(lr.y) == 60
    assert view.redraws <= elapsed * TrainingView.MAX_REDRAWS_PER_SECOND + 3  # throttled
    assert "60/60" in view.header.value and "done" in view.header.value
    assert view.progress.value == 60 and view.stop_button.disabled
    assert list(result.history_frame()["step"]) == list(range(1, 61))
    bundle = view.static_figure()  # what replaces the live widget in the saved notebook
    figure = bundle["application/vnd.plotly.v1+json"]
    assert [len(trace["x"]) for trace in figure["data"]] == [60, 60, 3, 60]
    assert "60/60" in bundle["text/plain"]
    # The same width live and static (the output's), and responsive once static.
    assert figure["layout"]["autosize"] and "width" not in figure["layout"]
    assert bundle["application/vnd.plotly.v1+json"]["config"]["responsive"]
    # the static figure adds its smoothing slider under the same plot
    assert figure["layout"]["height"] == view.figure.layout.height + view.SLIDER_HEIGHT
    assert view.figure.layout.width is None
    # Debiased smoothing (TensorBoard's): a weighted mean of the losses so far, starting at the first one.
    assert smoothed.y[0] == pytest.approx(raw.y[0])
    for t in range(1, 61):
        assert min(raw.y[:t]) - 1e-9 <= smoothed.y[t - 1] <= max(raw.y[:t]) + 1e-9
    weights = [0.1 * 0.9 ** (10 - 1 - i) for i in range(10)]
    assert smoothed.y[9] == pytest.approx(sum(w * y for w, y in zip(weights, raw.y[:10])) / sum(weights))
    # The learning-rate axis starts at 0, never a negative tick; its ticks are 0.001 or 2e−4, never SI's "3m".
    lr_axis = view.figure.layout.yaxis2
    assert lr_axis.rangemode == "tozero" and lr_axis.exponentformat == "e" and lr_axis.tickformat is None
    # Without the kernel (GitHub, nbviewer, a reopened notebook): a self-contained SVG of the same chart.
    assert "<svg" in bundle["text/html"] and bundle["text/html"].count("<polyline") == 3
    assert "60/60" in bundle["text/html"] and "<script" not in bundle["text/html"]


def test_training_view_carries_a_static_fallback_and_eval_without_eval_every():
    s = Session()
    view = TrainingView(s, "tiny")
    live = view.mimebundle()
    assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == view.widget.model_id
    assert "tiny" in live["text/html"]
    result = s.train(
        text=CORPUS,
        from_scratch=True,
        steps=8,
        seq_len=32,
        eval_data=str(DATA / "tiny_corpus.txt"),
        on_step=[view],
        progress=False,
    )
    # --eval-data without --eval-every: evaluated once at the end, and that is a point on the chart.
    assert view.eval_steps == [8] and view.eval_losses == [result.history[-1]["eval_loss"]]
    assert result.metrics["eval_loss"] == view.eval_losses[0]
    assert list(view.figure.data[2].x) == [8]
    fallback = view.mimebundle()["text/html"]
    assert "8/8" in fallback and "eval loss" in fallback and fallback.count("<circle") >= 1


def test_compared_run_ticks_the_step_axis_as_a_single_run_would(monkeypatch):
    """A 5-step run over a 60-step earlier one: the x axis spans 60 steps, so plotly's own whole spacing,
    not a tick at every step (whose labels overlapped)."""
    from types import SimpleNamespace

    from llm_magics import runs as run_history

    earlier = {
        "id": "r1",
        "options": {"lr": 0.01},
        "history": [{"step": i, "loss": 3.0 - i / 60} for i in range(1, 61)],
    }
    monkeypatch.setattr(run_history, "select", lambda *args, **kwargs: [earlier])
    view = TrainingView(Session(), "tiny", compare="last")
    view.on_record(SimpleNamespace(info={"kind": "train", "options": {"lr": 0.003}}, root=None, id="r2"))
    result = SimpleNamespace(total_steps=5, seconds=1.0, interrupted=False, tokens_per_second=100.0)
    for step in range(1, 6):
        view({"step": step, "loss": 3.0, "lr": 0.003}, result)
    assert len(view.figure.data) == 5 and max(view.figure.data[4].x) == 60
    assert view.figure.layout.xaxis.dtick is None and view.figure.layout.xaxis.tickformat == "d"
    # alone, the same 5 steps tick every step (plotly would tick halves)
    alone = TrainingView(Session(), "tiny", compare="none")
    for step in range(1, 6):
        alone({"step": step, "loss": 3.0, "lr": 0.003}, result)
    assert alone.figure.layout.xaxis.dtick == 1


def tensorboard_ema(values, weight):
    """TensorBoard's smoothing, as its scalar dashboard writes it (an independent oracle)."""
    last, out = 0.0, []
    for num_accum, value in enumerate(values, 1):
        last = last * weight + (1 - weight) * value
        debias_weight = 1 if weight == 1 else 1 - weight**num_accum
        out.append(last / debias_weight)
    return out


def test_chart_smoothing_slider_log_toggles_and_integer_ticks():
    s = Session()
    view = TrainingView(s, "tiny")
    result = s.train(text=CORPUS, from_scratch=True, steps=8, seq_len=32, on_step=[view], progress=False)
    losses = [row["loss"] for row in result.history]
    raw, smoothed = view.figure.data[:2]
    assert list(smoothed.y) == pytest.approx(tensorboard_ema(losses, 0.9), rel=1e-12)
    # Moving the slider changes the widget's state and recomputes the line from the raw losses.
    view.smoothing_slider.value = 0.5
    assert view.smoothing == 0.5 and view.figure.data[1].y == pytest.approx(tensorboard_ema(losses, 0.5), rel=1e-12)
    assert list(view.figure.data[1].y) != pytest.approx(tensorboard_ema(losses, 0.9))
    view.smoothing_slider.value = 0.0
    assert list(view.figure.data[1].y) == pytest.approx(list(raw.y))
    view.smoothing_slider.value = 0.99
    assert view.figure.data[1].y == pytest.approx(tensorboard_ema(losses, 0.99), rel=1e-12)
    # Integer step ticks: 8 steps would tick halves by plotly's own spacing.
    assert view.figure.layout.xaxis.dtick == 1 and view.figure.layout.xaxis.tickformat == "d"
    # Log toggles for loss and lr (its own axis), switched by plotly in the browser.
    buttons = view.figure.layout.updatemenus[0].buttons
    assert [(b.label, b.args[0], b.args2[0]) for b in buttons] == [
        ("log loss", {"yaxis.type": "log"}, {"yaxis.type": "linear"}),
        ("log lr", {"yaxis2.type": "log"}, {"yaxis2.type": "linear"}),
    ]
    assert view.figure.data[3].yaxis == "y2"
    # The static figure keeps the toggles and carries its own slider, each step the EMA at its value.
    layout = view.static_figure()["application/vnd.plotly.v1+json"]["layout"]
    assert layout["updatemenus"][0]["buttons"][1]["label"] == "log lr"
    slider = layout["sliders"][0]
    labels = [step["label"] for step in slider["steps"]]
    assert labels[slider["active"]] == "0.99" and "0" in labels and "0.9" in labels
    for step in slider["steps"]:
        ys, traces = step["args"]
        assert traces == [1] and ys["y"][0] == pytest.approx(tensorboard_ema(losses, float(step["label"])))


def test_failed_training_leaves_no_live_chart(shell, capsys):
    from ipywidgets.widgets.widget import _instances

    def open_views():
        return [w for w in list(_instances.values()) if "llm-training-view" in getattr(w, "_dom_classes", ())]

    before = len(open_views())
    run(shell, "train --from-scratch --steps 5 --widget --data no-such-file.txt")
    assert "no-such-file.txt" in capsys.readouterr().err
    assert len(open_views()) == before


@pytest.mark.slow
def test_long_runs_are_thinned_for_the_browser():
    s = Session()
    view = TrainingView(s, "tiny", max_points=50)
    result = s.train(
        text=CORPUS, from_scratch=True, steps=300, seq_len=16, batch_size=2, on_step=[view], progress=False
    )
    raw = view.figure.data[0]
    assert len(raw.x) <= 51 and raw.x[0] == 1 and raw.x[-1] == 300
    assert len(view.losses) == 300 and len(result.history) == 300  # the full history is kept


@pytest.mark.slow
def test_stop_button_ends_training_with_model_usable(tmp_path):
    s = Session()
    view = TrainingView(s, "tiny")

    def press_stop(row, result):
        if row["step"] == 7:
            view.stop_button.click()

    result = s.train(
        text=CORPUS,
        from_scratch=True,
        steps=500,
        seq_len=32,
        checkpoint_every=50,
        output_dir=str(tmp_path),
        on_step=[view, press_stop],
        progress=False,
    )
    assert result.interrupted and result.steps_done == 7
    assert result.checkpoint == str(tmp_path / "checkpoint-7")
    assert "stopped" in view.header.value
    assert s.generate("The cat", max_new_tokens=4, do_sample=False).interrupted is False


@pytest.mark.slow
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


@pytest.mark.slow
def test_playground_busy_state_new_seed_per_click_and_fallback(session):
    panel = SamplingPanel(session, "Once upon a time", SamplingSettings(max_new_tokens=4))
    assert not panel.pin_seed.value  # no --seed: each click draws one
    states = []
    panel.button.observe(lambda change: states.append((change["new"], panel.button.icon)), "disabled")
    panel.button.click()
    assert states == [(True, "spinner spin"), (False, "play")]  # busy while generating, then back
    panel.button.click()
    first, second = panel.runs[1].settings.seed, panel.runs[0].settings.seed
    assert first != second
    assert f"seed={second}" in panel.outputs.children[0].value and f"seed={first}" in panel.outputs.children[1].value
    panel.pin_seed.value = True
    panel.button.click()
    assert panel.runs[0].settings.seed == second and panel.runs[0].text == panel.runs[1].text
    # Reopened without the kernel, the output shows the runs it had.
    bundle = panel.mimebundle()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
    assert bundle["text/html"].count('class="llm-token"') >= 3 * 4 - 2
    assert f"seed={first}" in bundle["text/html"] and "token probability" in bundle["text/html"]
    pinned = SamplingPanel(session, "Hi", SamplingSettings(seed=5))
    assert pinned.pin_seed.value and pinned.seed.value == 5


@pytest.mark.slow
def test_playground_typed_box_moves_the_slider_and_the_next_generate_uses_it(session):
    from llm_magics import options

    panel = SamplingPanel(session, "Once upon a time", SamplingSettings(max_new_tokens=24, seed=3))
    declared = {o.name: o.range for o in options.options("playground") if o.range}
    for name, box in panel.boxes.items():  # same range as its slider, and the same value
        assert (box.min, box.max, box.step) == declared[name] and box.value == getattr(panel.settings(), name)
    panel.boxes["max_new_tokens"].value = 3
    panel.boxes["temperature"].value = 1.35
    assert panel.max_new_tokens.value == 3 and panel.temperature.value == pytest.approx(1.35)
    result = panel.generate()
    assert result.settings.max_new_tokens == 3 and result.settings.temperature == pytest.approx(1.35)
    assert 1 <= result.new_tokens <= 3
    panel.top_k.value = 7  # and the other way round
    assert panel.boxes["top_k"].value == 7
    panel.boxes["top_k"].value = 10_000  # the box keeps the declared range
    assert panel.boxes["top_k"].value == declared["top_k"][1] == panel.top_k.value
    # max new tokens: under 2 tokens a pixel of the track (the slider's width less its 130 px label)
    low, high, _ = declared["max_new_tokens"]
    assert (high - low) / (int(panel.max_new_tokens.layout.width.rstrip("px")) - 130) <= 2


@pytest.mark.slow
def test_playground_streams_into_the_new_column(session):
    panel = SamplingPanel(session, "Once upon a time", SamplingSettings(max_new_tokens=24, seed=11))
    seen = []

    def watch(change):
        if change["new"] and change["new"][0] not in change["old"]:
            change["new"][0].observe(lambda c: seen.append(c["new"]), "value")

    panel.outputs.observe(watch, "children")
    result = panel.generate()
    streamed = [v for v in seen if "llm-streaming" in v]
    assert len(streamed) >= 2, seen  # filled while generating, more than once
    texts = [html.unescape(re.search(r"llm-streaming[^>]*>(.*?)</div>", v, re.S).group(1)) for v in streamed]
    assert all(a != b and b.startswith(a) for a, b in zip(texts, texts[1:]))  # growing
    oracle = session.generate("Once upon a time", max_new_tokens=24, seed=11)
    assert result.text == oracle.text and oracle.text.startswith(texts[-1])
    assert seen[-1] == panel.columns[0].value and "llm-streaming" not in seen[-1]  # then the shaded tokens
    assert panel.outputs.children[0] is panel.columns[0]


@pytest.mark.slow
def test_token_rank_probability_and_card_match_a_plain_forward_pass(session):
    import torch

    from llm_magics.generation import token_probabilities
    from llm_magics.views.playground import tokens_by_probability_html

    # temperature 1, no top-k or top-p: the sampling distribution is the model's own softmax
    result = session.generate(
        "The weather today is", max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0, seed=4, output_scores=True
    )
    tokens = token_probabilities(session.tokenizer, result.token_ids[0], result.scores)
    prompt_ids = session.tokenizer("The weather today is")["input_ids"]
    ids = torch.tensor([prompt_ids + result.token_ids[0]], device=session.loaded.device)
    with torch.no_grad():
        probs = torch.softmax(session.loaded.model(ids).logits[0].double(), dim=-1).cpu()
    for step, token in enumerate(tokens):
        p = probs[len(prompt_ids) - 1 + step]
        assert token["prob"] == pytest.approx(float(p[token["id"]]), abs=tol(1e-4)["atol"])
        assert token["rank"] == int((p > p[token["id"]] + 1e-6).sum()) + 1
        listed = p.clone()
        listed[[i for i in session.tokenizer.all_special_ids if i != token["id"]]] = 0  # never listed
        best = torch.topk(listed, 5)
        assert [q for _, q in token["top"]] == pytest.approx(best.values.tolist(), abs=1e-4)
    assert any(t["rank"] > 1 for t in tokens)  # sampled: not always the likeliest
    shown = tokens_by_probability_html(tokens)
    assert shown.count("class='llm-token-card'") == len(tokens) and "title=" not in shown
    assert f"rank <span class='llm-card-rank'>{tokens[0]['rank']}</span>" in shown
    assert "title=" in tokens_by_probability_html(tokens, title=True)  # the saved notebook keeps it


def test_probability_scale_is_cividis_with_readable_text():
    from llm_magics.views.playground import CIVIDIS, PROBABILITY_LEGEND, contrast, probability_colours

    assert probability_colours(0)[0] == CIVIDIS[0] and probability_colours(1)[0] == CIVIDIS[-1]
    assert probability_colours(0.5)[0] == CIVIDIS[2]
    for step in range(101):
        background, text = probability_colours(step / 100)
        assert contrast(background, text) >= 4.5, (step, background, text)
    # matplotlib's own cividis at the stops (the independent oracle)
    from matplotlib import colormaps

    for i, stop in enumerate(CIVIDIS):
        expected = [round(255 * c) for c in colormaps["cividis"](i / 4)[:3]]
        assert all(abs(a - b) <= 1 for a, b in zip(stop, expected)), (stop, expected)
    assert "#00224e" in PROBABILITY_LEGEND and "hsl" not in PROBABILITY_LEGEND


@pytest.mark.slow
def test_playground_columns_record_prompt_and_settings(session):
    panel = SamplingPanel(session, "A long prompt " * 8, SamplingSettings(max_new_tokens=3, seed=9, top_k=12))
    result = panel.generate()
    column = html.unescape(panel.columns[0].value)
    for piece in (
        "T=0.7",
        "top-k=12",
        "top-p=0.95",
        "seed=9",
        "rep=1",
        "max=3",
        "prompt: 'A long prompt A long",
        f"stopped: {result.stop_reason}",
    ):
        assert piece in column, piece
    saved = html.unescape(panel.fallback_html())
    assert "seed=9" in saved and "max=3" in saved and "prompt: 'A long prompt" in saved


@pytest.mark.slow
def test_stop_sequence_cuts_the_output_and_the_column_says_so(session):
    prompt = "Once upon a time"
    plain = session.generate(prompt, max_new_tokens=40, do_sample=False)
    words = plain.text.split()
    stop = words[len(words) // 2]  # a word in the middle of the plain continuation
    cut = session.generate(prompt, max_new_tokens=40, do_sample=False, stop=stop)
    assert cut.text == plain.text[: plain.text.find(stop)]  # the oracle: the plain text, truncated
    assert cut.stop_reason == f"stop sequence {stop!r}" and cut.new_tokens < plain.new_tokens
    assert plain.stop_reason == "max tokens" and plain.stopped_at == [None]
    panel = SamplingPanel(session, prompt, SamplingSettings(max_new_tokens=40, do_sample=False))
    panel.stop.value = f"@@@, {stop}"  # comma-separated; a text that never comes changes nothing
    result = panel.generate()
    assert result.text == cut.text and result.settings.stop_strings() == ["@@@", stop]
    column = html.unescape(panel.columns[0].value)
    assert f"stopped: stop sequence {stop!r}" in column and f"stop=['@@@', {stop!r}]" in column
    shown = [int(i) for i in re.findall(r'class="llm-token" tabindex="0" data-id="(\d+)"', column)]
    assert 0 < len(shown) <= cut.new_tokens and session.tokenizer.decode(shown).startswith(cut.text)
    assert stop not in session.tokenizer.decode(shown[:-1])  # nothing shown after the cut
    assert SamplingSettings(stop="a\n\\n, b").stop_strings() == ["a", "\n", "b"]
    with pytest.raises(LLMError, match="--stop has no text"):
        session.generate(prompt, stop=" , ")


@pytest.mark.slow
def test_playground_chat_template_and_system_prompt_change_the_prompt_ids(session):
    question = "What is the capital of France?"
    panel = SamplingPanel(session, question, SamplingSettings(max_new_tokens=8, do_sample=False))
    assert panel.chat_row.layout.display != "none"  # SmolLM2-Instruct has a chat template
    assert SamplingPanel(Session(), "").chat_row.layout.display == "none"  # no model, no template: hidden

    def templated(messages):  # the oracle: the tokenizer's own template, as text, then tokenized
        text = session.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return session.tokenizer(text, add_special_tokens=False)["input_ids"]

    panel.chat.value, panel.system.value = True, "You are a pirate."
    pirate = panel.generate()
    user = {"role": "user", "content": question}
    assert pirate.prompt_ids == templated([{"role": "system", "content": "You are a pirate."}, user])
    panel.system.value = ""
    plain_chat = panel.generate()
    assert plain_chat.prompt_ids == templated([user]) != pirate.prompt_ids
    panel.chat.value = False
    raw = panel.generate()
    assert raw.prompt_ids == session.tokenizer(question)["input_ids"]
    header = html.unescape(panel.columns[2].value)  # the pirate's column, oldest of the three
    assert "chat · prompt: 'What is the capital" in header and "system: 'You are a pirate.'" in header
    assert "system:" not in html.unescape(panel.columns[0].value)
    # the same turn through Session.chat: the same reply
    assert (
        session.chat(question, system="You are a pirate.", max_new_tokens=8, do_sample=False).text
        == pirate.text.strip()
    )


@pytest.mark.slow
def test_hover_lists_only_real_alternatives(session):
    from llm_magics.generation import token_probabilities

    # top-k 1: the chosen token has p = 1 and there is no alternative (no special tokens at 0.000).
    result = session.generate("The capital of France is", max_new_tokens=5, top_k=1, seed=0, output_scores=True)
    tokens = token_probabilities(session.tokenizer, result.token_ids[0], result.scores)
    for token in tokens:
        assert token["prob"] == pytest.approx(1.0) and token["top"] == [(token["token"], pytest.approx(1.0))]
    # top-k 3: at most three, all possible, none special.
    result = session.generate("The capital of France is", max_new_tokens=5, top_k=3, seed=0, output_scores=True)
    special = set(session.tokenizer.all_special_tokens)
    for token in token_probabilities(session.tokenizer, result.token_ids[0], result.scores):
        assert 1 <= len(token["top"]) <= 3 and all(p > 0 and text not in special for text, p in token["top"])


@pytest.mark.slow
def test_token_probabilities_come_from_generate_scores(session):
    from llm_magics.generation import token_probabilities

    result = session.generate("The capital of France is", max_new_tokens=6, do_sample=False, output_scores=True)
    tokens = token_probabilities(session.tokenizer, result.token_ids[0], result.scores)
    assert len(tokens) == 6
    for token in tokens:
        assert 0 < token["prob"] <= 1
        probabilities = [p for _, p in token["top"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert token["top"][0][0] == token["token"]  # greedy picks the likeliest
    assert any("Paris" in t["token"] for t in tokens)


@pytest.mark.slow
def test_generate_widget_magic_prefills_controls(shell, magic_session):
    panel = run(shell, "generate --widget --temperature 0.9 --top-k 20 --seed 5 --max-new-tokens 8", "Hello")
    assert isinstance(panel, SamplingPanel)
    assert panel.temperature.value == pytest.approx(0.9) and panel.top_k.value == 20 and panel.seed.value == 5
    assert panel.runs and panel.runs[0].new_tokens <= 8


@pytest.mark.slow
def test_train_magic_with_widget(shell):
    result = run(shell, "train --from-scratch --steps 20 --seq-len 32 --widget", CORPUS)
    assert result.steps_done == 20 and len(result.history) == 20


def test_the_live_chart_waits_for_the_page_to_draw_its_last_redraw():
    """With the extension, the page reports each redraw it has drawn (a DrawnReport on its comm, through the
    bridge as the page sends it); the chart sends none while the last is not drawn, then resumes."""
    from llm_magics.base.live import DRAWN
    from llm_magics.frontend import FrontendBridge

    s = Session()
    bridge = FrontendBridge(s)
    view = TrainingView(s, "tiny", max_redraws_per_second=1e9)  # no time throttle: only the page's pace
    view.PAGE_WAIT_SECONDS = 1e9  # however slow this machine: the wait for a silent page never runs out here
    reports = []
    state = {"page_draws": True}

    def page(row, result):
        # the page draws what it was sent only while it keeps up; it reports the redraw number it drew
        revision = view.figure.layout.datarevision
        if state["page_draws"] and revision and revision not in reports:
            chart, redraw = revision.split(":")
            bridge.answer(None, {"content": {"data": {"type": "drawn", "chart": chart, "redraw": int(redraw)}}})
            reports.append(revision)
        if row["step"] == 10:
            state["page_draws"] = False  # from here the page is busy: nothing more is drawn

    s.train(text=CORPUS, from_scratch=True, steps=30, seq_len=16, batch_size=2, on_step=[view, page], progress=False)
    assert 10 <= len(reports) <= 11 and DRAWN.get(view.chart_id) is None  # the entry goes when the run ends
    # after the page fell behind: no redraws but the one it never drew, the last step's and the closing one
    assert view.redraws == len(reports) + 3, (view.redraws, reports)
    assert list(view.figure.data[0].x) == list(range(1, 31))  # the final redraw has every step
