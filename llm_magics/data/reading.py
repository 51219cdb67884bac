"""Reading data into a Hugging Face `datasets.Dataset` (Arrow, memory-mapped from the cache).

--data accepts a file (.txt, .jsonl/.ndjson/.json, .csv, .parquet), a folder of such files (one format),
a folder written by `Dataset.save_to_disk`, or nothing / '-' for the cell body. A .txt file, and a cell
body that is not JSONL, hold one document per blank-line-separated block. JSONL is decided by the
suffix for files (a .txt whose lines start with '{' is text); only the cell body is sniffed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import LLMError
from ..base.interrupts import import_whole
from ..options import check_bounds
from .fingerprint import content_key

if TYPE_CHECKING:
    from datasets import Dataset

TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "text"}
BUILDERS = {**TEXT_SUFFIXES, ".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
LINE_FORMATS = {"json", "csv"}  # formats whose rows have a line number worth naming


@dataclass
class Corpus:
    """The rows of a data source and how to name a row in an error message."""

    dataset: Dataset
    origin: str  # the file or folder as the user typed it, or "the cell body"
    builder: str  # text, json, csv, parquet, arrow (save_to_disk) or body
    text_field: str = "text"
    files: list[Path] = field(default_factory=list)
    content: str = ""  # a key of the files' bytes (data/fingerprint.py): cached tokens are keyed on it
    body_lines: list[int] | None = None  # cell-body JSONL: the line of each row

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def cacheable(self) -> bool:
        """Rows that live in Arrow files (not the cell body) can have cached tokens."""
        return bool(self.dataset.cache_files)

    def where(self, row: int) -> str:
        """'corpus.jsonl, line 12' for an error about row `row` (0-based)."""
        if self.body_lines is not None:
            return f"line {self.body_lines[row]}"
        if self.builder == "json" and len(self.files) == 1 and self.files[0].suffix != ".json":
            return f"{self.origin}, line {_nth_record_line(self.files[0], row)}"
        if self.builder == "text":
            return f"{self.origin}, block {row + 1}"
        return f"{self.origin}, row {row + 1}"


def read_corpus(
    data: str | None = None,
    body: str | None = None,
    text_field: str | None = None,
    sample_docs: int | None = None,
    cache: Path | None = None,
) -> Corpus:
    """The rows of --data (or of the cell body when data is None or '-'), optionally only the first N.
    `cache`: where datasets keeps its Arrow copy of files (default <cache_dir()>/data/datasets)."""
    import_whole("datasets")  # before anything that can be interrupted: never half-imported
    try:
        if data and data != "-":
            corpus = _read_path(data, cache)
        else:
            corpus = _read_body(body or "")
    except MemoryError:
        where = data if data and data != "-" else "the cell body"
        raise LLMError(f"out of memory while reading {where}: try --sample-docs N or a smaller file") from None
    if text_field:
        if text_field not in corpus.dataset.column_names:
            raise LLMError(
                f"{corpus.origin} has no column {text_field!r} (--text-field); "
                f"its columns: {', '.join(corpus.dataset.column_names)}"
            )
        corpus.text_field = text_field
    _check_columns(corpus)
    if sample_docs is not None:
        check_bounds({"sample_docs": sample_docs}, "train", only=("sample_docs",))
        corpus.dataset = corpus.dataset.select(range(min(sample_docs, len(corpus.dataset))))
    return corpus


def _read_path(data: str, cache: Path | None) -> Corpus:
    path = Path(data).expanduser()
    if not path.exists():
        raise LLMError(f"data file not found: {data}")
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return Corpus(_load_from_disk(path, data), data, "arrow")
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in BUILDERS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise LLMError(f"{data} has no data files ({', '.join(sorted(BUILDERS))})")
        builders = {BUILDERS[p.suffix.lower()] for p in files}
        if len(builders) > 1:
            raise LLMError(f"{data} mixes formats ({', '.join(sorted(builders))}): put one format in a folder")
    else:
        files = [path]
        if path.suffix.lower() not in BUILDERS:
            builders = {"text"}  # an unknown suffix is read as plain text
        else:
            builders = {BUILDERS[path.suffix.lower()]}
        if path.stat().st_size == 0 or (builders == {"text"} and not _has_text(path)):
            raise LLMError(f"no data: {data} is empty")
    builder = builders.pop()
    if not any(_has_rows(builder, f) for f in files):  # the readers' own words for this are cryptic
        raise LLMError(f"no data: {data} has no rows")
    content = content_key(files, path if path.is_dir() else None)
    dataset = _load(builder, files, data, cache, content)
    if builder == "json":  # Arrow's JSON reader keeps invalid UTF-8 bytes as they are: refuse them here
        _check_utf8(dataset, Corpus(dataset, data, builder, files=files))
    if len(dataset) == 0:
        raise LLMError(f"no data: {data} has no records")
    return Corpus(dataset, data, builder, files=files, content=content)


def _has_rows(builder: str, path: Path) -> bool:
    """False for a parquet file of 0 rows or a CSV of its header alone (other formats: checked after reading)."""
    if builder == "parquet":
        import pyarrow.parquet

        try:
            return pyarrow.parquet.ParquetFile(path).metadata.num_rows > 0
        except Exception:  # not a readable parquet: the reader says why
            return True
    if builder == "csv":
        with open(path, "rb") as handle:
            lines = (line for line in handle if line.strip())
            return next(lines, None) is not None and next(lines, None) is not None
    return True


def _has_text(path: Path) -> bool:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            if chunk.strip():
                return True
    return False


def _load(builder: str, files: list[Path], origin: str, cache: Path | None, content: str):
    import datasets

    options = {"sample_by": "paragraph"} if builder == "text" else {}
    if cache is None:
        from ..loading import cache_dir

        cache = cache_dir() / "data" / "datasets"
    cache = cache / f"content-{content[:32]}"  # datasets keys its copy on path + mtime: not enough alone
    try:
        with _quiet_datasets():
            return datasets.load_dataset(
                builder, data_files=[str(f.resolve()) for f in files], split="train", cache_dir=str(cache), **options
            )
    except (MemoryError, LLMError, KeyboardInterrupt):
        raise
    except Exception as error:  # datasets wraps the parser's error; find the line ourselves
        if isinstance(error.__cause__ or error.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        if builder == "json":
            for file in files:
                _find_bad_json(file, origin if len(files) == 1 else str(file))
        cause = error.__cause__ or error
        if isinstance(cause, UnicodeDecodeError):
            raise LLMError(f"cannot read {origin}: not UTF-8 text ({cause.reason} at byte {cause.start})") from None
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise LLMError(f"cannot read {origin} as {builder}: {message}") from None


def _load_from_disk(path: Path, origin: str):
    import datasets

    try:
        with _quiet_datasets():
            loaded = datasets.load_from_disk(str(path))
    except (MemoryError, LLMError, KeyboardInterrupt):
        raise
    except IndexError:  # datasets cannot concatenate zero Arrow files
        raise LLMError(f"no data: {origin} has no records") from None
    except Exception as error:  # a truncated or corrupt .arrow file, a broken state.json
        raise LLMError(f"cannot read {origin} (written by save_to_disk): {_first_line(error)}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise LLMError(f"{origin} holds splits {', '.join(loaded)}: point --data at one of them")
        loaded = loaded["train"]
    if len(loaded) == 0:
        raise LLMError(f"no data: {origin} has no records")
    return loaded


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_utf8(dataset, corpus: Corpus):
    """One line naming the first record whose text is not valid UTF-8. Arrow checks it in C, a column at
    a time, memory-mapped (no copy of the data in our memory)."""
    import re

    import pyarrow as pa

    for name in dataset.column_names:
        column = dataset.data.table.column(name)
        flat = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        row = 0
        for chunk in column.chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid as error:
                found = re.search(r"string index (\d+)", str(error))
                where = corpus.where(row + int(found.group(1))) if found and flat else corpus.origin
                raise LLMError(f"cannot read {where}: not UTF-8 text (in '{name}')") from None
            row += len(chunk)


def _read_body(content: str) -> Corpus:
    import datasets

    if not content.strip():
        raise LLMError("no data: put the text in the cell body or pass --data FILE")
    if _looks_like_jsonl(content):
        records, lines = _parse_jsonl(content, "the cell body")
        dataset = datasets.Dataset.from_list(records, on_mixed_types="use_json")
        return Corpus(dataset, "the cell body", "body", body_lines=lines)
    return Corpus(datasets.Dataset.from_dict({"text": text_blocks(content)}), "the cell body", "body")


def text_blocks(content: str) -> list[str]:
    """Documents of plain text: blocks separated by a blank line (as `datasets`' paragraph reader splits)."""
    return [block for block in content.split("\n\n") if block.strip()]


def _looks_like_jsonl(content: str) -> bool:
    lines = [line for line in content.splitlines() if line.strip()]
    return bool(lines) and all(line.lstrip().startswith("{") for line in lines)


def _parse_jsonl(content: str, origin: str) -> tuple[list[dict], list[int]]:
    records, lines = [], []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        records.append(_parse_line(line, f"{origin}, line {number}" if origin != "the cell body" else f"line {number}"))
        lines.append(number)
    return records, lines


def _parse_line(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise LLMError(f"{where}: invalid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise LLMError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def _find_bad_json(file: Path, origin: str):
    """Raise the LLMError naming the first bad line of a JSON Lines (or JSON) file, if there is one."""
    if file.suffix.lower() == ".json":
        try:
            with open(file, encoding="utf-8") as handle:
                json.load(handle)
        except json.JSONDecodeError as error:
            raise LLMError(f"{origin}, line {error.lineno}: invalid JSON ({error.msg})") from None
        except (UnicodeDecodeError, OSError):
            return
        return
    try:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    record = _parse_line(line, f"{origin}, line {number}")
                    if "messages" in record:  # mixed shapes are what Arrow cannot read
                        checked_messages(record["messages"], lambda number=number: f"{origin}, line {number}")
    except UnicodeDecodeError:
        return


def _nth_record_line(file: Path, row: int) -> int:
    """The line of the row-th (0-based) non-blank line: JSON Lines readers skip blank lines."""
    seen = -1
    with open(file, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return number
    return row + 1


def _check_columns(corpus: Corpus):
    columns = set(corpus.dataset.column_names)
    where = corpus.where(0) if corpus.builder in ("json", "body") else corpus.origin
    kind = getattr(corpus.dataset.features.get(corpus.text_field), "dtype", "string")
    if corpus.text_field in columns and kind not in ("string", "large_string", "null"):
        # numbers (a JSON array of ints, a parquet column of ints) would be scored as their digits
        raise LLMError(
            f"{where}: needs a '{corpus.text_field}' field holding text (it holds {kind} values; "
            "--text-field NAME picks another column)"
        )
    if corpus.text_field in columns or "messages" in columns or {"prompt", "response"} <= columns:
        return
    raise LLMError(
        f"{where}: needs a '{corpus.text_field}', 'messages' or 'prompt'+'response' field "
        f"(has {sorted(columns)}; --text-field NAME picks another column)"
    )


def text_of(row: dict, text_field: str, where) -> str:
    """The plain text of one row, for language-model pre-training and perplexity."""
    value = row.get(text_field)
    if value is not None:
        return str(value)
    if row.get("messages") is not None:
        return "\n".join(message["content"] for message in checked_messages(row["messages"], where))
    if row.get("prompt") is not None and row.get("response") is not None:
        return f"{row['prompt']}\n{row['response']}"
    present = sorted(k for k, v in row.items() if v is not None)
    raise LLMError(f"{where()}: needs a '{text_field}', 'messages' or 'prompt'+'response' field (has {present})")


def checked_messages(messages, where) -> list[dict]:
    """`messages` must be a list of {"role": str, "content": str}; else one line naming the row."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            pass
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise LLMError(
            f'{where()}: \'messages\' must be a list of {{"role": ..., "content": ...}} strings, got {_short(messages)}'
        )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class _quiet_datasets:
    """datasets logs warnings and errors ("Failed to load JSON from file ... ArrowInvalid") before raising
    a parse error that we report ourselves as one line."""

    def __enter__(self):
        import datasets

        self.level = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)

    def __exit__(self, *exc):
        import datasets

        datasets.logging.set_verbosity(self.level)
