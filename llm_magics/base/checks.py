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
