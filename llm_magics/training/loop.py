"""Training from scratch, continued pre-training, (LoRA) fine-tuning and classifier tuning.

One loop (`_optimize`) serves every kind: AdamW + warmup/cosine, gradient accumulation,
`accelerate` for mixed precision and multi-GPU (`accelerate launch` / torchrun), resumable
checkpoints, and a stop flag checked between optimizer steps so an interrupt never leaves
the weights half-updated.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch

from ..data import RandomWindows, classification_examples, supervised_examples, texts_of, token_stream
from ..errors import LLMError, is_out_of_memory
from ..generation import context_length
from ..interrupts import StopFlag, graceful_interrupts
from ..loading import CAUSAL, CLASSIFIER, LoadedModel
from .batches import EpochBatches, _fixed_windows, _padded_batches
from .checkpoints import _restore, save_checkpoint
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
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    model = loaded.model
    mixed = "bf16" if loaded.device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(mixed_precision=mixed, cpu=loaded.device.type == "cpu")
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=options.lr)
    warmup = int(options.warmup * total_steps) if options.warmup < 1 else int(options.warmup)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    output_dir = Path(options.output_dir or f"llm_runs/{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    result = TrainResult(kind=kind, total_steps=total_steps,
                         output_dir=str(output_dir) if options.checkpoint_every else None)
    start_step = 0
    if options.resume:
        start_step = _restore(options.resume, optimizer, scheduler, batches, result)
        if start_step >= total_steps:
            raise LLMError(f"--resume {options.resume} is at step {start_step}; ask for more --steps than that")

    def save(step: int):
        result.checkpoint = save_checkpoint(output_dir / f"checkpoint-{step}", loaded, optimizer, scheduler,
                                            batches, step, result, options.keep_checkpoints)

    model.train()
    last_saved = start_step
    started = time.perf_counter() - result.seconds
    try:
        with graceful_interrupts(stop) as flag:
            for step in range(start_step + 1, total_steps + 1):
                if flag.requested:
                    break
                loss, tokens = _one_step(accelerator, model, batches, options, loaded.device)
                accelerator.clip_grad_norm_(trainable, options.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                result.tokens += tokens
                result.seconds = time.perf_counter() - started
                row = {"step": step, "loss": loss, "lr": scheduler.get_last_lr()[0],
                       "tokens": result.tokens, "elapsed": result.seconds}
                if evaluate and (step == total_steps or options.eval_every and step % options.eval_every == 0):
                    row.update(evaluate())
                    result.eval_history.append({"step": step, **{k: v for k, v in row.items()
                                                                 if k.startswith("eval_") or k in ("accuracy", "f1")}})
                result.history.append(row)
                for callback in on_step:
                    callback(row, result)
                if options.checkpoint_every and step % options.checkpoint_every == 0:
                    save(step)
                    last_saved = step
            result.interrupted = flag.requested
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        where = "GPU" if loaded.device.type == "cuda" else "CPU"
        raise LLMError(f"out of {where} memory at --batch-size {options.batch_size} --seq-len {options.seq_len}: "
                       f"try --batch-size {max(1, options.batch_size // 2)} --grad-accum "
                       f"{options.grad_accum * 2} (the model is unchanged)") from None
    finally:
        model.eval()
        loaded.model = accelerator.unwrap_model(model)
    if options.checkpoint_every and result.steps_done > last_saved:
        save(result.steps_done)  # an interrupted or uneven run still leaves its latest state on disk
    if evaluate and not result.eval_history and result.history:
        result.metrics = evaluate()
    elif result.eval_history:
        result.metrics = {k: v for k, v in result.eval_history[-1].items() if k != "step"}
    return result


def _one_step(accelerator, model, batches, options: TrainOptions, device) -> tuple[float, int]:
    total_loss, tokens = 0.0, 0
    for micro in range(options.grad_accum):
        batch = {k: v.to(device) for k, v in batches.next_batch().items()}
        with accelerator.autocast():
            loss = model(**batch).loss / options.grad_accum
        accelerator.backward(loss)
        total_loss += float(loss.detach())
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    return total_loss, tokens
