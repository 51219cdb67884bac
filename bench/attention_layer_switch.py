"""Switching layer in the attention widget: softmax on demand from the kept queries and keys (ours) vs
the previous way, a fresh capture (one forward pass) per layer. Same text, same process.

    python bench/attention_layer_switch.py [--lengths 256 1024]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import best_time, device_name, markdown_table  # noqa: E402

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
    args = parser.parse_args()
    loaded = Session().load("default")
    rows = []
    for n in args.lengths:
        text = text_of(loaded, n)
        n = len(loaded.tokenizer(text)["input_ids"])
        view = AttentionView(loaded, text, view="matrix")
        layers = iter(range(10**9))

        # what a click on the layer menu runs in the kernel, data ready to send included
        def ours(view=view, layers=layers):
            view.layer = next(layers) % view.num_layers

        # before: a fresh capture of the asked layer, then the same bytes
        def recapture(view=view, layers=layers, text=text):
            layer = next(layers) % view.num_layers
            maps = capture(loaded, text, layers=layer).weights[layer]
            return maps.mean(0)

        ours_s, before_s = best_time(ours, repeats=5), best_time(recapture, repeats=3)
        kept = (
            sum(
                x.query.numel() * x.query.element_size() + x.key.numel() * x.key.element_size()
                for x in view.capture.queries_keys.values()
            )
            / 2**20
        )
        rows.append([n, f"{ours_s * 1000:.0f}", f"{before_s * 1000:.0f}", f"{before_s / ours_s:.1f}x", f"{kept:.0f}"])
        print(f"n={n}: switch {ours_s:.3f}s vs re-capture {before_s:.3f}s; kept queries+keys {kept:.0f} MB", flush=True)
    table = markdown_table(
        ["tokens", "layer switch ms (ours)", "fresh capture ms (before)", "speed-up", "kept q+k MB"], rows
    )
    print(
        f"\nAttention widget layer switch (mean of heads, matrix view), SmolLM2-135M, 30 layers, best of 5 vs 3, "
        f"on {device_name()}\n\n{table}"
    )


if __name__ == "__main__":
    main()
