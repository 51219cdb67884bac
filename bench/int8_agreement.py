"""How far `--quantize int8` greedy text agrees with fp32, on the packaged SmolLM2-135M: for each of 32 varied
prompts (prose, code, lists, other languages), fp32 and int8 greedy-decode the same number of tokens, and we
report

- tokens until the first difference (the whole length when none): median and min per kind of prompt;
- teacher-forced top-1 agreement: one forward pass of each model over prompt + the fp32 continuation, and the
  share of those continuation positions where int8's argmax equals fp32's (a difference does not cascade:
  both models always see the same prefix).

    python bench/int8_agreement.py [--tokens 24]
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table  # noqa: E402

from llm_magics import Session  # noqa: E402

PROMPTS = {
    "prose": [
        "The capital of France is",
        "Once upon a time, in a small village,",
        "The lighthouse keeper climbed the narrow stairs every evening",
        "Photosynthesis is the process by which plants",
        "The best way to learn a new language is",
        "In 1969, the first humans landed on the Moon. The mission",
        "She opened the letter slowly, afraid of what it might say.",
        "Climate change affects the oceans in several ways:",
    ],
    "code": [
        "def fibonacci(n):",
        "def add(a, b):\n   ",
        "import numpy as np\n\ndef normalize(x):",
        "for i in range(10):\n    if i % 2 == 0:",
        "class Stack:\n    def __init__(self):",
        "SELECT name, age FROM users WHERE",
        "function greet(name) {\n  return",
        "#include <stdio.h>\n\nint main(void) {",
    ],
    "lists": [
        "Shopping list:\n1. Milk\n2. Eggs\n3.",
        "The planets of the solar system are Mercury, Venus,",
        "Steps to bake bread:\n- Mix flour and water\n-",
        "Monday, Tuesday, Wednesday,",
        "Top five programming languages:\n1.",
        "Ingredients: flour, sugar, butter,",
        "A, B, C, D, E,",
        "Things to pack for a hike:\n*",
    ],
    "other languages": [
        "La capitale de l'Italie est",
        "Il était une fois une petite fille qui",
        "Der schnellste Weg zum Bahnhof ist",
        "El perro corre por el parque y",
        "Mi chiamo Marco e vivo a",
        "O Brasil é o maior país da",
        "Het weer in Amsterdam is vandaag",
        "Я люблю читать книги, потому что",
    ],
}


def greedy(session: Session, ids: torch.Tensor, tokens: int) -> list[int]:
    with torch.inference_mode():
        out = session.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=session.tokenizer.pad_token_id,
        )
    return out[0, ids.shape[1] :].tolist()


def teacher_forced_argmax(session: Session, ids: torch.Tensor, continuation: list[int]) -> list[int]:
    """The model's argmax at each continuation position, given the prompt and the continuation before it."""
    sequence = torch.cat([ids, torch.tensor([continuation])], dim=1)
    with torch.inference_mode():
        logits = session.model(input_ids=sequence).logits[0, ids.shape[1] - 1 : -1]
    return logits.argmax(-1).tolist()


def measure(full: Session, int8: Session, prompts: list[str], tokens: int) -> list[dict]:
    """Per prompt: tokens until int8's greedy text first differs from fp32's, and the teacher-forced count of
    positions where int8's top-1 equals fp32's."""
    rows = []
    for prompt in prompts:
        ids = full.tokenizer(prompt, return_tensors="pt")["input_ids"]
        exact, quantized = greedy(full, ids, tokens), greedy(int8, ids, tokens)
        first = next((i for i, (a, b) in enumerate(zip(exact, quantized)) if a != b), tokens)
        top_fp32 = teacher_forced_argmax(full, ids, exact)
        top_int8 = teacher_forced_argmax(int8, ids, exact)
        agree = sum(a == b for a, b in zip(top_fp32, top_int8))
        rows.append({"prompt": prompt, "first_difference": first, "agree": agree, "positions": len(exact)})
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args()
    torch.manual_seed(0)
    full, int8 = Session(), Session()
    full.load("default")
    int8.load("default", quantize="int8")
    table, everything = [], []
    for kind, prompts in PROMPTS.items():
        rows = measure(full, int8, prompts, args.tokens)
        everything += rows
        table.append(summary_row(kind, rows, args.tokens))
    table.append(summary_row("all", everything, args.tokens))
    print(
        f"fp32 vs `--quantize int8` greedy decoding of {args.tokens} tokens, SmolLM2-135M (packaged), "
        f"{len(everything)} prompts, on {device_name()}"
    )
    print()
    print(
        markdown_table(
            [
                "prompts",
                "n",
                "tokens to first difference: median",
                "min",
                f"identical for all {args.tokens}",
                "teacher-forced top-1 agreement",
            ],
            table,
        )
    )
    print()
    worst = sorted(everything, key=lambda r: r["first_difference"])[:3]
    print(
        "Earliest differences: "
        + "; ".join(f"{r['prompt']!r} after {r['first_difference']} tokens" for r in worst)
        + ". Teacher-forced: each model reads the prompt plus fp32's continuation, and its argmax at each "
        "continuation position is compared, so one difference does not cascade."
    )


def summary_row(kind: str, rows: list[dict], tokens: int) -> list:
    firsts = [r["first_difference"] for r in rows]
    agreement = sum(r["agree"] for r in rows) / sum(r["positions"] for r in rows)
    identical = sum(f == tokens for f in firsts)
    return [
        kind,
        len(rows),
        f"{statistics.median(firsts):g}",
        min(firsts),
        f"{identical}/{len(rows)}",
        f"{agreement:.1%}",
    ]


if __name__ == "__main__":
    main()
