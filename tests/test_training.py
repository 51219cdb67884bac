"""Real training steps on real weights: losses fall, checkpoints resume, LoRA round-trips."""

import pytest
import torch

from llm_magics import LLMError, Session
from llm_magics.loading import CLASSIFIER
from support import DATA

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5


@pytest.mark.slow
def test_from_scratch_loss_falls_quickly():
    s = Session()
    result = s.train(
        text=CORPUS, from_scratch=True, config="tiny", steps=80, batch_size=8, seq_len=64, lr=3e-3, progress=False
    )
    assert result.final_loss < 0.7 * result.initial_loss
    assert result.tokens == 80 * 8 * 64
    assert list(result.history_frame().columns[:3]) == ["step", "loss", "lr"]
    lrs = [row["lr"] for row in result.history]
    assert max(lrs) == pytest.approx(3e-3, rel=0.05) and lrs[-1] < lrs[len(lrs) // 2]  # warmup, then cosine


def test_gpt2_arch_and_json_config(tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text('{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 128}')
    s = Session()
    result = s.train(text=CORPUS, from_scratch=True, config=str(config), steps=10, seq_len=32, progress=False)
    assert s.model.config.model_type == "gpt2" and s.model.config.n_layer == 2
    assert result.steps_done == 10
    with pytest.raises(LLMError, match="larger than the model's context \\(128"):
        s.train(text=CORPUS, steps=2, seq_len=512, progress=False)
    with pytest.raises(LLMError, match="unknown --config"):
        s.train(text=CORPUS, from_scratch=True, config="huge", progress=False)


@pytest.mark.slow
def test_checkpoint_and_resume_continue_the_same_run(tmp_path):
    s = Session()
    first = s.train(
        text=CORPUS,
        from_scratch=True,
        steps=20,
        seq_len=32,
        checkpoint_every=10,
        output_dir=str(tmp_path),
        progress=False,
    )
    assert first.checkpoint == str(tmp_path / "checkpoint-20")
    assert (tmp_path / "checkpoint-10").is_dir()
    # A straight 30-step run and a 20 + resume-to-30 run see the same batches and schedule.
    straight = Session().train(text=CORPUS, from_scratch=True, steps=30, seq_len=32, progress=False)
    resumed_session = Session()
    half = resumed_session.train(
        text=CORPUS,
        from_scratch=True,
        steps=30,
        seq_len=32,
        checkpoint_every=15,
        output_dir=str(tmp_path / "b"),
        progress=False,
    )
    assert half.steps_done == 30
    resumed = Session().train(
        text=CORPUS,
        from_scratch=True,
        steps=30,
        seq_len=32,
        progress=False,
        resume=str(tmp_path / "b" / "checkpoint-15"),
    )
    assert resumed.history[0]["step"] == 1 and resumed.steps_done == 30
    assert [r["step"] for r in resumed.history[15:]] == list(range(16, 31))
    assert resumed.final_loss == pytest.approx(straight.final_loss, rel=1e-3)
    with pytest.raises(LLMError, match="not a checkpoint directory"):
        Session().train(text=CORPUS, steps=5, resume=str(tmp_path), from_scratch=True, progress=False)


@pytest.mark.slow
def test_lora_finetune_learns_the_style_and_round_trips(session, tmp_path):
    prompt = "What is the capital of Germany?"
    before = session.chat(prompt, do_sample=False, max_new_tokens=16).text
    session.reset_chat()
    result = session.finetune(
        data=str(DATA / "instructions.jsonl"),
        eval_data=str(DATA / "instructions_heldout.jsonl"),
        lora=True,
        lora_r=8,
        epochs=4,
        batch_size=4,
        lr=1e-3,
        progress=False,
    )
    assert result.final_loss < 0.5 * result.initial_loss
    assert len(result.eval_history) == 4  # once an epoch on the held-out prompts
    assert result.eval_history[-1]["eval_loss"] < result.eval_history[0]["eval_loss"]
    status = session.status()
    assert status["trainable_parameters"] < 0.01 * status["parameters"]  # only the adapter trains
    after = session.chat(prompt, do_sample=False, max_new_tokens=16).text
    assert "matey" in after.lower() and "matey" not in before.lower()

    merged_dir, adapter_dir = tmp_path / "merged", tmp_path / "adapter"
    session.save(str(merged_dir))
    session.save(str(adapter_dir), adapter_only=True)
    assert (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "model.safetensors").exists()
    for directory in (merged_dir, adapter_dir):
        reloaded = Session()
        reloaded.load(str(directory))
        assert reloaded.chat(prompt, do_sample=False, max_new_tokens=16).text == after


@pytest.mark.slow
def test_full_finetune_masks_prompt_tokens(session):
    from llm_magics.data import IGNORE_INDEX, read_records, supervised_examples

    records = read_records(str(DATA / "instructions.jsonl"))
    example = supervised_examples(session.tokenizer, records[:1], 256)[0]
    answer = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    assert session.tokenizer.decode(answer).startswith("Arr, matey! Paris")
    assert example["labels"][0] == IGNORE_INDEX
    result = session.finetune(data=str(DATA / "instructions.jsonl"), steps=4, batch_size=4, lr=5e-5, progress=False)
    assert result.steps_done == 4 and session.status()["trainable_parameters"] == session.status()["parameters"]


@pytest.mark.slow
def test_classifier_on_packaged_minilm_reports_accuracy_and_f1():
    s = Session()
    s.load("minilm")
    test = str(DATA / "sentiment_test.jsonl")
    untrained = s.finetune(
        data=test, eval_data=test, task="classify", labels="negative,positive", steps=1, lr=1e-9, progress=False
    ).metrics
    result = s.finetune(
        data=str(DATA / "sentiment_train.jsonl"),
        eval_data=test,
        task="classify",
        epochs=5,
        batch_size=8,
        lr=2e-4,
        progress=False,
    )  # seeded run: 0.81-0.88 over seeds
    assert s.loaded.kind == CLASSIFIER
    assert set(result.metrics) == {"accuracy", "f1"}
    assert result.metrics["accuracy"] >= 0.75 and result.metrics["f1"] >= 0.7
    assert result.metrics["accuracy"] > untrained["accuracy"] + 0.15
    assert s.classify(["An absolutely wonderful film.", "A terrible, boring mess."]) == ["positive", "negative"]
    with pytest.raises(LLMError, match="is not one of --labels"):
        s.finetune(
            text='{"text": "meh", "label": "neutral"}', task="classify", labels="negative,positive", progress=False
        )


def test_interrupt_via_stop_flag_between_steps(tmp_path):
    s = Session()

    def stop_at_five(row, result):
        if row["step"] == 5:
            s.stop()

    result = s.train(
        text=CORPUS,
        from_scratch=True,
        steps=1000,
        seq_len=32,
        checkpoint_every=100,
        output_dir=str(tmp_path),
        on_step=[stop_at_five],
        progress=False,
    )
    assert result.interrupted and result.steps_done == 5
    assert result.checkpoint == str(tmp_path / "checkpoint-5")
    sample = s.generate("The cat", max_new_tokens=3, do_sample=False)  # still usable (it may stop at EOS)
    assert not sample.interrupted and 1 <= sample.new_tokens <= 3
    with torch.no_grad():
        logits = s.model(**s.tokenizer("The cat", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_out_of_memory_is_one_clear_line_and_the_model_survives():
    s = Session()
    s.train(text=CORPUS * 4, from_scratch=True, steps=2, seq_len=32, progress=False)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    # 200k x 512 tokens: the activations (~50 GB) cannot be allocated on any CI machine.
    with pytest.raises(LLMError, match="out of (CPU|GPU) memory at --batch-size 200000.*try --batch-size 100000"):
        s.train(text=CORPUS * 4, steps=2, seq_len=512, batch_size=200000, progress=False)
    assert all(torch.equal(before[k], v) for k, v in s.model.state_dict().items())
    assert s.generate("The cat", max_new_tokens=2, do_sample=False).new_tokens >= 1
