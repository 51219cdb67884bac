"""Training throughput (tokens/s) of `%%llm train` (Session.train) vs a plain PyTorch loop and vs
HF `Trainer`, same model config, same data, same batch; and our live widget on vs off.

    python bench/train_throughput.py [--steps 60] [--config tiny] [--seq-len 128] [--batch-size 8]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.data import token_stream  # noqa: E402
from llm_magics.training import byte_tokenizer, new_model, scratch_config  # noqa: E402
from llm_magics.training.batches import PackedBlocks  # noqa: E402
from llm_magics.views.training_chart import TrainingView  # noqa: E402

CORPUS = (Path(__file__).parent.parent / "examples" / "data" / "tiny_corpus.txt").read_text() * 50


def plain_loop(config, windows, steps, lr, device):
    """What people hand-write: AdamW, warmup + cosine, gradient clipping, bf16 autocast on GPU."""
    from transformers import get_cosine_schedule_with_warmup

    model = new_model(config, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    start = time.perf_counter()
    for _ in range(steps):
        batch = {k: v.to(device) for k, v in windows.next_batch().items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)  # the same per-step sync our loop does to log the loss
    return time.perf_counter() - start


def hf_trainer(config, windows, steps, lr, device, batch_size):
    """HF Trainer on the very batches the plain loop draws (rows in order, no shuffling), timed from the start
    of its first step to the end of its last, as the other two are: its set-up is not counted."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    batches = [windows.next_batch() for _ in range(steps)]

    class Rows(torch.utils.data.IterableDataset):  # iterable: the Trainer keeps the order, so its batches are ours
        def __iter__(self):
            for batch in batches:
                for row in range(batch["input_ids"].shape[0]):
                    yield {"input_ids": batch["input_ids"][row], "labels": batch["labels"][row]}

    class StepClock(TrainerCallback):
        start = end = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.start is None:
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                self.end = time.perf_counter()

    model = new_model(config, device)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=lr,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, steps // 10),
            logging_steps=10**9,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=device.type == "cpu",
            bf16=device.type == "cuda",
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # keep stdout to the table
        trainer.train()
    return clock.end - clock.start


def ours(steps, lr, seq_len, batch_size, config, widget):
    session = Session()
    view = [TrainingView(session, "bench")] if widget else []
    result = session.train(
        text=CORPUS,
        from_scratch=True,
        config=config,
        steps=steps,
        lr=lr,
        seq_len=seq_len,
        batch_size=batch_size,
        on_step=view,
        progress=False,
    )
    return result.seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = byte_tokenizer()
    config = scratch_config(args.config, "llama", tokenizer)
    stream = token_stream(tokenizer, [CORPUS])
    tokens = args.steps * args.batch_size * args.seq_len
    lr = 3e-3

    def windows():
        return PackedBlocks(stream, args.seq_len, args.batch_size, seed=0)

    ours(5, lr, args.seq_len, args.batch_size, args.config, False)  # warm-up (allocator, kernels)
    runs = {
        "plain PyTorch loop": lambda: plain_loop(config, windows(), args.steps, lr, device),
        "HF Trainer": lambda: hf_trainer(config, windows(), args.steps, lr, device, args.batch_size),
        "%%llm train (no widget)": lambda: ours(args.steps, lr, args.seq_len, args.batch_size, args.config, False),
        "%%llm train (live widget)": lambda: ours(args.steps, lr, args.seq_len, args.batch_size, args.config, True),
    }
    # Interleaved rounds, best of each: machine noise hits every path alike.
    timings = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            timings[name] = min(timings[name], run())
    base = timings["plain PyTorch loop"]
    no_widget = timings["%%llm train (no widget)"]
    rows = [
        [
            name,
            f"{tokens / seconds:,.0f}",
            f"{base / seconds:.3f}",
            f"{no_widget / seconds:.3f}" if name.startswith("%%") else "",
        ]
        for name, seconds in timings.items()
    ]
    print(
        f"{args.steps} steps x {args.batch_size} x {args.seq_len} tokens, --config {args.config}, on {device_name()}\n"
    )
    print(markdown_table(["path", "tokens/s", "speed vs plain loop", "speed vs no widget"], rows))


if __name__ == "__main__":
    main()
