"""Training and evaluation data: reading (any format, through `datasets`), tokenizing once (cached
shards), packing into the token stream pre-training samples blocks from, and fine-tuning examples.

reading.py (files, folders, the cell body -> a Corpus of Arrow rows), tokens.py (ids, the token cache,
the packed stream), examples.py (masked prompt/response, chat and classification examples),
preparing.py (progress hooks and stopping while data is prepared).
"""

from __future__ import annotations

from pathlib import Path

from .examples import IGNORE_INDEX, check_labels, classification_examples, pad_batch, supervised_examples
from .preparing import Preparation, datasets_bars
from .reading import Corpus, read_corpus, text_blocks, text_of
from .tokens import PackedTokens, cached_examples, encode, packed_tokens, token_stream


def data_cache() -> Path:
    """Where readers' Arrow copies and tokenized shards live: <cache_dir()>/data (LLM_MAGICS_CACHE honoured)."""
    from ..loading import cache_dir

    return cache_dir() / "data"


def read_records(data: str | None = None, body: str | None = None, text_field: str | None = None) -> list[dict]:
    """The rows of a (small) data source as dicts, e.g. to look at a few examples."""
    return read_corpus(data, body, text_field, cache=data_cache() / "datasets").dataset.to_list()


__all__ = [
    "IGNORE_INDEX",
    "Corpus",
    "PackedTokens",
    "Preparation",
    "cached_examples",
    "check_labels",
    "classification_examples",
    "data_cache",
    "datasets_bars",
    "encode",
    "pad_batch",
    "packed_tokens",
    "read_corpus",
    "read_records",
    "supervised_examples",
    "text_blocks",
    "text_of",
    "token_stream",
]
