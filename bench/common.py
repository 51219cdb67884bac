"""Helpers shared by the benchmarks: the two sides timed alternately (median and spread), and peak memory
(the CUDA allocator's, or on the CPU the torch allocator's seen by the profiler, or sampled RSS)."""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable

import psutil
import torch


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternating(sides: dict[str, Callable], repeats: int = 3, warmup: int = 1) -> dict[str, list[float]]:
    """Each side's times in seconds over `repeats` rounds, after `warmup` calls of each. The sides take turns,
    the order reversed every other round (ours, base, base, ours...), so a change of machine load or a
    warmer cache falls on both alike."""
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(max(3, repeats)):
        for name in names if round_ % 2 == 0 else names[::-1]:
            times[name].append(_timed(sides[name]))
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def spread(times: list[float], digits: int = 2, scale: float = 1.0) -> str:
    """ "median (min-max)" of the times, scaled (1000: ms)."""
    m, lo, hi = (scale * x for x in (statistics.median(times), min(times), max(times)))
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def allocator_peak_mb(fn) -> float:
    """Tensor memory at the peak of one call above what was held before, from the allocator itself: the
    CUDA allocator's peak, or on the CPU the torch profiler's record of every allocation and free (sampled
    RSS misses what glibc serves from pages it already holds, and read ~0 MB for a few MB of maps)."""
    gc.collect()
    if torch.cuda.is_available():
        return peak_memory_mb(fn)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    del result
    held = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        # an op's own allocations less its frees; "[memory]" rows are those made outside any op
        held += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak / 2**20


def peak_memory_mb(fn) -> float:
    """Extra memory at the peak of one call: CUDA allocator stats, or sampled RSS on CPU."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del result
        return peak / 2**20
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = fn()
        peak[0] = max(peak[0], process.memory_info().rss)
    finally:
        done.set()
        sampler.join()
    del result
    gc.collect()
    return (peak[0] - base) / 2**20


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({psutil.cpu_count(logical=True)} threads, torch {torch.__version__})"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
