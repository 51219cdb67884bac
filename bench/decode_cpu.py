"""CPU decode speed of the packaged SmolLM2-135M with each `--quantize`, against llama.cpp on the very GGUF we
ship, at the same thread count, side by side in one run: greedy tokens/s at batch 1, perplexity on a
held-out text, and memory. Each row runs in its own fresh process (one after the other), so its peak RSS is
its own: "peak RSS" includes loading (a quantized row loads the fp32 weights first), "RSS decoding" is the
resident size once the model is ready and decoding.

    python bench/decode_cpu.py [--tokens 64] [--threads 2] [--repeats 3] [--rounds 2]
        [--rows fp32,bf16,int8,int4,llama.cpp]
    python bench/decode_cpu.py --rows fp32,fp32+compile,int8,int8+compile   # static cache + torch.compile

llama.cpp comes from `llama-cpp-python` (the optional `bench` extra: `pip install llama-cpp-python`, which
compiles llama.cpp); without it that row is skipped with one line. Goals (issue 18): int8 >= 2.5x fp32,
and the best of ours >= 0.5x llama.cpp.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.base.errors import LLMError  # noqa: E402
from llm_magics.loading import packaged_path  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea,"
HELD_OUT = (
    "The lighthouse keeper climbed the narrow stairs every evening to light the lamp. Ships passing "
    "in the night relied on its beam to steer clear of the rocks below the cliff. One winter the "
    "storm was so strong that the windows shook, but the keeper stayed at his post until dawn, "
    "writing in his logbook about the waves, the wind and the lights of a distant fishing boat."
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def ours(row: str, tokens: int, repeats: int) -> tuple[float, float]:
    """Greedy tokens/s through Session.generate (streaming off) and perplexity, for one --quantize row."""
    precision, _, compiled = row.partition("+")  # "fp32+compile": static KV cache + torch.compile (inductor)
    session = Session(compile=compiled == "compile")
    dtype = "bfloat16" if precision == "bf16" else "float32"
    session.load(
        "default",
        device="cpu",
        dtype=dtype,
        quantize=precision if precision in ("int8", "int4", "int8-dynamic") else "none",
    )
    session.model.generation_config.min_new_tokens = tokens  # both sides decode exactly `tokens` tokens
    # warm-up, at the measured length (a compiled static cache recompiles for a new length)
    session.generate(PROMPT, max_new_tokens=tokens, do_sample=False)
    best = min(_timed(lambda: session.generate(PROMPT, max_new_tokens=tokens, do_sample=False)) for _ in range(repeats))
    perplexity = session.eval("perplexity", text=HELD_OUT, progress=False).value
    return tokens / best, perplexity


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def llama_cpp(tokens: int, repeats: int, threads: int) -> tuple[float, float] | str:
    try:
        from llama_cpp import Llama
    except ImportError:
        return "llama-cpp-python is not installed (pip install llama-cpp-python): llama.cpp row skipped"
    model = Llama(
        str(packaged_path("default")),
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=512,
        logits_all=True,
        verbose=False,
    )
    prompt_ids = model.tokenize(PROMPT.encode())

    def decode():
        model.reset()
        model.eval(prompt_ids)
        for _ in range(tokens):  # greedy, never stopping at EOS: the same work as min_new_tokens
            model.eval([int(model.scores[model.n_tokens - 1].argmax())])

    decode()
    best = min(_timed(decode) for _ in range(repeats))
    ids = model.tokenize(HELD_OUT.encode())
    model.reset()
    model.eval(ids)
    logits = torch.tensor(model.scores[: len(ids)])
    loss = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    return tokens / best, math.exp(loss.item())


def measure(row: str, args) -> dict | str:
    try:
        measured = (
            llama_cpp(args.tokens, args.repeats, args.threads)
            if row == "llama.cpp"
            else ours(row, args.tokens, args.repeats)
        )
    except LLMError as error:
        return f"{row}: {error}"
    if isinstance(measured, str):
        return measured
    import psutil

    return {
        "tps": measured[0],
        "ppl": measured[1],
        "rss": psutil.Process().memory_info().rss / 2**20,
        "peak": peak_rss_mb(),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per row, interleaved")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="fp32,bf16,int8,int4,llama.cpp")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one row, print it as JSON
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one, args)))  # a str (a skip line) or the row's figures
        return
    results, notes = {}, {}
    for _ in range(args.rounds):  # rows take turns, round after round: load that comes and goes hits all alike
        for row in args.rows.split(","):
            if row in notes:
                continue
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    row,
                    "--tokens",
                    str(args.tokens),
                    "--repeats",
                    str(args.repeats),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
            )
            lines = done.stdout.strip().splitlines()
            measured = (
                json.loads(lines[-1])
                if done.returncode == 0 and lines
                else f"{row}: failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
            )
            if isinstance(measured, str):
                notes[row] = measured
                print(measured, flush=True)
                continue
            print(f"{row}: {measured['tps']:.1f} tok/s, perplexity {measured['ppl']:.2f}", file=sys.stderr, flush=True)
            if row not in results or measured["tps"] > results[row]["tps"]:
                results[row] = measured
    fp32 = results.get("fp32", {}).get("tps")
    reference = results.get("llama.cpp", {}).get("tps")
    rows = [
        [
            row,
            f"{r['tps']:.1f}",
            f"{r['tps'] / fp32:.2f}x" if fp32 else "-",
            f"{r['tps'] / reference:.2f}x" if reference else "-",
            f"{r['ppl']:.2f}",
            f"{r['rss']:,.0f}",
            f"{r['peak']:,.0f}",
        ]
        for row, r in results.items()
    ]
    print(
        f"\nGreedy decode of {args.tokens} tokens at batch 1, SmolLM2-135M, {args.threads} threads, best of "
        f"{args.repeats} calls x {args.rounds} interleaved rounds (a fresh process per row and round), "
        f"on {device_name()}\n"
    )
    print(
        markdown_table(
            ["path", "tokens/s", "vs fp32", "vs llama.cpp", "perplexity", "RSS decoding MB", "peak RSS MB"], rows
        )
    )
    for note in notes.values():
        print(f"\n{note}")


if __name__ == "__main__":
    main()
