"""`Session.generate` (what `%%llm generate` calls) vs raw `model.generate`, identical settings, side by side
in one process; and streaming on vs off. The three are interleaved (raw, ours, ours streaming, raw, ...) and
each keeps its best of N, so load that comes and goes hits them alike. Under load the end-to-end ratios still
drift by a few percent either way, so the last row times our per-token work alone (the streamer with its
callback and the stop check, on the same tokens) as a share of a raw decode step: the overhead that does not
depend on noise. The playground's Generate (streaming into its new column, output_scores, then every token
shaded with its hover card) is timed the same way, and its own work alone (that per-token work plus the
shading of the finished run) in the last row.

    python bench/generate_overhead.py [--tokens 64] [--repeats 10]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternating, device_name, markdown_table, median  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.base.interrupts import StopFlag  # noqa: E402
from llm_magics.generation import SamplingSettings, _CallbackStreamer, _StopWhenFlagged  # noqa: E402
from llm_magics.views.playground import SamplingPanel  # noqa: E402


def interleaved_best(fns, repeats: int) -> list[float]:
    """Best time of each fn, the fns taking turns: a burst of load slows one round of all, not one fn."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    session = Session()
    loaded = session.load("default")
    prompt = "Once upon a time, in a small village by the sea,"
    inputs = loaded.tokenizer(prompt, return_tensors="pt").to(loaded.device)
    # min_new_tokens pins the length so both sides decode exactly the same number of tokens.
    settings = dict(max_new_tokens=args.tokens, do_sample=False)

    def raw():
        with torch.inference_mode():
            return loaded.model.generate(
                **inputs,
                **settings,
                min_new_tokens=args.tokens,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )

    def ours(stream):
        loaded.model.generation_config.min_new_tokens = args.tokens
        try:
            return session.generate(prompt, **settings, on_text=(lambda text: None) if stream else None)
        finally:
            loaded.model.generation_config.min_new_tokens = None

    panel = SamplingPanel(session, prompt, SamplingSettings(max_new_tokens=args.tokens, do_sample=False, seed=0))

    def playground():
        loaded.model.generation_config.min_new_tokens = args.tokens
        try:
            return panel.generate()
        finally:
            loaded.model.generation_config.min_new_tokens = None

    def callbacks_alone(ids):
        streamer, stop = _CallbackStreamer(loaded.tokenizer, lambda text: None), _StopWhenFlagged(StopFlag())
        prompt_length = inputs["input_ids"].shape[1]
        streamer.put(ids[:, :prompt_length])
        for end in range(prompt_length + 1, ids.shape[1] + 1):
            streamer.put(ids[:, end - 1])
            stop(ids[:, :end], None)
        streamer.end()

    def shading_alone(result):  # the playground's work after decoding, as in a notebook: probabilities, rank,
        panel._tokens.pop(id(result), None)  # cards and HTML of the new run (the kept runs' are computed already),
        panel._column_html(result)
        panel.fallback_html()  # then the saved notebook's copy of the kept runs

    raw_s, plain_s, stream_s, panel_s = interleaved_best(
        [raw, lambda: ours(False), lambda: ours(True), playground], args.repeats
    )
    generated = raw()
    alone = alternating(
        {"callbacks": lambda: callbacks_alone(generated), "shading": lambda: shading_alone(panel.runs[0])},
        repeats=args.repeats,
    )
    own_s, shading_s = median(alone["callbacks"]), median(alone["shading"])
    rows = [
        ["raw model.generate", f"{raw_s * 1000:.0f}", f"{args.tokens / raw_s:.1f}", "1.000"],
        [
            "Session.generate, no streaming",
            f"{plain_s * 1000:.0f}",
            f"{args.tokens / plain_s:.1f}",
            f"{plain_s / raw_s:.3f}",
        ],
        [
            "Session.generate, streaming",
            f"{stream_s * 1000:.0f}",
            f"{args.tokens / stream_s:.1f}",
            f"{stream_s / raw_s:.3f}",
        ],
        [
            "playground Generate (streamed column, scores, shaded tokens with cards)",
            f"{panel_s * 1000:.0f}",
            f"{args.tokens / panel_s:.1f}",
            f"{panel_s / raw_s:.3f}",
        ],
        [
            "our per-token work alone (streamer + callback + stop check)",
            f"{own_s * 1000:.1f}",
            "",
            f"{1 + own_s / raw_s:.4f}",
        ],
        [
            "the playground's own work alone (per-token work + shaded tokens with cards + saved copy)",
            f"{(own_s + shading_s) * 1000:.1f}",
            "",
            f"{1 + (own_s + shading_s) / raw_s:.4f}",
        ],
    ]
    print(
        f"Greedy generation of {args.tokens} tokens, SmolLM2-135M, best of {args.repeats} interleaved, "
        f"on {device_name()}\n"
    )
    print(markdown_table(["path", "ms", "tokens/s", "time vs raw"], rows))


if __name__ == "__main__":
    main()
