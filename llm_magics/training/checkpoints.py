"""Resumable checkpoints: weights (or adapter), tokenizer, optimizer, scheduler and data-order state."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..errors import LLMError
from ..loading import LoadedModel, quiet_transformers
from .options import TrainResult

STATE_FILE = "trainer_state.pt"


def save_checkpoint(directory: Path, loaded: LoadedModel, optimizer, scheduler, batches, step: int,
                    result: TrainResult, keep: int) -> str:
    """Weights (or LoRA adapter) + tokenizer + optimizer/scheduler/data state, written atomically."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model = getattr(loaded.model, "module", loaded.model)
    with quiet_transformers():
        model.save_pretrained(partial)
    loaded.tokenizer.save_pretrained(partial)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "batches": batches.state_dict(), "history": result.history, "eval_history": result.eval_history,
                "tokens": result.tokens, "seconds": result.seconds}, partial / STATE_FILE)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    checkpoints = sorted(directory.parent.glob("checkpoint-*[0-9]"), key=lambda p: int(p.name.split("-")[-1]))
    for old in checkpoints[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)
    return str(directory)


def check_checkpoint(directory: str) -> Path:
    path = Path(directory).expanduser() / STATE_FILE
    if not path.is_file():
        raise LLMError(f"--resume {directory}: not a checkpoint directory (no {STATE_FILE})")
    return path


def _restore(directory: str, optimizer, scheduler, batches, result: TrainResult) -> int:
    state = torch.load(check_checkpoint(directory), weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    batches.load_state_dict(state["batches"])
    result.history = list(state["history"])
    result.eval_history = list(state.get("eval_history", []))
    result.tokens, result.seconds = state["tokens"], state["seconds"]
    return int(state["step"])
