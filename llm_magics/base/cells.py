"""An empty-bodied `%%llm` cell (`%%llm finetune --data FILE` alone in a cell, as the README writes it)
runs as the line magic `%llm` with the same line: IPython itself refuses a cell magic with no body."""

from __future__ import annotations


def empty_llm_cell_as_line(lines: list[str]) -> list[str]:
    """An input transformer (shell.input_transformers_cleanup): lines in, lines out."""
    if not lines or not lines[0].startswith("%%llm") or any(line.strip() for line in lines[1:]):
        return lines
    first = lines[0].rstrip("\r\n")
    if first != "%%llm" and not first[len("%%llm")].isspace():
        return lines  # %%llmfoo is another magic
    return ["%" + first[2:] + "\n"]


def register(shell) -> None:
    transformers = shell.input_transformers_cleanup
    if empty_llm_cell_as_line not in transformers:
        transformers.append(empty_llm_cell_as_line)
