"""Every sampling option against transformers' own `model.generate` at the same seed, token for token, through
Session.generate, the magic and the playground's Generate button; and each option's effect (the reference's
output with the option differs from its output without it), so a dropped option cannot pass.

The model is a tiny random llama with the packaged tokenizer and tied embeddings (greedy repeats a token, so
a repetition penalty must change it); 8 new tokens take a few milliseconds."""

import pytest
import torch
import transformers

from llm_magics import Session
from llm_magics.generation import SamplingSettings
from support import run, tiny_causal_model

PROMPT = "The capital of France is"
NEW = 8
# The documented defaults of generate (llm_magics/options.py), what an option left out must mean.
DEFAULTS = dict(do_sample=True, temperature=0.7, top_k=50, top_p=0.95, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, default_model_dir):
    return tiny_causal_model(tmp_path_factory.mktemp("tiny") / "model", default_model_dir, initializer_range=0.1)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    s = Session()
    s.load(str(tiny_dir))
    return s


def reference(session, seed=None, stop=None, num_return_sequences=1, **options) -> list[list[int]]:
    """transformers' generate on the same model: the options on top of the defaults, seeded as documented
    (transformers.set_seed), the stop texts through its own stop_strings."""
    settings = {**DEFAULTS, **options}
    if not settings["do_sample"]:
        settings.update(temperature=None, top_k=None, top_p=None)
    inputs = session.tokenizer(PROMPT, return_tensors="pt")
    extra = {"stop_strings": stop, "tokenizer": session.tokenizer} if stop else {}
    if seed is not None:
        transformers.set_seed(seed)
    with torch.no_grad():
        out = session.model.generate(
            **inputs,
            **settings,
            **extra,
            max_new_tokens=NEW,
            num_return_sequences=num_return_sequences,
            pad_token_id=session.tokenizer.pad_token_id,
        )
    return out[:, inputs["input_ids"].shape[1] :].tolist()


# option -> a value that changes the output at seed 1 (checked by test_each_option_changes_the_output)
CASES = {
    "temperature": dict(temperature=0.3),
    "top_k": dict(top_k=5),
    "top_p": dict(top_p=0.5),
    "repetition_penalty": dict(repetition_penalty=1.5, do_sample=False),  # greedy repeats a token
    "greedy": dict(do_sample=False),
    "num_return_sequences": dict(num_return_sequences=3),
    "seed": dict(seed=2),
}


@pytest.mark.parametrize("case", CASES)
def test_session_generate_equals_transformers(tiny, case):
    options = {"seed": 1, **CASES[case]}
    ours = tiny.generate(PROMPT, max_new_tokens=NEW, **options)
    assert ours.token_ids == reference(tiny, **options)


@pytest.mark.parametrize("case", CASES)
def test_each_option_changes_the_output(tiny, case):
    """The reference with the option differs from the reference without it (same seed): the comparison
    above would fail if our code dropped it."""
    options = {"seed": 1, **CASES[case]}
    without = {"seed": 1, **({"do_sample": False} if case == "repetition_penalty" else {})}
    assert reference(tiny, **options) != reference(tiny, **without)


def test_greedy_repetition_penalty_changes_a_repeated_token(tiny):
    """The tiny model's greedy continuation repeats one token; a penalty of 1.5 makes it pick others."""
    plain = tiny.generate(PROMPT, max_new_tokens=NEW, do_sample=False).token_ids[0]
    penalised = tiny.generate(PROMPT, max_new_tokens=NEW, do_sample=False, repetition_penalty=1.5).token_ids[0]
    assert len(set(plain)) == 1 and len(set(penalised)) > 1


def test_top_k_1_is_greedy_at_any_seed(tiny):
    greedy = reference(tiny, do_sample=False)
    for seed in (1, 2, 3):
        assert tiny.generate(PROMPT, max_new_tokens=NEW, seed=seed, top_k=1).token_ids == greedy


def _a_stop_text(session) -> tuple[str, str]:
    """A stop text the seed-1 sample reaches at its 4th token: (that token's text, the text before it)."""
    ids = reference(session, seed=1)[0]
    before = session.tokenizer.decode(ids[:3], skip_special_tokens=True)
    stop = session.tokenizer.decode(ids[3:4]).strip()
    assert stop and "," not in stop and stop not in before, (before, stop)
    return stop, before


def test_stop_text_ends_generation_like_transformers_stop_strings(tiny):
    stop, before = _a_stop_text(tiny)
    streamed = []
    ours = tiny.generate(PROMPT, max_new_tokens=NEW, seed=1, stop=stop, on_text=streamed.append)
    expected = reference(tiny, seed=1, stop=[stop])
    assert "".join(streamed) == ours.text  # the stream ends where the text is cut: not the stop text itself
    assert ours.token_ids == expected and len(expected[0]) == 4  # transformers ended it at the 4th token
    full = tiny.tokenizer.decode(expected[0], skip_special_tokens=True)
    assert ours.stopped_at == [stop] and ours.text == full[: full.find(stop)]  # cut before the stop text
    assert ours.text.strip() == before.strip()


MAGIC_LINES = {
    "--seed 1 --temperature 0.3": dict(seed=1, temperature=0.3),
    "--seed 1 --top-k 5": dict(seed=1, top_k=5),
    "--seed 1 --top-p 0.5": dict(seed=1, top_p=0.5),
    "--seed 1 --repetition-penalty 1.5 --greedy": dict(repetition_penalty=1.5, do_sample=False),
    "--seed 1 --num-return-sequences 3": dict(seed=1, num_return_sequences=3),
    "--seed 2": dict(seed=2),
}


@pytest.mark.parametrize("line", MAGIC_LINES)
def test_magic_options_reach_generate(shell, tiny, tiny_dir, capsys, line):
    run(shell, f"load {tiny_dir}")
    result = run(shell, f"generate --max-new-tokens {NEW} {line}", PROMPT)
    assert result.token_ids == reference(tiny, **MAGIC_LINES[line])
    capsys.readouterr()


def test_magic_stop_reaches_generate(shell, tiny, tiny_dir, capsys):
    stop, _ = _a_stop_text(tiny)
    run(shell, f"load {tiny_dir}")
    result = run(shell, f"generate --max-new-tokens {NEW} --seed 1 --stop {stop}", PROMPT)
    assert result.token_ids == reference(tiny, seed=1, stop=[stop]) and result.stopped_at == [stop]
    capsys.readouterr()


def _panel(session):
    from llm_magics.views.playground import SamplingPanel

    return SamplingPanel(session, PROMPT, SamplingSettings(max_new_tokens=NEW, seed=1))


def test_playground_generate_click_uses_the_sliders(tiny):
    """A Generate click turns the sliders and the seed box into the settings of the run."""
    panel = _panel(tiny)
    assert panel.pin_seed.value  # a given seed is pinned: the click keeps it
    panel.temperature.value, panel.top_k.value, panel.top_p.value = 0.3, 5, 0.5
    panel.num_samples.value, panel.seed.value = 2, 2
    panel.button.click()
    expected = reference(tiny, seed=2, temperature=0.3, top_k=5, top_p=0.5, num_return_sequences=2)
    assert panel.runs[0].token_ids == expected


def test_playground_greedy_box_and_repetition_slider(tiny):
    panel = _panel(tiny)
    panel.greedy.value, panel.repetition_penalty.value = True, 1.5
    panel.button.click()
    assert panel.runs[0].token_ids == reference(tiny, do_sample=False, repetition_penalty=1.5)


def test_playground_stop_box_and_unpinned_seed(tiny):
    stop, _ = _a_stop_text(tiny)
    panel = _panel(tiny)
    panel.stop.value = stop
    panel.button.click()
    assert panel.runs[0].token_ids == reference(tiny, seed=1, stop=[stop])
    panel.pin_seed.value = False
    panel.button.click()  # a new seed per click, shown in the seed box: the run is reproducible from it
    assert panel.runs[0].token_ids == reference(tiny, seed=panel.seed.value, stop=[stop])


def test_greedy_with_several_samples_is_one_line(tiny):
    from llm_magics import LLMError

    with pytest.raises(LLMError, match="--greedy gives one sequence"):
        tiny.generate(PROMPT, do_sample=False, num_return_sequences=3)
