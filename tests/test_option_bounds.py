"""The bounds each option declares (llm_magics/options.py) are the ones the magics and the API enforce: for
every bounded option, a value just outside is one line naming the flag, and the boundary itself is accepted."""

import pytest

from llm_magics import options
from llm_magics.base.errors import LLMError
from llm_magics.generation import SamplingSettings
from llm_magics.training import TrainOptions
from support import one_error_line, run

CORPUS = "The cat sat on the mat. The dog sat on the log. " * 20
# What each command's line needs besides the option under test (kept tiny: the check comes first).
LINES = {
    "generate": ("generate --max-new-tokens 2 {option} Hello", None),
    "train": ("train --from-scratch --steps 1 --seq-len 16 --no-progress --no-widget {option}", CORPUS),
    "finetune": ("finetune --lora --steps 1 --seq-len 16 --no-progress --no-widget {option}", CORPUS),
    "attribute": ("attribute --method saliency --max-new-tokens 1 {option} The cat", None),
}


def _outside(bounds: options.Bounds, kind) -> list:
    """Values just outside the bounds: below (or at an open) low, and above high."""
    step = 1 if kind is int else 0.01
    values = []
    if bounds.low is not None:
        values.append(kind(bounds.low) if bounds.low_open else kind(bounds.low - step))
    if bounds.high is not None:
        values.append(kind(bounds.high + step))
    return values


def _bounded(command):
    return [o for o in options.options(command) if o.bounds is not None]


CASES = [
    (command, o, value)
    for command in LINES
    for o in _bounded(command)
    for value in _outside(o.bounds, o.type if o.type in (int, float) else float)
]


def test_every_bounded_option_of_every_command_is_covered():
    # chat, playground and lr-find share these declarations (the same Option objects): each is tried once
    declared = {o for c in options.COMMANDS for o in _bounded(c)}
    assert declared == {o for _, o, _ in CASES}
    assert len(CASES) >= 25


@pytest.mark.slow
@pytest.mark.parametrize("command, option, value", CASES, ids=[f"{c}{o.flag}={v}" for c, o, v in CASES])
def test_a_value_outside_the_declared_bounds_is_one_line(shell, capsys, magic_session, command, option, value):
    line, body = LINES[command]
    extra = "--eval-every 1 --eval-data -" if option.name == "early_stopping" else ""
    run(shell, line.format(option=f"{option.flag} {value} {extra}".strip()), body)
    error = one_error_line(capsys)
    assert error.startswith(f"llm {command}: {option.flag} must be "), error
    assert error.endswith(f"; got {value!r}"), error


def test_the_messages_read_as_written():
    # Hand-written: the wording the README's users see.
    with pytest.raises(LLMError, match=r"^--top-p must be in \(0, 1\]; got 0$"):
        SamplingSettings(top_p=0).validated()
    with pytest.raises(LLMError, match=r"^--temperature must be > 0 \(use --greedy for deterministic output\); got 0$"):
        SamplingSettings(temperature=0).validated()
    with pytest.raises(LLMError, match=r"^--top-k must be >= 0 \(0 turns it off\); got -1$"):
        SamplingSettings(top_k=-1).validated()
    with pytest.raises(LLMError, match=r"^--seq-len must be at least 2; got 1$"):
        TrainOptions(seq_len=1).validated()


@pytest.mark.slow
def test_lora_rank_from_python_is_a_whole_number_within_the_declared_bound():
    from llm_magics import Session

    s = Session()
    s.load("default")
    for rank, message in (
        (2.5, r"^--lora-r must be a whole number; got 2\.5$"),
        (0, r"^--lora-r must be at least 1; got 0$"),
    ):
        with pytest.raises(LLMError, match=message):
            s.finetune(text=CORPUS, lora=True, lora_r=rank, steps=1, seq_len=16, progress=False)
    assert "lora" not in type(s.loaded.model).__name__.lower()  # refused before any adapter was added


def test_the_boundary_values_themselves_are_accepted():
    for o in _bounded("generate"):
        edge = o.bounds.high if o.bounds.low_open else o.bounds.low
        SamplingSettings(**{o.name: edge}).validated()
    train_fields = set(TrainOptions.__dataclass_fields__)
    for o in _bounded("finetune"):
        if o.name in train_fields:
            edge = o.bounds.low + (1e-6 if o.bounds.low_open else 0)
            TrainOptions(**{o.name: o.type(edge) if o.type in (int, float) else edge}).validated()
