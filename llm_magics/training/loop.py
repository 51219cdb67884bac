"""Training from scratch, continued pre-training, (LoRA) fine-tuning and classifier tuning.

One loop (`_optimize`) serves every kind: AdamW + warmup/cosine, gradient accumulation,
`accelerate` for mixed precision and multi-GPU (`accelerate launch` / torchrun), resumable
checkpoints, and a stop flag checked between optimizer steps so an interrupt never leaves
the weights half-updated.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import torch

from ..data import RandomWindows, classification_examples, supervised_examples, texts_of, token_stream
from ..errors import LLMError, is_out_of_memory
from ..generation import compile_backend, context_length
from ..interrupts import StopFlag, graceful_interrupts
from ..loading import CAUSAL, CLASSIFIER, LoadedModel
from .batches import EpochBatches, _fixed_windows, _padded_batches
from .checkpoints import _restore, prepare_output_dir, save_checkpoint
from .models import _add_lora, _load_weights, classifier_from
from .options import TrainOptions, TrainResult
from .scoring import _mean_loss, classification_metrics


def train_causal_lm(loaded: LoadedModel, records: list[dict], options: TrainOptions,
                    on_step: list[Callable] = (), stop: StopFlag | None = None,
                    eval_records: list[dict] | None = None) -> TrainResult:
    """Pre-train (or continue pre-training) a causal LM on plain text."""
    options.validated()
    limit = context_length(loaded.model)
    if limit and options.seq_len > limit:
        raise LLMError(f"--seq-len {options.seq_len} is larger than the model's context ({limit} tokens)")
    windows = RandomWindows(token_stream(loaded.tokenizer, texts_of(records)), options.seq_len,
                            options.batch_size, options.seed)
    eval_batches = None
    if eval_records:
        eval_stream = token_stream(loaded.tokenizer, texts_of(eval_records))
        eval_batches = _fixed_windows(eval_stream, windows.seq_len, options.batch_size)
    steps = options.steps or 100
    return _optimize("train", loaded, windows, steps, options, on_step, stop,
                     evaluate=(lambda: {"eval_loss": _mean_loss(loaded, eval_batches)}) if eval_batches else None)


def finetune(loaded: LoadedModel, records: list[dict], options: TrainOptions, *, lora: bool = False,
             lora_r: int = 8, lora_alpha: int | None = None, task: str = "lm",
             labels: list[str] | None = None, eval_records: list[dict] | None = None,
             on_step: list[Callable] = (), stop: StopFlag | None = None) -> TrainResult:
    options.validated()
    if task == "classify":
        if not labels or len(labels) < 2:
            raise LLMError("--task classify needs --labels with at least two labels, e.g. --labels neg,pos")
        examples = classification_examples(loaded.tokenizer, records, labels, options.seq_len)
        eval_examples = classification_examples(loaded.tokenizer, eval_records, labels, options.seq_len) \
            if eval_records else None
        if loaded.kind != CLASSIFIER or loaded.model.config.num_labels != len(labels):
            loaded.model = classifier_from(loaded, labels)
            loaded.kind, loaded.dtype = CLASSIFIER, torch.float32
    elif task == "lm":
        if loaded.kind != CAUSAL:
            raise LLMError(f"{loaded.name} is a {loaded.kind} model: language-model fine-tuning needs a "
                           "causal LM (for an encoder use --task classify --labels ...)")
        limit = context_length(loaded.model)
        if limit and options.seq_len > limit:
            raise LLMError(f"--seq-len {options.seq_len} is larger than the model's context ({limit} tokens)")
        examples = supervised_examples(loaded.tokenizer, records, options.seq_len)
        eval_examples = supervised_examples(loaded.tokenizer, eval_records, options.seq_len) \
            if eval_records else None
        if not examples:
            raise LLMError("no trainable tokens: every example is empty after masking the prompt")
    else:
        raise LLMError(f"unknown --task {task!r}: use lm or classify")

    if lora:
        _add_lora(loaded, lora_r, lora_alpha, task, options.resume)
    else:
        if loaded.model.dtype != torch.float32:
            loaded.model.float()  # full fine-tuning keeps fp32 master weights; autocast does the rest
            loaded.dtype = torch.float32
        if options.resume:
            _load_weights(loaded, options.resume)

    batches = EpochBatches(examples, options.batch_size, loaded.tokenizer.pad_token_id or 0, options.seed)
    steps = options.steps or max(1, math.ceil(options.epochs * batches.batches_per_epoch / options.grad_accum))
    if eval_examples:
        evaluate = (lambda: classification_metrics(loaded, eval_examples, options.batch_size)) if task == "classify" \
            else (lambda: {"eval_loss": _mean_loss(loaded, _padded_batches(loaded, eval_examples, options.batch_size))})
    else:
        evaluate = None
    if options.eval_every is None and evaluate:
        options.eval_every = max(1, math.ceil(batches.batches_per_epoch / options.grad_accum))  # once an epoch
    return _optimize("classify" if task == "classify" else "finetune", loaded, batches, steps, options,
                     on_step, stop, evaluate)


def _optimize(kind: str, loaded: LoadedModel, batches, total_steps: int, options: TrainOptions,
              on_step, stop: StopFlag | None, evaluate: Callable[[], dict] | None) -> TrainResult:
    from transformers import get_cosine_schedule_with_warmup

    on_gpu = loaded.device.type == "cuda"
    accelerator = _accelerator(loaded, options)
    model = loaded.model
    if options.gradient_checkpointing:
        _unwrap_peft(model).activation_checkpointing_enable({"use_reentrant": False})
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    # fused AdamW: one kernel for every parameter on the GPU instead of a loop of small ones
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=options.lr, fused=on_gpu or None)
    warmup = int(options.warmup * total_steps) if options.warmup < 1 else int(options.warmup)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    result = TrainResult(kind=kind, total_steps=total_steps)
    start_step = 0
    if options.resume:
        start_step = _restore(options.resume, optimizer, scheduler, batches, result)
        if start_step >= total_steps:
            raise LLMError(f"--resume {options.resume} is at step {start_step}; ask for more --steps than that")
    output_dir = prepare_output_dir(options.output_dir, kind, result.run_id) if options.checkpoint_every else None
    result.output_dir = str(output_dir) if output_dir else None

    def save(step: int):
        if accelerator.is_main_process:  # every rank holds the same weights and optimizer state (DDP)
            result.checkpoint = save_checkpoint(output_dir / f"checkpoint-{step}", loaded, optimizer, scheduler,
                                                batches, step, result, options.keep_checkpoints,
                                                result.run_id)
        accelerator.wait_for_everyone()

    def publish(row: dict):
        row["loss"] = row["loss"].read()
        if "rank_losses" in row:
            row["rank_losses"] = row["rank_losses"].read()
        result.history.append(row)
        for callback in on_step:
            callback(row, result)

    model.train()
    last_saved = start_step
    # On a GPU a step's loss is published one step late: by then its copy to the host is done and reading
    # it does not wait for the step in flight (no host synchronisation per step).
    late = on_gpu
    waiting = None
    started = time.perf_counter() - result.seconds
    try:
        with graceful_interrupts(stop) as flag:
            for step in range(start_step + 1, total_steps + 1):
                if _stop_requested(accelerator, flag):
                    result.interrupted = True
                    break
                rank_losses, tokens = _one_step(accelerator, model, batches, options, loaded.device)
                accelerator.clip_grad_norm_(trainable, options.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                result.tokens += tokens
                result.seconds = time.perf_counter() - started
                row = {"step": step, "loss": _HostValue(rank_losses.mean()), "lr": scheduler.get_last_lr()[0],
                       "tokens": result.tokens, "elapsed": result.seconds}
                if len(rank_losses) > 1:
                    row["rank_losses"] = _HostValue(rank_losses)  # each process's share of the batch
                if evaluate and options.eval_every and (step % options.eval_every == 0 or step == total_steps):
                    row.update(evaluate())
                    result.eval_history.append({"step": step, **{k: v for k, v in row.items()
                                                                 if k.startswith("eval_") or k in ("accuracy", "f1")}})
                if waiting is not None:
                    publish(waiting)
                waiting = row
                checkpoint_due = options.checkpoint_every and step % options.checkpoint_every == 0
                if not late or checkpoint_due:
                    publish(waiting)
                    waiting = None
                if checkpoint_due:
                    save(step)
                    last_saved = step
            if waiting is not None:
                publish(waiting)
                waiting = None
                result.seconds = time.perf_counter() - started  # now that the GPU has finished the last step
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        where = "GPU" if on_gpu else "CPU"
        per_process = options.batch_size // accelerator.num_processes
        raise LLMError(f"out of {where} memory at --batch-size {per_process} --seq-len {options.seq_len}: "
                       f"try --batch-size {max(1, per_process // 2)} --grad-accum "
                       f"{options.grad_accum * 2} (the model is unchanged)") from None
    finally:
        model.eval()
        loaded.model = accelerator.unwrap_model(model, keep_torch_compile=False)
        if options.gradient_checkpointing:
            _unwrap_peft(loaded.model).activation_checkpointing_disable()
    if options.checkpoint_every and result.steps_done > last_saved:
        save(result.steps_done)  # an interrupted or uneven run still leaves its latest state on disk
    if evaluate and not result.eval_history and result.history:
        result.metrics = evaluate()
    elif result.eval_history:
        result.metrics = {k: v for k, v in result.eval_history[-1].items() if k != "step"}
    return result


def _accelerator(loaded: LoadedModel, options: TrainOptions):
    """bf16 autocast and TF32 matmuls on a GPU; `--compile` through accelerate's dynamo plugin. Under
    `accelerate launch --config_file` the config's own precision and compile settings win."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # accelerate keeps one state per process: without this a second run in the kernel would silently keep
    # the first run's precision and compile settings (the distributed set-up, PartialState, is kept).
    AcceleratorState._reset_state()
    on_gpu = loaded.device.type == "cuda"
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    launched = "ACCELERATE_MIXED_PRECISION" in os.environ
    mixed = None if launched else ("bf16" if on_gpu and torch.cuda.is_bf16_supported() else "no")
    return Accelerator(mixed_precision=mixed, cpu=loaded.device.type == "cpu",
                       dynamo_backend=compile_backend(options.compile))


def _stop_requested(accelerator, flag: StopFlag) -> bool:
    """A stop asked on any rank ends every rank after the same step (accelerate's trigger)."""
    if accelerator.num_processes == 1:
        return flag.requested
    if flag.requested:
        accelerator.set_trigger()
    return accelerator.check_trigger()


class _HostValue:
    """A scalar on its way from the device to the host: the copy is queued without blocking, and reading
    it waits only for that copy (not for work queued after it)."""

    def __init__(self, value: torch.Tensor):
        self.ready = None
        if value.is_cuda:
            self.value = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            self.value.copy_(value, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record()
        else:
            self.value = value

    def read(self) -> float | list[float]:
        if self.ready is not None:
            self.ready.synchronize()
        return self.value.tolist()


def _unwrap_peft(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _one_step(accelerator, model, batches, options: TrainOptions, device) -> tuple[torch.Tensor, int]:
    """One optimizer step's gradients; returns each process's loss (a device tensor, not read here) and the
    tokens of the step. With several processes every rank draws the same global batch and keeps its own
    share (accelerate's split_between_processes), so N processes x B rows = one process x N*B rows."""
    total_loss, tokens = torch.zeros((), device=accelerator.device), 0
    for micro in range(options.grad_accum):
        batch = batches.next_batch()
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        with accelerator.split_between_processes(batch, apply_padding=True) as shard:
            shard = {k: v.to(device, non_blocking=True) for k, v in shard.items()}
        with accelerator.autocast():
            loss = model(**shard).loss / options.grad_accum
        accelerator.backward(loss)
        total_loss += loss.detach()
    return accelerator.gather(total_loss[None]), tokens
