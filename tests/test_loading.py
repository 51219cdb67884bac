import json
import time

import pytest
import torch

from llm_magics import LLMError, Session
from llm_magics.loading import CAUSAL, ENCODER, packaged_path


@pytest.mark.slow
def test_default_model_is_the_packaged_smollm2_converted_once(default_model_dir):
    config = json.loads((default_model_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and "quantization_config" not in config
    assert (default_model_dir / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()  # the reference, first (so it pays for the cold files): plain transformers
    AutoModelForCausalLM.from_pretrained(default_model_dir), AutoTokenizer.from_pretrained(default_model_dir)
    reference = time.perf_counter() - start
    s = Session()
    start = time.perf_counter()
    loaded = s.load("default")
    seconds = time.perf_counter() - start
    assert seconds < 4 * reference + 2, (seconds, reference)  # the cache, not a 20 s de-quantization
    expected = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)  # --device auto
    assert loaded.kind == CAUSAL and (loaded.device.type, loaded.dtype) == expected
    assert loaded.source == str(default_model_dir)
    status = s.status()
    assert 130e6 < status["parameters"] < 140e6
    assert status["context_length"] == 8192 and status["weights_mb"] > 400


def test_gguf_path_loads_through_the_same_cache(default_model_dir):
    loaded = Session().load(str(packaged_path("default")))
    assert loaded.source == str(default_model_dir)


def test_packaged_encoder_loads_as_bert():
    loaded = Session().load("minilm")
    assert loaded.kind == ENCODER
    assert loaded.model.config.num_hidden_layers == 6 and loaded.model.config.num_attention_heads == 12
    ids = loaded.tokenizer("hello world", return_tensors="pt")
    assert loaded.model(**ids).last_hidden_state.shape[-1] == 384


def test_hub_id_without_network_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty HF cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(LLMError, match="not in the Hugging Face cache.*can't be reached"):
        Session().load("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_missing_paths_and_files(tmp_path):
    with pytest.raises(LLMError, match="no such model directory"):
        Session().load("./does/not/exist")
    with pytest.raises(LLMError, match="no such .gguf file"):
        Session().load(str(tmp_path / "x.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMError, match="no config.json"):
        Session().load(str(tmp_path / "empty"))


def test_remote_code_is_refused_without_the_flag(tmp_path, default_model_dir):
    config = json.loads((default_model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(LLMError, match="--trust-remote-code"):
        Session().load(str(tmp_path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(LLMError, match="no CUDA GPU"):
        Session().load("default", device="cuda")


@pytest.mark.slow
def test_dtype_override(default_model_dir):
    loaded = Session().load("default", dtype="bfloat16")
    assert loaded.model.dtype == torch.bfloat16
    with pytest.raises(LLMError, match="unknown dtype"):
        Session().load("default", dtype="float8")
