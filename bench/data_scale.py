"""Data at scale: `%%llm train --data BIG.txt` with the `datasets` path (memory-mapped Arrow, tokens
cached) vs the old path (the whole file read into Python, every id a Python int), side by side on the
same generated corpora. Each measurement runs in a fresh process so peak RSS is its own.

    python bench/data_scale.py [--sizes 50,200,1000] [--old-up-to 200] [--hash-only]

Reported per corpus: peak RSS above the process with the model already built, seconds to the first
optimizer step (cold cache, then cached), and tokenization throughput; and what keying the cache on the
file's content costs: the streamed xxh3-128 of llm_magics/data/fingerprint.py against plainly reading the
same bytes (the baseline: any content key must read them) and against the size + mtime stat it replaced.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import device_name, markdown_table  # noqa: E402

WORDS = (
    "the of and to in is was that for on with as by at from his her they this which be had not are "
    "but were one all their there been has when who will more no if out so said what up its about into "
    "than them can only other new some could time these two may then do first any my now such like our "
    "over man me even most made after also did many before must through back years where much your way "
    "well down should because each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know while last"
).split()


def generate(path: Path, megabytes: int):
    """Blank-line-separated paragraphs of random common words, a megabyte at a time."""
    rng = np.random.default_rng(megabytes)
    words = np.array(WORDS)
    with open(path, "w") as handle:
        for _ in range(megabytes):
            rows = words[rng.integers(0, len(words), 240_000)].reshape(-1, 120)
            block = "\n\n".join(" ".join(row) for row in rows)
            handle.write(block[: (1 << 20) - 2].rsplit("\n\n", 1)[0] + "\n\n")


# --- today's path before issue #10, kept here to compare against -------------------------------------------


def old_read_records(path: str) -> list[dict]:
    content = Path(path).read_text(encoding="utf-8")
    return [{"text": content, "_line": 1}]


def old_token_stream(tokenizer, texts):
    import torch

    ids = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


class OldRandomWindows:
    def __init__(self, stream, seq_len, batch_size, seed=0):
        import torch

        self.stream, self.seq_len, self.batch_size = stream, seq_len, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self):
        import torch

        starts = torch.randint(0, len(self.stream) - self.seq_len + 1, (self.batch_size,), generator=self.generator)
        ids = torch.stack([self.stream[s : s + self.seq_len] for s in starts])
        return {"input_ids": ids, "labels": ids.clone()}


# --- one measurement, in its own process ---------------------------------------------------------------------


class PeakRSS:
    def __init__(self):
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return (max(self.peak, self.process.memory_info().rss) - self.base) / 2**20


def child(path: str, mode: str) -> dict:
    import torch

    from llm_magics import Session
    from llm_magics.training import byte_tokenizer, new_model, scratch_config

    torch.set_num_threads(max(1, os.cpu_count() // 2))
    Session().train(
        text="warm up the imports and the allocator", from_scratch=True, steps=1, seq_len=16, progress=False
    )
    tokenizer = byte_tokenizer()
    model = new_model(scratch_config("tiny", "llama", tokenizer), torch.device("cpu"))  # the loaded model
    memory = PeakRSS()
    started = time.perf_counter()
    marks = {}
    if mode == "old":
        stream = old_token_stream(tokenizer, [r["text"] for r in old_read_records(path)])
        marks["tokenized"] = time.perf_counter()
        tokens = len(stream)
        batch = OldRandomWindows(stream, 128, 8).next_batch()
        optimizer = torch.optim.AdamW(model.parameters())
        model(**batch).loss.backward()
        optimizer.step()
        first_step = time.perf_counter() - started
        tokenize_s = marks["tokenized"] - started
    else:

        def on_prepare(stage, done, total):
            now = time.perf_counter()
            marks.setdefault(stage, now)
            marks[f"{stage}_end"] = now

        def on_step(row, result):
            marks.setdefault("first_step", time.perf_counter())

        session = Session()
        session.train(
            data=path,
            from_scratch=True,
            steps=1,
            seq_len=128,
            batch_size=8,
            progress=False,
            on_prepare=[on_prepare],
            on_step=[on_step],
        )
        first_step = marks["first_step"] - started
        tokenize_s = marks["tokenizing_end"] - marks["tokenizing"] if "tokenizing" in marks else None
        tokens = os.path.getsize(path)  # bytes = tokens for the byte tokenizer (+ one EOS a document)
    return {"first_step_s": first_step, "peak_mb": memory.stop(), "tokenize_s": tokenize_s, "tokens": tokens}


def measure(path: Path, mode: str, cache: str) -> dict:
    env = {**os.environ, "LLM_MAGICS_CACHE": cache, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--corpus", str(path)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["killed"])[-1][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="50,200,1000", help="corpus sizes in MB")
    parser.add_argument("--old-up-to", type=int, default=200, help="largest corpus (MB) for the old path")
    parser.add_argument("--child")
    parser.add_argument("--corpus")
    parser.add_argument("--hash-only", action="store_true", help="only the content-key cost (no training runs)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.corpus, args.child)))
        return
    rows, hashing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in [int(s) for s in args.sizes.split(",")]:
            path = Path(tmp) / f"corpus-{megabytes}mb.txt"
            generate(path, megabytes)
            hashing.append(hash_row(megabytes, hash_cost(path)))
            print(f"{megabytes} MB: content key {hashing[-1]}", file=sys.stderr, flush=True)
            if args.hash_only:
                continue
            cache = str(Path(tmp) / f"cache-{megabytes}")
            cold = measure(path, "new", cache)
            warm = measure(path, "new", cache)
            old = measure(path, "old", str(Path(tmp) / "unused")) if megabytes <= args.old_up_to else None
            rows.append(row(megabytes, cold, warm, old))
            print(f"{megabytes} MB: cold {cold} | cached {warm} | old {old}", file=sys.stderr, flush=True)
            path.unlink()
    if not args.hash_only:
        print_training(rows)
    print(
        "\nThe cache key: the file's content (streamed xxh3-128) vs plainly reading its bytes and vs the "
        "size + mtime it replaced, in this process, the file in the page cache (just written); the key is "
        "computed once per run and per file version (remembered in the kernel until the file changes).\n"
    )
    print(markdown_table(["corpus", "xxh3-128 s", "GB/s", "plain read s", "hash / read", "stat s"], hashing))


def hash_cost(path: Path) -> dict:
    """Seconds for the content key (a fresh digest, not remembered), a plain read of the same bytes, and a stat."""
    from llm_magics.data import fingerprint

    def plain_read():
        with open(path, "rb") as handle:
            while handle.read(fingerprint.CHUNK):
                pass

    def digest():
        fingerprint._known.clear()
        fingerprint.file_digest(path)

    plain_read()  # the page cache holds the file for both
    timings = {}
    for name, work in (("read_s", plain_read), ("hash_s", digest), ("stat_s", lambda: os.stat(path))):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - started)
        timings[name] = best
    timings["bytes"] = path.stat().st_size
    return timings


def hash_row(megabytes: int, cost: dict) -> list:
    return [
        f"{megabytes} MB",
        f"{cost['hash_s']:.3f}",
        f"{cost['bytes'] / cost['hash_s'] / 1e9:.2f}",
        f"{cost['read_s']:.3f}",
        f"{cost['hash_s'] / cost['read_s']:.2f}",
        f"{cost['stat_s'] * 1e6:.0f} µs",
    ]


def print_training(rows: list):
    print(
        f"`--data corpus.txt` (blank-line-separated paragraphs), byte tokenizer, --config tiny, seq-len 128, "
        f"batch 8, on {device_name()}; each cell its own process. Peak RSS is above the process that already "
        "holds the model; the old path reads the whole file into one Python string and every id into a list.\n"
    )
    print(
        markdown_table(
            [
                "corpus",
                "peak RSS MB (new)",
                "first step s, cold",
                "first step s, cached",
                "tokenize MB/s (new)",
                "peak RSS MB (old)",
                "first step s (old)",
                "tokenize MB/s (old)",
            ],
            rows,
        )
    )


def row(megabytes: int, cold: dict, warm: dict, old: dict | None) -> list:
    def rate(result):
        if not result or "error" in result or not result.get("tokenize_s"):
            return "-"
        return f"{result['tokens'] / result['tokenize_s'] / 2**20:,.1f}"

    def get(result, key, fmt):
        if result is None:
            return "skipped (> --old-up-to)"
        if "error" in result:
            return f"failed: {result['error']}"
        return fmt.format(result[key])

    return [
        f"{megabytes} MB",
        get(cold, "peak_mb", "{:,.0f}"),
        get(cold, "first_step_s", "{:.1f}"),
        get(warm, "first_step_s", "{:.1f}"),
        rate(cold),
        get(old, "peak_mb", "{:,.0f}"),
        get(old, "first_step_s", "{:.1f}"),
        rate(old) if old else "-",
    ]


if __name__ == "__main__":
    main()
