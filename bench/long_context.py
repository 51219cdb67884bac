"""Long contexts in the attention widget and the logit lens, against one plain forward pass of the same text.

Each measurement runs in its own subprocess (a clean heap): the model is loaded, then the measured step runs
while a thread samples the RSS (psutil), then a plain `model(ids)` of the same text runs in the same process
as the side-by-side baseline. "extra RSS" is the peak above the RSS just before the step.

    python bench/long_context.py [--tokens 4096] [--steps plain attention switch lens lens_scroll]

Steps: attention = AttentionView(...) constructed (first paint: the data the browser draws first is ready);
switch = one layer switch in that widget (mean of heads, matrix view), best of 3; overview = opening the
model view in that widget (every layer's thumbnails, the sinks and the rollout row, computed then); lens = the widget's
logit-lens tab opened (view="lens": the forward pass and the window in view); lens_scroll = asking the lens
for an earlier window once it is open.
"""

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table  # noqa: E402

PARAGRAPH = (
    "The river bends twice before it reaches the town. In spring the water rises over the stones, and the "
    "children watch the boats carry timber down to the mill, where the old wheel still turns. "
)


def text_of(tokenizer, n: int) -> str:
    """A paragraph repeated to exactly n tokens (the tokenizer's own count, special tokens included)."""
    text = PARAGRAPH * (n // 20 + 2)
    ids = tokenizer(text)["input_ids"][:n]
    text = tokenizer.decode(ids)
    while len(tokenizer(text)["input_ids"]) > n:  # decoding can merge pieces: trim until it fits
        text = text[:-1]
    return text


class PeakRss:
    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.done.set()
        self.thread.join()

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def one(step: str, n: int) -> dict:
    """Runs in the child: the step, then the plain forward pass of the same text."""
    import gc

    import torch

    from llm_magics import Session
    from llm_magics.views.attention import AttentionView

    loaded = Session().load("default")
    text = text_of(loaded.tokenizer, n)
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    result = {"step": step, "tokens": int(ids.shape[1])}
    view = None
    if step in ("switch", "overview", "lens_scroll"):  # their widget is built first, outside the measurement
        view = AttentionView(loaded, text, view="lens" if step == "lens_scroll" else "matrix")
    gc.collect()
    with PeakRss() as rss:
        start = time.perf_counter()
        if step == "attention":
            view = AttentionView(loaded, text)
        elif step == "lens":
            view = AttentionView(loaded, text, view="lens")
        elif step == "switch":
            best = float("inf")
            for layer in (3, 17, 29):
                t0 = time.perf_counter()
                view.layer = layer
                best = min(best, time.perf_counter() - t0)
        elif step == "overview":
            view.view = "model"
        elif step == "lens_scroll":
            view.lens_start = 0
        elif step == "plain":
            with torch.inference_mode():
                loaded.model(ids)
        seconds = time.perf_counter() - start
    result.update(seconds=best if step == "switch" else seconds, extra_mb=rss.extra_mb)
    del view
    gc.collect()
    with torch.inference_mode():
        start = time.perf_counter()
        loaded.model(ids)
        result["plain_seconds"] = time.perf_counter() - start
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument(
        "--steps", nargs="+", default=["plain", "attention", "switch", "overview", "lens", "lens_scroll"]
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.tokens)))
        return
    rows = []
    for step in args.steps:
        out = subprocess.run(
            [sys.executable, __file__, "--one", step, "--tokens", str(args.tokens)], capture_output=True, text=True
        )
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(r, file=sys.stderr, flush=True)  # progress; the table below is the result
        rows.append(
            [
                r["step"],
                r["tokens"],
                f"{r['seconds']:.2f}",
                f"{r['plain_seconds']:.2f}",
                f"{r['seconds'] / r['plain_seconds']:.2f}x",
                f"{r['extra_mb']:.0f}",
            ]
        )
    table = markdown_table(
        ["step", "tokens", "seconds", "plain forward s (same process)", "ratio", "peak extra RSS MB"], rows
    )
    print(f"\nLong context, SmolLM2-135M (30 layers, 9 heads), on {device_name()}\n\n{table}")


if __name__ == "__main__":
    main()
