"""Scaling up on CPU: --processes (DDP with gloo through accelerate), --accelerate-config, --compile and
--gradient-checkpointing in training, --compile in generation. Tiny from-scratch models, byte tokenizer."""

import json
import os
import socket

import pytest
import torch
import torch._dynamo.utils

from llm_magics import Session
from llm_magics.base.errors import LLMError
from support import DATA, run

pytestmark = pytest.mark.slow

CORPUS = (DATA / "tiny_corpus.txt").read_text()
# The CPU: these compare process counts with gloo on CPU, and hold on a CUDA machine too (device="cpu").
SMALL = dict(from_scratch=True, seq_len=32, progress=False, device="cpu")
ONE_GPU = torch.cuda.is_available() and torch.cuda.device_count() < 2


def weights(session):
    return {k: v.detach().clone() for k, v in session.model.state_dict().items()}


def assert_close(a: dict, b: dict, atol=1e-5):
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, worst


def test_two_processes_equal_one_process_with_twice_the_batch():
    rows = []  # (pid, row): the chart's callbacks run in this (the kernel's) process
    two = Session()
    result = two.train(
        text=CORPUS,
        steps=4,
        batch_size=4,
        processes=2,
        **SMALL,
        on_step=[lambda row, res: rows.append((os.getpid(), dict(row), res.total_steps))],
    )
    one = Session()
    reference = one.train(text=CORPUS, steps=4, batch_size=8, **SMALL)

    assert [row["step"] for _, row, _ in rows] == [1, 2, 3, 4]
    assert {pid for pid, _, _ in rows} == {os.getpid()} and rows[-1][2] == 4
    first = result.history[0]
    # the two ranks saw different halves of the batch: same weights, different losses; their mean is the loss
    assert len(first["rank_losses"]) == 2 and abs(first["rank_losses"][0] - first["rank_losses"][1]) > 1e-3
    assert first["loss"] == pytest.approx(sum(first["rank_losses"]) / 2, abs=1e-5)
    assert [r["loss"] for r in result.history] == pytest.approx([r["loss"] for r in reference.history], abs=1e-4)
    assert result.tokens == reference.tokens == 4 * 8 * 32
    assert result.final_loss < result.initial_loss
    # the trained weights came back into the session, equal to the single-process run's
    assert_close(weights(two), weights(one))
    assert two.loaded.device.type == "cpu" and two.runs[-1] is result
    assert two.generate("The cat", max_new_tokens=3, do_sample=False).new_tokens >= 1


def test_stop_ends_every_rank_and_the_checkpoint_resumes_with_one_process(tmp_path):
    s = Session()

    def stop_at_three(row, result):
        if row["step"] == 3:
            s.stop()

    result = s.train(
        text=CORPUS,
        steps=2000,
        batch_size=2,
        processes=2,
        checkpoint_every=5000,
        output_dir=str(tmp_path),
        on_step=[stop_at_three],
        eval_data=str(DATA / "tiny_corpus.txt"),
        eval_every=2,
        **SMALL,
    )
    # the kernel relays Stop while the workers run on: every rank stops after the same, early step
    assert result.interrupted and 3 <= result.steps_done < 2000
    assert [r["steps"] for r in result.ranks] == [result.steps_done, result.steps_done]
    assert [r["step"] for r in result.history] == list(range(1, result.steps_done + 1))
    assert all(len(r["rank_losses"]) == 2 for r in result.history)  # both ranks took part in every step
    # evaluation runs on every rank (same weights, same eval data: the same numbers)
    evaluations = result.ranks[0]["evaluations"]
    # every --eval-every step, and the stop step itself (a graceful stop is evaluated where it stopped)
    expected = list(range(2, result.steps_done + 1, 2)) + ([result.steps_done] if result.steps_done % 2 else [])
    assert [e["step"] for e in evaluations] == expected
    assert result.ranks[1]["evaluations"] == evaluations == result.eval_history
    assert result.checkpoint == str(tmp_path / f"checkpoint-{result.steps_done}")
    stopped_at = weights(s)
    from safetensors.torch import load_file

    saved = load_file(f"{result.checkpoint}/model.safetensors")  # (without the tied lm_head)
    assert_close({k: stopped_at[k] for k in saved}, saved, atol=0)  # the session kept the stopped weights
    # same checkpoint format: a single process resumes it (batch 4 = the 2 x 2 global batch)
    resumed = Session()
    more = resumed.train(text=CORPUS, steps=result.steps_done + 2, batch_size=4, resume=result.checkpoint, **SMALL)
    assert more.steps_done == result.steps_done + 2 and not more.interrupted
    assert [r["step"] for r in more.history][: result.steps_done] == list(range(1, result.steps_done + 1))
    assert not all(torch.equal(stopped_at[k], v) for k, v in weights(resumed).items())


def test_magic_processes_with_kernel_interrupt(shell, capsys):
    import signal

    import llm_magics

    def interrupt_at_two(row, result):  # a real SIGINT to the kernel, as Jupyter's interrupt button sends
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    llm_magics.session.step_listeners.append(interrupt_at_two)
    try:
        result = run(
            shell,
            "train --from-scratch --processes 2 --steps 2000 --seq-len 32 --batch-size 2 "
            "--device cpu --no-widget --no-progress",
            CORPUS,
        )
    finally:
        llm_magics.session.step_listeners.remove(interrupt_at_two)
    out = capsys.readouterr().out
    assert result.interrupted and 2 <= result.steps_done < 2000 and "Stopped early" in out
    assert llm_magics.session.loaded is not None and "rank_losses" in result.history[-1]


@pytest.mark.skipif(ONE_GPU, reason="finetune --processes uses the GPUs when there are any: 2 processes need 2 GPUs")
def test_lora_finetune_on_two_processes_comes_back_as_an_adapter():
    from peft import PeftModel

    s = Session()
    s.train(text=CORPUS, steps=1, **SMALL)
    base = weights(s)
    result = s.finetune(text=CORPUS, lora=True, steps=3, batch_size=2, seq_len=32, lr=1e-2, processes=2, progress=False)
    assert result.steps_done == 3 and len(result.history[0]["rank_losses"]) == 2
    assert isinstance(s.model, PeftModel)  # the kernel's session now holds the trained adapter
    trained = weights(s)
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # LoRA's B starts at zero: it was trained
    base_now = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in trained.items() if "lora_" not in k
    }
    assert_close(base_now, base, atol=0)  # and the base weights were left alone


def test_scaling_errors_are_one_line(shell, capsys):
    run(shell, f"train --from-scratch --processes {os.cpu_count() + 1} --steps 2 --device cpu --no-widget", CORPUS)
    assert (
        f"--processes {os.cpu_count() + 1} but this machine has {os.cpu_count()} CPU core(s)" in capsys.readouterr().err
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        os.environ["MASTER_PORT"] = str(busy.getsockname()[1])
        try:
            run(shell, "train --from-scratch --processes 2 --steps 2 --device cpu --no-widget", CORPUS)
        finally:
            del os.environ["MASTER_PORT"]
    err = capsys.readouterr().err
    assert "is in use" in err and "Traceback" not in err
    gpus = torch.cuda.device_count()  # 0 here; on a GPU machine, its count (or: CUDA already initialised)
    with pytest.raises(LLMError, match=f"but this machine has {gpus} GPU|CUDA is already initialised"):
        from llm_magics.training import distributed

        distributed._check_can_fork(distributed.Job("train", None, [], None, gpus=True), max(2, gpus + 1))
    run(shell, "train --from-scratch --steps 2 --no-widget --compile-backend nonsense", CORPUS)
    assert "unknown --compile backend 'nonsense'" in capsys.readouterr().err


def test_accelerate_config_is_launched_with_accelerate(tmp_path):
    config = tmp_path / "one.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_processes: 1\n"
        "mixed_precision: 'no'\nuse_cpu: true\n"
    )
    launched, local = Session(), Session()
    rows = []
    result = launched.train(
        text=CORPUS,
        steps=3,
        batch_size=4,
        accelerate_config=str(config),
        **SMALL,
        on_step=[lambda row, res: rows.append(row["step"])],
    )
    local.train(text=CORPUS, steps=3, batch_size=4, **SMALL)
    assert rows == [1, 2, 3] and result.steps_done == 3
    assert_close(weights(launched), weights(local))
    several_cpus = tmp_path / "cpus.yaml"
    several_cpus.write_text("distributed_type: MULTI_CPU\nnum_processes: 2\nuse_cpu: true\n")
    with pytest.raises(LLMError, match="only through MPI"):
        launched.train(text=CORPUS, steps=2, accelerate_config=str(several_cpus), **SMALL)


def test_processes_overrides_the_accelerate_configs_num_processes(tmp_path):
    """--processes N is what counts, not the config's num_processes: on 2+ GPUs a 1-process MULTI_GPU config
    runs N ranks; on CPU a MULTI_CPU config that says 1 process is refused for --processes 2 (accelerate
    runs several CPU processes only through MPI), and a config that would run one process is refused too."""
    config = tmp_path / "one.yaml"
    if torch.cuda.device_count() >= 2:
        config.write_text("distributed_type: MULTI_GPU\nnum_processes: 1\nmixed_precision: 'no'\n")
        result = Session().train(
            text=CORPUS,
            steps=2,
            batch_size=2,
            accelerate_config=str(config),
            processes=2,
            **{**SMALL, "device": "auto"},
        )
        assert len(result.ranks) == 2 and all(len(r["rank_losses"]) == 2 for r in result.history)
        return
    config.write_text("distributed_type: MULTI_CPU\nnum_processes: 1\nuse_cpu: true\n")
    with pytest.raises(LLMError, match="only through MPI"):
        Session().train(text=CORPUS, steps=2, accelerate_config=str(config), processes=2, **SMALL)
    single = tmp_path / "single.yaml"
    single.write_text("distributed_type: 'NO'\nnum_processes: 1\nuse_cpu: true\n")
    with pytest.raises(LLMError, match="has distributed_type NO: accelerate would run one process, not --processes 2"):
        Session().train(text=CORPUS, steps=2, accelerate_config=str(single), processes=2, **SMALL)


def test_compile_and_gradient_checkpointing_train_like_plain():
    histories = {}
    for name, extra in {
        "plain": {},
        "compile": {"compile": "eager"},
        "checkpointing": {"gradient_checkpointing": True},
    }.items():
        s = Session()
        torch._dynamo.reset()
        before = dict(torch._dynamo.utils.counters["stats"])
        result = s.train(text=CORPUS, steps=5, batch_size=4, lr=3e-3, **SMALL, **extra)
        histories[name] = [r["loss"] for r in result.history]
        assert result.final_loss < result.initial_loss
        if name == "compile":  # dynamo really captured the model's graph
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > before.get("unique_graphs", 0)
            assert not hasattr(s.model, "_orig_mod")  # the session gets the plain module back
        if name == "checkpointing":
            assert not s.model.is_activation_checkpointing  # switched off again after the run
    assert histories["compile"] == pytest.approx(histories["plain"], abs=1e-3)
    assert histories["checkpointing"] == pytest.approx(histories["plain"], abs=1e-4)


def test_generate_compile_gives_the_same_greedy_text(shell, capsys):
    import llm_magics

    s = llm_magics.session
    s.train(text=CORPUS, steps=10, batch_size=8, lr=3e-3, **SMALL)
    plain = s.generate("The cat", max_new_tokens=16, do_sample=False)
    run(shell, "generate --greedy --max-new-tokens 16 --compile --compile-backend eager", "The cat")
    out = capsys.readouterr().out
    compiled = shell.user_ns["_llm"]
    assert compiled.token_ids == plain.token_ids and compiled.compile_warmup and "first call compiled" in out
    s.compile_generation = "eager"  # the session default; the warm-up is reported only once
    again = s.generate("The cat", max_new_tokens=16, do_sample=False)
    assert again.token_ids == plain.token_ids and not again.compile_warmup
    s.compile_generation = False


def load_gpu_bench(monkeypatch):
    import importlib.util

    from support import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("gpu_decode", ROOT / "bench" / "gpu_decode.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_gpu_bench_runs_on_cuda_skips_on_cpu_and_its_stand_in_tokenizer_round_trips(capsys, monkeypatch):
    import sys

    from support import ROOT

    bench = load_gpu_bench(monkeypatch)
    if torch.cuda.is_available():
        # The part that crashed on a GPU (True handed to torch.compile in the reference loop), at a short size.
        monkeypatch.setattr(
            sys, "argv", ["gpu_decode.py", "--random-weights", "--parts", "train", "--train-steps", "3"]
        )
        bench.main()
        out = capsys.readouterr().out
        assert "skipped" not in out and "Training GPT-2 124M" in out
        rows = {
            line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in out.splitlines()
            if line.startswith("| reference loop") or line.startswith("| %%llm train")
        }
        assert len(rows) == 3 and all(float(v.replace(",", "")) > 0 for v in rows.values()), out
        assert "| train --compile vs reference |" in out
    else:
        monkeypatch.setattr(sys, "argv", ["gpu_decode.py"])
        bench.main()
        assert capsys.readouterr().out.startswith("skipped: no CUDA GPU")
    tokenizer = bench.stand_in_tokenizer(49152)  # SmolLM2's vocabulary size, for the random-weight model
    text, ids = bench.text_of(tokenizer, 50)
    assert ids.shape == (1, 50) and tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    config = json.loads((ROOT / "bench" / "smollm2-135m-config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)


def test_gpu_bench_reference_loop_hands_torch_compile_a_resolved_backend(monkeypatch):
    """The bench's real run passes backend=True; torch.compile needs the name compile_backend resolves it
    to (inductor), not the bool. The reference loop runs on CPU here with torch.compile recorded and
    skipped (inductor would take minutes on this CPU); --dry-run uses 'eager' and cannot see this."""
    from transformers import GPT2Config

    bench = load_gpu_bench(monkeypatch)
    handed = []

    def recording_compile(model, backend="inductor", **kwargs):
        handed.append(backend)
        return model

    monkeypatch.setattr(torch, "compile", recording_compile)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    marks = bench.reference_loop(config, [{"input_ids": ids, "labels": ids}], 3, torch.device("cpu"), True)
    assert handed == ["inductor"] and len(marks) == 2
    handed.clear()
    bench.reference_loop(config, [{"input_ids": ids, "labels": ids}], 3, torch.device("cpu"), "eager")
    assert handed == ["eager"]
