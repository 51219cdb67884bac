"""Batched activation patching vs a plain one-forward-per-patch hook loop (TransformerLens's way), residual
stream sweep of SmolLM2 (30 layers x every position), side by side in one process; scores must agree to 1e-4.
The two sides run alternately after a warm-up of each (median and min-max of --repeats rounds); the peak
memory is the allocator's (CUDA, or the torch profiler's record on the CPU).

    python bench/patching.py [--layers 30] [--repeats 3]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import allocator_peak_mb, alternating, device_name, markdown_table, median, spread  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.inspect.patching import patch  # noqa: E402

CLEAN = "When John and Mary went to the store, John gave a drink to"
CORRUPTED = "When John and Mary went to the store, Mary gave a drink to"


def hook_loop(loaded, layers: list[int], answer: int, wrong: int) -> torch.Tensor:
    """One full forward pass per (layer, position), a forward hook swapping in the clean hidden state."""
    model, tok = loaded.model, loaded.tokenizer
    clean = tok(CLEAN, return_tensors="pt")["input_ids"].to(loaded.device)
    corrupted = tok(CORRUPTED, return_tensors="pt")["input_ids"].to(loaded.device)
    blocks = model.model.layers
    with torch.inference_mode():
        states = model(input_ids=clean, output_hidden_states=True).hidden_states
        logits = model(input_ids=clean).logits[0, -1]
        clean_ld = float(logits[answer] - logits[wrong])
        logits = model(input_ids=corrupted).logits[0, -1]
        corrupted_ld = float(logits[answer] - logits[wrong])
        scores = torch.full((len(blocks), clean.shape[1]), float("nan"))
        for layer in layers:
            # hidden_states[L + 1] is layer L's output, except the last, which is after the final norm
            source = states[layer + 1] if layer + 1 < len(states) - 1 else None
            if source is None:
                kept = {}
                handle = blocks[layer].register_forward_hook(
                    lambda m, a, out, kept=kept: kept.setdefault("x", out.clone())
                )
                model(input_ids=clean)
                handle.remove()
                source = kept["x"]
            for position in range(clean.shape[1]):

                def swap(module, args, out, position=position, source=source):
                    out = out.clone()
                    out[0, position] = source[0, position]
                    return out

                handle = blocks[layer].register_forward_hook(swap)
                logits = model(input_ids=corrupted).logits[0, -1]
                handle.remove()
                scores[layer, position] = (float(logits[answer] - logits[wrong]) - corrupted_ld) / (
                    clean_ld - corrupted_ld
                )
    return scores


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=30, help="sweep the first N layers (30 = all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of each side (at least 3)")
    args = parser.parse_args()
    session = Session()
    loaded = session.load("default")
    layers = list(range(args.layers))
    tok = loaded.tokenizer
    answer, wrong = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" Mary", " John"))
    n = tok(CLEAN, return_tensors="pt")["input_ids"].shape[1]
    results = {}

    def ours():
        results["ours"] = patch(loaded, CLEAN, CORRUPTED, " Mary", " John", "residual", layers).scores

    def loop():
        results["loop"] = hook_loop(loaded, layers, answer, wrong)

    times = alternating({"ours": ours, "loop": loop}, repeats=args.repeats)
    ours_mb, loop_mb = allocator_peak_mb(ours), allocator_peak_mb(loop)
    difference = float((results["ours"][layers] - results["loop"][layers]).abs().max())
    assert difference < 1e-4, f"scores differ by {difference}"
    shown = results["ours"][layers]
    table = markdown_table(
        [
            "sweep",
            "batched s, median (min-max)",
            "hook loop s, median (min-max)",
            "speed-up",
            "batched peak MB",
            "loop peak MB",
            "max |score difference|",
            "scores range",
        ],
        [
            [
                f"{len(layers)} layers x {n} positions",
                spread(times["ours"]),
                spread(times["loop"]),
                f"{median(times['loop']) / median(times['ours']):.1f}x",
                f"{ours_mb:.1f}",
                f"{loop_mb:.1f}",
                f"{difference:.1e}",
                f"{float(shown.min()):.2f} .. {float(shown.max()):.2f}",
            ]
        ],
    )
    print(
        f"Residual-stream activation patching, SmolLM2-135M, on {device_name()}; {len(times['ours'])} alternating "
        f"rounds after a warm-up\n\n{table}"
    )


if __name__ == "__main__":
    main()
