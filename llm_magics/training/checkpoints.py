"""Resumable checkpoints: weights (or adapter), tokenizer, optimizer, scheduler, data-order and RNG state.

The state is read back with `torch.load(weights_only=True)`: a checkpoint from elsewhere can hold
tensors and plain data, never objects that run code. Every checkpoint records the id of the run that
wrote it, so rotation removes only that run's own checkpoints.
"""
from __future__ import annotations

import pickle
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import LLMError
from ..loading import LoadedModel, quiet_transformers
from .options import TrainResult

STATE_FILE = "trainer_state.pt"


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and CUDA): LoRA init, dropout and sampling follow --seed."""
    from transformers import set_seed

    set_seed(seed)


def rng_state() -> dict:
    """The global RNG states as tensors and plain lists (loadable with weights_only=True)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {"python": _plain(random.getstate()), "torch": torch.get_rng_state(),
             "numpy": {"bit_generator": numpy_state["bit_generator"], "key": numpy_state["state"]["key"].tolist(),
                       "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                       "gauss": float(numpy_state["gauss"])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": numpy_state["bit_generator"],
                         "state": {"key": np.array(numpy_state["key"], dtype=np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def prepare_output_dir(requested: str | None, kind: str, run_id: str) -> Path:
    """Where this run writes checkpoints, checked before the first step: a writable folder that holds no
    other run's checkpoints (those stay; this run then writes to a sub-folder of its own)."""
    import time

    path = Path(requested or f"llm_runs/{kind}-{time.strftime('%Y%m%d-%H%M%S')}").expanduser()
    if path.exists() and not path.is_dir():
        raise LLMError(f"--output-dir {path} is a file, not a folder")
    others = [p for p in _checkpoints(path) if checkpoint_run_id(p) != run_id]
    if others:
        path = path / f"run-{run_id}"
        print(f"--output-dir holds checkpoints of another run ({others[-1].name}); this run writes to {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise LLMError(f"--output-dir {path} is not writable: {error.strerror or error}") from None
    return path


def save_checkpoint(directory: Path, loaded: LoadedModel, optimizer, scheduler, batches, step: int,
                    result: TrainResult, keep: int, run_id: str | None = None) -> str:
    """Weights (or LoRA adapter) + tokenizer + optimizer/scheduler/data/RNG state, written atomically."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model = getattr(loaded.model, "module", loaded.model)
    with quiet_transformers():
        model.save_pretrained(partial)
    loaded.tokenizer.save_pretrained(partial)
    torch.save({"step": step, "run_id": run_id, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "batches": batches.state_dict(), "rng": rng_state(),
                "history": result.history, "eval_history": result.eval_history,
                "tokens": result.tokens, "seconds": result.seconds}, partial / STATE_FILE)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    ours = [p for p in _checkpoints(directory.parent) if run_id and checkpoint_run_id(p) == run_id]
    for old in ours[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)
    return str(directory)


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint-*[0-9]") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)


def checkpoint_run_id(directory: Path) -> str | None:
    try:
        return read_state(str(directory)).get("run_id")
    except LLMError:
        return None


def read_state(directory: str, mmap: bool = True) -> dict:
    """The checkpoint's state, refused if unpickling it would need anything but tensors and plain data."""
    path = check_checkpoint(directory)
    try:
        return torch.load(path, weights_only=True, mmap=mmap, map_location="cpu")
    except pickle.UnpicklingError:
        raise LLMError(f"--resume {directory}: {STATE_FILE} holds Python objects, not only tensors and plain "
                       "data; refused (unpickling it could run code)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise LLMError(f"--resume {directory}: {STATE_FILE} is unreadable "
                       f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


def check_checkpoint(directory: str) -> Path:
    path = Path(directory).expanduser() / STATE_FILE
    if not path.is_file():
        raise LLMError(f"--resume {directory}: not a checkpoint directory (no {STATE_FILE})")
    return path


def _restore(directory: str, optimizer, scheduler, batches, result: TrainResult) -> int:
    state = read_state(directory, mmap=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    batches.load_state_dict(state["batches"])
    if "rng" in state:
        set_rng_state(state["rng"])
    result.history = list(state["history"])
    result.eval_history = list(state.get("eval_history", []))
    result.tokens, result.seconds = state["tokens"], state["seconds"]
    result.run_id = state.get("run_id") or result.run_id  # a resumed run is the same run
    return int(state["step"])
