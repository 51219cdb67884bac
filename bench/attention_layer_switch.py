"""Switching layer in the attention widget: softmax on demand from the kept queries and keys (ours) vs
the previous way, a fresh capture (one forward pass) per layer. Same text, same process.

    python bench/attention_layer_switch.py [--lengths 256 1024]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternating, device_name, markdown_table, median, spread  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.inspect.attention import capture  # noqa: E402
from llm_magics.views.attention import AttentionView  # noqa: E402


def text_of(loaded, n: int) -> str:
    ids = torch.randint(100, 40000, (n,), generator=torch.Generator().manual_seed(0))
    text = loaded.tokenizer.decode(ids)
    return loaded.tokenizer.decode(loaded.tokenizer(text)["input_ids"][:n])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of each side (at least 3)")
    args = parser.parse_args()
    loaded = Session().load("default")
    rows = []
    for n in args.lengths:
        text = text_of(loaded, n)
        n = len(loaded.tokenizer(text)["input_ids"])
        view = AttentionView(loaded, text, view="matrix")
        layers = iter(range(10**9))

        def ours(view=view, layers=layers):  # what a click on the layer menu runs in the kernel, data included
            view.layer = next(layers) % view.num_layers

        def recapture(view=view, layers=layers, text=text):  # before: a fresh capture of the asked layer
            layer = next(layers) % view.num_layers
            maps = capture(loaded, text, layers=layer).weights[layer]
            return maps.mean(0)

        times = alternating({"ours": ours, "before": recapture}, repeats=args.repeats)
        ours_s, before_s = median(times["ours"]), median(times["before"])
        kept = (
            sum(
                x.query.numel() * x.query.element_size() + x.key.numel() * x.key.element_size()
                for x in view.capture.queries_keys.values()
            )
            / 2**20
        )
        rows.append(
            [
                n,
                spread(times["ours"], 0, 1000),
                spread(times["before"], 0, 1000),
                f"{before_s / ours_s:.1f}x",
                f"{kept:.0f}",
            ]
        )
        print(f"n={n}: switch {ours_s:.3f}s vs re-capture {before_s:.3f}s; kept queries+keys {kept:.0f} MB", flush=True)
    table = markdown_table(
        ["tokens", "layer switch ms (ours, min-max)", "fresh capture ms (before, min-max)", "speed-up", "kept q+k MB"],
        rows,
    )
    print(
        f"\nAttention widget layer switch (mean of heads, matrix view), SmolLM2-135M, 30 layers, medians of "
        f"{max(3, args.repeats)} alternating rounds after a warm-up, "
        f"on {device_name()}\n\n{table}"
    )


if __name__ == "__main__":
    main()
