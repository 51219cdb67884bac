"""Our one-layer attention capture vs transformers' output_attentions=True (eager), same input.

python bench/attention_capture.py [--lengths 128 512 1024] [--repeats 3]
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from common import allocator_peak_mb, alternating, device_name, markdown_table, median, spread  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.inspect.attention import capture
from llm_magics.views.attention import (
    AttentionView,  # noqa: E402
    bertviz_html,  # noqa: E402
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of each side (at least 3)")
    args = parser.parse_args()
    session = Session()
    loaded = session.load("default")
    eager = (
        AutoModelForCausalLM.from_pretrained(loaded.source, attn_implementation="eager", dtype=loaded.dtype)
        .to(loaded.device)
        .eval()
    )
    rows, payload = [], []
    for n in args.lengths:
        ids = torch.randint(100, 40000, (1, n))
        text = loaded.tokenizer.decode(ids[0])
        ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"][:, :n].to(loaded.device)
        text = loaded.tokenizer.decode(ids[0])
        n = len(loaded.tokenizer(text)["input_ids"])

        def ours(text=text):
            return capture(loaded, text, layers=args.layer)

        def baseline(ids=ids):
            with torch.inference_mode():
                return eager(input_ids=ids, output_attentions=True).attentions

        times = alternating({"ours": ours, "eager": baseline}, repeats=args.repeats)
        ours_s, base_s = median(times["ours"]), median(times["eager"])
        ours_mb, base_mb = allocator_peak_mb(ours), allocator_peak_mb(baseline)
        # What each view sends to the browser for this one layer: our widget's state vs bertviz's page.
        view = AttentionView(loaded, text, layer=args.layer)
        widget_mb = (len(view.weights) + len(view.thumbnails) + 16 * len(view.tokens)) / 2**20
        bertviz_mb = len(bertviz_html(capture(loaded, text, layers=args.layer)).data) / 2**20
        payload.append([n, f"{widget_mb:.2f}", f"{bertviz_mb:.1f}", f"{bertviz_mb / widget_mb:.0f}x"])
        rows.append(
            [
                n,
                spread(times["ours"], 0, 1000),
                spread(times["eager"], 0, 1000),
                f"{base_s / ours_s:.2f}x",
                f"{ours_mb:.1f}",
                f"{base_mb:.1f}",
                f"{base_mb / ours_mb:.1f}x",
            ]
        )
        print(
            f"n={n}: ours {ours_s:.3f}s {ours_mb:.0f}MB | output_attentions {base_s:.3f}s {base_mb:.0f}MB", flush=True
        )
    table = markdown_table(
        [
            "tokens",
            "ours ms (min-max)",
            "eager ms (min-max)",
            "speed-up",
            "ours peak MB",
            "eager peak MB",
            "memory ratio",
        ],
        rows,
    )
    print(
        f"\nAttention capture, SmolLM2-135M, layer {args.layer} of 30, on {device_name()}: medians of "
        f"{max(3, args.repeats)} alternating rounds after a warm-up; peaks from the allocator\n\n{table}"
    )
    print(
        "\nSent to the browser for that layer (all heads): our widget state vs bertviz's head-view HTML "
        "(which also needs require.js and d3 from a CDN)\n"
    )
    print(markdown_table(["tokens", "our widget MB", "bertviz MB", "ratio"], payload))


if __name__ == "__main__":
    main()
