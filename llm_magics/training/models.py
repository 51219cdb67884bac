"""Building the model a run trains: fresh configs (--from-scratch), tokenizers, classifier heads, LoRA."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch

from ..base.errors import LLMError
from ..loading import LoadedModel
from ..options import check_bounds

# Architectures for --from-scratch. Sizes are (hidden, layers, heads, context).
CONFIG_SIZES = {"tiny": (128, 4, 4, 512), "small": (512, 8, 8, 1024), "gpt2-124m": (768, 12, 12, 1024)}


def byte_tokenizer():
    """ByT5's byte-level tokenizer: it is what a model saves and AutoTokenizer loads back. Corpora are
    not run through its (slow, Python) code: data/tokens.py turns their UTF-8 bytes into the same ids."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def resolve_tokenizer(name: str, current: LoadedModel | None, *, trust_remote_code: bool):
    from transformers import AutoTokenizer

    from ..loading import refuse_remote_code

    if name == "bytes":
        return byte_tokenizer()
    if name == "loaded":
        if current is None:
            raise LLMError("--tokenizer loaded needs a model loaded first")
        return current.tokenizer
    if name == "default":
        from ..loading import gguf_to_safetensors, packaged_path

        return AutoTokenizer.from_pretrained(gguf_to_safetensors(packaged_path("default")), trust_remote_code=False)
    path = Path(name).expanduser()
    if not path.is_dir():
        raise LLMError(f"--tokenizer must be bytes, default, loaded or a tokenizer directory; got {name!r}")
    refuse_remote_code(path, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise LLMError(f"--tokenizer {name}: cannot read a tokenizer there ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# Sizes a --config JSON may set, as the config exposes them (gpt2's n_embd is hidden_size, ...).
_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "n_inner",
    "max_position_embeddings",
)


def _config_from_json(name: str, arch: str, special: dict, tokenizer):
    from transformers import CONFIG_MAPPING

    path = Path(name).expanduser()
    if not path.is_file():
        raise LLMError(f"config file not found: {name}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LLMError(f"{name} is not valid JSON: {error.msg} (line {error.lineno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LLMError(f"cannot read {name}: {error}") from None
    if not isinstance(values, dict):
        raise LLMError(f"{name} must hold one JSON object of config fields")
    model_type = values.pop("model_type", arch)
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise LLMError(f"{name}: unknown model_type {model_type!r} (e.g. llama or gpt2)")
    config_class = CONFIG_MAPPING[model_type]
    known = set(config_class().to_dict()) | set(config_class.attribute_map)
    unknown = sorted(set(values) - known)
    if unknown:
        raise LLMError(f"{name}: {unknown[0]!r} is not a {model_type} config field")
    try:
        config = config_class(**{**special, **values})
    except Exception as error:  # transformers' strict dataclass checks: wrong types, bad values
        message = _first_line(error)
        detail = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise LLMError(f"{name}: {detail[0].split(': ', 1)[-1] if detail else message}") from None
    _check_sizes(config, values, name, tokenizer)
    return config


def _check_sizes(config, values: dict, name: str, tokenizer):
    """Catch what would otherwise be a traceback from inside torch, or a model that cannot see every token."""
    canonical_of = {alias: canonical for canonical, alias in config.attribute_map.items()}  # n_embd: hidden_size
    spelled = {canonical_of.get(key, key): key for key in values}  # the field as the user wrote it

    def field(canonical):
        return spelled.get(canonical, canonical)

    for canonical in _SIZES:
        value = getattr(config, canonical, None)
        if value is None and canonical in ("n_inner", "num_key_value_heads", "intermediate_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LLMError(f"{name}: {field(canonical)} must be a whole number >= 1; got {value!r}")
    hidden, heads = config.hidden_size, config.num_attention_heads
    if hidden % heads:
        raise LLMError(
            f"{name}: {field('hidden_size')} ({hidden}) must be divisible by {field('num_attention_heads')} ({heads})"
        )
    kv_heads = getattr(config, "num_key_value_heads", None)
    if kv_heads and heads % kv_heads:
        raise LLMError(
            f"{name}: {field('num_attention_heads')} ({heads}) must be divisible by num_key_value_heads ({kv_heads})"
        )
    if config.vocab_size < len(tokenizer):
        raise LLMError(
            f"{name}: vocab_size {config.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens"
        )
    for key, value in values.items():
        if ("dropout" in key or "pdrop" in key) and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise LLMError(f"{name}: {key} must be a probability in [0, 1); got {value!r}")


def scratch_config(name: str, arch: str, tokenizer):
    """A fresh GPT-2 or Llama config, sized by name or read from a JSON file."""
    from transformers import GPT2Config, LlamaConfig

    special = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id or tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if name.endswith(".json"):
        return _config_from_json(name, arch, special, tokenizer)
    if name not in CONFIG_SIZES:
        raise LLMError(f"unknown --config {name!r}: use {', '.join(CONFIG_SIZES)} or a .json file")
    hidden, layers, heads, context = CONFIG_SIZES[name]
    if arch == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context, **special)
    if arch == "llama":
        return LlamaConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=int(hidden * 8 / 3 / 32 + 1) * 32,
            max_position_embeddings=context,
            tie_word_embeddings=True,
            **special,
        )
    raise LLMError(f"unknown --arch {arch!r}: use llama or gpt2")


def new_model(config, device: torch.device):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    try:
        return AutoModelForCausalLM.from_config(config).to(device)
    except (ValueError, TypeError, RuntimeError) as error:
        raise LLMError(f"--config: cannot build a {config.model_type} model from it ({_first_line(error)})") from None


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


def head_labels(loaded: LoadedModel, labels: list[str]) -> list[str]:
    """--labels in the order of the loaded classifier's head when they name the same classes (so
    `--labels pos,neg` on a neg,pos classifier trains class by name, never inverted); else as given
    (a new head is built for them). With no labels: the head's own."""
    from ..loading import CLASSIFIER

    if loaded.kind != CLASSIFIER:
        return labels
    config = loaded.model.config
    existing = [config.id2label[i] for i in range(config.num_labels)]  # type: ignore[index, arg-type]  # transformers: id2label may be None or str-keyed; a classifier's is int-keyed
    return existing if not labels or sorted(existing) == sorted(labels) else labels


def check_lora_rank(lora: bool, rank) -> None:
    """A whole number (from Python any value can arrive), within the bounds --lora-r declares."""
    if not lora:
        return
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise LLMError(f"--lora-r must be a whole number; got {rank!r}")
    check_bounds({"lora_r": rank}, "finetune", only=("lora_r",))


def _unwrap(model):
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def add_lora(loaded: LoadedModel, rank: int, alpha: int | None, task: str, resume: str | None):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    if isinstance(loaded.model, PeftModel):
        return  # keep training the adapter that is already there
    if resume:
        try:
            loaded.model = PeftModel.from_pretrained(loaded.model, resume, is_trainable=True)
        except Exception as error:  # no adapter there, a truncated file, an adapter for another model
            raise LLMError(f"--resume {resume}: cannot load its LoRA adapter ({_first_line(error)})") from None
        return
    # peft still calls a transformers API that v5 renamed; the warning is theirs, not the user's.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    task_type = TaskType.SEQ_CLS if task == "classify" else TaskType.CAUSAL_LM
    config = LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha, lora_dropout=0.05, task_type=task_type)
    try:
        loaded.model = get_peft_model(loaded.model, config)
    except ValueError as error:
        raise LLMError(f"LoRA cannot be applied to {loaded.name}: {error}") from None


def checked_weights(loaded: LoadedModel, directory: str) -> Path:
    """The checkpoint's weights file, refused in one line unless its tensors' names and shapes fit the loaded
    model: only the safetensors header is read here; `resume_weights` loads the tensors when the run starts."""
    from safetensors import safe_open

    weights = Path(directory).expanduser() / "model.safetensors"
    if not weights.is_file():
        raise LLMError(f"--resume {directory}: no model.safetensors there")
    try:
        with safe_open(weights, framework="pt") as file:
            shapes = {k: tuple(file.get_slice(k).get_shape()) for k in file.keys()}
    except Exception as error:  # safetensors' own error type for a truncated or corrupted file
        raise LLMError(f"--resume {directory}: model.safetensors is unreadable ({_first_line(error)})") from None
    model = loaded.model
    expected = model.state_dict()
    missing = [k for k in expected if k not in shapes and not _tied(model, k)]
    if missing or any(k not in expected or shape != tuple(expected[k].shape) for k, shape in shapes.items()):
        raise LLMError(f"--resume {directory}: its weights do not fit {loaded.name} (another model's checkpoint?)")
    return weights


def resume_weights(loaded: LoadedModel, weights: Path) -> dict:
    """The tensors of a file `checked_weights` accepted, on the model's device."""
    from safetensors.torch import load_file

    try:
        return load_file(weights, device=str(loaded.device))
    except Exception as error:  # the header was sound but the data is not (cut short after the check)
        raise LLMError(f"--resume {weights.parent}: model.safetensors is unreadable ({_first_line(error)})") from None


def _tied(model, key: str) -> bool:
    """Tied output embeddings are saved once (as the input embeddings)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return output is not None and key.startswith("lm_head") and tied
