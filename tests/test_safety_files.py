"""Nothing the user wrote is lost: saves, checkpoint folders and output dirs, resumed runs."""
import json
from pathlib import Path

import pytest
import torch

from support import DATA, one_error_line, run
from llm_magics import LLMError, Session

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5
SMALL = dict(seq_len=16, batch_size=2, progress=False)


def tiny_lora_session() -> Session:
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, **SMALL)
    s.finetune(text=CORPUS, lora=True, steps=1, **SMALL)
    return s


def test_save_never_loses_the_users_files(shell, capsys, tmp_path):
    import llm_magics

    llm_magics.session.loaded = tiny_lora_session().loaded  # the session the magics use
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "config.json").write_text("my own config")
    (folder / "notes.txt").write_text("my notes")
    capsys.readouterr()
    run(shell, f"save {folder}")
    line = one_error_line(capsys)
    assert "not empty" in line and "--overwrite" in line
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "notes.txt"]
    assert (folder / "config.json").read_text() == "my own config"

    run(shell, f"save {folder} --overwrite")
    assert (folder / "notes.txt").read_text() == "my notes"
    manifest = json.loads((folder / "llm_magics_save.json").read_text())
    assert "model.safetensors" in manifest["files"] and "notes.txt" not in manifest["files"]

    # our own earlier save: an adapter, then a merged model into the same folder leaves no adapter behind
    ours = tmp_path / "ours"
    run(shell, f"save {ours} --adapter")
    assert (ours / "adapter_config.json").is_file()
    (ours / "README.txt").write_text("kept")
    run(shell, f"save {ours}")
    names = {p.name for p in ours.iterdir()}
    assert "adapter_config.json" not in names and "adapter_model.safetensors" not in names
    assert "model.safetensors" in names and (ours / "README.txt").read_text() == "kept"
    assert capsys.readouterr().err == ""


def test_save_refuses_a_checkpoint_folder(tmp_path, capsys, shell):
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=2, checkpoint_every=2, output_dir=str(tmp_path), **SMALL)
    checkpoint = tmp_path / "checkpoint-2"
    before = {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()}
    for overwrite in (False, True):
        with pytest.raises(LLMError, match="is a training checkpoint"):
            s.save(str(checkpoint), overwrite=overwrite)
    assert {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()} == before


def test_a_second_run_never_removes_another_runs_checkpoints(tmp_path, capsys):
    first = Session().train(text=CORPUS, from_scratch=True, steps=4, checkpoint_every=2, output_dir=str(tmp_path),
                            **SMALL)
    kept = {p.name: (p / "trainer_state.pt").read_bytes() for p in tmp_path.glob("checkpoint-*")}
    assert set(kept) == {"checkpoint-2", "checkpoint-4"}
    capsys.readouterr()
    second = Session().train(text=CORPUS, from_scratch=True, steps=6, checkpoint_every=2,
                             output_dir=str(tmp_path), **SMALL)
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "another run" in said[0]
    assert {p.name: (p / "trainer_state.pt").read_bytes() for p in tmp_path.glob("checkpoint-*")} == kept
    assert Path(second.checkpoint).is_dir() and Path(second.checkpoint).parent != tmp_path
    assert sorted(p.name for p in Path(second.checkpoint).parent.glob("checkpoint-*")) == \
        ["checkpoint-4", "checkpoint-6"]  # its own rotation still keeps the last two
    for result in (first, second):
        assert result.checkpoint in result.summary() and Path(result.checkpoint).is_dir()


def test_output_dir_that_is_a_file_is_refused_before_the_first_step(shell, capsys, tmp_path):
    import llm_magics

    taken = tmp_path / "taken"
    taken.write_text("a file of the user's")
    steps = []
    s = Session()
    with pytest.raises(LLMError, match="is a file"):
        s.train(text=CORPUS, from_scratch=True, steps=3, checkpoint_every=1, output_dir=str(taken),
                on_step=[lambda row, result: steps.append(row)], **SMALL)
    assert steps == [] and taken.read_text() == "a file of the user's"
    assert len(s.runs) == 1 and s.runs[0].steps_done == 0 and "is a file" in s.runs[0].error
    # the same through the magic: one line, and the run is in the kernel session's runs
    runs_before = len(llm_magics.session.runs)
    capsys.readouterr()
    run(shell, f"train --from-scratch --steps 3 --seq-len 16 --checkpoint-every 1 --output-dir {taken} "
        "--no-widget --no-progress", CORPUS)
    assert "is a file" in one_error_line(capsys)
    assert len(llm_magics.session.runs) == runs_before + 1 and llm_magics.session.runs[-1].error


def test_out_of_memory_run_is_recorded_with_what_it_reached():
    s = Session()
    s.train(text=CORPUS * 4, from_scratch=True, steps=1, **SMALL)
    with pytest.raises(LLMError, match="out of"):
        s.train(text=CORPUS * 4, steps=2, seq_len=512, batch_size=200000, progress=False)
    assert len(s.runs) == 2 and "out of" in s.runs[-1].error and s.runs[-1].steps_done == 0
    assert "failed" in s.runs[-1].summary()


def _losses(result):
    return [row["loss"] for row in result.history]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, arch):
    config = tmp_path / "cfg.json"
    if arch == "gpt2":  # dropout on: only restored RNG states reproduce it
        config.write_text(json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2,
                                      "n_positions": 64, "resid_pdrop": 0.2, "embd_pdrop": 0.2, "attn_pdrop": 0.2}))
    else:
        config.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                      "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 128,
                                      "max_position_embeddings": 64, "attention_dropout": 0.2}))
    common = dict(text=CORPUS, config=str(config), arch=arch, steps=10, lr=3e-3, **SMALL)
    straight = Session().train(from_scratch=True, **common)
    Session().train(from_scratch=True, checkpoint_every=5, output_dir=str(tmp_path / "a"), **common)
    resumed = Session().train(from_scratch=True, resume=str(tmp_path / "a" / "checkpoint-5"), **common)
    assert _losses(resumed) == pytest.approx(_losses(straight), rel=1e-5)
    # without from_scratch: the checkpoint's weights, not the model that happens to be loaded
    other = Session()
    other.train(from_scratch=True, **{**common, "steps": 3, "seed": 5})
    continued = other.train(resume=str(tmp_path / "a" / "checkpoint-5"), **common)
    assert _losses(continued)[5:] == pytest.approx(_losses(straight)[5:], rel=1e-5)


def test_lora_finetune_with_the_same_seed_gives_the_same_losses():
    runs = []
    for other_work in (1, 1000):
        s = Session()
        s.train(text=CORPUS, from_scratch=True, steps=1, **SMALL)
        torch.rand(other_work)  # whatever else ran in the kernel before
        runs.append(_losses(s.finetune(text=CORPUS, lora=True, steps=4, seed=3, lr=1e-2, **SMALL)))
    assert runs[0] == runs[1]


def test_truncated_cached_token_shard_is_dropped_and_rebuilt(tmp_path, cache):
    """A damaged cache entry (a shard cut short by a full disk or a killed copy) is detected on the next run,
    dropped and tokenized again: that run succeeds with no manual deletion, on the right tokens."""
    import numpy as np

    from llm_magics.data import Preparation, packed_tokens, read_corpus
    from llm_magics.training import byte_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS * 20)
    s = Session()
    s.train(data=str(corpus), from_scratch=True, steps=1, **SMALL)
    [shard] = cache.rglob("shard-*.arrow")
    whole = shard.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 8):  # inside a record batch; only the end-of-stream mark lost
        shard.write_bytes(whole[:cut])
        assert s.train(data=str(corpus), steps=1, **SMALL).steps_done == 1
        assert shard.read_bytes() == whole
    # the oracle: the same corpus tokenized in memory, without any cache
    rows = read_corpus(str(corpus), cache=cache / "datasets")
    cached = packed_tokens(rows, byte_tokenizer(), Preparation(progress=False), cache=cache)
    fresh = packed_tokens(rows, byte_tokenizer(), Preparation(progress=False))
    np.testing.assert_array_equal(cached.read(0, len(cached)), fresh.read(0, len(fresh)))

    chats = tmp_path / "chats.jsonl"
    chats.write_text("\n".join(json.dumps({"prompt": f"say {i}", "response": f"{i} {i}"}) for i in range(40)))
    chat_options = {**SMALL, "seq_len": 64}  # the byte tokenizer's "user: ...assistant: " prompt is 23 bytes
    s.finetune(data=str(chats), steps=2, **chat_options)
    [examples] = cache.rglob("examples.arrow")
    examples.write_bytes(examples.read_bytes()[:300])
    again = s.finetune(data=str(chats), steps=2, **chat_options)
    assert again.steps_done == 2 and examples.stat().st_size > 300
