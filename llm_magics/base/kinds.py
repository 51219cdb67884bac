"""What kind of run a command makes: one name for the run history, the result, the progress bar."""

from __future__ import annotations

from enum import Enum


class RunKind(str, Enum):
    TRAIN = "train"
    FINETUNE = "finetune"
    CLASSIFY = "classify"  # finetune --task classify
    LR_FIND = "lr-find"
    EVAL = "eval"

    def __str__(self) -> str:  # the plain name in f-strings and messages, on every Python version
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, command: str, task: str = "lm") -> RunKind:
        """The kind `train` or `finetune` (with its --task) records; lr-find sweeps record as LR_FIND."""
        return cls.CLASSIFY if command == "finetune" and task == "classify" else cls(command)
