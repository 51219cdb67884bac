"""Data through `datasets`: every input format trains, tokens are cached once, memory stays flat."""

import json
import os

import numpy as np
import pytest

from llm_magics import Session
from llm_magics.data import Preparation, encode, packed_tokens, read_corpus, token_stream
from llm_magics.data import tokens as token_cache
from llm_magics.training import byte_tokenizer
from support import DATA

WORDS = "the cat sat on mat dog log bird branch ate fish bone seed slept sun door nest".split()
SENTENCES = [line for line in (DATA / "tiny_corpus.txt").read_text().split(". ") if line.strip()]


def documents(n: int) -> list[str]:
    return [SENTENCES[i % len(SENTENCES)].strip() + "." for i in range(n)]


def generated_corpus(path, megabytes: int):
    """Blank-line-separated paragraphs of random words, written a megabyte at a time (fast)."""
    rng = np.random.default_rng(0)
    words = np.array(WORDS)
    with open(path, "w") as handle:
        for _ in range(megabytes):
            chunk = words[rng.integers(0, len(words), 300_000)].reshape(-1, 100)
            block = "\n\n".join(" ".join(row) for row in chunk) + "\n\n"
            handle.write(block[: 1 << 20].rsplit("\n\n", 1)[0] + "\n\n")
    return path


def write_format(tmp_path, fmt: str) -> tuple[str, dict]:
    """The same documents in each format --data accepts; returns the path and extra train kwargs."""
    import datasets

    docs = documents(60)
    rows = [{"text": d} for d in docs]
    if fmt in ("txt", "md"):
        path = tmp_path / f"corpus.{fmt}"
        path.write_text("\n\n".join(docs))
    elif fmt in ("jsonl", "ndjson"):
        path = tmp_path / f"corpus.{fmt}"
        path.write_text("\n".join(json.dumps(r) for r in rows))
    elif fmt == "json":
        path = tmp_path / "corpus.json"
        path.write_text(json.dumps(rows))
    elif fmt == "csv":  # a column that is not called text: --text-field
        path = tmp_path / "corpus.csv"
        datasets.Dataset.from_dict({"id": list(range(len(docs))), "body": docs}).to_csv(str(path))
        return str(path), {"text_field": "body"}
    elif fmt == "parquet":
        path = tmp_path / "corpus.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif fmt == "folder":
        path = tmp_path / "folder"
        path.mkdir()
        for part in range(3):
            (path / f"part{part}.jsonl").write_text("\n".join(json.dumps(r) for r in rows[part::3]))
    elif fmt == "save_to_disk":
        path = tmp_path / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    elif fmt == "dataset_dict":  # the train split is read; the other split must not leak in
        path = tmp_path / "splits"
        datasets.DatasetDict(
            {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list([{"text": "held out"}] * 5)}
        ).save_to_disk(str(path))
    else:  # the cell body
        return "-", {"text": "\n\n".join(docs)}
    return str(path), {}


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "json", "csv", "parquet", "folder", "save_to_disk", "body"])
def test_each_format_trains_with_falling_loss(tmp_path, cache, tiny_config, fmt):
    data, extra = write_format(tmp_path, fmt)
    result = Session().train(
        data=data,
        from_scratch=True,
        config=tiny_config,
        steps=12,
        batch_size=8,
        seq_len=32,
        lr=1e-2,
        progress=False,
        **extra,
    )
    assert result.steps_done == 12 and not result.interrupted
    assert result.final_loss < 0.8 * result.initial_loss


FORMATS = ["txt", "md", "jsonl", "ndjson", "json", "csv", "parquet", "folder", "save_to_disk", "dataset_dict", "body"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_back_the_documents_written(tmp_path, cache, fmt):
    """The oracle is the list of documents written: the reader must give exactly those, in order
    (a folder's files are read in name order, so its rows come back part by part)."""
    from llm_magics.data import text_of

    data, extra = write_format(tmp_path, fmt)
    corpus = read_corpus(data, body=extra.get("text"), text_field=extra.get("text_field"), cache=cache / "datasets")
    read = [text_of(row, corpus.text_field, lambda: "") for row in corpus.dataset]
    docs = documents(60)
    expected = [d for part in range(3) for d in docs[part::3]] if fmt == "folder" else docs
    assert read == expected


@pytest.mark.slow
def test_record_shapes_finetune_from_files(tmp_path, cache, tiny_config):
    import datasets

    s = Session()
    s.train(text="\n\n".join(documents(20)), from_scratch=True, config=tiny_config, steps=2, seq_len=32, progress=False)
    pairs = [{"prompt": f"Say {w}.", "response": f"{w} {w} {w}."} for w in WORDS]
    datasets.Dataset.from_list(pairs).to_parquet(str(tmp_path / "pairs.parquet"))
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        "\n".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": p["prompt"]},
                        {"role": "assistant", "content": p["response"]},
                    ]
                }
            )
            for p in pairs
        )
    )
    for data in (tmp_path / "pairs.parquet", chats):
        result = s.finetune(data=str(data), steps=15, batch_size=8, lr=1e-2, seq_len=64, progress=False)
        assert result.steps_done == 15 and result.final_loss < 0.8 * result.initial_loss
    labelled = [{"review": f"{w} is good", "label": "pos"} for w in WORDS] + [
        {"review": f"{w} is bad", "label": "neg"} for w in WORDS
    ]
    datasets.Dataset.from_list(labelled).to_csv(str(tmp_path / "labels.csv"))
    result = s.finetune(
        data=str(tmp_path / "labels.csv"),
        eval_data=str(tmp_path / "labels.csv"),
        task="classify",
        labels="neg,pos",
        text_field="review",
        steps=20,
        batch_size=8,
        lr=1e-2,
        seq_len=32,
        progress=False,
    )
    assert result.final_loss < result.initial_loss and result.metrics["accuracy"] > 0.5
    score = s.eval("accuracy", data=str(tmp_path / "labels.csv"), text_field="review", progress=False)
    assert score.examples == len(labelled)


@pytest.mark.slow
def test_tokens_are_cached_and_reused(tmp_path, cache, tiny_config):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(documents(200)))
    stages = []
    first = Session().train(
        data=str(corpus),
        from_scratch=True,
        config=tiny_config,
        steps=3,
        seq_len=32,
        progress=False,
        on_prepare=[lambda stage, done, total: stages.append(stage)],
    )
    assert "tokenizing" in stages
    shards = {p: p.stat().st_mtime_ns for p in (cache / "tokens").rglob("*.arrow")}
    assert shards and all((p.parent / "done.json").is_file() for p in shards)
    stages.clear()
    second = Session().train(
        data=str(corpus),
        from_scratch=True,
        config=tiny_config,
        steps=3,
        seq_len=32,
        progress=False,
        on_prepare=[lambda stage, done, total: stages.append(stage)],
    )
    assert "tokenizing" not in stages and "reading" in stages  # the second run does not tokenize
    assert {p: p.stat().st_mtime_ns for p in (cache / "tokens").rglob("*.arrow")} == shards
    assert second.history == [{**row, "elapsed": row2["elapsed"]} for row, row2 in zip(first.history, second.history)]
    corpus.write_text("\n\n".join(documents(150)))  # a changed file is tokenized again
    stages.clear()
    Session().train(
        data=str(corpus),
        from_scratch=True,
        config=tiny_config,
        steps=1,
        seq_len=32,
        progress=False,
        on_prepare=[lambda stage, done, total: stages.append(stage)],
    )
    assert "tokenizing" in stages


@pytest.mark.slow
def test_max_tokens_and_sample_docs_take_a_prefix(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(token_cache, "SHARD_BYTES", 4096)  # many small shards
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(documents(2000)))
    tokenizer = byte_tokenizer()
    full = read_corpus(str(corpus), cache=cache / "datasets")
    assert len(read_corpus(str(corpus), sample_docs=7, cache=cache / "datasets")) == 7
    stream = packed_tokens(full, tokenizer, Preparation(progress=False), max_tokens=5000, cache=cache)
    assert len(stream) == 5000
    shards = list((cache / "tokens").rglob("shard-*.arrow"))
    assert 1 <= len(shards) < 10 and not list((cache / "tokens").rglob("done.json"))  # only what was needed
    whole = packed_tokens(full, tokenizer, Preparation(progress=False), cache=cache)
    np.testing.assert_array_equal(whole.read(0, 5000), stream.read(0, 5000))
    assert len(whole) == len(token_stream(tokenizer, documents(2000)))
    monkeypatch.setattr(token_cache, "SHARD_BYTES", 32 << 20)  # one shard, two processes, in memory
    parallel = packed_tokens(full, tokenizer, Preparation(progress=False), num_proc=2)
    np.testing.assert_array_equal(parallel.read(0, len(parallel)), whole.read(0, len(whole)))


def test_byte_fast_path_gives_byt5_ids_and_the_saved_tokenizer_reloads(tmp_path, cache, tiny_config):
    from transformers import AutoTokenizer

    text = "Grüße, 世界! The cat sat.\n\tTabs and émojis 🐈"
    slow = byte_tokenizer()(text, add_special_tokens=False)["input_ids"]
    assert encode(byte_tokenizer(), text) == slow
    assert token_stream(byte_tokenizer(), [text, "ok"]).tolist() == slow + [1] + encode(byte_tokenizer(), "ok") + [1]
    s = Session()
    s.train(text=text, from_scratch=True, config=tiny_config, steps=1, seq_len=16, progress=False)
    s.save(str(tmp_path / "model"))
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert reloaded(text, add_special_tokens=False)["input_ids"] == slow


@pytest.mark.slow
def test_50mb_corpus_trains_with_flat_memory(tmp_path, cache, tiny_config):
    from support import PeakMemory

    corpus = generated_corpus(tmp_path / "big.txt", 50)
    with PeakMemory("cpu") as peak:  # the corpus and its ids are host memory, on a GPU machine too
        result = Session().train(
            data=str(corpus), from_scratch=True, config=tiny_config, steps=3, seq_len=64, progress=False
        )
    assert result.steps_done == 3 and peak.samples > 20
    # The old path held every id as a Python int (~1.7 GB for 50 MB of text); now the text and the
    # ids stay in memory-mapped Arrow files.
    assert peak.mb() < 400, peak.mb()
    assert os.path.getsize(corpus) >= 50 * 10**6


def test_magic_data_options(shell, capsys, tmp_path, cache, tiny_config):
    from support import run

    data, _ = write_format(tmp_path, "csv")
    result = run(
        shell,
        f"train --from-scratch --config {tiny_config} --steps 3 --seq-len 32 --no-progress "
        f"--no-widget --data {data} --text-field body --sample-docs 20 --max-tokens 600",
    )
    assert result.steps_done == 3 and "train: 3/3 steps" in capsys.readouterr().out
    score = run(shell, f"eval --metric perplexity --data {data} --text-field body --max-tokens 300 --seq-len 32")
    assert score.value > 1 and score.metric == "perplexity"
