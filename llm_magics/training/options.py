"""What a training run is asked to do (TrainOptions) and what it reports (TrainResult)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LLMError


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

    def validated(self) -> "TrainOptions":
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
        if not self.history:
            return f"{self.kind}: stopped before the first step"
        line = (f"{self.kind}: {self.steps_done}/{self.total_steps} steps, loss "
                f"{self.initial_loss:.4f} -> {self.final_loss:.4f}, {self.tokens_per_second:,.0f} tokens/s")
        if self.metrics:
            line += ", " + ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        if self.interrupted:
            kept = f"last checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint (use --checkpoint-every)"
            line += f". Stopped early: the model in memory keeps step {self.steps_done}; {kept}"
        elif self.checkpoint:
            line += f"; checkpoint {self.checkpoint}"
        return line
