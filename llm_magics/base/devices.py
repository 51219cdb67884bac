"""Choosing where the model runs and in which precision."""

from __future__ import annotations

import torch

from .errors import LLMError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(name: str = "auto") -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LLMError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LLMError(f"device {name!r} asked for, but no CUDA GPU is available here (use --device cpu)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto = bf16 on a GPU that supports it, else fp32 (CPU half precision is slow and lossy)."""
    if name in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in _DTYPES:
        raise LLMError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    return _DTYPES[name]


def memory_report(model, device: torch.device) -> dict:
    params_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    report = {"weights_mb": round(params_bytes / 2**20, 1)}
    if device.type == "cuda":
        report["cuda_allocated_mb"] = round(torch.cuda.memory_allocated(device) / 2**20, 1)
        report["cuda_reserved_mb"] = round(torch.cuda.memory_reserved(device) / 2**20, 1)
    return report


def compile_backend(compile: bool | str | None) -> str | None:
    """--compile: True means inductor; a string names another torch.compile backend (e.g. aot_eager)."""
    if not compile:
        return None
    backend = "inductor" if compile is True else compile
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise LLMError(f"unknown --compile backend {backend!r}: use inductor, aot_eager or eager")
    return backend


def available_memory(device: torch.device) -> int:
    """The bytes a new allocation can still take: the GPU's free memory on CUDA, else the machine's available
    RAM (what psutil counts as available without swapping)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available
