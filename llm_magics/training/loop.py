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

from ..data import (Corpus, Preparation, cached_examples, check_labels, classification_examples, data_cache,
                    packed_tokens, supervised_examples)
from ..errors import LLMError, is_out_of_memory
from ..generation import context_length
from ..interrupts import StopFlag, graceful_interrupts
from ..loading import CAUSAL, CLASSIFIER, LoadedModel
from .batches import EpochBatches, PackedBlocks, _fixed_windows, _padded_batches
from .checkpoints import _restore, save_checkpoint
from .models import _add_lora, _load_weights, classifier_from
from .options import TrainOptions, TrainResult
from .scoring import _mean_loss, classification_metrics


def train_causal_lm(loaded: LoadedModel, corpus: Corpus, options: TrainOptions,
                    on_step: list[Callable] = (), stop: StopFlag | None = None,
                    eval_corpus: Corpus | None = None, prep: Preparation | None = None,
                    max_tokens: int | None = None, num_proc: int | None = None) -> TrainResult:
    """Pre-train (or continue pre-training) a causal LM on plain text, tokenized once and packed."""
    options.validated()
    limit = context_length(loaded.model)
    if limit and options.seq_len > limit:
        raise LLMError(f"--seq-len {options.seq_len} is larger than the model's context ({limit} tokens)")
    steps = options.steps or 100
    prep = prep or Preparation(stop, progress=False)
    tokens = packed_tokens(corpus, loaded.tokenizer, prep, max_tokens, data_cache(), num_proc)
    eval_tokens = packed_tokens(eval_corpus, loaded.tokenizer, prep, None, data_cache(), num_proc) \
        if eval_corpus is not None and tokens is not None else None
    prep.close()
    if tokens is None or (eval_corpus is not None and eval_tokens is None):
        return TrainResult(kind="train", total_steps=steps, interrupted=True)  # stopped while tokenizing
    windows = PackedBlocks(tokens, options.seq_len, options.batch_size, options.seed)
    eval_batches = _fixed_windows(eval_tokens, windows.seq_len, options.batch_size) if eval_tokens else None
    return _optimize("train", loaded, windows, steps, options, on_step, stop,
                     evaluate=(lambda: {"eval_loss": _mean_loss(loaded, eval_batches)}) if eval_batches else None)


def finetune(loaded: LoadedModel, corpus: Corpus, options: TrainOptions, *, lora: bool = False,
             lora_r: int = 8, lora_alpha: int | None = None, task: str = "lm",
             labels: list[str] | None = None, eval_corpus: Corpus | None = None,
             on_step: list[Callable] = (), stop: StopFlag | None = None,
             prep: Preparation | None = None) -> TrainResult:
    options.validated()
    prep = prep or Preparation(stop, progress=False)
    kind = "classify" if task == "classify" else "finetune"
    if task == "classify":
        labels = check_labels(labels)
    elif task == "lm":
        if loaded.kind != CAUSAL:
            raise LLMError(f"{loaded.name} is a {loaded.kind} model: language-model fine-tuning needs a "
                           "causal LM (for an encoder use --task classify --labels ...)")
        limit = context_length(loaded.model)
        if limit and options.seq_len > limit:
            raise LLMError(f"--seq-len {options.seq_len} is larger than the model's context ({limit} tokens)")
    else:
        raise LLMError(f"unknown --task {task!r}: use lm or classify")
    examples = _examples(loaded, corpus, task, labels, options.seq_len, prep)
    eval_examples = _examples(loaded, eval_corpus, task, labels, options.seq_len, prep) \
        if eval_corpus is not None and examples is not None else None
    prep.close()
    if examples is None or (eval_corpus is not None and eval_examples is None):
        return TrainResult(kind=kind, total_steps=options.steps or 0, interrupted=True)  # stopped while tokenizing
    if task == "lm" and not examples:
        raise LLMError("no trainable tokens: every example is empty after masking the prompt")
    if task == "classify" and (loaded.kind != CLASSIFIER or loaded.model.config.num_labels != len(labels)):
        loaded.model = classifier_from(loaded, labels)
        loaded.kind, loaded.dtype = CLASSIFIER, torch.float32

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
    return _optimize(kind, loaded, batches, steps, options, on_step, stop, evaluate)


def _examples(loaded: LoadedModel, corpus: Corpus, task: str, labels: list[str] | None, seq_len: int,
              prep: Preparation):
    """Tokenized fine-tuning examples (cached for files), or None when stopped."""
    import datasets

    tokenizer, text_field = loaded.tokenizer, corpus.text_field
    if task == "classify":
        def make(records, where):
            return classification_examples(tokenizer, records, labels, seq_len, text_field, where)
        label_type = datasets.Value("int64")
    else:
        def make(records, where):
            return supervised_examples(tokenizer, records, seq_len, text_field, where)
        label_type = datasets.List(datasets.Value("int32"))
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")), "labels": label_type})
    return cached_examples(corpus, tokenizer, make, f"{task}|{seq_len}|{labels}|{text_field}", prep, features,
                           data_cache())


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
                if evaluate and options.eval_every and (step % options.eval_every == 0 or step == total_steps):
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
