"""Reading training data (cell body, .txt or .jsonl) and turning it into token tensors.

Record shapes understood in .jsonl (one JSON object a line):
  {"text": ...}                                  plain language-model text
  {"prompt": ..., "response": ...}               instruction tuning (prompt tokens masked)
  {"messages": [{"role": ..., "content": ...}]}  chat tuning (only assistant turns trained)
  {"text": ..., "label": ...}                    sequence classification
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import LLMError

IGNORE_INDEX = -100  # label value the loss skips (prompt and padding tokens)


def read_records(data: str | None = None, body: str | None = None) -> list[dict]:
    """Records from --data FILE, or from the cell body when FILE is '-' or not given."""
    if data and data != "-":
        path = Path(data).expanduser()
        if not path.is_file():
            raise LLMError(f"data file not found: {data}")
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise LLMError(f"cannot read data file {data}: {error}") from None
        origin = str(data)
        as_jsonl = path.suffix in (".jsonl", ".ndjson") or _looks_like_jsonl(content)
    else:
        content, origin = body or "", "the cell body"
        as_jsonl = _looks_like_jsonl(content)
    if not content.strip():
        raise LLMError(f"no data: {origin} is empty" if data and data != "-" else
                       "no data: put the text in the cell body or pass --data FILE")
    return _parse_jsonl(content, origin) if as_jsonl else [{"text": content, "_line": 1}]


def _looks_like_jsonl(content: str) -> bool:
    lines = [line for line in content.splitlines() if line.strip()]
    return bool(lines) and all(line.lstrip().startswith("{") for line in lines)


def _parse_jsonl(content: str, origin: str) -> list[dict]:
    records = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise LLMError(f"{origin}, line {number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise LLMError(f"{origin}, line {number}: expected a JSON object, got {type(record).__name__}")
        if not ({"text", "messages"} & record.keys() or {"prompt", "response"} <= record.keys()):
            raise LLMError(f"{origin}, line {number}: needs a 'text', 'messages' or "
                           f"'prompt'+'response' field (has {sorted(record)})")
        record["_line"] = number
        records.append(record)
    if not records:
        raise LLMError(f"no data: {origin} has no records")
    return records


def texts_of(records: list[dict]) -> list[str]:
    """The plain text of each record, for language-model pre-training."""
    texts = []
    for record in records:
        if "text" in record:
            texts.append(str(record["text"]))
        elif "messages" in record:
            texts.append("\n".join(str(m.get("content", "")) for m in record["messages"]))
        else:
            texts.append(f"{record['prompt']}\n{record['response']}")
    return texts


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """All texts as one long id sequence, documents separated by EOS."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


class RandomWindows:
    """Batches of random seq_len windows over a token stream (nanoGPT style): works for a
    three-line corpus and for a large one alike, and is resumable from its generator state."""

    def __init__(self, stream: torch.Tensor, seq_len: int, batch_size: int, seed: int = 0):
        if len(stream) < 2:
            raise LLMError("the training text is too short: it needs at least 2 tokens")
        self.stream = stream
        self.seq_len = min(seq_len, len(stream))
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> dict:
        last_start = len(self.stream) - self.seq_len
        starts = torch.randint(0, last_start + 1, (self.batch_size,), generator=self.generator)
        input_ids = torch.stack([self.stream[s:s + self.seq_len] for s in starts])
        return {"input_ids": input_ids, "labels": input_ids.clone()}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict):
        self.generator.set_state(state["generator"])


def supervised_examples(tokenizer, records: list[dict], seq_len: int) -> list[dict]:
    """input_ids/labels per record; prompt tokens get IGNORE_INDEX so only answers are learned."""
    examples = []
    for record in records:
        if "text" in record:
            ids = tokenizer(str(record["text"]), add_special_tokens=False)["input_ids"]
            ids = ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
            examples.append({"input_ids": ids, "labels": list(ids)})
            continue
        messages = record.get("messages") or [
            {"role": "user", "content": str(record["prompt"])},
            {"role": "assistant", "content": str(record["response"])}]
        examples.append(_masked_conversation(tokenizer, messages, record["_line"]))
    for example in examples:
        example["input_ids"] = example["input_ids"][:seq_len]
        example["labels"] = example["labels"][:seq_len]
    return [e for e in examples if any(label != IGNORE_INDEX for label in e["labels"][1:])]


def _masked_conversation(tokenizer, messages: list[dict], line: int) -> dict:
    if any(not isinstance(m, dict) or "role" not in m or "content" not in m for m in messages):
        raise LLMError(f"line {line}: each message needs 'role' and 'content'")
    input_ids: list[int] = []
    labels: list[int] = []
    for index, message in enumerate(messages):
        # Tokenize the conversation up to and including this turn; the new ids are this turn's.
        prefix = _render(tokenizer, messages[:index + 1], add_generation_prompt=False)
        if message["role"] == "assistant":
            prompt_part = _render(tokenizer, messages[:index], add_generation_prompt=True)
            new_prompt_ids = prompt_part[len(input_ids):]
            input_ids += new_prompt_ids
            labels += [IGNORE_INDEX] * len(new_prompt_ids)
        new_ids = prefix[len(input_ids):]
        input_ids += new_ids
        labels += new_ids if message["role"] == "assistant" else [IGNORE_INDEX] * len(new_ids)
    return {"input_ids": input_ids, "labels": labels}


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        if not messages:
            return []
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                            tokenize=True, return_dict=True)["input_ids"]
        return list(ids)
    # No chat template (e.g. a model trained from scratch): "role: content" lines.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    if add_generation_prompt:
        text += "assistant: "
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if messages and messages[-1]["role"] == "assistant" and not add_generation_prompt \
            and tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids


def classification_examples(tokenizer, records: list[dict], labels: list[str], seq_len: int) -> list[dict]:
    index = {label: i for i, label in enumerate(labels)}
    examples = []
    for record in records:
        if "text" not in record or "label" not in record:
            raise LLMError(f"line {record['_line']}: classification data needs 'text' and 'label'")
        label = str(record["label"])
        if label not in index:
            raise LLMError(f"line {record['_line']}: label {label!r} is not one of --labels {','.join(labels)}")
        ids = tokenizer(str(record["text"]), truncation=True, max_length=seq_len)["input_ids"]
        examples.append({"input_ids": ids, "labels": index[label]})
    return examples


def pad_batch(examples: list[dict], pad_id: int) -> dict:
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    token_labels = isinstance(examples[0]["labels"], list)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long) if token_labels \
        else torch.tensor([e["labels"] for e in examples], dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        attention_mask[row, :n] = 1
        if token_labels:
            labels[row, :n] = torch.tensor(example["labels"])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
