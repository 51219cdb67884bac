"""Overhead per step of `--track tensorboard` against no tracker: the same tiny training run, alternating
the two settings (so a busy machine slows both alike), best of N each, in one process.

Per step: the loop's steady time from step 1's row to the last one's, over the steps between (each includes
the previous row's `accelerator.log`). The tracker's one-time start (`init_trackers`: the writer, the options
as hparams) is shown apart, as the run's whole time minus its steps. On a busy machine whole-step times
swing more than the overhead sought, so the time spent inside the tracker's per-step `log` is also measured
directly (a timer around `trackers.log`) and compared with the untracked step.

    python bench/trackers.py [--steps 100] [--repeats 3] [--config tiny] [--seq-len 64] [--batch-size 8]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.training import trackers  # noqa: E402

LOG_SECONDS = []  # time inside each per-step tracker log call
_log = trackers.log


def _timed_log(accelerator, names, row):
    began = time.perf_counter()
    _log(accelerator, names, row)
    if names:
        LOG_SECONDS.append(time.perf_counter() - began)


trackers.log = _timed_log

CORPUS = (Path(__file__).parent.parent / "examples" / "data" / "tiny_corpus.txt").read_text() * 50


def seconds_per_step(track, args, runs_dir) -> tuple[float, float]:
    """(seconds per steady step, seconds of the run outside them: the tracker's start and the first step)."""
    session = Session(runs_dir=runs_dir)
    result = session.train(
        text=CORPUS,
        from_scratch=True,
        config=args.config,
        steps=args.steps,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        progress=False,
        track=track,
    )
    elapsed = [row["elapsed"] for row in result.history]
    per_step = (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1)
    return per_step, result.seconds - per_step * (len(elapsed) - 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs_dir:
        seconds_per_step(None, argparse.Namespace(**{**vars(args), "steps": 3}), runs_dir)  # warm-up: data cache
        best = {None: (float("inf"),) * 2, "tensorboard": (float("inf"),) * 2}
        for _ in range(args.repeats):
            for track in best:
                step, start = seconds_per_step(track, args, runs_dir)
                best[track] = (min(best[track][0], step), min(best[track][1], start))
    (base, base_start), (tracked, tracked_start) = best[None], best["tensorboard"]
    rows = [
        ["no tracker", f"{base * 1e3:.2f}", "1.000", "-", f"{base_start:.2f}"],
        [
            "--track tensorboard",
            f"{tracked * 1e3:.2f}",
            f"{tracked / base:.3f}",
            f"{(tracked / base - 1) * 100:+.1f}%",
            f"{tracked_start:.2f}",
        ],
    ]
    logged = min(LOG_SECONDS) if LOG_SECONDS else float("nan")
    typical = sorted(LOG_SECONDS)[len(LOG_SECONDS) // 2] if LOG_SECONDS else float("nan")
    print(
        f"{args.steps} steps x {args.batch_size} x {args.seq_len} tokens, --config {args.config}, "
        f"best of {args.repeats}, on {device_name()}\n"
    )
    print(
        markdown_table(
            ["run", "ms per step", "vs no tracker", "overhead per step", "s outside the steps (start, step 1)"], rows
        )
    )
    print(
        f"\nInside `accelerator.log` per step (timed directly): median {typical * 1e3:.3f} ms, best "
        f"{logged * 1e3:.3f} ms = {typical / base * 100:.2f}% of an untracked step."
    )
    print("Goal: under 2% per step. The tracker's start is paid once per run.")


if __name__ == "__main__":
    main()
