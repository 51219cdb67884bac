"""One training run, `train` or `finetune`, from checked options to its record:
read the data -> build the model -> seed -> train here or on several processes -> record the result.

The session only holds what a run starts from and ends with (its model, its run history); everything a
run does in between is here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..base.errors import LLMError
from ..base.interrupts import StopFlag
from ..base.kinds import RunKind
from ..base.progress import ProgressBar
from ..data import Corpus, Preparation, check_labels, data_cache, datasets_bars, read_corpus
from ..loading import CAUSAL, CLASSIFIER, LoadedModel, load_model, refuse_remote_code, require_causal
from ..options import DataSpec, ModelSpec, RunSpec, check_bounds
from ..quantization import require_full_precision
from .callbacks import StepCallback, as_callbacks
from .checkpoints import check_not_a_file, read_state, seed_everything
from .loop import Hooks, run_here
from .models import check_lora_rank, head_labels, new_model, resolve_tokenizer, scratch_config
from .options import TrainOptions, TrainResult


def run(session, *, spec: RunSpec, on_step: Sequence[Callable], on_prepare: Sequence[Callable]) -> TrainResult:
    """`Session.run` once its lr is resolved: the train or finetune run of `spec`."""
    spec.train.validated()
    check_early_stopping(spec.train, spec.data.eval_data)
    start = train if spec.command == "train" else finetune
    return start(session, spec=spec, on_step=on_step, on_prepare=on_prepare)


def train(session, *, spec: RunSpec, on_step: Sequence[Callable], on_prepare: Sequence[Callable]) -> TrainResult:
    """Pre-train a fresh model (--from-scratch), the loaded one, or a checkpoint's (--resume)."""
    opts, model = spec.train, spec.model
    if opts.resume:
        reached = int(read_state(opts.resume)["step"])  # refused before anything runs if unsafe
        if reached >= (opts.steps or 0):
            raise LLMError(f"--resume {opts.resume} is at step {reached}; ask for more --steps than that")
    elif not model.from_scratch:
        session.require_model("train")
        require_full_precision(session.loaded, "train")
        require_causal(session.loaded, "train", "train pre-trains on next tokens")
    home = "cpu" if spec.several else model.device  # forked workers cannot share a GPU the kernel already uses
    name = (
        f"from-scratch {model.config} {model.arch} ({model.tokenizer} tokenizer)"
        if model.from_scratch and not opts.resume
        else opts.resume
        if opts.resume
        else session.loaded.name
    )
    record = start_record(session, spec, RunKind.TRAIN, name)

    def build() -> LoadedModel:
        # The model this run trains is built aside; the session takes it only when the run starts, so a
        # command that fails on a check keeps the model the user had (a fine-tuned one may be unsaved).
        if opts.resume:  # the checkpoint holds the architecture and the weights the run had reached
            return load_model(opts.resume, home, "auto", model.trust_remote_code)
        if model.from_scratch:
            return scratch_model(session.loaded, model=model, device=home)
        return session.loaded

    return execute(
        session, spec=spec, kind=RunKind.TRAIN, record=record, build=build, on_step=on_step, on_prepare=on_prepare
    )


def finetune(session, *, spec: RunSpec, on_step: Sequence[Callable], on_prepare: Sequence[Callable]) -> TrainResult:
    """Fine-tune the loaded model: all its weights, a LoRA adapter, or a classification head."""
    opts, tuning = spec.train, spec.model
    if opts.resume:
        read_state(opts.resume)  # refused before anything runs if unpickling it could run code
        refuse_remote_code(Path(opts.resume).expanduser(), tuning.trust_remote_code)
    if tuning.lora:  # an alpha of 0 would silently train nothing (scale 0)
        check_bounds({"lora_alpha": tuning.lora_alpha}, "finetune", only=("lora_alpha",))
    loaded = session.require_model("finetune")
    require_full_precision(loaded, "finetune")
    labels = tuning.labels
    if tuning.task == "classify" and not labels and loaded.kind == CLASSIFIER:
        labels = [loaded.model.config.id2label[i] for i in range(loaded.model.config.num_labels)]
    if tuning.task == "classify":
        labels = head_labels(loaded, check_labels(labels))  # by name onto an existing head
    tuning.labels = labels  # as the run trains and records them
    check_lora_rank(tuning.lora, tuning.lora_r)
    kind = RunKind.of("finetune", tuning.task)
    # A new head or LoRA go into this copy of the session's LoadedModel (same weights, not copied); the
    # session takes it when the run starts, so a failed command leaves the session as it was.
    model = dataclasses.replace(loaded)
    record = start_record(session, spec, kind, loaded.name)
    return execute(
        session, spec=spec, kind=kind, record=record, build=lambda: model, on_step=on_step, on_prepare=on_prepare
    )


def start_record(session, spec: RunSpec, kind: RunKind, model: str | None):
    """Start a run's folder before anything runs (an unwritable runs dir is one line, not a lost run);
    checkpoints and local trackers live in it."""
    opts = spec.train
    kind = RunKind.LR_FIND if opts.lr_sweep else kind
    record = session.new_record(kind, spec.record(), model, spec.engine.runs_dir)
    if opts.checkpoint_every and not opts.output_dir:
        opts.output_dir = str(record.path / "checkpoints")
    opts.tracker_dir = str(record.path / "trackers")
    return record


def execute(
    session,
    *,
    spec: RunSpec,
    kind: RunKind,
    record,
    build: Callable[[], LoadedModel],
    on_step: Sequence[Callable],
    on_prepare: Sequence[Callable],
) -> TrainResult:
    """Read -> build -> seed -> train (here, or on several processes) -> record, stoppable throughout."""
    progress = spec.engine.progress

    def work(stop: StopFlag, callbacks: list) -> TrainResult:
        check_not_a_file(spec.train.output_dir)  # also when no checkpoint is asked for: a typo, said at once
        prep = preparation(stop, callbacks, on_prepare, progress)
        corpora = read_both(prep, data=spec.data)
        if corpora is None:  # a train run knows its steps; a finetune run derives them from the data
            return TrainResult(kind=kind, total_steps=spec.train.steps or 0, interrupted=True)
        corpus, eval_corpus = corpora
        record.add_data(corpus, "data")
        record.add_data(eval_corpus, "eval_data")
        model = build()
        start = session.taking(model)
        seed_everything(spec.train.seed)  # LoRA init, dropout and the data order follow --seed
        if not spec.several:
            return run_here(model, corpus, eval_corpus, spec=spec, hooks=Hooks(callbacks, stop, prep, start))
        from ..base.devices import resolve_device
        from . import distributed

        job = distributed.Job(
            RunKind.TRAIN if spec.command == "train" else RunKind.FINETUNE,
            model,
            corpus,
            spec,
            eval_corpus,
            gpus=resolve_device(spec.model.device).type == "cuda",
        )
        result = distributed.run(job, spec.engine.processes, callbacks, stop, spec.engine.accelerate_config, prep)
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


def scratch_model(loaded: LoadedModel | None, *, model: ModelSpec, device: str) -> LoadedModel:
    """A fresh model of --config and --arch with the named tokenizer (`default`: the loaded model's)."""
    from ..base.devices import resolve_device

    tokenizer = resolve_tokenizer(model.tokenizer, loaded, trust_remote_code=model.trust_remote_code)
    model_config = scratch_config(model.config, model.arch, tokenizer)
    torch_device = resolve_device(device)
    name = f"from-scratch {Path(model.config).stem} {model_config.model_type}"
    return LoadedModel(new_model(model_config, torch_device), tokenizer, name, "", CAUSAL, torch_device, torch.float32)


def preparation(stop: StopFlag, callbacks: list[StepCallback], on_prepare, progress: bool) -> Preparation:
    return Preparation(stop, [c.on_prepare for c in callbacks] + list(on_prepare), progress=progress)


def read_both(prep: Preparation, *, data: DataSpec) -> tuple[Corpus, Corpus | None] | None:
    """The training corpus and the --eval-data one (if asked); None when stopped while reading."""
    corpus = read(prep, data=data.data, text=data.text, text_field=data.text_field, sample_docs=data.sample_docs)
    eval_corpus = (
        read(prep, data=data.eval_data, text=None, text_field=data.text_field, sample_docs=None)
        if data.eval_data and corpus
        else None
    )
    if corpus is None or (data.eval_data and eval_corpus is None):
        prep.close()
        return None
    return corpus, eval_corpus


def read(
    prep: Preparation, *, data: str | None, text: str | None, text_field: str | None, sample_docs: int | None
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
