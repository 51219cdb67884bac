"""Fine-tuning examples: one (input_ids, labels) per record, prompt tokens masked, or a class label.

Record shapes:
  {"text": ...}                                  plain language-model text
  {"prompt": ..., "response": ...}               instruction tuning (prompt tokens masked)
  {"messages": [{"role": ..., "content": ...}]}  chat tuning (only assistant turns trained)
  {"text": ..., "label": ...}                    sequence classification
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..base.errors import LLMError
from .reading import checked_messages

IGNORE_INDEX = -100  # label value the loss skips (prompt and padding tokens)


def _default_where(row: int) -> Callable[[], str]:
    return lambda: f"record {row + 1}"


def supervised_examples(
    tokenizer,
    records: list[dict],
    seq_len: int,
    text_field: str = "text",
    where: Callable[[int], Callable[[], str]] = _default_where,
) -> list[dict]:
    """input_ids/labels per record; prompt tokens get IGNORE_INDEX so only answers are learned.
    Records with nothing left to learn after masking and truncation are dropped."""
    from .tokens import encode

    examples = []
    for row, record in enumerate(records):
        if record.get(text_field) is not None:
            ids = encode(tokenizer, str(record[text_field]))
            ids = ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
            example = {"input_ids": ids, "labels": list(ids)}
        elif record.get("messages") is not None:
            example = _masked_conversation(tokenizer, checked_messages(record["messages"], where(row)))
        elif record.get("prompt") is not None and record.get("response") is not None:
            example = _masked_conversation(
                tokenizer,
                [
                    {"role": "user", "content": str(record["prompt"])},
                    {"role": "assistant", "content": str(record["response"])},
                ],
            )
        else:
            present = sorted(k for k, v in record.items() if v is not None and not k.startswith("_"))
            raise LLMError(
                f"{where(row)()}: needs a '{text_field}', 'messages' or 'prompt'+'response' field (has {present})"
            )
        example["input_ids"] = example["input_ids"][:seq_len]
        example["labels"] = example["labels"][:seq_len]
        if any(label != IGNORE_INDEX for label in example["labels"][1:]):
            examples.append(example)
    return examples


def _masked_conversation(tokenizer, messages: list[dict]) -> dict:
    input_ids: list[int] = []
    labels: list[int] = []
    for index, message in enumerate(messages):
        # Tokenize the conversation up to and including this turn; the new ids are this turn's.
        prefix = _render(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if message["role"] == "assistant":
            prompt_part = _render(tokenizer, messages[:index], add_generation_prompt=True)
            new_prompt_ids = prompt_part[len(input_ids) :]
            input_ids += new_prompt_ids
            labels += [IGNORE_INDEX] * len(new_prompt_ids)
        new_ids = prefix[len(input_ids) :]
        input_ids += new_ids
        labels += new_ids if message["role"] == "assistant" else [IGNORE_INDEX] * len(new_ids)
    return {"input_ids": input_ids, "labels": labels}


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    from .tokens import encode

    if getattr(tokenizer, "chat_template", None):
        if not messages:
            return []
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
        )["input_ids"]
        return list(ids)
    # No chat template (e.g. a model trained from scratch): "role: content" lines.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    if add_generation_prompt:
        text += "assistant: "
    ids = encode(tokenizer, text)
    if (
        messages
        and messages[-1]["role"] == "assistant"
        and not add_generation_prompt
        and tokenizer.eos_token_id is not None
    ):
        ids = ids + [tokenizer.eos_token_id]
    return ids


def check_labels(labels: list[str] | None) -> list[str]:
    if not labels or len(labels) < 2:
        raise LLMError("--task classify needs --labels with at least two labels, e.g. --labels neg,pos")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise LLMError(f"--labels lists {', '.join(repeated)} more than once: give each class once")
    return labels


def classification_examples(
    tokenizer,
    records: list[dict],
    labels: list[str],
    seq_len: int,
    text_field: str = "text",
    where: Callable[[int], Callable[[], str]] = _default_where,
) -> list[dict]:
    index = {label: i for i, label in enumerate(check_labels(labels))}
    texts, targets = [], []
    for row, record in enumerate(records):
        if record.get(text_field) is None or record.get("label") is None:
            raise LLMError(f"{where(row)()}: classification data needs '{text_field}' and 'label'")
        label = str(record["label"])
        if label not in index:
            raise LLMError(f"{where(row)()}: label {label!r} is not one of --labels {','.join(labels)}")
        texts.append(str(record[text_field]))
        targets.append(index[label])
    if not texts:
        return []
    ids = tokenizer(texts, truncation=True, max_length=seq_len)["input_ids"]
    return [{"input_ids": list(i), "labels": t} for i, t in zip(ids, targets)]


def pad_batch(examples: list[dict], pad_id: int) -> dict:
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    token_labels = isinstance(examples[0]["labels"], list)
    labels = (
        torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        if token_labels
        else torch.tensor([e["labels"] for e in examples], dtype=torch.long)
    )
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        attention_mask[row, :n] = 1
        if token_labels:
            labels[row, :n] = torch.tensor(example["labels"])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
