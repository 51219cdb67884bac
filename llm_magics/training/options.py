"""What a training run is asked to do (TrainOptions) and what it reports (TrainResult)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..base.checks import check_finite, check_seed
from ..base.kinds import RunKind
from ..options import LR_BY_KIND, check_bounds, default_lr, defaults

_D = defaults("finetune")  # the declared defaults (llm_magics/options.py); lr and steps go by kind (for_run)


@dataclass
class TrainOptions:
    steps: int | None = None  # optimizer steps (train); finetune derives them from epochs
    epochs: float = _D.epochs
    batch_size: int = _D.batch_size
    grad_accum: int = _D.grad_accum
    lr: float = LR_BY_KIND["train"]
    warmup: float = _D.warmup  # < 1: a fraction of the steps, else a step count
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seq_len: int = _D.seq_len
    checkpoint_every: int | None = _D.checkpoint_every
    keep_checkpoints: int = 2
    output_dir: str | None = _D.output_dir
    resume: str | None = _D.resume
    eval_every: int | None = _D.eval_every
    seed: int = _D.seed
    compile: bool | str = _D.compile  # torch.compile the model (True: inductor, or a backend name)
    gradient_checkpointing: bool = _D.gradient_checkpointing  # less memory, ~30% slower steps
    early_stopping: int | None = _D.early_stopping  # stop after this many evaluations without a better eval loss
    min_delta: float = _D.min_delta  # what counts as better: lower by more than this
    restore_best: bool = _D.restore_best  # after early stopping, load the best evaluation's weights back
    track: str | None = _D.track  # experiment trackers, comma-separated (tensorboard, trackio, wandb, mlflow, aim)
    tracker_dir: str | None = None  # where local trackers write (the run's folder)
    lr_sweep: float | None = None  # lr-find: grow the lr exponentially from `lr` to this over `steps` steps

    @classmethod
    def for_run(cls, command: str, given: dict, from_scratch: bool = False, lora: bool = False) -> TrainOptions:
        """A train or finetune run's options: its kind's lr and steps, the declared defaults, then those given
        (lr or steps None, as the magics pass them unset, means the kind's default)."""
        kind = {"lr": default_lr(command, from_scratch, lora), "steps": defaults(command).steps}
        given = {name: value for name, value in given.items() if not (name in kind and value is None)}
        return cls(**{**kind, **given}).validated()

    def validated(self) -> TrainOptions:
        check_finite(
            epochs=self.epochs,
            lr=self.lr,
            warmup=self.warmup,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            min_delta=self.min_delta,
        )
        check_seed(self.seed)
        check_bounds(self, "finetune")  # the bounds declared in options.py (lr-find's and train's are the same)
        return self


@dataclass
class TrainResult:
    kind: RunKind  # TRAIN, FINETUNE, CLASSIFY (or LR_FIND once recorded)
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
        line = (
            f"{self.kind}: {self.steps_done}/{self.total_steps} steps, loss "
            f"{self.initial_loss:.4f} -> {self.final_loss:.4f}, {self.tokens_per_second:,.0f} tokens/s"
        )
        if self.metrics:
            line += ", " + ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
            if self.eval_history:  # the step the scores were measured at
                line += f" (measured at step {self.eval_history[-1]['step']})"
        checkpoint = self.checkpoint if self.checkpoint and Path(self.checkpoint).is_dir() else None
        if self.stopped_early:
            loaded = (
                f"the model holds step {self.restored_step}'s weights (the best eval loss)"
                if self.restored_step is not None
                else f"the model keeps step {self.steps_done}'s weights "
                f"(--no-restore-best; the best eval loss was at step {self.best_step})"
            )
            line += (
                f". Early stopping: no better eval loss since step {self.best_step}, stopped at step "
                f"{self.steps_done}; {loaded}"
            )
        if self.interrupted:
            kept = f"last checkpoint {checkpoint}" if checkpoint else "no checkpoint (use --checkpoint-every)"
            line += f". Stopped early: the model in memory keeps step {self.steps_done}; {kept}"
        elif checkpoint:
            line += f"; checkpoint {checkpoint}"
        return line
