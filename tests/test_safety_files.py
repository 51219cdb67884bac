"""Nothing the user wrote is lost: saves, checkpoint folders and output dirs, resumed runs."""

import json
import os
from pathlib import Path

import pytest
import torch

from llm_magics import LLMError, Session
from support import DATA, TWO_LAYER_CONFIG, one_error_line, run

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5
SMALL = dict(seq_len=16, batch_size=2, progress=False)


def tiny_lora_session() -> Session:
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, **SMALL)
    s.finetune(text=CORPUS, lora=True, steps=1, **SMALL)
    return s


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_second_run_never_removes_another_runs_checkpoints(tmp_path, capsys):
    first = Session().train(
        text=CORPUS, from_scratch=True, steps=4, checkpoint_every=2, output_dir=str(tmp_path), **SMALL
    )
    kept = {p.name: (p / "trainer_state.pt").read_bytes() for p in tmp_path.glob("checkpoint-*")}
    assert set(kept) == {"checkpoint-2", "checkpoint-4"}
    capsys.readouterr()
    second = Session().train(
        text=CORPUS, from_scratch=True, steps=6, checkpoint_every=2, output_dir=str(tmp_path), **SMALL
    )
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "another run" in said[0]
    assert {p.name: (p / "trainer_state.pt").read_bytes() for p in tmp_path.glob("checkpoint-*")} == kept
    assert Path(second.checkpoint).is_dir() and Path(second.checkpoint).parent != tmp_path
    assert sorted(p.name for p in Path(second.checkpoint).parent.glob("checkpoint-*")) == [
        "checkpoint-4",
        "checkpoint-6",
    ]  # its own rotation still keeps the last two
    for result in (first, second):
        assert result.checkpoint in result.summary() and Path(result.checkpoint).is_dir()


def test_output_dir_that_is_a_file_is_refused_before_the_first_step(shell, capsys, tmp_path):
    import llm_magics

    taken = tmp_path / "taken"
    taken.write_text("a file of the user's")
    steps = []
    s = Session()
    with pytest.raises(LLMError, match="is a file"):
        s.train(
            text=CORPUS,
            from_scratch=True,
            steps=3,
            checkpoint_every=1,
            output_dir=str(taken),
            on_step=[lambda row, result: steps.append(row)],
            **SMALL,
        )
    assert steps == [] and taken.read_text() == "a file of the user's"
    assert len(s.runs) == 1 and s.runs[0].steps_done == 0 and "is a file" in s.runs[0].error
    # without --checkpoint-every too (nothing would be written there, but a file named is a typo)
    with pytest.raises(LLMError, match=f"--output-dir {taken} is a file, not a folder"):
        s.train(text=CORPUS, from_scratch=True, steps=3, output_dir=str(taken), **SMALL)
    # the same through the magic: one line, and the run is in the kernel session's runs
    runs_before = len(llm_magics.session.runs)
    capsys.readouterr()
    run(
        shell,
        f"train --from-scratch --steps 3 --seq-len 16 --checkpoint-every 1 --output-dir {taken} "
        "--no-widget --no-progress",
        CORPUS,
    )
    assert "is a file" in one_error_line(capsys)
    assert len(llm_magics.session.runs) == runs_before + 1 and llm_magics.session.runs[-1].error


@pytest.mark.slow
def test_out_of_memory_run_is_recorded_with_what_it_reached():
    s = Session()
    s.train(text=CORPUS * 4, from_scratch=True, steps=1, **SMALL)
    with pytest.raises(LLMError, match="out of"):
        s.train(text=CORPUS * 4, steps=2, seq_len=512, batch_size=200000, progress=False)
    assert len(s.runs) == 2 and "out of" in s.runs[-1].error and s.runs[-1].steps_done == 0
    assert "failed" in s.runs[-1].summary()


def _losses(result):
    return [row["loss"] for row in result.history]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, arch):
    config = tmp_path / "cfg.json"
    if arch == "gpt2":  # dropout on: only restored RNG states reproduce it
        config.write_text(
            json.dumps(
                {
                    "model_type": "gpt2",
                    "n_embd": 64,
                    "n_layer": 2,
                    "n_head": 2,
                    "n_positions": 64,
                    "resid_pdrop": 0.2,
                    "embd_pdrop": 0.2,
                    "attn_pdrop": 0.2,
                }
            )
        )
    else:
        config.write_text(json.dumps({**TWO_LAYER_CONFIG, "attention_dropout": 0.2}))
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


@pytest.mark.slow
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


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_failed_command_never_replaces_the_loaded_model(shell, capsys, tmp_path):
    """The issue's three reproductions, plus failures after a head or LoRA was built (output dir refused):
    one line each, and the session still holds the same, unsaved fine-tuned model with the same weights."""
    import llm_magics

    checkpoint_run = Session()
    checkpoint_run.train(
        text=CORPUS,
        from_scratch=True,
        config="tiny",
        steps=2,
        checkpoint_every=2,
        output_dir=str(tmp_path / "ck"),
        **SMALL,
    )
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(
        "".join(
            json.dumps({"text": t, "label": label}) + "\n"
            for t, label in [("good film", "pos"), ("bad film", "neg")] * 4
        )
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    s = llm_magics.session
    s.train(text=CORPUS, from_scratch=True, config="tiny", steps=2, **SMALL)
    s.finetune(text=CORPUS, steps=1, **SMALL)  # the user's fine-tuned model, never saved
    before, module, weights, name = s.loaded, s.model, _state(s.model), s.loaded.name
    quiet = "--no-widget --no-progress"
    cases = [
        (
            f"train --from-scratch --config tiny --seq-len 1024 --steps 2 {quiet}",
            CORPUS,
            "larger than the model's context",
        ),
        (
            f"train --resume {tmp_path / 'ck' / 'checkpoint-2'} --seq-len 1000 --steps 4 {quiet}",
            CORPUS,
            "larger than the model's context",
        ),
        (f"finetune --task classify --labels neg,pos --lora --lora-r 0 --data {labelled} {quiet}", None, "--lora-r"),
        # failing later, once a classifier head / LoRA layers / a fresh model were built for the run
        (
            f"finetune --task classify --labels neg,pos --lora --steps 1 --checkpoint-every 1 --output-dir {a_file} "
            f"--data {labelled} {quiet}",
            None,
            "is a file",
        ),
        (
            f"finetune --lora --steps 1 --seq-len 16 --checkpoint-every 1 --output-dir {a_file} {quiet}",
            CORPUS,
            "is a file",
        ),
        (
            f"train --from-scratch --steps 1 --seq-len 16 --checkpoint-every 1 --output-dir {a_file} {quiet}",
            CORPUS,
            "is a file",
        ),
    ]
    for line, body, said in cases:
        capsys.readouterr()
        run(shell, line, body)
        assert said in one_error_line(capsys), line
        assert s.loaded is before and s.model is module and s.loaded.name == name, line
        assert s.loaded.kind == "causal" and not any("lora_" in k for k in s.model.state_dict()), line
        now = _state(s.model)
        assert now.keys() == weights.keys() and all(torch.equal(now[k], weights[k]) for k in now), line
    assert s.generate("The cat", max_new_tokens=2, do_sample=False).new_tokens >= 1  # still usable


def test_checkpoint_rotation_keeps_folders_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "checkpoint-1").mkdir(parents=True)
    (out / "checkpoint-1" / "my_notes.txt").write_text("my notes")
    trainer = out / "checkpoint-2"  # what an HF Trainer run leaves
    trainer.mkdir()
    (trainer / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": []}))
    (trainer / "optimizer.pt").write_bytes(bytes(range(256)) * 64)
    (trainer / "model.safetensors").write_bytes(b"not ours")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    result = Session().train(text=CORPUS, from_scratch=True, steps=5, checkpoint_every=1, output_dir=str(out), **SMALL)
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "checkpoint-2 of another run or tool" in said[0], said
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {k: after.get(k) for k in before} == before  # every file of theirs, byte for byte
    own = Path(result.checkpoint).parent
    assert own == out / f"run-{result.run_id}" and sorted(p.name for p in own.iterdir() if p.is_dir()) == [
        "checkpoint-4",
        "checkpoint-5",
    ]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-1", "checkpoint-2", own.name]


_RUN_IN_A_KERNEL = """
import sys
from pathlib import Path
from llm_magics import LLMError, Session

out, started = sys.argv[1], Path(sys.argv[2])
try:
    result = Session().train(text=open(sys.argv[3]).read(), from_scratch=True, steps=100000, checkpoint_every=2,
                             output_dir=out, seq_len=16, batch_size=2, progress=False,
                             on_step=[lambda row, result: started.touch()])
except LLMError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
print(result.checkpoint)
"""


@pytest.mark.slow
def test_two_runs_sharing_an_output_dir_at_once(tmp_path):
    """Two real processes (two kernels): the second is refused in one line while the first runs, and the
    first run's checkpoints are its own."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out, corpus = tmp_path / "shared", tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def start(name):
        return subprocess.Popen(
            [sys.executable, "-c", _RUN_IN_A_KERNEL, str(out), str(tmp_path / name), str(corpus)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    first = start("first-started")
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "first-started").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        second = start("second-started")
        _, err = second.communicate(timeout=240)
        assert second.returncode == 3 and not (tmp_path / "second-started").exists()
        lines = [line for line in err.strip().splitlines() if "Traceback" not in line]
        assert (
            lines[-1] == f"--output-dir {out} is in use by another run (process {first.pid}): wait for it to "
            "end, or pick another --output-dir"
        ), err
        assert "Traceback" not in err
    finally:
        first.send_signal(signal.SIGINT)  # a graceful stop, as the interrupt button
        out_text, err_text = first.communicate(timeout=240)
    checkpoint = Path(out_text.strip().splitlines()[-1])
    assert first.returncode == 0 and checkpoint.parent == out, err_text
    run_ids = {json.loads((p / "llm_magics_checkpoint.json").read_text())["run_id"] for p in out.glob("checkpoint-*")}
    assert len(run_ids) == 1
    # the lock went with the first run: a later run in the same folder goes ahead (in a sub-folder of its own)
    later = Session().train(text=CORPUS, from_scratch=True, steps=1, checkpoint_every=1, output_dir=str(out), **SMALL)
    assert Path(later.checkpoint).parent == out / f"run-{later.run_id}"


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MB filesystem (tmpfs), so a full disk is a real ENOSPC from the kernel."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Take every free byte of the filesystem."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_full_disk_during_save_over_an_earlier_save(small_disk, tmp_path, shell, capsys):
    import llm_magics

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(TWO_LAYER_CONFIG))
    s = llm_magics.session
    s.train(text=CORPUS, from_scratch=True, config=str(config), steps=1, **SMALL)
    saved = small_disk / "model"
    run(shell, f"save {saved}")
    earlier = _files(saved)
    assert "model.safetensors" in {p.name for p in earlier}
    s.train(text=CORPUS, steps=1, lr=1e-2, **SMALL)  # different weights to save over the earlier ones
    filler = _fill(small_disk)
    capsys.readouterr()
    run(shell, f"save {saved}")
    line = one_error_line(capsys)
    assert line.startswith("llm save: no space left on the disk:") and "unchanged" in line, line
    assert _files(saved) == earlier  # the earlier save, byte for byte
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "model"]  # no staging folder left
    filler.unlink()
    run(shell, f"save {saved}")  # with room again it saves
    assert _files(saved) != earlier and capsys.readouterr().err == ""


def test_full_disk_during_checkpointing(small_disk, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(TWO_LAYER_CONFIG))
    out = small_disk / "run"
    kept = {}

    def fill_at_three(row, result):
        if row["step"] == 3:  # checkpoints 1 and 2 are on the disk; the disk is full when 3 is written
            kept.update(_files(out))
            _fill(small_disk)

    s = Session()
    with pytest.raises(LLMError) as error:
        s.train(
            text=CORPUS,
            from_scratch=True,
            config=str(config),
            steps=6,
            checkpoint_every=1,
            output_dir=str(out),
            keep_checkpoints=3,
            on_step=[fill_at_three],
            **SMALL,
        )
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        "no space left on the disk: checkpoint checkpoint-3 was not written (the earlier checkpoints in"
    ), message
    assert sorted(p.name for p in out.iterdir()) == [".llm_magics.lock", "checkpoint-1", "checkpoint-2"]
    assert _files(out) == kept  # both earlier checkpoints intact, no checkpoint-3.partial
    assert s.runs[-1].error == message and s.runs[-1].steps_done == 3
    # the earlier checkpoint still resumes
    (small_disk / "filler").unlink()
    more = Session().train(
        text=CORPUS, from_scratch=True, config=str(config), steps=3, resume=str(out / "checkpoint-2"), **SMALL
    )
    assert more.steps_done == 3


_KILLED_WHILE_CHECKPOINTING = """
import sys
from llm_magics import Session

Session().train(text=open(sys.argv[2]).read(), from_scratch=True, config="small", steps=100000, checkpoint_every=1,
                output_dir=sys.argv[1], seq_len=16, batch_size=2, progress=False)
"""


@pytest.mark.slow
def test_an_interrupted_checkpoint_leaves_no_partial_after_the_next_run(tmp_path):
    """A run killed while it writes a checkpoint (SIGKILL: nothing of ours runs) leaves checkpoint-N.partial;
    the next run into the folder removes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out, corpus = tmp_path / "out", tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    killed = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WHILE_CHECKPOINTING, str(out), str(corpus)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    try:
        while not list(out.glob("checkpoint-*.partial")):
            assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
            time.sleep(0.002)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert list(out.glob("checkpoint-*.partial"))
    Session().train(text=CORPUS, from_scratch=True, steps=1, checkpoint_every=1, output_dir=str(out), **SMALL)
    assert not list(out.rglob("*.partial"))


_KILLED_DURING_SAVE = """
import os, sys
from llm_magics import Session

s = Session()
s.train(text=open(sys.argv[2]).read(), from_scratch=True, steps=1, seq_len=16, batch_size=2, progress=False)
model = s.model

def dies_half_way(directory, **kwargs):  # the process is killed while the weights are being written
    (open(os.path.join(directory, "model.safetensors"), "wb")).write(b"half" * 1000)
    os._exit(9)

model.save_pretrained = dies_half_way
s.save(sys.argv[1])
"""


@pytest.mark.slow
def test_a_save_killed_half_way_leaves_no_staging_folder_after_the_next_save(tmp_path):
    """A process killed during `save` leaves its `.NAME.saving-PID-*` folder; the next save removes it (its
    process is gone) and writes a complete folder."""
    import subprocess
    import sys

    from support import ROOT

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    target = tmp_path / "saved"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_DURING_SAVE, str(target), str(corpus)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 9, done.stderr[-2000:]
    [left] = list(tmp_path.glob(".saved.saving-*"))
    assert (left / "model.safetensors").read_bytes().startswith(b"half") and not target.exists()
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, **SMALL)
    s.save(str(target))
    assert not list(tmp_path.glob(".saved.saving-*"))
    assert Session().load(str(target)) is not None


@pytest.mark.slow
def test_two_processes_on_an_empty_cache_convert_the_packaged_model_once(tmp_path):
    """Two kernels (or test workers) asking for the packaged model on an empty cache at once: one converts,
    the other waits for it; both get the same complete folder (each used to delete the other's staging)."""
    import subprocess
    import sys

    script = (
        "from llm_magics.loading import gguf_to_safetensors, packaged_path; "
        "print(gguf_to_safetensors(packaged_path('default')))"
    )
    env = {**os.environ, "LLM_MAGICS_CACHE": str(tmp_path / "cache")}
    runs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    folders = {output.strip().splitlines()[-1] for output in outputs}
    assert len(folders) == 1 and (Path(folders.pop()) / "model.safetensors").is_file()
    assert sum("Converting" in output for output in outputs) == 1  # converted once
