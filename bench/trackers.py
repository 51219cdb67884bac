"""Overhead per step of `--track tensorboard` against no tracker: the same tiny training run, alternating
the two settings (so a busy machine slows both alike), best of N each, in one process.

    python bench/trackers.py [--steps 100] [--repeats 3] [--config tiny] [--seq-len 64] [--batch-size 8]
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table  # noqa: E402

from llm_magics import Session  # noqa: E402

CORPUS = (Path(__file__).parent.parent / "examples" / "data" / "tiny_corpus.txt").read_text() * 50


def seconds_per_step(track, args, runs_dir) -> float:
    session = Session(runs_dir=runs_dir)
    result = session.train(text=CORPUS, from_scratch=True, config=args.config, steps=args.steps, seq_len=args.seq_len,
                           batch_size=args.batch_size, progress=False, track=track)
    return result.seconds / result.steps_done  # the loop's own time: no model building or data reading


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs_dir:
        seconds_per_step(None, args, runs_dir)  # warm-up: data cache, first-call costs
        best = {None: float("inf"), "tensorboard": float("inf")}
        for _ in range(args.repeats):
            for track in best:
                best[track] = min(best[track], seconds_per_step(track, args, runs_dir))
    base = best[None]
    rows = [["no tracker", f"{base * 1e3:.2f}", "1.000", "-"],
            ["--track tensorboard", f"{best['tensorboard'] * 1e3:.2f}", f"{best['tensorboard'] / base:.3f}",
             f"{(best['tensorboard'] / base - 1) * 100:+.1f}%"]]
    print(f"{args.steps} steps x {args.batch_size} x {args.seq_len} tokens, --config {args.config}, "
          f"best of {args.repeats}, on {device_name()}\n")
    print(markdown_table(["run", "ms per step", "vs no tracker", "overhead"], rows))


if __name__ == "__main__":
    main()
