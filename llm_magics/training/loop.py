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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..base.devices import compile_backend
from ..base.errors import LLMError, is_out_of_memory
from ..base.interrupts import StopFlag, graceful_interrupts
from ..base.kinds import RunKind
from ..data import (
    IGNORE_INDEX,
    Corpus,
    Preparation,
    cached_examples,
    check_labels,
    classification_examples,
    data_cache,
    packed_tokens,
    supervised_examples,
)
from ..loading import CLASSIFIER, LoadedModel, context_length, require_causal
from . import trackers
from .batches import EpochBatches, PackedBlocks, fixed_windows, padded_batches
from .callbacks import StepCallback, as_callbacks
from .checkpoints import prepare_output_dir, restore_state, save_checkpoint
from .models import add_lora, check_lora_rank, checked_weights, classifier_from, head_labels, resume_weights
from .options import RunSpec, TrainOptions, TrainResult
from .scoring import classification_metrics, mean_loss

if TYPE_CHECKING:
    from accelerate import Accelerator


@dataclass
class Hooks:
    """What a run reports to and is stopped by: its step callbacks, its stop flag, its data preparation
    (progress and hooks), and on_start, called once everything is checked, right before the first step."""

    on_step: Sequence[Callable]
    stop: StopFlag
    prep: Preparation
    on_start: Callable[[], None] | None


def run_here(
    loaded: LoadedModel, corpus: Corpus, eval_corpus: Corpus | None, *, spec: RunSpec, hooks: Hooks
) -> TrainResult:
    """The train or finetune run of `spec` on this process (the kernel, or one rank of several)."""
    start = train_causal_lm if spec.command == "train" else finetune
    return start(loaded, corpus, eval_corpus, spec=spec, hooks=hooks)


def train_causal_lm(
    loaded: LoadedModel, corpus: Corpus, eval_corpus: Corpus | None, *, spec: RunSpec, hooks: Hooks
) -> TrainResult:
    """Pre-train (or continue pre-training) a causal LM on plain text, tokenized once and packed."""
    options, data, prep = spec.train.validated(), spec.data, hooks.prep
    assert options.steps is not None  # declared for train (RunSpec.build)
    _check_seq_len(loaded, options.seq_len)
    tokens = packed_tokens(corpus, loaded.tokenizer, prep, data.max_tokens, data_cache(), data.num_proc)
    eval_tokens = (
        packed_tokens(eval_corpus, loaded.tokenizer, prep, None, data_cache(), data.num_proc)
        if eval_corpus is not None and tokens is not None
        else None
    )
    prep.close()
    if tokens is None or (eval_corpus is not None and eval_tokens is None):
        return TrainResult(kind=RunKind.TRAIN, total_steps=options.steps, interrupted=True)  # stopped while tokenizing
    windows = PackedBlocks(tokens, options.seq_len, options.batch_size, seed=options.seed)
    eval_batches = fixed_windows(eval_tokens, windows.seq_len, options.batch_size) if eval_tokens else None
    return _optimize(
        RunKind.TRAIN,
        loaded,
        windows,
        options.steps,
        options,
        hooks.on_step,
        hooks.stop,
        evaluate=(lambda: {"eval_loss": mean_loss(loaded, eval_batches)}) if eval_batches else None,
        on_start=hooks.on_start,
    )


def _check_seq_len(loaded: LoadedModel, seq_len: int) -> None:
    limit = context_length(loaded.model)
    if limit and seq_len > limit:
        raise LLMError(f"--seq-len {seq_len} is larger than the model's context ({limit} tokens)")


def finetune(
    loaded: LoadedModel, corpus: Corpus, eval_corpus: Corpus | None, *, spec: RunSpec, hooks: Hooks
) -> TrainResult:
    """Fine-tune `loaded` (a LoadedModel the caller may have set aside: a new head or LoRA go into it)."""
    options, tuning, prep = spec.train.validated(), spec.model, hooks.prep
    task, labels = tuning.task, tuning.labels
    kind = RunKind.of("finetune", task)
    if task == "classify":
        labels = head_labels(loaded, check_labels(labels))
    elif task == "lm":
        require_causal(
            loaded,
            "finetune",
            "language-model fine-tuning learns next tokens",
            hint="for an encoder use --task classify --labels ...",
        )
        _check_seq_len(loaded, options.seq_len)
    else:
        raise LLMError(f"unknown --task {task!r}: use lm or classify")
    check_lora_rank(tuning.lora, tuning.lora_r)
    examples = tokenized_examples(loaded, corpus, task, labels, options.seq_len, prep)
    eval_examples = (
        tokenized_examples(loaded, eval_corpus, task, labels, options.seq_len, prep)
        if eval_corpus is not None and examples is not None
        else None
    )
    prep.close()
    if examples is None or (eval_corpus is not None and eval_examples is None):
        return TrainResult(kind=kind, total_steps=options.steps or 0, interrupted=True)  # stopped while tokenizing
    if task == "lm" and not examples:
        raise _no_trainable_tokens(loaded, corpus, options.seq_len)
    if task == "classify" and (loaded.kind != CLASSIFIER or head_labels(loaded, []) != labels):
        assert labels is not None  # head_labels set them for classify
        loaded.model = classifier_from(loaded, labels)
        loaded.kind, loaded.dtype = CLASSIFIER, torch.float32

    # checked before anything runs; they go into the model only once the run starts
    checked = checked_weights(loaded, options.resume) if options.resume and not tuning.lora else None
    body, dtype = loaded.model, loaded.model.dtype
    started = []

    def start():
        if checked is not None:
            loaded.model.load_state_dict(resume_weights(loaded, checked), strict=False)
        started.append(True)
        if hooks.on_start:
            hooks.on_start()

    if tuning.lora:
        add_lora(loaded, tuning.lora_r, tuning.lora_alpha, task, options.resume)
    elif loaded.model.dtype != torch.float32:
        loaded.model.float()  # full fine-tuning keeps fp32 master weights; autocast does the rest
        loaded.dtype = torch.float32
    try:
        return _finetune_steps(loaded, task, examples, eval_examples, options, kind, hooks.on_step, hooks.stop, start)
    except BaseException:
        if not started:  # failed before the first step: the model it was given is as it was
            if loaded.model is not body:
                loaded.model = loaded.model.unload()  # type: ignore[operator]  # a PeftModel: the LoRA layers injected into it are taken out
            body.to(dtype)  # type: ignore[arg-type]  # transformers' wrapper around Module.to hides its signature
            loaded.dtype = dtype
        raise


def _finetune_steps(loaded, task, examples, eval_examples, options, kind, on_step, stop, on_start) -> TrainResult:
    batches = EpochBatches(examples, options.batch_size, loaded.tokenizer.pad_token_id or 0, seed=options.seed)
    steps = options.steps or max(1, math.ceil(options.epochs * batches.batches_per_epoch / options.grad_accum))
    if eval_examples:
        evaluate = (
            (lambda: classification_metrics(loaded, eval_examples, options.batch_size))
            if task == "classify"
            else (lambda: {"eval_loss": mean_loss(loaded, padded_batches(loaded, eval_examples, options.batch_size))})
        )
    else:
        evaluate = None
    if options.eval_every is None and evaluate:
        options.eval_every = max(1, math.ceil(batches.batches_per_epoch / options.grad_accum))  # once an epoch
    return _optimize(kind, loaded, batches, steps, options, on_step, stop, evaluate, on_start)


def _no_trainable_tokens(loaded: LoadedModel, corpus: Corpus, seq_len: int) -> LLMError:
    """Why every example was dropped: --seq-len cut it before its first trained token (a long prompt, or a
    chat template's system text), or there was nothing to learn even uncut."""
    from ..data.examples import IGNORE_INDEX

    records = corpus.dataset.select(range(min(len(corpus.dataset), 8))).to_list()
    uncut = supervised_examples(
        loaded.tokenizer, records, 1 << 30, corpus.text_field, lambda row: lambda: corpus.where(row)
    )
    prompts = [next(i for i, label in enumerate(e["labels"]) if label != IGNORE_INDEX) for e in uncut]
    if prompts:
        what = "the chat-template prompt" if records[0].get("messages") is not None else "the prompt"
        return LLMError(
            f"--seq-len {seq_len} is shorter than {what} ({min(prompts)} tokens before the first "
            f"trained token in {corpus.origin}): every example is cut before its answer; "
            f"use --seq-len {_next_power_of_two(max(prompts) + 16)} or more"
        )
    return LLMError("no trainable tokens: every example is empty after masking the prompt")


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def tokenized_examples(
    loaded: LoadedModel, corpus: Corpus, task: str, labels: list[str] | None, seq_len: int, prep: Preparation
):
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
    return cached_examples(
        corpus, tokenizer, make, f"{task}|{seq_len}|{labels}|{text_field}", prep, features, data_cache()
    )


@dataclass
class _Run:
    """A run set up for its steps (its output dir locked): what the parts of the loop read and change."""

    kind: RunKind
    loaded: LoadedModel
    batches: object  # PackedBlocks or EpochBatches
    options: TrainOptions
    evaluate: Callable[[], dict] | None
    accelerator: Accelerator
    model: torch.nn.Module  # prepared by accelerate (DDP-wrapped with several processes)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    trainable: list
    result: TrainResult
    start_step: int = 0
    output_dir: Path | None = None

    @property
    def on_gpu(self) -> bool:
        return self.loaded.device.type == "cuda"


def _optimize(
    kind: RunKind,
    loaded: LoadedModel,
    batches,
    total_steps: int,
    options: TrainOptions,
    on_step,
    stop: StopFlag | None,
    evaluate: Callable[[], dict] | None,
    on_start: Callable[[], None] | None = None,
) -> TrainResult:
    """Set the run up (optimizer, schedule, resumed state, output dir), call on_start, then step."""
    tracked = trackers.parse(options.track)
    accelerator = _accelerator(loaded, options, **trackers.accelerator_arguments(tracked, options.tracker_dir))
    run = _prepare(kind, loaded, batches, total_steps, options, evaluate, accelerator)
    lock = None
    if options.checkpoint_every:  # with several processes the kernel holds the folder's lock
        run.output_dir, lock = prepare_output_dir(
            options.output_dir, kind, run.result.run_id, lock=accelerator.num_processes == 1
        )
    run.result.output_dir = str(run.output_dir) if run.output_dir else None
    try:
        if on_start:
            on_start()  # the point of no return: the session now holds the model this run trains
        watching = [_EarlyStopping(options, run.trainable)] if options.early_stopping and evaluate else []
        tracking = _Tracking(run, tracked)
        try:
            return _steps(run, [tracking, *watching, *as_callbacks(on_step)], stop)
        finally:
            tracking.close()  # the trackers end whatever happened
    finally:
        if lock:
            lock.release()


def _prepare(
    kind: RunKind,
    loaded: LoadedModel,
    batches,
    total_steps: int,
    options: TrainOptions,
    evaluate: Callable[[], dict] | None,
    accelerator,
) -> _Run:
    """AdamW and its schedule, prepared by accelerate; a resumed run's state read back."""
    model = loaded.model
    if options.gradient_checkpointing:
        _unwrap_peft(model).activation_checkpointing_enable({"use_reentrant": False})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, options, loaded.device.type == "cuda")
    scheduler = _schedule(optimizer, options, total_steps)
    # An earlier run's Accelerator marked the module as prepared, and accelerate then skips it: a forked
    # worker would train without DDP's gradient sync. Every run prepares it afresh.
    model.__dict__.pop("_is_accelerate_prepared", None)
    model, optimizer = accelerator.prepare(model, optimizer)
    run = _Run(
        kind,
        loaded,
        batches,
        options,
        evaluate,
        accelerator,
        model,
        optimizer,
        scheduler,
        trainable,
        TrainResult(kind=kind, total_steps=total_steps),
    )
    if options.resume:
        run.start_step = restore_state(options.resume, optimizer, scheduler, batches, run.result)
        if run.start_step >= total_steps:
            raise LLMError(f"--resume {options.resume} is at step {run.start_step}; ask for more --steps than that")
    return run


def _optimizer(trainable: list, options: TrainOptions, on_gpu: bool) -> torch.optim.Optimizer:
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    # fused AdamW: one kernel for every parameter on the GPU instead of a loop of small ones
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.lr,
        fused=on_gpu or None,
    )


def _schedule(optimizer, options: TrainOptions, total_steps: int):
    from transformers import get_cosine_schedule_with_warmup

    if options.lr_sweep:  # lr-find: step k (0-based) uses lr * (end / lr) ** (k / steps), as fastai's LRFinder
        ratio = options.lr_sweep / options.lr
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: ratio ** (k / total_steps))
    warmup = int(options.warmup * total_steps) if options.warmup < 1 else int(options.warmup)
    return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)


def _steps(run: _Run, callbacks: list[StepCallback], stop: StopFlag | None) -> TrainResult:
    """The optimizer steps of a prepared run, then its last checkpoint, evaluation and `on_end`."""
    result, options = run.result, run.options
    run.model.train()
    last_saved = run.start_step
    # On a GPU a step's loss is published one step late: by then its copy to the host is done and reading
    # it does not wait for the step in flight (no host synchronisation per step).
    waiting = None
    started = time.perf_counter() - result.seconds
    try:
        with graceful_interrupts(stop) as flag:
            for step in range(run.start_step + 1, result.total_steps + 1):
                if _stop_requested(run.accelerator, flag):
                    result.interrupted = True
                    break
                row = _step(run, step, started)
                if _evaluation_due(run, step):
                    assert run.evaluate is not None  # _evaluation_due checked it
                    row.update(run.evaluate())
                    _evaluated(result, step, _scores(row), callbacks)
                if waiting is not None:
                    _publish(waiting, result, callbacks)
                waiting = row
                checkpoint_due = options.checkpoint_every and step % options.checkpoint_every == 0
                if not run.on_gpu or checkpoint_due:
                    _publish(waiting, result, callbacks)
                    waiting = None
                if checkpoint_due:
                    _save(run, step)
                    last_saved = step
                if result.stopped_early:  # set by an on_eval (early stopping)
                    break
            if waiting is not None:
                _publish(waiting, result, callbacks)
                result.seconds = time.perf_counter() - started  # now that the GPU has finished the last step
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        raise _out_of_memory(run) from None
    finally:
        run.model.eval()
        run.loaded.model = run.accelerator.unwrap_model(run.model, keep_torch_compile=False)
        if options.gradient_checkpointing:
            _unwrap_peft(run.loaded.model).activation_checkpointing_disable()
    if options.checkpoint_every and result.steps_done > last_saved:
        _save(run, result.steps_done)  # an interrupted or uneven run still leaves its latest state on disk
    _final_scores(run)
    for callback in callbacks:
        callback.on_end(result)
    return result


def _evaluation_due(run: _Run, step: int) -> bool:
    every = run.options.eval_every or 0
    return run.evaluate is not None and (step == run.result.total_steps or bool(every) and step % every == 0)


def _step(run: _Run, step: int, started: float) -> dict:
    """One optimizer step; its row (the loss still on its way to the host)."""
    result = run.result
    loss, rank_losses, tokens = _one_step(run.accelerator, run.model, run.batches, run.options, run.loaded.device)
    run.accelerator.clip_grad_norm_(run.trainable, run.options.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    result.tokens += tokens
    result.seconds = time.perf_counter() - started
    row = {
        "step": step,
        "loss": _HostValue(loss),
        "lr": run.scheduler.get_last_lr()[0],
        "tokens": result.tokens,
        "elapsed": result.seconds,
    }
    if len(rank_losses) > 1:
        row["rank_losses"] = _HostValue(rank_losses)  # each process's share of the batch
    return row


def _evaluated(result: TrainResult, step: int, scores: dict, callbacks: list[StepCallback]) -> None:
    result.eval_history.append({"step": step, **scores})
    for callback in callbacks:
        callback.on_eval(step, scores, result)


def _publish(row: dict, result: TrainResult, callbacks: list[StepCallback]) -> None:
    row["loss"] = row["loss"].read()
    if "rank_losses" in row:
        row["rank_losses"] = row["rank_losses"].read()
    result.history.append(row)
    for callback in callbacks:
        callback.on_step(row, result)


def _save(run: _Run, step: int) -> None:
    result = run.result
    assert run.output_dir is not None  # a run that saves checkpoints has its output dir
    if run.accelerator.is_main_process:  # every rank holds the same weights and optimizer state (DDP)
        result.checkpoint = save_checkpoint(
            run.output_dir / f"checkpoint-{step}",
            run.loaded,
            run.optimizer,
            run.scheduler,
            run.batches,
            step,
            result,
            run.options.keep_checkpoints,
            result.run_id,
        )
    run.accelerator.wait_for_everyone()


def _final_scores(run: _Run) -> None:
    """A graceful stop is scored with the weights it stopped with, at the step it stopped (an older score
    is never re-drawn there as if it had been measured); the run's metrics are its last evaluation's."""
    result = run.result
    measured_last = bool(result.eval_history) and result.eval_history[-1]["step"] == result.steps_done
    if run.evaluate and result.history and not measured_last:
        result.eval_history.append({"step": result.steps_done, **_scores(run.evaluate())})
    if result.eval_history:
        result.metrics = {k: v for k, v in result.eval_history[-1].items() if k != "step"}


def _out_of_memory(run: _Run) -> LLMError:
    run.optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    where = "GPU" if run.on_gpu else "CPU"
    per_process = run.options.batch_size // run.accelerator.num_processes
    return LLMError(
        f"out of {where} memory at --batch-size {per_process} --seq-len {run.options.seq_len}: "
        f"try --batch-size {max(1, per_process // 2)} --grad-accum "
        f"{run.options.grad_accum * 2} (the model is unchanged)"
    )


class _Tracking(StepCallback):
    """--track: the experiment trackers get the run's options, then every step's row."""

    def __init__(self, run: _Run, names: list[str]):
        self.accelerator, self.names = run.accelerator, names
        trackers.start(
            run.accelerator,
            names,
            run.options.tracker_dir,
            {"kind": run.kind, "total_steps": run.result.total_steps, **vars(run.options)},
        )

    def on_step(self, row: dict, result: TrainResult) -> None:
        trackers.log(self.accelerator, self.names, row)

    def close(self) -> None:
        trackers.end(self.accelerator, self.names)


class _EarlyStopping(StepCallback):
    """Stops after `patience` evaluations without an eval loss lower than the best by more than min_delta;
    keeps a copy of the trainable weights at the best evaluation and loads it back at the end."""

    best_weights: list[torch.Tensor] | None

    def __init__(self, options: TrainOptions, trainable: list):
        assert options.early_stopping  # made only with --early-stopping
        self.patience, self.min_delta, self.keep = options.early_stopping, options.min_delta, options.restore_best
        self.trainable = trainable
        self.best, self.best_weights, self.waited = math.inf, None, 0

    def on_eval(self, step: int, scores: dict, result: TrainResult) -> None:
        loss = scores.get("eval_loss")
        if loss is None or not math.isfinite(loss):
            self.waited += 1
        elif loss < self.best - self.min_delta:
            self.best, self.waited, result.best_step = loss, 0, step
            if self.keep:
                self.best_weights = [p.detach().clone() for p in self.trainable]
        else:
            self.waited += 1
        if self.waited >= self.patience:
            result.stopped_early = True

    @torch.no_grad()
    def on_end(self, result: TrainResult) -> None:
        """After the final checkpoint, which keeps the state the run reached."""
        if not result.stopped_early or self.best_weights is None:
            return
        for parameter, best in zip(self.trainable, self.best_weights):
            parameter.copy_(best)
        result.restored_step = result.best_step
        result.metrics = next(
            {k: v for k, v in e.items() if k != "step"}
            for e in result.eval_history
            if e["step"] == result.restored_step
        )  # the scores of the weights it now holds


def _scores(row: dict) -> dict:
    """The evaluation part of a step row."""
    return {k: v for k, v in row.items() if k.startswith("eval_") or k in ("accuracy", "f1")}


def _accelerator(loaded: LoadedModel, options: TrainOptions, **tracking):
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
    return Accelerator(
        mixed_precision=mixed,
        cpu=loaded.device.type == "cpu",
        dynamo_backend=compile_backend(options.compile),
        **tracking,
    )


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


def _one_step(accelerator, model, batches, options: TrainOptions, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One optimizer step's gradients; returns the step's loss and each process's own mean loss (device
    tensors, not read here) and the tokens of the step. With several processes every rank draws the same
    global batch and keeps its own share (accelerate's split_between_processes), so N processes x B rows =
    one process x N*B rows. The loss is the mean over every target token (or labelled row) of the whole
    step, all micro-batches and ranks together, not a mean of per-rank or per-micro-batch means, which
    would weigh a short record's tokens more when records have different lengths."""
    micro_batches = [batches.next_batch() for _ in range(options.grad_accum)]
    targets = max(1, sum(int(_targets(batch["labels"]).sum()) for batch in micro_batches))
    world = accelerator.num_processes
    share, own, tokens = torch.zeros((), device=accelerator.device), 0, 0
    for batch in micro_batches:
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        rows = len(batch["input_ids"])
        with accelerator.split_between_processes(batch, apply_padding=True) as shard:
            shard = {k: v.to(device, non_blocking=True) for k, v in shard.items()}
        labels = _without_repeated_rows(shard.pop("labels"), rows, accelerator)
        with accelerator.autocast():
            logits = model(**shard).logits
        loss = _summed_loss(logits, labels) / targets
        accelerator.backward(loss * world)  # DDP averages the ranks' gradients; the step needs their sum
        share += loss.detach()
        own += int(_targets(labels).sum())
    gathered = accelerator.gather(torch.stack([share, torch.tensor(float(own), device=share.device)])[None])
    shares, counts = gathered[:, 0], gathered[:, 1]
    return shares.sum(), shares * targets / counts.clamp(min=1), tokens


def _targets(labels: torch.Tensor) -> torch.Tensor:
    """Which labels are scored: a causal LM predicts labels[:, 1:]; a classifier one label per row."""
    return (labels[:, 1:] if labels.ndim == 2 else labels) != IGNORE_INDEX


def _summed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy over the scored labels (what the model's own mean loss averages)."""
    import torch.nn.functional as F

    if labels.ndim == 2:  # next-token prediction: position t predicts label t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1).to(logits.device),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def _without_repeated_rows(labels: torch.Tensor, rows: int, accelerator) -> torch.Tensor:
    """split_between_processes evens out the ranks' shares by repeating the batch's last row: those
    repeats get no labels, so no row counts twice."""
    if accelerator.num_processes == 1:
        return labels
    each, extra = divmod(rows, accelerator.num_processes)
    valid = each + (1 if accelerator.process_index < extra else 0)
    if valid < len(labels):
        labels = labels.clone()
        labels[valid:] = IGNORE_INDEX
    return labels
