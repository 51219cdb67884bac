"""A default is declared once, in the option registry (llm_magics/options.py): no module below the API
restates one. Read from the source with `ast`: a parameter default, or an `x or VALUE` fallback, whose name
is an option's and whose value is that option's declared default (`config="tiny"`, `steps or 100`) is a
second declaration that would silently drift from the first. None (unset) is not counted."""

import ast
from pathlib import Path

from llm_magics import options

PACKAGE = Path(options.__file__).parent
BELOW_API = ["training", "data", "inspect", "evaluation.py", "generation.py", "lr_finder.py", "runs.py"]
DECLARED: dict[str, list] = {}
for _, declared in options.COMMANDS.values():
    for option in declared:
        if option.default is not None:
            DECLARED.setdefault(option.name, []).append(option.default)


def _same(value, default) -> bool:
    return type(value) is type(default) and value == default  # 0 is not False, 1 is not 1.0


def repeated_defaults(source: str) -> list[str]:
    """`line: name = value` for every literal default in `source` that repeats a declared default."""
    found = []
    for node in ast.walk(ast.parse(source)):
        pairs: list[tuple[str, ast.expr | None]] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            positional = node.args.posonlyargs + node.args.args
            pairs += [
                (a.arg, d) for a, d in zip(positional[len(positional) - len(node.args.defaults) :], node.args.defaults)
            ]
            pairs += [(a.arg, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults)]
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            first = node.values[0]
            name = first.id if isinstance(first, ast.Name) else first.attr if isinstance(first, ast.Attribute) else None
            if name:
                pairs.append((name, node.values[-1]))
        for name, default in pairs:
            if isinstance(default, ast.Constant) and any(_same(default.value, d) for d in DECLARED.get(name, [])):
                found.append(f"{default.lineno}: {name} = {default.value!r}")
    return found


def test_no_module_below_the_api_restates_a_declared_default():
    files = [
        p
        for place in BELOW_API
        for p in ([PACKAGE / place] if place.endswith(".py") else (PACKAGE / place).rglob("*.py"))
    ]
    assert len(files) > 20
    repeats = [f"{path.relative_to(PACKAGE)}:{line}" for path in files for line in repeated_defaults(path.read_text())]
    assert repeats == [], "take these from the RunSpec (or options.defaults), not a literal"


def test_the_reader_catches_a_planted_repeat():
    """The oracle for the check above: hand-written sources with known repeats, and near misses."""
    planted = """
def train(corpus, *, config="tiny", arch="llama", batch_size=8, seed=0):
    steps = options.steps or 100
    return lambda lr_r=8: None

def fine(corpus, config="small", seed=False, steps=None, batch_size=8.0, other="tiny"):
    return corpus.steps or 0
"""
    assert sorted(repeated_defaults(planted)) == [
        "2: arch = 'llama'",
        "2: batch_size = 8",
        "2: config = 'tiny'",
        "2: seed = 0",
        "3: steps = 100",
    ]
    assert repeated_defaults("def f(lora_r=8):\n    pass\n") == ["1: lora_r = 8"]
