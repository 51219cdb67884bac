"""What a training run reports (TrainResult); what it is asked (RunSpec, TrainOptions) is built by the
registry, llm_magics/options.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..base.kinds import RunKind
from ..options import RunSpec, TrainOptions

__all__ = ["RunSpec", "TrainOptions", "TrainResult"]


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
