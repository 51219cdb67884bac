"""Batches for the loop: random blocks of the packed token stream (pre-training), shuffled padded
examples epoch after epoch (fine-tuning), and fixed windows for evaluation. Each keeps a state_dict()
so a resumed run sees the same batches."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..base.errors import LLMError
from ..data import PackedTokens, pad_batch
from ..loading import LoadedModel


class PackedBlocks:
    """Random --seq-len blocks of the packed token stream (documents joined with EOS). Blocks are read
    from the memory-mapped shards when drawn, so memory stays flat whatever the corpus size."""

    def __init__(self, tokens: PackedTokens | torch.Tensor, seq_len: int, batch_size: int, *, seed: int):
        if len(tokens) < 2:
            raise LLMError("the training text is too short: it needs at least 2 tokens")
        self.tokens = tokens
        self.seq_len = min(seq_len, len(tokens))
        self.blocks = len(tokens) // self.seq_len
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> dict:
        picks = torch.randint(0, self.blocks, (self.batch_size,), generator=self.generator).tolist()
        input_ids = torch.from_numpy(np.stack([_read(self.tokens, b * self.seq_len, self.seq_len) for b in picks]))
        return {"input_ids": input_ids, "labels": input_ids.clone()}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict):
        self.generator.set_state(state["generator"])


def _read(tokens, start: int, count: int) -> np.ndarray:
    if isinstance(tokens, torch.Tensor):
        return tokens[start : start + count].numpy().astype(np.int64)
    return tokens.read(start, count)


class EpochBatches:
    """Shuffled padded batches, epoch after epoch; its state makes a resumed run see the same order."""

    def __init__(self, examples: list[dict], batch_size: int, pad_id: int, *, seed: int):
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
        chosen = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return pad_batch([self.examples[i] for i in chosen], self.pad_id)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict):
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]


def fixed_windows(tokens: PackedTokens | torch.Tensor, seq_len: int, batch_size: int) -> list[dict]:
    """Consecutive seq_len blocks (an evaluation set's whole stream, or one short block)."""
    seq_len = min(seq_len, len(tokens))
    blocks = [torch.from_numpy(_read(tokens, start, seq_len)) for start in range(0, len(tokens) - seq_len + 1, seq_len)]
    return [
        {"input_ids": torch.stack(blocks[i : i + batch_size]), "labels": torch.stack(blocks[i : i + batch_size])}
        for i in range(0, len(blocks), batch_size)
    ]


def padded_batches(loaded: LoadedModel, examples: list[dict], batch_size: int) -> list[dict]:
    pad = loaded.tokenizer.pad_token_id or 0
    return [pad_batch(examples[i : i + batch_size], pad) for i in range(0, len(examples), batch_size)]
