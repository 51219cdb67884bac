"""The rows of docs/errors.md that no other test covered: each bad input gets its one line, from the
magic (no traceback) or as an LLMError from the API, and changes nothing."""

import json

import pytest
import torch

import llm_magics
from llm_magics import LLMError, Session
from support import DATA, one_error_line, run

CORPUS = (DATA / "tiny_corpus.txt").read_text()
SMALL = dict(seq_len=16, batch_size=2, progress=False)
TRAIN = "train --from-scratch --steps 1 --seq-len 16 --batch-size 2 --no-widget --no-progress"


def test_save_into_a_file(shell, capsys, tmp_path):
    run(shell, TRAIN, CORPUS)
    target = tmp_path / "model.bin"
    target.write_text("mine")
    capsys.readouterr()
    run(shell, f"save {target}")
    assert one_error_line(capsys) == f"llm save: {target} exists and is not a directory"
    assert target.read_text() == "mine"


def test_resume_at_or_past_steps(shell, capsys, tmp_path):
    Session().train(text=CORPUS, from_scratch=True, steps=2, checkpoint_every=2, output_dir=str(tmp_path), **SMALL)
    checkpoint = tmp_path / "checkpoint-2"
    capsys.readouterr()
    for steps in (2, 1):
        run(
            shell,
            f"train --from-scratch --steps {steps} --seq-len 16 --batch-size 2 --no-widget --no-progress "
            f"--resume {checkpoint}",
            CORPUS,
        )
        line = one_error_line(capsys)
        assert f"--resume {checkpoint} is at step 2; ask for more --steps than that" in line


def test_finetune_resume_with_another_models_weights(tmp_path):
    tiny, other = Session(), Session()
    tiny.train(text=CORPUS, from_scratch=True, steps=2, checkpoint_every=2, output_dir=str(tmp_path / "a"), **SMALL)
    other.train(text=CORPUS, from_scratch=True, arch="gpt2", steps=1, **SMALL)
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    checkpoint = tmp_path / "a" / "checkpoint-2"
    with pytest.raises(
        LLMError,
        match=r"--resume .*checkpoint-2: its weights do not fit .* \(another model's "
        r"checkpoint\?\)",
    ) as error:
        other.finetune(text=CORPUS, steps=4, resume=str(checkpoint), **SMALL)
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in other.model.state_dict().items())  # nothing replaced


@pytest.mark.slow
def test_finetune_resume_starts_from_the_checkpoints_weights(tmp_path):
    """The shapes are checked from the file's header; the tensors reach the model when the run starts: the
    first forward of the resumed run sees exactly the checkpoint's weights, not the model's own. A train
    checkpoint given to finetune is one line, and changes nothing."""
    from safetensors.torch import load_file

    tuned = Session()
    tuned.train(text=CORPUS, from_scratch=True, steps=2, checkpoint_every=2, output_dir=str(tmp_path / "t"), **SMALL)
    tuned.finetune(text=CORPUS, steps=2, checkpoint_every=2, output_dir=str(tmp_path / "f"), **SMALL)
    saved = load_file(tmp_path / "f" / "checkpoint-2" / "model.safetensors")
    other = Session()
    other.train(text=CORPUS, from_scratch=True, steps=1, seed=1, **SMALL)  # same shapes, other weights
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    assert not torch.equal(before["model.embed_tokens.weight"], saved["model.embed_tokens.weight"])
    with pytest.raises(LLMError, match=r"checkpoint-2: a checkpoint of another kind of run \(train and finetune"):
        other.finetune(text=CORPUS, steps=3, resume=str(tmp_path / "t" / "checkpoint-2"), **SMALL)
    assert all(torch.equal(before[k], v) for k, v in other.model.state_dict().items())
    seen = []
    hook = other.model.register_forward_pre_hook(
        lambda module, args: (
            seen.append({k: v.detach().clone() for k, v in module.state_dict().items()}) if not seen else None
        )
    )
    try:
        result = other.finetune(text=CORPUS, steps=3, resume=str(tmp_path / "f" / "checkpoint-2"), **SMALL)
    finally:
        hook.remove()
    assert result.steps_done == 3 and seen
    assert all(torch.equal(seen[0][name], tensor) for name, tensor in saved.items())


def test_unreadable_trainer_state(shell, capsys, tmp_path):
    Session().train(text=CORPUS, from_scratch=True, steps=2, checkpoint_every=2, output_dir=str(tmp_path), **SMALL)
    checkpoint = tmp_path / "checkpoint-2"
    state = checkpoint / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # cut short
    capsys.readouterr()
    run(
        shell,
        f"train --from-scratch --steps 4 --seq-len 16 --batch-size 2 --no-widget --no-progress --resume {checkpoint}",
        CORPUS,
    )
    assert f"--resume {checkpoint}: trainer_state.pt is unreadable (" in one_error_line(capsys)


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"model_type": "llama", ', "cfg.json is not valid JSON: Expecting"),
        ("[1, 2]", "cfg.json must hold one JSON object of config fields"),
        ('{"model_type": "x"}', "cfg.json: unknown model_type 'x' (e.g. llama or gpt2)"),
        (
            '{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 3}',
            "cfg.json: num_attention_heads (8) must be divisible by num_key_value_heads (3)",
        ),
        (
            '{"model_type": "gpt2", "n_embd": 64, "n_head": 2, "n_layer": "2"}',
            "cfg.json: Field 'n_layer' expected int, got str (value: '2')",
        ),
        ('{"model_type": "gpt2", "n_embd": -64, "n_head": 2}', "cfg.json: n_embd must be a whole number >= 1; got -64"),
        (
            '{"model_type": "gpt2", "resid_pdrop": 1.5}',
            "cfg.json: resid_pdrop must be a probability in [0, 1); got 1.5",
        ),
        # llama's own check, kept in its words
        (
            '{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 5}',
            "cfg.json: The hidden size (64) is not a multiple of the number of attention heads (5).",
        ),
    ],
)
def test_config_file_errors(shell, capsys, tmp_path, content, expected):
    config = tmp_path / "cfg.json"
    config.write_text(content)
    capsys.readouterr()
    run(shell, f"{TRAIN} --config {config}", CORPUS)
    assert expected in one_error_line(capsys)


@pytest.mark.slow
def test_bleu_with_no_new_tokens(shell, capsys, magic_session):
    capsys.readouterr()
    run(shell, f"eval --metric bleu --max-new-tokens 0 --data {DATA / 'instructions_heldout.jsonl'}")
    assert "--max-new-tokens must be at least 1; got 0" in one_error_line(capsys)


@pytest.mark.parametrize(
    "option, expected",
    [("--max-tokens 1", "--max-tokens must be at least 2"), ("--sample-docs 0", "--sample-docs must be at least 1")],
)
def test_data_limits(shell, capsys, tmp_path, option, expected):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    run(shell, f"{TRAIN} --data {corpus} {option}")
    assert expected in one_error_line(capsys)


def test_output_dir_that_cannot_be_written(shell, capsys):
    where = "/proc/llm_magics_cannot_write_here"  # not writable, even for root
    run(shell, f"{TRAIN} --checkpoint-every 1 --output-dir {where}", CORPUS)
    line = one_error_line(capsys)
    assert f"--output-dir {where} is not writable: " in line
    assert llm_magics.session.runs[-1].error and not llm_magics.session.runs[-1].history  # before the first step


def test_model_folder_config_that_is_not_json(shell, capsys, tmp_path):
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, **SMALL)
    s.save(str(tmp_path / "model"))
    (tmp_path / "model" / "config.json").write_text('{"model_type": ')
    run(shell, TRAIN, CORPUS)
    before = llm_magics.session.loaded
    capsys.readouterr()
    run(shell, f"load {tmp_path / 'model'}")
    assert f"{tmp_path / 'model' / 'config.json'} is not valid JSON (" in one_error_line(capsys)
    assert llm_magics.session.loaded is before


def test_lora_adapter_that_cannot_be_read(shell, capsys, tmp_path):
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, **SMALL)
    s.save(str(tmp_path / "base"))
    s.load(str(tmp_path / "base"))
    s.finetune(text=CORPUS, lora=True, steps=1, **SMALL)
    s.save(str(tmp_path / "adapter"), adapter_only=True)
    weights = next((tmp_path / "adapter").glob("adapter_model.*"))
    weights.write_bytes(weights.read_bytes()[:50])  # truncated
    run(shell, TRAIN, CORPUS)
    before = llm_magics.session.loaded
    capsys.readouterr()
    run(shell, f"load {tmp_path / 'adapter'}")
    assert f"cannot load the LoRA adapter in {tmp_path / 'adapter'}: " in one_error_line(capsys)
    assert llm_magics.session.loaded is before
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_lr_find_bounds_that_cannot_sweep(shell, capsys):
    for bounds in ("--start-lr 1e-2 --end-lr 1e-3", "--start-lr 0 --end-lr 1", "--start-lr 1e-3 --end-lr 1e-3"):
        run(shell, f"lr-find {bounds} --num-steps 20 --seq-len 16 --no-progress", CORPUS)
        assert "--start-lr must be > 0 and below --end-lr; got " in one_error_line(capsys)
    assert not any(r.kind == "lr-find" and r.steps_done for r in llm_magics.session.runs)  # nothing swept


@pytest.mark.slow
def test_attribute_steps_and_new_tokens_of_zero(shell, capsys):
    run(shell, TRAIN, CORPUS)
    capsys.readouterr()
    run(shell, "attribute --steps 0 The cat")
    assert one_error_line(capsys) == "llm attribute: --steps must be at least 1; got 0"
    run(shell, "attribute --max-new-tokens 0 The cat")
    assert one_error_line(capsys) == "llm attribute: --max-new-tokens must be at least 1; got 0"


@pytest.mark.slow
def test_attribute_target_that_is_not_a_label(shell, capsys, tmp_path):
    """A tiny classifier (--task classify on MiniLM, one step): --target must be one of its labels."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"text": t, "label": label}) + "\n"
            for t, label in [("good film", "pos"), ("bad film", "neg")] * 4
        )
    )
    run(shell, "load minilm")
    run(
        shell,
        f"finetune --task classify --labels neg,pos --data {rows} --steps 1 --batch-size 2 --seq-len 16 "
        "--no-widget --no-progress",
    )
    capsys.readouterr()
    run(shell, "attribute --target maybe a good film")
    assert one_error_line(capsys) == "llm attribute: --target 'maybe' is not one of the classifier's labels: neg, pos"


@pytest.mark.slow
def test_patch_prompts_with_the_same_logit_difference(shell, capsys):
    run(shell, TRAIN, CORPUS)
    capsys.readouterr()
    run(shell, "patch --answer P --wrong R", "The cat sat on the\nThe cat sat on the\n")
    line = one_error_line(capsys)
    assert line.startswith("llm patch: the clean and corrupted runs give the same logit difference (")
    assert line.endswith("for 'P' vs 'R': there is nothing to restore")


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_table_with_no_rows(shell, capsys, tmp_path, kind):
    import pandas as pd

    table = tmp_path / f"empty.{kind}"
    header_only = pd.DataFrame({"text": pd.Series([], dtype=str)})
    header_only.to_parquet(table) if kind == "parquet" else header_only.to_csv(table, index=False)
    capsys.readouterr()
    run(shell, f"train --from-scratch --steps 1 --no-widget --no-progress --data {table}")
    assert one_error_line(capsys) == f"llm train: no data: {table} has no rows"
