"""Resumable checkpoints: weights (or adapter), tokenizer, optimizer, scheduler, data-order and RNG state.

The state is read back with `torch.load(weights_only=True)`: a checkpoint from elsewhere can hold
tensors and plain data, never objects that run code. Every checkpoint carries a manifest with the id of
the run that wrote it, so rotation and replacement touch only that run's own checkpoints.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..base.errors import LLMError
from ..base.files import staged_folder
from ..loading import LoadedModel, quiet_transformers
from .options import TrainResult
from .output_lock import OutputDirLock

STATE_FILE = "trainer_state.pt"
MANIFEST = "llm_magics_checkpoint.json"  # marks a checkpoint folder we wrote, with its run's id


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and CUDA): LoRA init, dropout and sampling follow --seed."""
    from transformers import set_seed

    set_seed(seed)


def rng_state() -> dict:
    """The global RNG states as tensors and plain lists (loadable with weights_only=True)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": _plain(random.getstate()),
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": np.array(numpy_state["key"], dtype=np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def prepare_output_dir(
    requested: str | None, kind: str, run_id: str, lock: bool = True
) -> tuple[Path, OutputDirLock | None]:
    """Where this run writes checkpoints, checked before the first step: a writable folder, locked for
    this run (a second run into it is refused; with several processes the kernel holds the lock), whose
    `checkpoint-N` folders are all this run's own. Any other `checkpoint-N` (another run's, another
    tool's, the user's) stays as it is and this run writes to a sub-folder of its own. Partial
    checkpoints an earlier run of ours left behind are removed."""
    import time

    path = Path(requested or f"llm_runs/{kind}-{time.strftime('%Y%m%d-%H%M%S')}").expanduser()
    held = lock_output_dir(path) if lock else None
    try:
        _remove_partials(path)
        others = [p for p in _checkpoints(path) if checkpoint_run_id(p) != run_id]
        if others:
            path = path / f"run-{run_id}"
            print(
                f"--output-dir holds {others[-1].name} of another run or tool (kept as it is); "
                f"this run writes to {path}"
            )
        _writable(path)
        _remove_partials(path)  # (a sub-folder of ours from an earlier run of this id)
    except BaseException:
        if held:
            held.release()
        raise
    return path, held


def lock_output_dir(path: str | Path) -> OutputDirLock:
    """The folder, created if needed and checked writable, locked for this run."""
    path = Path(path).expanduser()
    _writable(path)
    return OutputDirLock(path).acquire()


def check_not_a_file(output_dir: str | None) -> None:
    """Before anything runs, also when no checkpoint will be written: a file given as --output-dir is a typo."""
    if output_dir and Path(output_dir).expanduser().is_file():
        raise LLMError(f"--output-dir {output_dir} is a file, not a folder")


def _writable(path: Path) -> None:
    check_not_a_file(str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise LLMError(f"--output-dir {path} is not writable: {error.strerror or error}") from None


def _write_manifest(folder: Path, manifest: dict) -> None:
    """Written aside, then renamed: a run killed mid-write leaves no half manifest (which would make its
    partial folder look like someone else's)."""
    aside = folder / (MANIFEST + ".tmp")
    aside.write_text(json.dumps(manifest))
    os.replace(aside, folder / MANIFEST)


def _remove_partials(folder: Path) -> None:
    """`checkpoint-N.partial` folders of ours (or empty ones: killed before the manifest was in place) that a
    killed run left; others stay."""
    for partial in folder.glob("checkpoint-*.partial"):
        if not partial.is_dir() or partial.is_symlink():
            continue
        if _manifest(partial) or {p.name for p in partial.iterdir()} <= {MANIFEST + ".tmp"}:
            shutil.rmtree(partial, ignore_errors=True)


def save_checkpoint(
    directory: Path,
    loaded: LoadedModel,
    optimizer,
    scheduler,
    batches,
    step: int,
    result: TrainResult,
    keep: int,
    run_id: str | None = None,
) -> str:
    """Weights (or LoRA adapter) + tokenizer + optimizer/scheduler/data/RNG state, written aside and
    renamed into place: a full disk or an interrupt leaves the earlier checkpoints as they were."""
    partial = directory.with_name(directory.name + ".partial")
    for existing in (directory, partial):
        if existing.exists() and not (existing.is_dir() and checkpoint_run_id(existing) == run_id):
            raise LLMError(
                f"{existing} is in the way and this run did not write it: it is kept; pick another --output-dir"
            )
    try:  # our own earlier checkpoint of this step is replaced only once this one is whole
        with staged_folder(directory, partial) as staging:
            _write_manifest(staging, {"written_by": "llm_magics", "run_id": run_id, "step": step})
            model = getattr(loaded.model, "module", loaded.model)
            with quiet_transformers():
                model.save_pretrained(str(staging))  # PeftModel's signature takes a str
            loaded.tokenizer.save_pretrained(staging)
            torch.save(
                {
                    "step": step,
                    "run_id": run_id,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "batches": batches.state_dict(),
                    "rng": rng_state(),
                    "history": result.history,
                    "eval_history": result.eval_history,
                    "tokens": result.tokens,
                    "seconds": result.seconds,
                },
                staging / STATE_FILE,
            )
    except Exception as error:  # nothing half-written stays; a full disk is one line
        raise LLMError(
            write_failure(
                error,
                f"checkpoint {directory.name} was not written (the earlier checkpoints in {directory.parent} are kept)",
            )
        ) from None
    ours = [p for p in _checkpoints(directory.parent) if run_id and checkpoint_run_id(p) == run_id]
    for old in ours[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)
    return str(directory)


def write_failure(error: BaseException, what: str) -> str:
    """One line for a failed write: a full disk said plainly (safetensors and torch.save wrap ENOSPC in
    their own errors), anything else with its first line."""
    text = str(error)
    # torch.save on a full disk: "[enforce fail at inline_container.cc:...] unexpected pos N vs M"
    full = ("No space left", "file write failed", "unexpected pos")
    if getattr(error, "errno", None) == errno.ENOSPC or any(words in text for words in full):
        return f"no space left on the disk: {what}; free some space and try again"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return f"{what}: {first}"


def _checkpoints(folder: Path) -> list[Path]:
    """Every `checkpoint-N` folder, whoever wrote it, in step order."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit() and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def _manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("written_by") == "llm_magics" else None


def checkpoint_run_id(directory: Path) -> str | None:
    """The run that wrote this checkpoint, from our manifest (None for folders we did not write)."""
    manifest = _manifest(directory)
    return manifest.get("run_id") if manifest else None


def read_state(directory: str, mmap: bool = True) -> dict:
    """The checkpoint's state, refused if unpickling it would need anything but tensors and plain data."""
    path = check_checkpoint(directory)
    try:
        return torch.load(path, weights_only=True, mmap=mmap, map_location="cpu")
    except pickle.UnpicklingError:
        raise LLMError(
            f"--resume {directory}: {STATE_FILE} holds Python objects, not only tensors and plain "
            "data; refused (unpickling it could run code)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise LLMError(
            f"--resume {directory}: {STATE_FILE} is unreadable "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__})"
        ) from None


def check_checkpoint(directory: str) -> Path:
    path = Path(directory).expanduser() / STATE_FILE
    if not path.is_file():
        raise LLMError(f"--resume {directory}: not a checkpoint directory (no {STATE_FILE})")
    return path


def restore_state(directory: str, optimizer, scheduler, batches, result: TrainResult) -> int:
    state = read_state(directory, mmap=False)
    if set(state["batches"]) != set(batches.state_dict()):  # a train run's stream vs a finetune's epochs
        raise LLMError(
            f"--resume {directory}: a checkpoint of another kind of run (train and finetune read "
            "their data differently): resume it with the command that wrote it"
        )
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
