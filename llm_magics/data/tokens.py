"""Tokenizing once: rows -> token ids with `Dataset.map`, written in shards under
`cache_dir()/tokens/<dataset fingerprint>-<tokenizer hash>/` and reused by every later run; the packed
stream (documents joined with EOS) that pre-training and perplexity read, memory-mapped.

A stop request is checked between map batches: the interrupted shard's temp file is removed by
`datasets`, finished shards are kept (a later run goes on from there), and only a run that tokenized
every shard writes `done.json`, the mark that makes the cache reusable without looking at the shards.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..base.errors import LLMError
from .preparing import Preparation, datasets_bars
from .reading import Corpus, text_of

FORMAT_VERSION = 1  # bump when the cached layout or the tokenization changes
SHARD_BYTES = 32 << 20  # text per cached shard
BATCH_BYTES = 2 << 20  # text per map batch: the stop flag is checked this often (well under a second)
BATCH_ROWS = 256  # rows per map batch for fine-tuning examples (chat templates are slow per row)
BYTE_OFFSET = 3  # ByT5's ids: pad 0, eos 1, unk 2, then the 256 byte values
LONG_DOCUMENT = 1 << 20  # characters: with --max-tokens, a shard holding a longer document is read in chunks
CUT_MARGIN = 32  # tokens next to a chunk's cut may differ from the whole text's: never kept


def is_byte_level(tokenizer) -> bool:
    from transformers import ByT5Tokenizer

    return isinstance(tokenizer, ByT5Tokenizer)


def encode(tokenizer, text: str) -> list[int]:
    """Ids of one text without special tokens; bytes + 3 for the byte tokenizer (what ByT5 gives)."""
    if is_byte_level(tokenizer):
        return (np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + BYTE_OFFSET).tolist()
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenizer_key(tokenizer) -> str:
    """A short hash of what decides the ids: the tokenizer's full definition and its special tokens."""
    if is_byte_level(tokenizer):
        definition = f"bytes+{BYTE_OFFSET}"
    elif getattr(tokenizer, "backend_tokenizer", None) is not None:
        definition = tokenizer.backend_tokenizer.to_str()
    else:
        definition = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = f"{type(tokenizer).__name__}|{tokenizer.eos_token_id}|{getattr(tokenizer, 'chat_template', None)}"
    return hashlib.sha256((definition + extra).encode()).hexdigest()[:16]


def token_dtype(tokenizer) -> str:
    return "uint16" if len(tokenizer) <= 1 << 16 else "uint32"


def documents_to_ids(texts, tokenizer, dtype: str):
    """A pyarrow list array: each document's ids followed by EOS. `texts` is a pyarrow string array
    (bytes are read straight from its buffer for the byte tokenizer) or a list of str."""
    import pyarrow as pa

    eos = tokenizer.eos_token_id
    if is_byte_level(tokenizer):
        strings = pa.array(texts, pa.large_string()) if isinstance(texts, list) else texts.cast(pa.large_string())
        offsets = np.frombuffer(strings.buffers()[1], np.int64)[strings.offset : strings.offset + len(strings) + 1]
        data = strings.buffers()[2]
        values = (
            np.frombuffer(data, np.uint8)[offsets[0] : offsets[-1]] if data is not None else np.zeros(0, np.uint8)
        ).astype(dtype) + BYTE_OFFSET
        lengths = np.diff(offsets)
    else:
        texts = texts.to_pylist() if not isinstance(texts, list) else texts
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        lengths = np.fromiter((len(i) for i in ids), np.int64, len(ids))
        values = np.fromiter(itertools.chain.from_iterable(ids), dtype, int(lengths.sum()))
    if eos is not None:  # insert EOS after each document
        ends = np.cumsum(lengths)
        values = np.insert(values, ends, eos).astype(dtype, copy=False)
        lengths = lengths + 1
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(new_offsets), pa.array(values))


def _batch_texts(batch, corpus: Corpus, first_row: int):
    """The documents of one Arrow batch: the text column as is when it is plain strings, else row by row."""
    import pyarrow as pa

    if corpus.text_field in batch.column_names:
        column = batch.column(corpus.text_field).combine_chunks()
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            if column.null_count == 0:
                return column
    rows = batch.to_pylist()
    return [text_of(row, corpus.text_field, lambda i=i: corpus.where(first_row + i)) for i, row in enumerate(rows)]


class _Counter:
    """Rows tokenized so far, reported to the progress bar and hooks; checks the stop flag."""

    def __init__(self, prep: Preparation, total: int):
        self.prep, self.total, self.rows = prep, total, 0

    def advance(self, rows: int):
        if self.prep.stopped:
            raise _Stopped
        self.rows += rows
        self.prep.report("tokenizing", self.rows, self.total)


def _tokenize_batch(batch, indices, first: int, corpus: Corpus, tokenizer, dtype: str, counter: _Counter | None):
    """One map batch (an Arrow table) -> its documents' ids, EOS after each."""
    import pyarrow as pa

    if counter is not None and counter.prep.stopped:
        raise _Stopped
    ids = documents_to_ids(_batch_texts(batch, corpus, first + indices[0]), tokenizer, dtype)
    if counter is not None:
        counter.advance(len(indices))
    return pa.table({"input_ids": ids})


class _Stopped(Exception):
    """Raised inside a map batch when the run is asked to stop (datasets then removes its temp file)."""


def tokenized_shards(
    corpus: Corpus,
    tokenizer,
    prep: Preparation,
    max_tokens: int | None = None,
    cache: Path | None = None,
    num_proc: int | None = None,
):
    """Token ids per document, as a list of datasets (Arrow shards, memory-mapped when cached), or
    None when stopped. With max_tokens, only as many shards as needed are tokenized."""
    import datasets

    dataset = corpus.dataset
    dtype = token_dtype(tokenizer)
    features = datasets.Features({"input_ids": datasets.List(datasets.Value(dtype))})
    directory = None
    if corpus.cacheable and cache is not None:
        directory = (
            cache / "tokens" / f"{corpus.content[:16]}{dataset._fingerprint}-{tokenizer_key(tokenizer)}-"
            f"{_safe(corpus.text_field)}-v{FORMAT_VERSION}"
        )
        done = _finished(directory)
        if done is not None:
            opened = _open_shards(directory, done)
            if opened is not None:
                return opened
            shutil.rmtree(directory, ignore_errors=True)  # a damaged entry: dropped, and rebuilt below
    shards = _shard_count(dataset)
    total = len(dataset)
    prep.report("tokenizing", 0, total)
    parallel = bool(num_proc and num_proc > 1)
    # In one process each batch checks the stop flag and moves the bar; worker processes cannot
    # see either, so with num_proc > 1 both happen between shards.
    counter = None if parallel else _Counter(prep, total)
    rows = _batch_rows(dataset)

    results, names, tokens = [], [], 0
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for stray in directory.glob("tmp*"):  # a temp file left by a process that was killed
            stray.unlink(missing_ok=True)
    for index in range(shards):
        start, stop = _shard_bounds(total, shards, index)
        part = dataset.select(range(start, stop)) if shards > 1 else dataset
        name = f"shard-{index:05d}-of-{shards:05d}.arrow"
        if (
            max_tokens is not None
            and not (directory and (directory / name).exists())
            and _longest_document(part, corpus.text_field) > LONG_DOCUMENT
        ):
            # A huge document (a file with no blank line): tokenize only the prefix the limit needs, in
            # bounded chunks, in memory (a cut document is not cached as if it were whole).
            prefix = _prefix_ids(part, corpus, tokenizer, dtype, max_tokens - tokens, prep, start, total)
            if prefix is None:
                return None
            results.append(prefix)
            break
        if directory is not None and (directory / name).exists() and not _readable(directory / name):
            (directory / name).unlink()  # finished by an earlier, stopped run, then damaged: tokenized again
        try:
            with datasets_bars(False):
                mapped = part.with_format("arrow").map(
                    _tokenize_batch,
                    batched=True,
                    batch_size=rows,
                    writer_batch_size=rows,
                    with_indices=True,
                    fn_kwargs={
                        "first": start,
                        "corpus": corpus,
                        "tokenizer": tokenizer,
                        "dtype": dtype,
                        "counter": counter,
                    },
                    remove_columns=part.column_names,
                    features=features,
                    num_proc=num_proc if parallel else None,
                    cache_file_name=str(directory / name) if directory else None,
                    keep_in_memory=directory is None,
                    new_fingerprint=f"{name}-{tokenizer_key(tokenizer)}",
                    desc="tokenizing",
                )
        except _Stopped:
            return None
        except MemoryError:
            raise LLMError(
                f"out of memory while tokenizing {corpus.origin}: try --max-tokens N or --sample-docs N"
            ) from None
        except Exception as error:  # a worker process re-raises our one-line errors wrapped
            if isinstance(error.__cause__, LLMError):
                raise error.__cause__ from None
            raise
        _drop_mapped_pages(dataset)
        prep.report("tokenizing", stop, total)  # also when the shard was finished by an earlier run
        if counter is not None:
            counter.rows = stop
        if prep.stopped:
            return None
        results.append(mapped.with_format(None))
        names.append(name)
        tokens += _token_count(mapped)
        if max_tokens is not None and tokens >= max_tokens:
            break
    if directory is not None and len(names) == shards:
        sizes = {name: (directory / name).stat().st_size for name in names}
        (directory / "done.json.partial").write_text(json.dumps({"shards": names, "tokens": tokens, "sizes": sizes}))
        (directory / "done.json.partial").replace(directory / "done.json")
    return results


def _longest_document(part, text_field: str) -> int:
    """Characters of the longest plain-string text in the shard (0 when the text is not one string column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if text_field not in part.column_names:
        return 0
    column = (
        part.with_format("arrow")[:][text_field] if part._indices is not None else part.data.table.column(text_field)
    )
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return 0
    longest = pc.max(pc.binary_length(column)).as_py()  # bytes >= characters: cheap, and enough to decide
    return longest or 0


def _prefix_ids(part, corpus: Corpus, tokenizer, dtype: str, wanted: int, prep: Preparation, first: int, total: int):
    """At least `wanted` ids (or every id, when the shard is shorter) of the shard's documents in order,
    EOS after each whole document, as an in-memory dataset; None when stopped. A long document is
    tokenized in growing prefixes (from about 4 characters a token, doubling), so the work and memory
    follow `wanted`, not the document's size; ids within CUT_MARGIN of a cut are dropped."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    pieces, have = [], 0
    for offset in range(len(part)):
        if prep.stopped:
            return None
        row = part.with_format("arrow")[offset]
        column = row[corpus.text_field] if corpus.text_field in row.column_names else None
        if (
            column is not None
            and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type))
            and column.null_count == 0
        ):
            length = pc.utf8_length(column)[0].as_py()
            chars = min(length, max(4096, 4 * (wanted - have + CUT_MARGIN)))
            while True:
                ids = encode(tokenizer, pc.utf8_slice_codeunits(column, 0, chars)[0].as_py())
                if chars >= length:
                    ids += [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
                    break
                if len(ids) >= wanted - have + CUT_MARGIN:
                    ids = ids[: wanted - have]
                    break
                chars = min(length, chars * 2)
                prep.report("tokenizing", first + offset, total)
        else:
            text = text_of(row.to_pylist()[0], corpus.text_field, lambda at=first + offset: corpus.where(at))
            ids = encode(tokenizer, text) + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        pieces.append(np.asarray(ids, dtype=dtype))
        have += len(ids)
        prep.report("tokenizing", first + offset + 1, total)
        if have >= wanted:
            break
    values = np.concatenate(pieces) if pieces else np.zeros(0, dtype)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int32)
    ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    return datasets.Dataset(datasets.table.InMemoryTable(pa.table({"input_ids": ids})))


def _drop_mapped_pages(dataset):
    """The text just tokenized was read through a memory map: its pages would stay counted in our RSS
    until the whole corpus was read. Tell the kernel we are done with them (they stay in the page cache;
    a later read faults them back). Only whole read-only mappings of the dataset's own Arrow files."""
    if sys.platform != "linux" or not dataset.cache_files:
        return
    import ctypes

    files = {str(Path(f["filename"]).resolve()) for f in dataset.cache_files}
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() in files and "w" not in fields[1]:
                low, high = (int(x, 16) for x in fields[0].split("-"))
                madvise(low, high - low, 4)  # MADV_DONTNEED


def _finished(directory: Path) -> dict | None:
    try:
        done = json.loads((directory / "done.json").read_text())
    except (OSError, ValueError):
        return None
    return done if all((directory / name).is_file() for name in done["shards"]) else None


def _open_shards(directory: Path, done: dict) -> list | None:
    """The finished shards, memory-mapped; None when one is damaged (truncated, overwritten, unreadable):
    its size no longer matches what done.json recorded, Arrow cannot read it, or its tokens are missing."""
    import datasets
    import pyarrow as pa

    sizes = done.get("sizes") or {}
    try:
        if any((directory / name).stat().st_size != size for name, size in sizes.items()):
            return None
        shards = [datasets.Dataset.from_file(str(directory / name)) for name in done["shards"]]
    except (OSError, ValueError, pa.ArrowException):
        return None
    if "tokens" in done and sum(_token_count(shard) for shard in shards) != done["tokens"]:
        return None
    return shards


def _batch_rows(dataset) -> int:
    """Rows per map batch for about BATCH_BYTES of text. Each batch is one Arrow record batch in the
    shard: few and large ones keep opening the cache cheap (each has a header the kernel reads in)."""
    average = dataset.data.nbytes / max(1, len(dataset))
    return int(min(1 << 16, max(1, BATCH_BYTES // max(1.0, average))))


def _shard_count(dataset) -> int:
    return max(1, min(len(dataset), math.ceil(dataset.data.nbytes / SHARD_BYTES)))


def _shard_bounds(total: int, shards: int, index: int) -> tuple[int, int]:
    return total * index // shards, total * (index + 1) // shards


def _token_count(shard) -> int:
    column = shard.data.table.column("input_ids")
    return sum(len(chunk.flatten()) for chunk in column.chunks)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


class PackedTokens:
    """Every document's ids back to back, EOS between them, read from the (memory-mapped) shards:
    nothing is copied until a block is read."""

    def __init__(self, shards: list, limit: int | None = None):
        self.chunks = []
        for shard in shards:
            for chunk in shard.data.table.column("input_ids").chunks:
                values = chunk.flatten().to_numpy(zero_copy_only=True)
                if len(values):
                    self.chunks.append(values)
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        total = int(self.starts[-1])
        self.length = min(total, limit) if limit is not None else total
        self.shards = shards  # keep the memory maps open

    def __len__(self) -> int:
        return self.length

    def read(self, start: int, count: int) -> np.ndarray:
        """Ids [start, start + count) as int64, copied out of the maps."""
        count = max(0, min(count, self.length - start))
        out = np.empty(count, np.int64)
        chunk = int(np.searchsorted(self.starts, start, side="right")) - 1
        filled = 0
        while filled < count:
            offset = start + filled - int(self.starts[chunk])
            piece = self.chunks[chunk][offset : offset + count - filled]
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
            chunk += 1
        return out


def packed_tokens(
    corpus: Corpus,
    tokenizer,
    prep: Preparation,
    max_tokens: int | None = None,
    cache: Path | None = None,
    num_proc: int | None = None,
) -> PackedTokens | None:
    """The corpus as one token stream (None when stopped); --max-tokens keeps its first N tokens."""
    if max_tokens is not None and max_tokens < 2:
        raise LLMError("--max-tokens must be at least 2")
    shards = tokenized_shards(corpus, tokenizer, prep, max_tokens, cache, num_proc)
    return None if shards is None else PackedTokens(shards, max_tokens)


def cached_examples(
    corpus: Corpus,
    tokenizer,
    make: Callable[[list[dict], Callable], list[dict]],
    key: str,
    prep: Preparation,
    features,
    cache: Path | None = None,
):
    """Fine-tuning examples built by `make(records, where)` over map batches, cached like the tokens;
    None when stopped."""
    dataset = corpus.dataset
    total = len(dataset)
    directory = None
    key = hashlib.sha256(f"{key}|{tokenizer_key(tokenizer)}|v{FORMAT_VERSION}".encode()).hexdigest()[:16]
    if corpus.cacheable and cache is not None:
        directory = cache / "examples" / f"{corpus.content[:16]}{dataset._fingerprint}-{key}"
        directory.mkdir(parents=True, exist_ok=True)
    progress = {"rows": 0}
    prep.report("tokenizing", 0, total)

    def build(batch, indices):
        if prep.stopped:
            raise _Stopped
        records = [dict(zip(batch, values)) for values in zip(*batch.values())]
        examples = make(records, lambda row: lambda: corpus.where(indices[row]))
        progress["rows"] += len(indices)
        prep.report("tokenizing", progress["rows"], total)
        return {name: [e[name] for e in examples] for name in ("input_ids", "labels")}

    cached = directory / "examples.arrow" if directory else None
    if cached is not None and cached.exists() and not _readable(cached):
        cached.unlink()  # a damaged entry (truncated, overwritten): dropped, and rebuilt below
    try:
        with datasets_bars(False):
            mapped = dataset.map(
                build,
                batched=True,
                batch_size=BATCH_ROWS,
                with_indices=True,
                remove_columns=dataset.column_names,
                features=features,
                cache_file_name=str(cached) if cached else None,
                keep_in_memory=directory is None,
                new_fingerprint=key,
            )
    except _Stopped:
        return None
    except MemoryError:
        raise LLMError(f"out of memory while tokenizing {corpus.origin}: try --sample-docs N") from None
    if progress["rows"] < total:
        prep.report("tokenizing", total, total)
    return Rows(mapped)


def _readable(path: Path) -> bool:
    """Arrow can read every record batch of the file (a truncated one fails here, not mid-training)."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            for _ in reader:
                pass
    except (OSError, pa.ArrowException):
        return False
    return True


class Rows(Sequence):
    """A dataset seen as a list of example dicts (what the padded batches index and slice)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.dataset[i] for i in range(*index.indices(len(self)))]
        return self.dataset[index]


def clear_cache(cache: Path):
    """Remove every cached tokenization (the readers' Arrow copies live in cache/'datasets')."""
    for name in ("tokens", "examples", "datasets"):
        shutil.rmtree(cache / name, ignore_errors=True)


def token_stream(tokenizer, texts: list[str]):
    """All texts as one long id tensor, documents separated by EOS (for small in-memory texts)."""
    import torch

    ids = documents_to_ids(list(texts), tokenizer, token_dtype(tokenizer)).flatten().to_numpy()
    return torch.from_numpy(ids.astype(np.int64))
