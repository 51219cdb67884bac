"""One training run, `train` or `finetune`, from checked options to its record:
read the data -> build the model -> seed -> train here or on several processes -> record the result.

The session only holds what a run starts from and ends with (its model, its run history); everything a
run does in between is here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..base.errors import LLMError
from ..base.interrupts import StopFlag
from ..base.kinds import RunKind
from ..base.progress import ProgressBar
from ..data import Corpus, Preparation, check_labels, data_cache, datasets_bars, read_corpus
from ..loading import CAUSAL, CLASSIFIER, LoadedModel, load_model, refuse_remote_code, require_causal
from ..options import check_bounds
from ..quantization import require_full_precision
from .callbacks import StepCallback, as_callbacks
from .checkpoints import read_state, seed_everything
from .loop import finetune as finetune_here
from .loop import train_causal_lm
from .models import check_lora_rank, head_labels, new_model, resolve_tokenizer, scratch_config
from .options import TrainOptions, TrainResult


def train(
    session,
    opts: TrainOptions,
    text: str | None = None,
    data: str | None = None,
    from_scratch: bool = False,
    config: str = "tiny",
    arch: str = "llama",
    tokenizer: str = "bytes",
    eval_data: str | None = None,
    on_step: Sequence[Callable] = (),
    device: str = "auto",
    progress: bool = True,
    trust_remote_code: bool = False,
    processes: int = 1,
    accelerate_config: str | None = None,
    text_field: str | None = None,
    max_tokens: int | None = None,
    sample_docs: int | None = None,
    on_prepare: Sequence[Callable] = (),
    num_proc: int | None = None,
    runs_dir: str | None = None,
) -> TrainResult:
    """`Session.train` once its options are checked (see its docstring)."""
    check_early_stopping(opts, eval_data)
    if opts.resume:
        reached = int(read_state(opts.resume)["step"])  # refused before anything runs if unsafe
        if reached >= (opts.steps or 100):
            raise LLMError(f"--resume {opts.resume} is at step {reached}; ask for more --steps than that")
    elif not from_scratch:
        session.require_model("train")
        require_full_precision(session.loaded, "train")
        require_causal(session.loaded, "train", "train pre-trains on next tokens")
    several = processes != 1 or accelerate_config is not None
    home = "cpu" if several else device  # forked workers cannot share a GPU the kernel already uses
    name = (
        f"from-scratch {config} {arch} ({tokenizer} tokenizer)"
        if from_scratch and not opts.resume
        else opts.resume
        if opts.resume
        else session.loaded.name
    )
    record = start_record(
        session,
        RunKind.LR_FIND if opts.lr_sweep else RunKind.TRAIN,
        opts,
        name,
        runs_dir,
        dict(
            from_scratch=from_scratch,
            config=config,
            arch=arch,
            tokenizer=tokenizer,
            data=data,
            eval_data=eval_data,
            text_field=text_field,
            max_tokens=max_tokens,
            sample_docs=sample_docs,
            processes=processes,
        ),
    )

    def build() -> LoadedModel:
        # The model this run trains is built aside; the session takes it only when the run starts, so a
        # command that fails on a check keeps the model the user had (a fine-tuned one may be unsaved).
        if opts.resume:  # the checkpoint holds the architecture and the weights the run had reached
            return load_model(opts.resume, home, "auto", trust_remote_code)
        if from_scratch:
            return scratch_model(session.loaded, config, arch, tokenizer, home, trust_remote_code)
        return session.loaded

    def here(model, corpus, eval_corpus, callbacks, stop, prep, start) -> TrainResult:
        return train_causal_lm(
            model, corpus, opts, callbacks, stop, eval_corpus, prep, max_tokens, num_proc, on_start=start
        )

    def job(model, corpus, eval_corpus):
        from ..base.devices import resolve_device
        from . import distributed

        return distributed.Job(
            RunKind.TRAIN,
            model,
            corpus,
            opts,
            eval_corpus,
            max_tokens=max_tokens,
            num_proc=num_proc,
            gpus=resolve_device(device).type == "cuda",
        )

    data_args = dict(data=data, text=text, eval_data=eval_data, text_field=text_field, sample_docs=sample_docs)
    return execute(
        session,
        RunKind.TRAIN,
        opts,
        record,
        build,
        here,
        job if several else None,
        data_args,
        on_step,
        on_prepare,
        progress,
        processes,
        accelerate_config,
        steps_unknown=opts.steps or 100,
    )


def finetune(
    session,
    opts: TrainOptions,
    data: str | None = None,
    text: str | None = None,
    eval_data: str | None = None,
    lora: bool = False,
    lora_r: int = 8,
    lora_alpha: int | None = None,
    task: str = "lm",
    labels: list[str] | str | None = None,
    on_step: Sequence[Callable] = (),
    progress: bool = True,
    trust_remote_code: bool = False,
    processes: int = 1,
    accelerate_config: str | None = None,
    text_field: str | None = None,
    sample_docs: int | None = None,
    on_prepare: Sequence[Callable] = (),
    runs_dir: str | None = None,
) -> TrainResult:
    """`Session.finetune` once its options are checked (see its docstring)."""
    check_early_stopping(opts, eval_data)
    if opts.resume:
        read_state(opts.resume)  # refused before anything runs if unpickling it could run code
        refuse_remote_code(Path(opts.resume).expanduser(), trust_remote_code)
    if lora:  # an alpha of 0 would silently train nothing (scale 0)
        check_bounds({"lora_alpha": lora_alpha}, "finetune", only=("lora_alpha",))
    loaded = session.require_model("finetune")
    require_full_precision(loaded, "finetune")
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    if task == "classify" and not labels and loaded.kind == CLASSIFIER:
        labels = [loaded.model.config.id2label[i] for i in range(loaded.model.config.num_labels)]
    if task == "classify":
        labels = head_labels(loaded, check_labels(labels))  # by name onto an existing head
    check_lora_rank(lora, lora_r)
    kind = RunKind.of("finetune", task)
    # A new head or LoRA go into this copy of the session's LoadedModel (same weights, not copied); the
    # session takes it when the run starts, so a failed command leaves the session as it was.
    model = dataclasses.replace(loaded)
    record = start_record(
        session,
        RunKind.LR_FIND if opts.lr_sweep else kind,
        opts,
        loaded.name,
        runs_dir,
        dict(
            data=data,
            eval_data=eval_data,
            lora=lora,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            task=task,
            labels=labels,
            text_field=text_field,
            sample_docs=sample_docs,
            processes=processes,
        ),
    )
    tuning: dict[str, Any] = dict(lora=lora, lora_r=lora_r, lora_alpha=lora_alpha, task=task, labels=labels)

    def here(model, corpus, eval_corpus, callbacks, stop, prep, start) -> TrainResult:
        return finetune_here(
            model,
            corpus,
            opts,
            eval_corpus=eval_corpus,
            on_step=callbacks,
            stop=stop,
            prep=prep,
            on_start=start,
            **tuning,
        )

    def job(model, corpus, eval_corpus):
        from . import distributed

        return distributed.Job(
            RunKind.FINETUNE, model, corpus, opts, eval_corpus, gpus=torch.cuda.is_available(), finetune_args=tuning
        )

    several = processes != 1 or accelerate_config is not None
    data_args = dict(data=data, text=text, eval_data=eval_data, text_field=text_field, sample_docs=sample_docs)
    return execute(
        session,
        kind,
        opts,
        record,
        lambda: model,
        here,
        job if several else None,
        data_args,
        on_step,
        on_prepare,
        progress,
        processes,
        accelerate_config,
        steps_unknown=opts.steps or 0,
    )


def start_record(session, kind: RunKind, opts: TrainOptions, model: str | None, runs_dir: str | None, arguments: dict):
    """Start a run's folder before anything runs (an unwritable runs dir is one line, not a lost run);
    checkpoints and local trackers live in it."""
    record = session.new_record(kind, {**arguments, **asdict(opts)}, model, runs_dir)
    if opts.checkpoint_every and not opts.output_dir:
        opts.output_dir = str(record.path / "checkpoints")
    opts.tracker_dir = str(record.path / "trackers")
    return record


def execute(
    session,
    kind: RunKind,
    opts: TrainOptions,
    record,
    build: Callable[[], LoadedModel],
    here: Callable,
    job: Callable | None,
    data_args: dict,
    on_step,
    on_prepare,
    progress: bool,
    processes: int,
    accelerate_config: str | None,
    steps_unknown: int,
) -> TrainResult:
    """Read -> build -> seed -> train (here, or `job`'s processes) -> record, stoppable throughout."""

    def work(stop: StopFlag, callbacks: list) -> TrainResult:
        prep = preparation(stop, callbacks, on_prepare, progress)
        corpora = read_both(prep, **data_args)
        if corpora is None:
            return TrainResult(kind=kind, total_steps=steps_unknown, interrupted=True)
        corpus, eval_corpus = corpora
        record.add_data(corpus, "data")
        record.add_data(eval_corpus, "eval_data")
        model = build()
        start = session.taking(model)
        seed_everything(opts.seed)  # LoRA init, dropout and the data order follow --seed
        if job is None:
            return here(model, corpus, eval_corpus, callbacks, stop, prep, start)
        from . import distributed

        result = distributed.run(job(model, corpus, eval_corpus), processes, callbacks, stop, accelerate_config, prep)
        start()  # the trained weights came back into `model`
        for callback in callbacks:  # (the workers' loops called their own)
            callback.on_end(result)
        return result

    reached = LatestResult()
    # the run's record first: a step a later callback dies in is still on disk
    callbacks = as_callbacks(
        [reached, record] + list(on_step) + session.step_listeners + ([ProgressBar(str(kind))] if progress else [])
    )  # says finetune (or classify), not lm
    for callback in callbacks:  # e.g. the live chart, to name the runs it overlays by their differences
        callback.on_record(record)
    try:
        result = session.stoppable(lambda stop: work(stop, callbacks))
    except BaseException as error:  # a failed run is still a run: keep what it reached
        failed = reached.result or TrainResult(kind=kind, total_steps=0)
        failed.error = (
            str(error)
            if isinstance(error, LLMError)
            else "interrupted"
            if isinstance(error, KeyboardInterrupt)
            else f"{type(error).__name__}: {error}"
        )
        failed.interrupted = isinstance(error, KeyboardInterrupt)
        session.recorded(failed, record)
        raise
    finally:
        for callback in callbacks:
            callback.close()
    session.recorded(result, record)
    return result


def check_early_stopping(opts: TrainOptions, eval_data: str | None) -> None:
    from . import trackers

    trackers.parse(opts.track)  # an unknown or missing tracker is one line before anything runs
    if opts.early_stopping and not (eval_data and opts.eval_every):
        raise LLMError("--early-stopping needs --eval-data FILE and --eval-every N: it watches the eval loss")


def scratch_model(
    loaded: LoadedModel | None,
    config: str,
    arch: str,
    tokenizer_name: str,
    device: str,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """A fresh model of `config` and `arch` with the named tokenizer (`default`: the loaded model's)."""
    from ..base.devices import resolve_device

    tokenizer = resolve_tokenizer(tokenizer_name, loaded, trust_remote_code)
    model_config = scratch_config(config, arch, tokenizer)
    torch_device = resolve_device(device)
    model = new_model(model_config, torch_device)
    name = f"from-scratch {Path(config).stem} {model_config.model_type}"
    return LoadedModel(model, tokenizer, name, "", CAUSAL, torch_device, torch.float32)


def preparation(stop: StopFlag, callbacks: list[StepCallback], on_prepare, progress: bool) -> Preparation:
    return Preparation(stop, [c.on_prepare for c in callbacks] + list(on_prepare), progress)


def read_both(
    prep: Preparation,
    data: str | None,
    text: str | None,
    eval_data: str | None,
    text_field: str | None,
    sample_docs: int | None,
) -> tuple[Corpus, Corpus | None] | None:
    """The training corpus and the --eval-data one (if asked); None when stopped while reading."""
    corpus = read(prep, data, text, text_field, sample_docs)
    eval_corpus = read(prep, eval_data, None, text_field, None) if eval_data and corpus else None
    if corpus is None or (eval_data and eval_corpus is None):
        prep.close()
        return None
    return corpus, eval_corpus


def read(
    prep: Preparation, data: str | None, text: str | None, text_field: str | None, sample_docs: int | None
) -> Corpus | None:
    """Read --data (or the cell body) as an interruptible stage; None when stopped."""
    if prep.stopped:
        return None
    prep.report("reading", 0, 1, unit="corpus")  # our bar, not datasets' ("Generating train split")
    corpus = None
    with prep.interruptible(), datasets_bars(False):
        corpus = read_corpus(data, text, text_field, sample_docs, cache=data_cache() / "datasets")
    if corpus is None or prep.stopped:
        return None
    prep.report("reading", 1, 1, unit="corpus")
    return corpus


class LatestResult(StepCallback):
    """Remembers the run's live result, so a failing run can still be recorded."""

    def __init__(self):
        self.result: TrainResult | None = None

    def on_step(self, row: dict, result: TrainResult):
        self.result = result
