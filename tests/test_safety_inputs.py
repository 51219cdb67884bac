"""Every user mistake gets one clear line: no traceback, no silently wrong number."""

import json
import os
from pathlib import Path

import pytest

import llm_magics
from llm_magics import LLMError, Session
from llm_magics.training import byte_tokenizer, scratch_config
from support import DATA, one_error_line, run

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5
TRAIN = "train --from-scratch --steps 1 --seq-len 16 --batch-size 2 --no-widget --no-progress"


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_out_of_range_seeds(shell, capsys, magic_session, seed):
    capsys.readouterr()
    run(shell, f"generate --seed {seed} --max-new-tokens 2", "Hello")
    assert "--seed must be a whole number from 0 to 4294967295" in one_error_line(capsys)
    run(shell, f"{TRAIN} --seed {seed}", CORPUS)
    assert "--seed" in one_error_line(capsys)
    with pytest.raises(LLMError, match="--seed"):  # what the playground's Generate calls
        magic_session.generate("Hello", seed=int(seed), max_new_tokens=2)
    assert magic_session.generate("Hello", seed=2**32 - 1, max_new_tokens=2, do_sample=True).new_tokens >= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "option", ["--temperature inf", "--temperature nan", "--top-p nan", "--repetition-penalty inf"]
)
def test_non_finite_sampling_options(shell, capsys, magic_session, option):
    capsys.readouterr()
    run(shell, f"generate {option} --max-new-tokens 2", "Hello")
    assert "must be a finite number" in one_error_line(capsys)


@pytest.mark.parametrize("option", ["--lr inf", "--lr nan", "--warmup inf"])
def test_non_finite_training_options(shell, capsys, option):
    capsys.readouterr()
    run(shell, f"{TRAIN} {option}", CORPUS)
    assert "must be a finite number" in one_error_line(capsys)
    run(shell, f"finetune --epochs inf --data {DATA / 'instructions.jsonl'}")
    assert "--epochs must be a finite number" in one_error_line(capsys)


@pytest.mark.parametrize("seq_len", ["0", "1"])
def test_perplexity_needs_windows_of_two_tokens(shell, capsys, seq_len):
    run(shell, TRAIN, CORPUS)
    capsys.readouterr()
    result = run(shell, f"eval --metric perplexity --seq-len {seq_len}", CORPUS)
    assert result is None and "--seq-len must be at least 2" in one_error_line(capsys)


@pytest.mark.parametrize(
    "values, field",
    [
        ({"n_embd": -64}, "n_embd"),
        ({"n_layer": 0}, "n_layer"),
        ({"n_embd": 64, "n_head": 3}, "n_embd \\(64\\) must be divisible by n_head \\(3\\)"),
        ({"n_layer": "2"}, "n_layer"),
        ({"vocab_size": 10}, "vocab_size 10 is smaller than the tokenizer's"),
        ({"n_layers": 2}, "'n_layers' is not a gpt2 config field"),
        ({"resid_pdrop": 1.5}, "resid_pdrop"),
    ],
)
def test_bad_config_json_names_the_field(tmp_path, values, field):
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 64, **values})
    )
    with pytest.raises(LLMError, match=field) as error:
        config_object = scratch_config(str(config), "gpt2", byte_tokenizer())
        Session().train(text=CORPUS, from_scratch=True, config=str(config), steps=1, seq_len=16, progress=False)
        pytest.fail(f"accepted {config_object}")
    assert "\n" not in str(error.value)


def _broken_copies(source: Path, root: Path) -> dict:
    """Model folders with truncated, corrupted or missing weights, and an invalid config.json."""
    copies = {}
    for name in ("truncated", "corrupted", "missing", "bad_config"):
        folder = root / name
        folder.mkdir()
        for item in source.iterdir():
            if item.name.endswith(".safetensors"):
                os.symlink(item, folder / item.name)
            elif item.is_file():
                (folder / item.name).write_bytes(item.read_bytes())
        copies[name] = folder
    weights = copies["truncated"] / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[: len(data) // 2])
    weights = copies["corrupted"] / "model.safetensors"
    weights.unlink()
    weights.write_bytes(b"\x00" * 64 + data[64:4096])
    (copies["missing"] / "model.safetensors").unlink()
    (copies["bad_config"] / "config.json").write_text('{"model_type": "gpt2", "n_embd": ')
    return copies


def test_broken_model_folders_keep_the_loaded_model(shell, capsys, tmp_path):
    source = tmp_path / "source"
    s = Session()
    s.train(
        text=CORPUS,
        from_scratch=True,
        steps=2,
        seq_len=16,
        batch_size=2,
        checkpoint_every=2,
        output_dir=str(tmp_path / "run"),
        progress=False,
    )
    s.save(str(source))
    before = s.loaded
    for name, folder in _broken_copies(source, tmp_path).items():
        with pytest.raises(LLMError) as error:
            s.load(str(folder))
        assert "\n" not in str(error.value), name
        assert s.loaded is before, name
    # the magic: one line, and the kernel's model is still there
    llm_magics.session.loaded = before
    capsys.readouterr()
    run(shell, f"load {tmp_path / 'truncated'}")
    assert "cannot load" in one_error_line(capsys) and llm_magics.session.loaded is before
    # --resume from a checkpoint whose weights are truncated: one line, nothing replaced
    checkpoint = tmp_path / "run" / "checkpoint-2"
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    run(shell, f"{TRAIN} --steps 4 --resume {checkpoint}", CORPUS)
    assert "cannot load" in one_error_line(capsys) and llm_magics.session.loaded is before


def test_empty_bodied_cell_magic_runs_as_the_line_magic(shell, capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    shell.user_ns.pop("_llm", None)
    result = shell.run_cell(f"%%llm {TRAIN} --data {corpus}\n")
    assert result.error_in_exec is None and result.error_before_exec is None
    assert shell.user_ns["_llm"].steps_done == 1
    # other cell magics are untouched
    assert shell.run_cell("%%capture\n").error_in_exec is not None


# --- issue 17: tracebacks and hangs become one line, and the session stays usable ---


def _error_line(capsys) -> str:
    """one_error_line, past datasets' own progress bars (a first read of a file shows one)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "examples/s]" not in line]
    assert len(lines) == 1, err
    return lines[0]


def _still_usable(shell, capsys, model):
    """The model loaded before the failed command is still loaded, and the next command works."""
    assert llm_magics.session.model is model
    score = run(shell, "eval --metric perplexity --seq-len 16", CORPUS[:400])
    assert score.value > 1 and "Traceback" not in capsys.readouterr().err


def _latin1_jsonl(path: Path) -> Path:
    path.write_bytes('{"text": "un café noir"}\n{"text": "deux cafés"}\n'.encode("latin-1"))
    return path


@pytest.mark.slow
def test_non_utf8_jsonl_is_one_line_in_eval_and_finetune(shell, capsys, magic_session, tmp_path, cache):
    data = _latin1_jsonl(tmp_path / "latin1.jsonl")
    model = magic_session.model
    run(shell, f"eval --metric perplexity --data {data}")
    assert _error_line(capsys) == f"llm eval: cannot read {data}, line 1: not UTF-8 text (in 'text')"
    run(shell, f"finetune --steps 1 --no-progress --no-widget --data {data}")
    assert _error_line(capsys) == f"llm finetune: cannot read {data}, line 1: not UTF-8 text (in 'text')"
    _still_usable(shell, capsys, model)


def test_non_utf8_jsonl_is_not_trained_on_with_the_byte_tokenizer(tmp_path, cache):
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(b'{"text": "fine"}\n{"text": "also fine"}\n{"text": "caf\xe9"}\n')
    s = Session()
    with pytest.raises(LLMError, match=r"mixed.jsonl, line 3: not UTF-8 text"):
        s.train(data=str(data), from_scratch=True, steps=1, seq_len=8, batch_size=1, progress=False)
    assert s.model is None and not list(cache.rglob("shard-*.arrow"))  # nothing trained, nothing tokenized


@pytest.mark.slow
def test_empty_save_to_disk_dataset_is_one_line(shell, capsys, magic_session, tmp_path, cache):
    import datasets

    empty = tmp_path / "empty"
    datasets.Dataset.from_dict({"text": []}).save_to_disk(str(empty))
    capsys.readouterr()
    model = magic_session.model
    run(shell, f"finetune --steps 1 --no-progress --no-widget --data {empty}")
    assert _error_line(capsys) == f"llm finetune: no data: {empty} has no records"
    _still_usable(shell, capsys, model)


@pytest.mark.slow
def test_corrupt_arrow_file_in_a_dataset_folder_is_one_line(shell, capsys, magic_session, tmp_path, cache):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": ["hello world"] * 50}).save_to_disk(str(folder))
    for arrow in folder.glob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:120])  # cut inside its first record batch
    capsys.readouterr()
    model = magic_session.model
    run(shell, f"train --steps 1 --seq-len 16 --no-progress --no-widget --data {folder}")
    assert _error_line(capsys).startswith(f"llm train: cannot read {folder} (written by save_to_disk): ")
    _still_usable(shell, capsys, model)


@pytest.mark.slow
def test_num_return_sequences_0_and_lora_alpha_0_are_refused(shell, capsys, magic_session):
    model = magic_session.model
    run(shell, "generate --num-return-sequences 0 --max-new-tokens 2 Hello")
    assert _error_line(capsys) == "llm generate: --num-return-sequences must be in [1, 64]; got 0"
    run(shell, "finetune --lora --lora-alpha 0 --steps 1 --seq-len 16 --no-progress --no-widget", CORPUS[:300])
    assert _error_line(capsys) == "llm finetune: --lora-alpha must be > 0 (the adapter's scale is alpha / r); got 0"
    _still_usable(shell, capsys, model)


@pytest.mark.slow
def test_seq_len_shorter_than_the_chat_template_prompt_says_so(shell, capsys, magic_session, tmp_path, cache):
    chats = tmp_path / "chats.jsonl"
    record = {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    }
    chats.write_text(json.dumps(record) + "\n")
    tokenizer = magic_session.tokenizer
    # The oracle: transformers' own rendering of the prompt, with the generation prompt, is what precedes
    # the first trained token (SmolLM2's template adds a system message: more than 32 tokens).
    prompt = tokenizer.apply_chat_template(
        record["messages"][:1], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert len(prompt) > 32
    model = magic_session.model
    run(shell, f"finetune --steps 1 --seq-len 32 --no-progress --no-widget --data {chats}")
    line = _error_line(capsys)
    assert line.startswith(
        f"llm finetune: --seq-len 32 is shorter than the chat-template prompt ({len(prompt)} "
        "tokens before the first trained token"
    ), line
    assert "no trainable tokens" not in line
    _still_usable(shell, capsys, model)


@pytest.mark.slow
def test_max_tokens_on_a_big_file_with_no_newline_tokenizes_only_what_it_needs(tmp_path, cache, session):
    """A 4 MB file with no newline is one document: --max-tokens reads it in bounded chunks (from about 4
    characters a token, doubling) instead of tokenizing all of it."""
    import time

    import numpy as np
    from test_data import WORDS

    from llm_magics.data import Preparation, packed_tokens, read_corpus

    rng = np.random.default_rng(0)
    line = tmp_path / "one_line.txt"
    line.write_text(" ".join(np.array(WORDS)[rng.integers(0, len(WORDS), 700_000)]))
    assert line.stat().st_size > 3_000_000 and b"\n" not in line.read_bytes()
    corpus = read_corpus(str(line), cache=cache / "datasets")
    started = time.perf_counter()
    stream = packed_tokens(corpus, session.tokenizer, Preparation(progress=False), max_tokens=1000, cache=cache)
    seconds = time.perf_counter() - started
    produced = sum(len(chunk) for chunk in stream.chunks)  # what was tokenized, before the limit's cut
    assert len(stream) == 1000 and produced <= 1000 + 64, produced
    # the oracle: plain transformers on a prefix far longer than 1000 tokens need
    expected = session.tokenizer(line.read_text()[:40_000], add_special_tokens=False)["input_ids"][:1000]
    assert stream.read(0, 1000).tolist() == expected
    assert not list(cache.rglob("shard-*.arrow"))  # a cut document is never cached as a whole one
    # The time it took against the same call on a file of the line's first 40,000 characters (75 times
    # less text): tokenizing the whole line would take minutes and gigabytes, its prefix costs what that does.
    short = tmp_path / "short.txt"
    short.write_text(line.read_text()[:40_000])
    started = time.perf_counter()
    packed_tokens(
        read_corpus(str(short), cache=cache / "datasets"),
        session.tokenizer,
        Preparation(progress=False),
        max_tokens=1000,
        cache=cache,
    )
    assert seconds < 5 * (time.perf_counter() - started) + 1, seconds
    result = session.train(data=str(line), max_tokens=1000, steps=1, seq_len=32, batch_size=2, progress=False)
    assert result.steps_done == 1


def _perplexity_by_hand(loaded, text: str) -> float:
    """The oracle: plain transformers on the text's ids followed by one EOS (what the stream holds)."""
    import math

    import torch

    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"] + [loaded.tokenizer.eos_token_id]
    window = torch.tensor([ids], device=loaded.device)
    with torch.no_grad():
        return math.exp(float(loaded.model(input_ids=window, labels=window).loss))


def test_perplexity_of_a_one_token_text_is_too_short(shell, capsys, magic_session):
    assert len(magic_session.tokenizer("x", add_special_tokens=False)["input_ids"]) == 1
    capsys.readouterr()
    assert run(shell, "eval --metric perplexity", "x") is None
    err = capsys.readouterr().err  # (after the tokenizing bar)
    assert (
        "Traceback" not in err
        and err.strip().splitlines()[-1] == "llm eval: the text is too short for perplexity: it needs at least 2 tokens"
    )
    with pytest.raises(LLMError, match="too short for perplexity"):
        magic_session.eval("perplexity", text="x", progress=False)
    # two tokens of its own are enough
    two = "Hello world"
    assert len(magic_session.tokenizer(two, add_special_tokens=False)["input_ids"]) == 2
    value = magic_session.eval("perplexity", text=two, progress=False).value
    assert value == pytest.approx(_perplexity_by_hand(magic_session.loaded, two), rel=1e-5)


@pytest.mark.slow
def test_magic_and_api_give_the_same_perplexity_on_the_same_text(shell, capsys, magic_session):
    text = "The cat sat on the mat.\nIt was a sunny day, and the cat was happy."
    by_api = magic_session.eval("perplexity", text=text, progress=False).value
    by_magic = run(shell, "eval --metric perplexity", text).value  # IPython hands the body over as text + "\n"
    assert by_magic == by_api == pytest.approx(_perplexity_by_hand(magic_session.loaded, text), rel=1e-5)
    # a body ending in a newline of its own keeps it: only IPython's one newline is dropped
    code = "def f(x):\n    return x\n"  # a text whose trailing newline is a token of its own
    kept = run(shell, "eval --metric perplexity", code + "\n").value  # the cell's last line is empty
    assert kept == magic_session.eval("perplexity", text=code, progress=False).value
    assert kept != magic_session.eval("perplexity", text=code.rstrip("\n"), progress=False).value


@pytest.mark.slow
def test_tokenized_cache_is_keyed_on_content_not_size_and_mtime(cache, session, tmp_path):
    """The issue's stale-token repro: a file rewritten with content of the same size and its mtime restored
    (as cp -p, rsync or git checkout can leave it) is read and tokenized again."""
    corpus = tmp_path / "corpus.txt"
    first = "The cat sat on the mat and looked at the birds outside the window. " * 8
    second = "".join(reversed(first))  # same size, other content
    corpus.write_text(first)
    before = corpus.stat()
    scored_first = session.eval("perplexity", data=str(corpus), progress=False).value
    corpus.write_text(second)
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = corpus.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    scored_second = session.eval("perplexity", data=str(corpus), progress=False).value
    # the oracle: the same text as a cell body, which is never cached
    assert scored_second == pytest.approx(session.eval("perplexity", text=second, progress=False).value, rel=1e-6)
    assert scored_first == pytest.approx(session.eval("perplexity", text=first, progress=False).value, rel=1e-6)
    assert scored_second != pytest.approx(scored_first, rel=1e-3)
    # the first content again (same size, same mtime): its cached tokens are still right
    corpus.write_text(first)
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert session.eval("perplexity", data=str(corpus), progress=False).value == scored_first


def _tiny_byte_model() -> Session:
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, seq_len=32, batch_size=2, progress=False)
    return s


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_two_processes_equal_one_process_for_finetune_with_mixed_lengths(lora):
    """--processes 2 x 4 rows = 1 process x 8 rows for records of very different lengths: the loss is the
    mean over every target token of the global batch (7 records: the second rank's share is evened out with
    a repeated row, which must not count)."""
    import torch

    from llm_magics.data import pad_batch, supervised_examples

    words = CORPUS.split()
    records = [{"text": " ".join(words[i : i + n])} for i, n in enumerate([2, 30, 5, 60, 11, 3, 44])]
    body = "\n".join(json.dumps(r) for r in records)
    options = dict(text=body, lora=lora, steps=3, seq_len=256, lr=1e-2, progress=False)
    one = _tiny_byte_model()
    # the oracle: plain transformers' mean token loss over all 7 records in one padded batch, before training
    batch = pad_batch(supervised_examples(one.tokenizer, records, 256), one.tokenizer.pad_token_id)
    with torch.no_grad():
        expected_first = float(one.model(**batch).loss)
    single = one.finetune(batch_size=8, **options)
    two = _tiny_byte_model()
    double = two.finetune(batch_size=4, processes=2, **options)
    assert single.history[0]["loss"] == pytest.approx(expected_first, abs=1e-5)
    assert double.history[0]["loss"] == pytest.approx(expected_first, abs=1e-5)
    assert len(double.history[0]["rank_losses"]) == 2
    if lora:
        # LoRA's dropout (0.05) draws its masks per rank, so after the first update (LoRA's B starts at
        # zero: the first step's forward is dropout-free) the runs differ by their dropout draws, not by
        # how the loss is averaged
        return
    assert [r["loss"] for r in double.history] == pytest.approx([r["loss"] for r in single.history], abs=1e-5)
    mine, theirs = one.model.state_dict(), two.model.state_dict()
    assert mine.keys() == theirs.keys()
    # (Adam divides by the gradient's own size: float noise in near-zero gradients moves a weight by up to
    # ~lr * 1e-3 here, so the weights are compared a little less tightly than the losses)
    assert max((mine[k].float() - theirs[k].float()).abs().max().item() for k in mine) <= 1e-4


@pytest.mark.slow
def test_reversed_labels_map_by_name_onto_the_existing_classifier(cache):
    """--labels neg,pos then --labels pos,neg: the same head, class by name (never inverted); other names
    get a head of their own."""
    from sklearn.metrics import accuracy_score

    s = Session()
    s.load("minilm")
    train, test = str(DATA / "sentiment_train.jsonl"), str(DATA / "sentiment_test.jsonl")
    truth = [json.loads(line)["label"] for line in open(test)]
    texts = [json.loads(line)["text"] for line in open(test)]
    s.finetune(data=train, task="classify", labels="negative,positive", epochs=3, batch_size=8, lr=2e-4, progress=False)
    trained = accuracy_score(truth, s.classify(texts))  # the oracle: scikit-learn on the predicted names
    assert trained >= 0.6  # (inverted, it would be 1 - trained)
    head = s.model.config.id2label
    result = s.finetune(
        data=train, eval_data=test, task="classify", labels="positive,negative", steps=1, lr=1e-6, progress=False
    )
    assert s.model.config.id2label == head == {0: "negative", 1: "positive"}
    again = accuracy_score(truth, s.classify(texts))
    assert result.metrics["accuracy"] == pytest.approx(again)
    assert again >= trained - 0.07  # not inverted (it was 0.0 when the head kept neg,pos and the ids flipped)
    # other names: a new head for them, named as asked
    renamed = [
        json.dumps({"text": t, "label": {"positive": "good", "negative": "bad"}[label]})
        for t, label in zip(texts, truth)
    ]
    s.finetune(text="\n".join(renamed), task="classify", labels="good,bad", steps=1, progress=False)
    assert s.model.config.id2label == {0: "good", 1: "bad"}
