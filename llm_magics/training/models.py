"""Building the model a run trains: fresh configs (--from-scratch), tokenizers, classifier heads, LoRA."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch

from ..errors import LLMError
from ..loading import LoadedModel

# Architectures for --from-scratch. Sizes are (hidden, layers, heads, context).
CONFIG_SIZES = {"tiny": (128, 4, 4, 512), "small": (512, 8, 8, 1024), "gpt2-124m": (768, 12, 12, 1024)}


def byte_tokenizer():
    """ByT5's byte-level tokenizer: it is what a model saves and AutoTokenizer loads back. Corpora are
    not run through its (slow, Python) code: data/tokens.py turns their UTF-8 bytes into the same ids."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def resolve_tokenizer(name: str, current: LoadedModel | None):
    from transformers import AutoTokenizer

    if name == "bytes":
        return byte_tokenizer()
    if name == "loaded":
        if current is None:
            raise LLMError("--tokenizer loaded needs a model loaded first")
        return current.tokenizer
    if name == "default":
        from .loading import gguf_to_safetensors, packaged_path

        return AutoTokenizer.from_pretrained(gguf_to_safetensors(packaged_path("default")))
    path = Path(name).expanduser()
    if not path.is_dir():
        raise LLMError(f"--tokenizer must be bytes, default, loaded or a tokenizer directory; got {name!r}")
    return AutoTokenizer.from_pretrained(path)


def scratch_config(name: str, arch: str, tokenizer):
    """A fresh GPT-2 or Llama config, sized by name or read from a JSON file."""
    from transformers import AutoConfig, GPT2Config, LlamaConfig

    special = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id or tokenizer.eos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if name.endswith(".json"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise LLMError(f"config file not found: {name}")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise LLMError(f"{name} is not valid JSON: {error.msg} (line {error.lineno})") from None
        model_type = values.pop("model_type", arch)
        try:
            return AutoConfig.for_model(model_type, **{**special, **values})
        except ValueError as error:
            raise LLMError(f"{name}: {error}") from None
    if name not in CONFIG_SIZES:
        raise LLMError(f"unknown --config {name!r}: use {', '.join(CONFIG_SIZES)} or a .json file")
    hidden, layers, heads, context = CONFIG_SIZES[name]
    if arch == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context, **special)
    if arch == "llama":
        return LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           num_key_value_heads=heads, intermediate_size=int(hidden * 8 / 3 / 32 + 1) * 32,
                           max_position_embeddings=context, tie_word_embeddings=True, **special)
    raise LLMError(f"unknown --arch {arch!r}: use llama or gpt2")


def new_model(config, device: torch.device):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device)


def classifier_from(loaded: LoadedModel, labels: list[str]):
    """A sequence-classification model whose body starts from the loaded model's weights."""
    from transformers import AutoModelForSequenceClassification

    base = _unwrap(loaded.model)
    config = copy.deepcopy(base.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.architectures = None
    if config.pad_token_id is None:
        config.pad_token_id = loaded.tokenizer.pad_token_id
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_config(config)
    body = getattr(base, base.base_model_prefix, base)
    target = getattr(classifier, classifier.base_model_prefix)
    missing, unexpected = target.load_state_dict(body.state_dict(), strict=False)
    if unexpected or [k for k in missing if "pooler" not in k]:
        raise LLMError(f"cannot put a classification head on {loaded.name}: weights do not match")
    return classifier.to(loaded.device, dtype=torch.float32)


def _unwrap(model):
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def _add_lora(loaded: LoadedModel, rank: int, alpha: int | None, task: str, resume: str | None):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    if isinstance(loaded.model, PeftModel):
        return  # keep training the adapter that is already there
    if resume:
        loaded.model = PeftModel.from_pretrained(loaded.model, resume, is_trainable=True)
        return
    # peft still calls a transformers API that v5 renamed; the warning is theirs, not the user's.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    task_type = TaskType.SEQ_CLS if task == "classify" else TaskType.CAUSAL_LM
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=0.05, task_type=task_type)
    try:
        loaded.model = get_peft_model(loaded.model, config)
    except ValueError as error:
        raise LLMError(f"LoRA cannot be applied to {loaded.name}: {error}") from None


def _load_weights(loaded: LoadedModel, directory: str):
    from safetensors.torch import load_file

    weights = Path(directory) / "model.safetensors"
    if not weights.is_file():
        raise LLMError(f"--resume {directory}: no model.safetensors there")
    loaded.model.load_state_dict(load_file(weights, device=str(loaded.device)), strict=False)
