"""Quantized weights for inference: `%llm load MODEL --quantize int8|int4`, `Session.load(..., quantize=)`.

Decoding one token at batch 1 reads every weight once, so its speed is set by bytes per token. We swap
the model's Linear layers in place (the Session keeps one model object) for quantized ones from a
maintained library, never our own kernels:

- CPU, int8: torchao's `Int8WeightOnlyConfig` (int8 weights per output channel, fp32 activations): the
  quality gates hold; x86 has no fast weight-only int8 kernel, so it saves memory more than time.
- CPU, int8-dynamic: `torch.ao.quantization.quantize_dynamic` (fbgemm int8 weights per channel and int8
  activations quantized on the fly, one scale per tensor): the fast x86 int8 kernel, but lossy on models
  with outlier activations such as SmolLM2 (README, "Speed").
- CPU, int4: torchao's CPU int4 weight-only config (`PrototypeInt4WeightOnlyConfig`, packed for
  `_weight_int4pack_mm_for_cpu`), when this torch/torchao build has it; otherwise one line saying so.
- CUDA: torchao's `Int8WeightOnlyConfig` / `Int4WeightOnlyConfig` (tinygemm) kernels. Untested here.

Attention, the lens and generation run on a quantized model; training, fine-tuning, gradients
(`explain`, attribution) and `save` need full-precision weights and refuse in one line
(`require_full_precision`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass

import torch

from .base.errors import LLMError

CHOICES = ("none", "int8", "int4", "int8-dynamic")
INT4_GROUP_SIZE = 32  # the GGUF we ship is Q4_1 with blocks of 32: the same granularity
_MARK = "_llm_magics_quantization"  # set on the model object: what was done to it


@dataclass
class Quantization:
    mode: str  # int8 or int4
    method: str  # the library path used, for status
    weights_mb_before: float
    weights_mb_after: float

    @property
    def saved_mb(self) -> float:
        return round(self.weights_mb_before - self.weights_mb_after, 1)

    def describe(self) -> str:
        return (
            f"{self.mode} ({self.method}): weights {self.weights_mb_before:,.0f} MB -> "
            f"{self.weights_mb_after:,.0f} MB, {self.saved_mb:,.0f} MB saved"
        )


def quantization_of(model) -> Quantization | None:
    """What quantize() did to this model (None: full precision)."""
    return getattr(_inner(model), _MARK, None)


def is_quantized(model) -> bool:
    """True when the model's weights are quantized: gradients and training need full precision.
    Attribution and other gradient-based code call this (or require_full_precision) first."""
    return quantization_of(model) is not None


def require_full_precision(loaded, action: str) -> None:
    """One line naming the fix when `action` needs full-precision (trainable) weights."""
    if loaded is not None and (quantization := quantization_of(loaded.model)) is not None:
        mode = quantization.mode
        raise LLMError(
            f"{action} needs full-precision weights, but the model is quantized ({mode}, inference "
            f"only): run `%llm load MODEL` again without --quantize (Session.load(..., quantize='none'))"
        )


def check_choice(mode: str | None) -> str:
    mode = "none" if mode in (None, False) else str(mode).lower()
    if mode not in CHOICES:
        raise LLMError(f"unknown --quantize {mode!r}: use none, int8, int4 or int8-dynamic")
    return mode


def quantize(loaded, mode: str) -> Quantization | None:
    """Swap the Linear layers of loaded.model in place for `mode` ('none' does nothing)."""
    mode = check_choice(mode)
    if mode == "none":
        return None
    model = loaded.model
    done = quantization_of(model)
    if done is not None:
        raise LLMError(
            f"the model is already quantized ({done.mode}): run `%llm load MODEL --quantize "
            f"{mode}` to start again from the full-precision weights"
        )
    if _has_lora(model):
        raise LLMError(
            "cannot quantize a model with a LoRA adapter: `%llm save DIR` merges it, then "
            f"`%llm load DIR --quantize {mode}`"
        )
    if loaded.device.type == "cuda":
        if mode == "int8-dynamic":
            raise LLMError("--quantize int8-dynamic is the CPU (fbgemm) path: use int8 or int4 on a GPU")
        method = _quantize_cuda(model, mode)
    else:
        method = _quantize_cpu(model, mode)
    before = weights_mb(model, full_precision=True)
    result = Quantization(mode, method, before, weights_mb(model))
    setattr(_inner(model), _MARK, result)
    return result


def _quantize_cpu(model, mode: str) -> str:
    _remember_full_size(model)
    if mode == "int8":
        # Weight-only: the activations stay fp32, so outlier activations (SmolLM2 has them) lose nothing.
        with quiet_torchao():
            from torchao.quantization import Int8WeightOnlyConfig
        _torchao_quantize(model, Int8WeightOnlyConfig(set_inductor_config=False))
        return "torchao int8 weight-only, per channel"
    if mode == "int8-dynamic":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():  # torch.ao's deprecation notice: torchao has no fast x86 int8 kernel yet
            warnings.simplefilter("ignore")
            # inplace: the Session's model object stays the same; only its Linear children are swapped.
            quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
        return "torch.ao dynamic int8 activations and weights (fbgemm), lossy"
    config = int4_cpu_config()
    if config is None:
        raise LLMError("--quantize int4 has no CPU kernel in this torch/torchao build; use --quantize int8")
    _torchao_quantize(model, config)
    return f"torchao int4 weight-only, groups of {INT4_GROUP_SIZE}"


def int4_cpu_config():
    """torchao's int4 weight-only config for CPUs (Int4OpaqueTensor over torch's `_weight_int4pack_mm_for_cpu`),
    or None where this torch/torchao build lacks it."""
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return None
    try:
        with quiet_torchao():
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
    except ImportError:
        return None
    # set_inductor_config=False: leave the process's torch.compile settings alone
    return PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP_SIZE, set_inductor_config=False)


def _quantize_cuda(model, mode: str) -> str:
    """torchao's CUDA kernels (int8 weight-only; int4 tinygemm, which wants bf16). Untested here."""
    try:
        with quiet_torchao():
            from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig
    except ImportError:
        raise LLMError("--quantize on a GPU needs torchao: pip install torchao") from None
    _remember_full_size(model)
    if mode == "int8":
        _torchao_quantize(model, Int8WeightOnlyConfig(set_inductor_config=False))
        return "torchao int8 weight-only (CUDA)"
    if next(model.parameters()).dtype != torch.bfloat16:
        raise LLMError("--quantize int4 on a GPU needs bf16 weights: load with --dtype bfloat16 (the default)")
    _torchao_quantize(
        model, Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d", set_inductor_config=False)
    )
    return "torchao int4 weight-only (CUDA tinygemm)"


def _torchao_quantize(model, config) -> None:
    with quiet_torchao():
        from torchao.quantization import quantize_

    quantize_(model, config)  # in place: Linear weights become torchao tensor subclasses


def _linear_modules(model):
    return [m for m in model.modules() if type(m) is torch.nn.Linear]


def _remember_full_size(model) -> None:
    _inner(model)._llm_magics_full_mb = weights_mb(model)


def weights_mb(model, full_precision: bool = False) -> float:
    """The bytes the weights take, quantized layers counted by their packed data (scales included)."""
    if full_precision and hasattr(_inner(model), "_llm_magics_full_mb"):
        return _inner(model)._llm_magics_full_mb
    # parameters() already counts a tied weight once; packed torch.ao weights are unpacked copies
    total = sum(_tensor_bytes(t) for t in model.parameters()) + sum(_tensor_bytes(t) for t in model.buffers())
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):  # torch.ao dynamic Linear
            total += sum(_tensor_bytes(t) for t in packed._weight_bias() if t is not None)
    return round(total / 2**20, 1)


def _is_subclass(tensor) -> bool:
    return type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "__tensor_flatten__")


def _tensor_bytes(tensor) -> int:
    if _is_subclass(tensor):  # torchao: the packed data, scales and zero points inside
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    size = tensor.numel() * tensor.element_size()
    if tensor.is_quantized and tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        size += tensor.q_per_channel_scales().numel() * 8 + tensor.q_per_channel_zero_points().numel() * 8
    return size


def status(loaded) -> dict:
    """The status rows: the quantization and the memory it saved, or (on CPU) what the flag would gain."""
    done = quantization_of(loaded.model)
    if done is not None:
        return {"quantization": done.describe(), "weights_mb": done.weights_mb_after}
    hint = gain_hint(loaded)
    return {"quantization": f"none ({hint})" if hint else "none"}


def gain_hint(loaded) -> str | None:
    """On CPU, for a full-precision causal model: what --quantize int8 would give (None elsewhere)."""
    if (
        loaded is None
        or loaded.device.type != "cpu"
        or is_quantized(loaded.model)
        or not loaded.causal
        or _has_lora(loaded.model)
    ):
        return None
    linear_mb = sum(m.weight.numel() * m.weight.element_size() for m in _linear_modules(loaded.model)) / 2**20
    return (
        f"`%llm load MODEL --quantize int8` would cut the Linear weights from {linear_mb:,.0f} MB to "
        f"~{linear_mb / 4:,.0f} MB (int4: ~{linear_mb / 8:,.0f} MB); decode speed of each "
        "path: README, Speed (bench/decode_cpu.py); without it attention, the lens and training stay exact"
    )


def _has_lora(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _inner(model):
    return model


@contextlib.contextmanager
def quiet_torchao():
    """torchao logs a warning for each optional CUDA extension a CPU build cannot load: not the user's business."""
    logger = logging.getLogger("torchao")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)
