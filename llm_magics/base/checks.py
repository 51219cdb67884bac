"""Checks on numbers a user types, shared by every command's options (one line each, as LLMError)."""

from __future__ import annotations

import math

from .errors import LLMError

SEED_MAX = 2**32 - 1  # numpy's limit, and so transformers.set_seed's


def check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise LLMError(f"--seed must be a whole number from 0 to {SEED_MAX}; got {seed!r}")


def check_finite(**values) -> None:
    """inf and nan pass every `> 0` check but train or sample nothing meaningful."""
    for name, value in values.items():
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise LLMError(f"--{name.replace('_', '-')} must be a finite number; got {value!r}")


def parse_layer_ranges(flag: str, text: str) -> list[int]:
    """'0,5,20-29' -> [0, 5, 20, ..., 29]: whole numbers and ascending ranges A-B (B included), one line for
    anything else; a reversed range (5-2) would name no number, so it is refused instead of selecting nothing."""
    numbers: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise LLMError(f"{flag} {text!r}: write layer numbers and ranges, e.g. 0,5,20-29") from None
        if high < low:
            raise LLMError(f"{flag} {part.strip()}: the range is reversed; write {high}-{low}")
        numbers.extend(range(low, high + 1))
    return numbers
