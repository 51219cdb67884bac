"""Nothing runs code the user did not allow: checkpoints are read with weights_only, and every folder
with its own Python code (auto_map in config.json or tokenizer_config.json) needs --trust-remote-code."""

import json
import os

import pytest
import torch

from llm_magics import LLMError, Session
from llm_magics.loading import packaged_path
from support import DATA, one_error_line, run

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5


class _RunsCode:
    """Unpickling this calls exec: what a booby-trapped checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _evil_python(folder, marker):
    """A module that writes the marker when imported, named by the auto_map entries below."""
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n"
        "from transformers import LlamaForCausalLM as EvilModel\n"
    )


def _model_copy(source, target, marker, where: str):
    """A loadable copy of the default model (weights linked) whose `where` json maps to evil.py."""
    target.mkdir()
    for item in source.iterdir():
        if item.name.endswith(".safetensors"):
            os.symlink(item, target / item.name)
        else:
            (target / item.name).write_bytes(item.read_bytes())
    values = json.loads((target / where).read_text())
    values["auto_map"] = (
        {"AutoTokenizer": ["evil.EvilTokenizer", None]}
        if where == "tokenizer_config.json"
        else {"AutoModelForCausalLM": "evil.EvilModel"}
    )
    (target / where).write_text(json.dumps(values))
    _evil_python(target, marker)
    return target


def test_resume_refuses_a_checkpoint_whose_state_would_run_code(shell, capsys, tmp_path):
    Session().train(
        text=CORPUS,
        from_scratch=True,
        steps=2,
        seq_len=16,
        batch_size=2,
        checkpoint_every=2,
        output_dir=str(tmp_path / "run"),
        progress=False,
    )
    checkpoint = tmp_path / "run" / "checkpoint-2"
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    marker = tmp_path / "marker"
    state["note"] = _RunsCode(marker)
    torch.save(state, checkpoint / "trainer_state.pt")
    capsys.readouterr()
    run(shell, f"train --from-scratch --resume {checkpoint} --steps 4 --seq-len 16 --no-widget --no-progress", CORPUS)
    line = one_error_line(capsys)
    assert "trainer_state.pt" in line and "refused" in line
    assert not marker.exists()
    with pytest.raises(LLMError, match="refused"):
        Session().finetune(text=CORPUS, resume=str(checkpoint), progress=False)
    assert not marker.exists()


def test_what_we_save_loads_back_under_weights_only(tmp_path):
    """The optimizer, scheduler, data order, RNG states and history of a real LoRA run."""
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=1, seq_len=16, batch_size=2, progress=False)
    s.finetune(
        text=CORPUS,
        lora=True,
        steps=2,
        seq_len=16,
        batch_size=2,
        checkpoint_every=2,
        output_dir=str(tmp_path),
        progress=False,
    )
    state = torch.load(tmp_path / "checkpoint-2" / "trainer_state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "batches", "rng", "history", "run_id"} <= set(state)
    assert len(state["history"]) == 2


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_load_refuses_auto_map_without_the_flag(shell, capsys, tmp_path, default_model_dir, where):
    marker = tmp_path / "marker"
    folder = _model_copy(default_model_dir, tmp_path / "model", marker, where)
    capsys.readouterr()
    run(shell, f"load {folder}")
    line = one_error_line(capsys)
    assert f"auto_map in {where}" in line and "--trust-remote-code" in line
    assert not marker.exists()


def test_adapter_folder_with_its_own_tokenizer_code_is_refused(shell, capsys, tmp_path, default_model_dir):
    marker = tmp_path / "marker"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "base_model_name_or_path": str(default_model_dir),
                "r": 2,
                "target_modules": ["q_proj"],
            }
        )
    )
    (adapter / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}})
    )
    _evil_python(adapter, marker)
    capsys.readouterr()
    run(shell, f"load {adapter}")
    assert "--trust-remote-code" in one_error_line(capsys)
    assert not marker.exists()


def test_train_tokenizer_dir_with_code_is_refused_and_never_asks(
    shell, capsys, tmp_path, default_model_dir, monkeypatch
):
    marker = tmp_path / "marker"
    folder = tmp_path / "tok"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((default_model_dir / name).read_bytes())
    values = json.loads((folder / "tokenizer_config.json").read_text())
    values["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(values))
    _evil_python(folder, marker)
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked on stdin"))
    capsys.readouterr()
    run(shell, f"train --from-scratch --tokenizer {folder} --steps 1 --no-widget --no-progress", CORPUS)
    assert "--trust-remote-code" in one_error_line(capsys)
    assert not marker.exists()
    # the option exists on train and finetune (and is handed to the Session)
    for command in ("train", "finetune"):
        run(shell, f"{command} --trust-remote-code --help")
        assert "--trust-remote-code" in capsys.readouterr().out


def test_gguf_beside_python_files_is_refused(shell, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_MAGICS_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "marker"
    folder = tmp_path / "gguf"
    folder.mkdir()
    os.symlink(packaged_path("default"), folder / "model.gguf")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}})
    )
    _evil_python(folder, marker)
    capsys.readouterr()
    run(shell, f"load {folder / 'model.gguf'}")
    assert "--trust-remote-code" in one_error_line(capsys)
    assert not marker.exists() and not (tmp_path / "cache").exists()
