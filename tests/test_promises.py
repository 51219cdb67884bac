"""README sentences that had no test: chat tuning learns only assistant turns, clear_cache, the playground
keeps the last three runs, a hub id is read from the local Hugging Face cache, the lens hover's top 5."""

import pytest

from llm_magics import Session
from llm_magics.data import IGNORE_INDEX, supervised_examples
from support import DATA

CORPUS = (DATA / "tiny_corpus.txt").read_text()


def test_chat_tuning_learns_only_the_assistant_turns(session):
    """The learned tokens (labels not masked) decode to exactly the assistant turns, each closed by the
    template's end-of-turn; the system and user turns are never learned."""
    tokenizer = session.tokenizer
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
        {"role": "assistant", "content": "Green, then red."},
    ]
    [example] = supervised_examples(tokenizer, [{"messages": messages}], seq_len=512)
    ids, labels = example["input_ids"], example["labels"]
    # the whole conversation is the model's input, rendered by the model's own template
    whole = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert ids == list(whole)[: len(ids)]
    runs, current = [], []  # maximal runs of learned tokens
    for token, label in zip(ids, labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    learned = [tokenizer.decode(run) for run in runs]
    assert learned == ["Blue.<|im_end|>\n", "Green, then red.<|im_end|>\n"]
    masked = tokenizer.decode([t for t, label in zip(ids, labels) if label == IGNORE_INDEX])
    for turn in ("You are terse.", "Name a colour.", "Another one?"):
        assert turn in masked


def test_clear_cache_removes_the_tokens_and_the_next_run_tokenizes_again(tmp_path, cache):
    from llm_magics.data import data_cache
    from llm_magics.data.tokens import clear_cache

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS * 3)
    stages = []
    kwargs = dict(
        data=str(corpus),
        from_scratch=True,
        steps=1,
        seq_len=16,
        batch_size=2,
        progress=False,
        on_prepare=[lambda stage, done, total: stages.append(stage)],
    )
    Session().train(**kwargs)
    assert data_cache() == cache and list((cache / "tokens").rglob("*.arrow"))
    stages.clear()
    Session().train(**kwargs)
    assert "tokenizing" not in stages  # cached
    clear_cache(data_cache())  # the README's call
    assert not any((cache / name).exists() for name in ("tokens", "examples", "datasets"))
    stages.clear()
    Session().train(**kwargs)
    assert "tokenizing" in stages and list((cache / "tokens").rglob("*.arrow"))


@pytest.mark.slow
def test_playground_keeps_the_last_three_runs(session):
    from llm_magics.generation import SamplingSettings
    from llm_magics.views.playground import SamplingPanel

    panel = SamplingPanel(session, "Once upon a time", SamplingSettings(max_new_tokens=2))
    seeds = []
    for _ in range(4):
        panel.button.click()
        seeds.append(panel.runs[0].settings.seed)
    assert len(set(seeds)) == 4
    assert [run.settings.seed for run in panel.runs] == seeds[:0:-1]  # newest first; the first run dropped
    assert len(panel.outputs.children) == 3
    shown = " ".join(child.value for child in panel.outputs.children)
    assert f"seed={seeds[0]}" not in shown and all(f"seed={s}" in shown for s in seeds[1:])


def test_hub_id_loads_from_the_local_hf_cache_without_network(tmp_path, monkeypatch):
    """A fake cache entry (the layout huggingface_hub writes: models--org--name/refs/main and a snapshot)
    holding a model we saved: `load org/name` finds it there, offline."""
    import torch

    saved = Session()
    saved.train(text=CORPUS, from_scratch=True, steps=1, seq_len=16, batch_size=2, progress=False)
    snapshot = tmp_path / "hub" / "models--someone--tiny-llama" / "snapshots" / ("0" * 40)
    saved.save(str(snapshot))
    (tmp_path / "hub" / "models--someone--tiny-llama" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-llama" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    s = Session()
    s.load("someone/tiny-llama")
    assert s.loaded.kind == "causal"
    for name, value in saved.model.state_dict().items():
        assert torch.equal(s.model.state_dict()[name], value), name


@pytest.mark.slow
def test_lens_hover_lists_the_top_five(session):
    """Each lens cell's hover (its title in the widget's saved snapshot) is the lens's own top 5, likeliest
    first, as the independent Session.lens computes them."""
    import html
    import re

    text = "The capital of France is"
    lens = session.lens(text)
    view = session.attention(text, view="lens")
    titles = [html.unescape(t) for t in re.findall(r'<td title="([^"]*)"', view.static_html())]
    assert len(titles) == len(lens.rows) * len(lens.tokens)
    for row in (0, len(lens.rows) - 1):
        for position in range(len(lens.tokens)):
            shown = re.findall(r"('(?:[^'\\]|\\.)*'|\"[^\"]*\") ([0-9.]+)", titles[row * len(lens.tokens) + position])
            assert [t for t, _ in shown] == [repr(t) for t in lens.top_tokens[row][position]]
            assert [float(p) for _, p in shown] == pytest.approx(lens.top_probs[row, position].tolist(), abs=1e-3)
