"""Attribution time and peak memory per method: ours (`Session.attribute`: integration steps and
perturbations in batches sized from a memory budget, one target at a time, the weights'
requires_grad off) vs the same Captum method called with its defaults (all IG steps in one batch, one
perturbation per forward) on the same input and baseline, with the plain forward function (every position's
logits, the model as loaded). A prompt of --prompt-tokens tokens and --new-tokens greedily generated targets on SmolLM2;
attributions must agree to 1e-4. Both sides time the same work: the greedy generation of the targets
(`Session.attribute` generates them; the Captum side runs the same `generate` first), then the attribution.
Each run is a fresh process (the model loaded, a first call whose peak RSS is the memory column, so that one
side's peak is not hidden by memory the other left in the allocator, then a timed call); the sides' processes
alternate for --repeats rounds (median and min-max).

    python bench/attribution.py [--prompt-tokens 100] [--new-tokens 10] [--methods ...] [--steps 50] [--repeats 3]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table, median, peak_memory_mb, spread  # noqa: E402
from plain_captum import plain_captum  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.inspect.attribution import METHODS, _baseline_id  # noqa: E402


def captum_defaults(method: str, loaded, sequence: torch.Tensor, prompt_length: int, steps: int) -> np.ndarray:
    """Each target token attributed by the Captum method with its default batching."""
    base = _baseline_id(loaded.tokenizer)
    rows = []
    for index in range(sequence.shape[1] - prompt_length):
        ids, target = sequence[:, : prompt_length + index], int(sequence[0, prompt_length + index])
        row = np.full(sequence.shape[1], np.nan)
        row[: ids.shape[1]] = plain_captum(method, loaded.model, ids, target, steps, base)
        rows.append(row)
    return np.array(rows)


def prompt_text(tokenizer, prompt_tokens: int) -> str:
    words = (
        "the river bank was quiet when the old fisherman told his grandson a story about the sea "
        "and the storms he had seen long ago before the town had a harbour "
    ).split()
    text = " ".join(words[i % len(words)] for i in range(prompt_tokens * 2))
    return tokenizer.decode(tokenizer(text)["input_ids"][:prompt_tokens])


def one_side(args):
    """In a fresh process: load, run one side once (its extra peak RSS), then once more timed; print both,
    save the scores."""
    session = Session()
    loaded = session.load("default")
    text = prompt_text(loaded.tokenizer, args.prompt_tokens)
    method, steps = args.one, args.side_steps
    out = {}

    def run():
        torch.manual_seed(0)
        if args.side == "ours":
            result = session.attribute(
                text,
                method=method,
                max_new_tokens=args.new_tokens,
                steps=steps,
                batch_size=args.batch_size,
                progress=False,
            )
            out.update(scores=result.scores, ids=result.ids)
        else:
            prompt = loaded.tokenizer(text, return_tensors="pt")["input_ids"].to(loaded.device)
            with torch.inference_mode():  # the targets' greedy generation, as Session.attribute runs it
                loaded.model.generate(prompt, max_new_tokens=args.new_tokens, do_sample=False)
            ids = json.loads(Path(args.ids).read_text())  # the same targets as ours, token for token
            out.update(scores=captum_defaults(method, loaded, torch.tensor([ids]), prompt.shape[1], steps), ids=ids)

    extra_mb = peak_memory_mb(run)  # sampled RSS over the first call, in a process that ran nothing else
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    scores, ids = out["scores"], out["ids"]
    np.save(args.out, scores)
    Path(args.out + ".ids.json").write_text(json.dumps(ids))
    print(json.dumps({"seconds": seconds, "extra_mb": extra_mb}))


def run_side(args, method: str, steps: int, side: str, out: str, ids: str | None = None) -> dict:
    command = [
        sys.executable,
        __file__,
        "--one",
        method,
        "--side",
        side,
        "--side-steps",
        str(steps),
        "--out",
        out,
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--new-tokens",
        str(args.new_tokens),
    ]
    if ids:
        command += ["--ids", ids]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="IG steps (Shapley samples: half of it)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--side-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help="ours: steps per forward pass (default: from the budget)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of a fresh process per side (at least 3)")
    args = parser.parse_args()
    if args.one:
        return one_side(args)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for method in args.methods:
            steps = args.steps if "integrated" in method else max(1, args.steps // 2)
            ours_out, theirs_out = f"{folder}/{method}-ours.npy", f"{folder}/{method}-captum.npy"
            runs: dict[str, list[dict]] = {"ours": [], "captum": []}
            for round_ in range(max(3, args.repeats)):  # the sides alternate; ours first makes the targets
                for side in ("ours", "captum") if round_ % 2 == 0 else ("captum", "ours"):
                    out, ids = (ours_out, None) if side == "ours" else (theirs_out, ours_out + ".ids.json")
                    runs[side].append(run_side(args, method, steps, side, out, ids))
            ours, theirs = ([r["seconds"] for r in runs[side]] for side in ("ours", "captum"))
            ours_mb, theirs_mb = (median([r["extra_mb"] for r in runs[side]]) for side in ("ours", "captum"))
            difference = float(np.nanmax(np.abs(np.load(ours_out) - np.load(theirs_out))))
            rows.append(
                [
                    method,
                    steps,
                    spread(ours, 1),
                    spread(theirs, 1),
                    f"{median(theirs) / median(ours):.2f}x",
                    f"{ours_mb:.0f}",
                    f"{theirs_mb:.0f}",
                    f"{difference:.1e}",
                ]
            )
            print(
                f"{method}: ours {ours}, captum defaults {theirs}, max diff {difference:.1e}",
                file=sys.stderr,
                flush=True,
            )
    table = markdown_table(
        [
            "method",
            "steps / samples",
            "ours s, median (min-max)",
            "Captum defaults s, median (min-max)",
            "speed-up",
            "ours extra peak RSS MB",
            "Captum extra peak RSS MB",
            "max |difference|",
        ],
        rows,
    )
    print(
        f"Attribution of {args.new_tokens} generated tokens to a {args.prompt_tokens}-token prompt, "
        f"SmolLM2-135M, on {device_name()} (each run in a fresh process, the sides alternating; "
        "both include the targets' greedy generation)"
        f"\n\n{table}"
    )


if __name__ == "__main__":
    main()
