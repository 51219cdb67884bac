"""What a training run is asked to do (TrainOptions) and what it reports (TrainResult)."""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LLMError

SEED_MAX = 2**32 - 1  # numpy's limit, and so transformers.set_seed's


def check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise LLMError(f"--seed must be a whole number from 0 to {SEED_MAX}; got {seed!r}")


def check_finite(**values) -> None:
    """inf and nan pass every `> 0` check but train or sample nothing meaningful."""
    for name, value in values.items():
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise LLMError(f"--{name.replace('_', '-')} must be a finite number; got {value!r}")


@dataclass
class TrainOptions:
    steps: int | None = None  # optimizer steps (train); finetune derives them from epochs
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    warmup: float = 0.1  # < 1: a fraction of the steps, else a step count
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seq_len: int = 128
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    output_dir: str | None = None
    resume: str | None = None
    eval_every: int | None = None
    seed: int = 0
    compile: bool | str = False  # torch.compile the model (True: inductor, or a backend name)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% slower
    early_stopping: int | None = None  # stop after this many evaluations without a better eval loss
    min_delta: float = 0.0  # what counts as better: lower by more than this
    restore_best: bool = True  # after early stopping, load the best evaluation's weights back
    track: str | None = None  # experiment trackers, comma-separated (tensorboard, trackio, wandb, mlflow, aim)
    tracker_dir: str | None = None  # where local trackers write (the run's folder)
    lr_sweep: float | None = None  # lr-find: grow the lr exponentially from `lr` to this over `steps` steps

    def validated(self) -> TrainOptions:
        check_finite(epochs=self.epochs, lr=self.lr, warmup=self.warmup, weight_decay=self.weight_decay,
                     max_grad_norm=self.max_grad_norm, min_delta=self.min_delta)
        check_seed(self.seed)
        checks = [
            (self.steps is None or self.steps >= 1, "--steps must be at least 1"),
            (self.epochs > 0, "--epochs must be > 0"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.lr > 0, "--lr must be > 0"),
            (self.warmup >= 0, "--warmup must be >= 0"),
            (self.seq_len >= 2, "--seq-len must be at least 2"),
            (self.checkpoint_every is None or self.checkpoint_every >= 1, "--checkpoint-every must be >= 1"),
            (self.eval_every is None or self.eval_every >= 1, "--eval-every must be >= 1"),
            (self.early_stopping is None or self.early_stopping >= 1, "--early-stopping (patience) must be >= 1"),
            (self.min_delta >= 0, "--min-delta must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise LLMError(message)
        return self


@dataclass
class TrainResult:
    kind: str  # "train", "finetune" or "classify"
    total_steps: int
    history: list[dict] = field(default_factory=list)  # one row per optimizer step
    eval_history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    interrupted: bool = False
    checkpoint: str | None = None
    output_dir: str | None = None
    seconds: float = 0.0
    tokens: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # checkpoints carry it
    error: str | None = None  # why a failed run ended (it is still in Session.runs)
    ranks: list[dict] = field(default_factory=list)  # --processes N: each rank's last step and evaluations
    run_dir: str | None = None  # its folder in the run history (llm_magics.runs)
    record_id: str | None = None  # its id there (`%llm runs`, llm_magics.runs.load)
    options: dict = field(default_factory=dict)  # the resolved options it ran with
    best_step: int | None = None  # the step of the lowest eval loss (early stopping)
    restored_step: int | None = None  # the step whose weights the model holds after early stopping
    stopped_early: bool = False  # early stopping ended it (not a user stop)
    suggested_lr: float | None = None  # an lr-find run's suggestion
    suggestions: dict[str, tuple[float, tuple[float, float]]] = field(default_factory=dict)  # lr-find: by rule
    sweep: dict[str, list] = field(default_factory=dict)  # lr-find: the lr and smoothed loss per step

    @property
    def steps_done(self) -> int:
        return self.history[-1]["step"] if self.history else 0

    @property
    def initial_loss(self) -> float | None:
        return self.history[0]["loss"] if self.history else None

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def history_frame(self):
        import pandas as pd

        return pd.DataFrame(self.history)

    def summary(self) -> str:
        if self.error:
            return f"{self.kind}: failed after {self.steps_done}/{self.total_steps} steps: {self.error}"
        if not self.history:
            return f"{self.kind}: stopped before the first step"
        line = (f"{self.kind}: {self.steps_done}/{self.total_steps} steps, loss "
                f"{self.initial_loss:.4f} -> {self.final_loss:.4f}, {self.tokens_per_second:,.0f} tokens/s")
        if self.metrics:
            line += ", " + ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
            if self.eval_history:  # the step the scores were measured at
                line += f" (measured at step {self.eval_history[-1]['step']})"
        checkpoint = self.checkpoint if self.checkpoint and Path(self.checkpoint).is_dir() else None
        if self.stopped_early:
            loaded = (f"the model holds step {self.restored_step}'s weights (the best eval loss)"
                      if self.restored_step is not None else f"the model keeps step {self.steps_done}'s weights "
                      f"(--no-restore-best; the best eval loss was at step {self.best_step})")
            line += f". Early stopping: no better eval loss since step {self.best_step}, stopped at step " \
                    f"{self.steps_done}; {loaded}"
        if self.interrupted:
            kept = f"last checkpoint {checkpoint}" if checkpoint else "no checkpoint (use --checkpoint-every)"
            line += f". Stopped early: the model in memory keeps step {self.steps_done}; {kept}"
        elif checkpoint:
            line += f"; checkpoint {checkpoint}"
        return line
