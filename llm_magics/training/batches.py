"""Batches for the loop: shuffled padded examples epoch after epoch, and fixed windows for evaluation."""
from __future__ import annotations

import math

import torch

from ..data import pad_batch
from ..loading import LoadedModel


class EpochBatches:
    """Shuffled padded batches, epoch after epoch; its state makes a resumed run see the same order."""

    def __init__(self, examples: list[dict], batch_size: int, pad_id: int, seed: int = 0):
        self.examples, self.batch_size, self.pad_id = examples, batch_size, pad_id
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.position = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def next_batch(self) -> dict:
        if self.position >= len(self.order):
            self.order = torch.randperm(len(self.examples), generator=self.generator).tolist()
            self.position = 0
        chosen = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return pad_batch([self.examples[i] for i in chosen], self.pad_id)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict):
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]


def _fixed_windows(stream: torch.Tensor, seq_len: int, batch_size: int) -> list[dict]:
    blocks = [stream[i:i + seq_len] for i in range(0, max(1, len(stream) - seq_len + 1), seq_len)]
    blocks = [b for b in blocks if len(b) == seq_len] or [stream]
    return [{"input_ids": torch.stack(blocks[i:i + batch_size]), "labels": torch.stack(blocks[i:i + batch_size])}
            for i in range(0, len(blocks), batch_size)]


def _padded_batches(loaded: LoadedModel, examples: list[dict], batch_size: int) -> list[dict]:
    pad = loaded.tokenizer.pad_token_id or 0
    return [pad_batch(examples[i:i + batch_size], pad) for i in range(0, len(examples), batch_size)]
