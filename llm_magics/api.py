"""The plain Python API. The magics only parse arguments and call a `Session`.

from llm_magics import Session
s = Session()
s.load("default")
print(s.generate("Once upon a time", max_new_tokens=20, seed=0).text)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from . import generation, loading, options, quantization, training
from . import runs as run_history
from .base.devices import memory_report
from .base.errors import LLMError, no_model
from .base.files import staged_folder, why_not_written
from .base.interrupts import StopFlag, graceful_interrupts
from .base.kinds import RunKind
from .base.progress import ProgressBar
from .data import Preparation, classification_examples, data_cache, datasets_bars, read_corpus
from .generation import GenerationResult, SamplingSettings
from .loading import CLASSIFIER, LoadedModel
from .training import RunSpec, TrainResult
from .training import run as training_run
from .training.checkpoints import STATE_FILE, write_failure

# Each command's declared defaults (llm_magics/options.py): the signatures below take theirs from there.
_LOAD, _TRAIN, _FINETUNE, _LR_FIND, _SAVE, _ATTENTION, _PATCH, _ATTRIBUTE, _EVAL = (
    options.defaults(command)
    for command in ("load", "train", "finetune", "lr-find", "save", "attention", "patch", "attribute", "eval")
)
SAVE_MANIFEST = "llm_magics_save.json"  # marks a folder `save` wrote, and lists the files it wrote there


def _split(kwargs: dict, cls) -> tuple[dict, dict]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in kwargs.items() if k in names}, {k: v for k, v in kwargs.items() if k not in names}


def _no_extra(extra: dict, what: str):
    if extra:
        raise LLMError(f"{what} got unknown option(s): {', '.join(sorted(extra))}")


def _keywords(arguments: dict) -> dict:
    """A training method's keywords as given (its `locals()`): the run's settings, for RunSpec.build."""
    return {k: v for k, v in arguments.items() if k not in ("self", "on_step", "on_prepare", "options")}


class Session:
    """One in-kernel model plus its chat history and the runs made with it."""

    def __init__(self, compile: bool | str = False, runs_dir: str | None = None):
        self.compile_generation = compile  # generate with a static KV cache + torch.compile by default
        self.loaded: LoadedModel | None = None
        self.history: list[dict] = []  # chat messages
        self.system: str | None = None
        self.runs_dir = runs_dir  # the run history; None: $LLM_MAGICS_RUNS_DIR, else llm_runs/ here
        self._runs: list[TrainResult] | None = None
        self._runs_from: Path | None = None  # the folder self._runs was read from
        self.evaluations: list = []
        self.last: object = None  # the latest result of any command
        self.stop_flag: StopFlag | None = None  # set while a run is active (Stop button, interrupt)
        self.step_listeners: list[Callable] = []  # called on every training step of every run

    # --- the run history ---
    @property
    def runs(self) -> list[TrainResult]:
        """The training runs (train, finetune, lr-find) recorded in the runs dir, oldest first: read back
        from disk after a restart, then kept up to date as runs end. Evaluations are in `%llm runs`."""
        where = run_history.runs_dir(self.runs_dir).absolute()
        if self._runs is None or self._runs_from != where:
            self._runs = [
                run_history.to_result(info) for info in run_history.all_runs(where) if info.get("kind") != RunKind.EVAL
            ]
            self._runs_from = where
        return self._runs

    @runs.setter
    def runs(self, value: list[TrainResult]) -> None:
        self._runs, self._runs_from = list(value), run_history.runs_dir(self.runs_dir).absolute()

    def run_table(self, runs_dir: str | None = None):
        """`%llm runs`: every recorded run newest first (a pandas DataFrame)."""
        return run_history.table(runs_dir or self.runs_dir)

    def delete_run(self, run_id: str, runs_dir: str | None = None) -> dict:
        """Remove one run's folder (its history, options and checkpoints)."""
        info = run_history.delete(run_id, runs_dir or self.runs_dir)
        if self._runs is not None:
            self._runs = [r for r in self._runs if r.record_id != info["id"]]
        return info

    def new_record(self, kind: RunKind, options: dict, model: str | None, runs_dir: str | None):
        """Start a run's folder before anything runs: an unwritable runs dir is one line, not a lost run."""
        return run_history.RunRecord(runs_dir or self.runs_dir, kind, options, model)

    # --- models ---
    @property
    def model(self):
        return self.loaded.model if self.loaded else None

    @property
    def tokenizer(self):
        return self.loaded.tokenizer if self.loaded else None

    def load(
        self,
        spec: str = _LOAD.model,
        device: str = _LOAD.device,
        dtype: str = _LOAD.dtype,
        trust_remote_code: bool = _LOAD.trust_remote_code,
        quantize: str = _LOAD.quantize,
    ) -> LoadedModel:
        """quantize: none (default: attention, the lens and training stay exact), int8 or int4 weights for
        faster inference; the Linear layers are swapped in place (see llm_magics.quantization)."""
        mode = quantization.check_choice(quantize)
        loaded = loading.load_model(spec, device, dtype, trust_remote_code)
        quantization.quantize(loaded, mode)  # before it replaces the loaded model: a refusal changes nothing
        self.loaded = loaded
        self.history = []
        self.last = self.loaded
        return self.loaded

    def quantize(self, mode: str = "int8"):
        """Quantize the loaded model's Linear layers in place (int8 or int4, for inference only); returns what
        was done (mode, method, weights before and after). A model quantized already is refused."""
        loaded = self.require_model("quantize")
        done = quantization.quantize(loaded, mode)
        self.last = done
        return done

    def require_model(self, action: str) -> LoadedModel:
        if self.loaded is None:
            raise no_model(action)
        return self.loaded

    def status(self) -> dict:
        if self.loaded is None:
            return {"model": None}
        loaded = self.loaded
        params = sum(p.numel() for p in loaded.model.parameters())
        trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
        return {
            "model": loaded.name,
            "kind": loaded.kind,
            "source": loaded.source,
            "parameters": params,
            "trainable_parameters": trainable,
            "device": str(loaded.device),
            "dtype": str(loaded.dtype).removeprefix("torch."),
            "context_length": loading.context_length(loaded.model),
            **memory_report(loaded.model, loaded.device),
            **quantization.status(loaded),
            "chat_turns": len(self.history) // 2,
            "runs": len(self.runs),
        }

    def save(self, directory: str, adapter_only: bool = _SAVE.adapter, overwrite: bool = _SAVE.overwrite) -> str:
        """Save weights + tokenizer; LoRA is merged into a copy unless adapter_only.

        A folder we saved before is replaced (all our earlier files go); a non-empty folder of anything
        else needs overwrite=True, and even then only the files we write are touched."""
        from peft import PeftModel

        loaded = self.require_model("save")
        quantization.require_full_precision(loaded, "save")
        path = Path(directory).expanduser()
        if path.exists() and not path.is_dir():
            raise LLMError(f"{directory} exists and is not a directory")
        if (path / STATE_FILE).exists():
            raise LLMError(f"{directory} is a training checkpoint: save into another folder")
        ours = _saved_files(path)
        if ours is None and path.is_dir() and any(path.iterdir()) and not overwrite:
            raise LLMError(
                f"{directory} is not empty and not an earlier `save`: pick another folder, or pass "
                "--overwrite (overwrite=True) to write into it (its other files are kept)"
            )
        model = loaded.model
        if isinstance(model, PeftModel) and not adapter_only:
            model = copy.deepcopy(model).merge_and_unload()
        elif adapter_only and not isinstance(model, PeftModel):
            raise LLMError("--adapter saves a LoRA adapter, but the loaded model has none")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_abandoned_staging(path)
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving-{os.getpid()}-", dir=path.parent))
        except OSError as error:  # a read-only or full disk, before anything is written
            raise LLMError(f"{directory} is not writable: {why_not_written(error)}") from None
        swap = functools.partial(self._swap_in, ours=ours, loaded=loaded, adapter_only=adapter_only)
        with staged_folder(path, staging, swap):  # a failed save leaves the folder as it was
            try:
                with loading.quiet_transformers():
                    model.save_pretrained(str(staging))
                loaded.tokenizer.save_pretrained(staging)
            except Exception as error:  # a full disk: safetensors' and torch's own errors, as one line
                raise LLMError(
                    write_failure(error, f"{directory} was not saved (what was there is unchanged)")
                ) from None
        return str(path)

    @staticmethod
    def _swap_in(staging: Path, path: Path, ours: list | None, loaded: LoadedModel, adapter_only: bool):
        """Move a finished save from its staging folder into `path`, replacing our earlier files only."""
        path.mkdir(exist_ok=True)
        # everything save_pretrained wrote, except peft's model card where the user has a README.md
        written = sorted(
            p.name
            for p in staging.iterdir()
            if not (p.name == "README.md" and (path / p.name).exists() and p.name not in (ours or []))
        )
        for name in ours or []:  # our earlier files: no stale adapter_config.json or orphan shard stays
            old = path / name
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink(missing_ok=True)
        for name in written:
            if (path / name).is_dir():
                shutil.rmtree(path / name)
            os.replace(staging / name, path / name)
        (path / SAVE_MANIFEST).write_text(
            json.dumps(
                {"saved_by": "llm_magics", "model": loaded.name, "adapter_only": adapter_only, "files": written},
                indent=1,
            )
        )

    # --- generation ---
    def generate(
        self,
        prompt: str,
        on_text: Callable[[str], None] | None = None,
        output_scores: bool = False,
        compile: bool | str | None = None,
        chat: bool = False,
        system: str | None = None,
        **settings,
    ) -> GenerationResult:
        """compile: a static KV cache + torch.compile (CUDA graphs on a GPU); default self.compile_generation.
        chat: the prompt as the user's turn of a new one-turn chat (after `system`), through the chat
        template; the chat history is not touched."""
        sampling, extra = _split(settings, SamplingSettings)
        _no_extra(extra, "generate")
        compiled = self.compile_generation if compile is None else compile
        result = self.stoppable(
            lambda stop: generation.generate(
                self.loaded,
                prompt,
                SamplingSettings(**sampling),
                on_text,
                stop,
                output_scores,
                compile=compiled,
                chat=chat,
                system=system,
            )
        )
        self.last = result
        return result

    def chat(
        self, message: str, system: str | None = None, on_text: Callable[[str], None] | None = None, **settings
    ) -> GenerationResult:
        if system is not None:
            self.system = system or None
        sampling, extra = _split(settings, SamplingSettings)
        _no_extra(extra, "chat")
        result = self.stoppable(
            lambda stop: generation.chat_turn(
                self.loaded, self.history, message, self.system, SamplingSettings(**sampling), on_text, stop
            )
        )
        self.last = result
        return result

    def reset_chat(self, system: str | None = None):
        self.history = []
        self.system = system

    # --- training ---
    def train(
        self,
        text: str | None = None,
        data: str | None = _TRAIN.data,
        from_scratch: bool = _TRAIN.from_scratch,
        config: str = _TRAIN.config,
        arch: str = _TRAIN.arch,
        tokenizer: str = _TRAIN.tokenizer,
        eval_data: str | None = _TRAIN.eval_data,
        on_step: Sequence[Callable] = (),
        device: str = _TRAIN.device,
        progress: bool = _TRAIN.progress,
        trust_remote_code: bool = _TRAIN.trust_remote_code,
        processes: int = _TRAIN.processes,
        accelerate_config: str | None = _TRAIN.accelerate_config,
        text_field: str | None = _TRAIN.text_field,
        max_tokens: int | None = _TRAIN.max_tokens,
        sample_docs: int | None = _TRAIN.sample_docs,
        on_prepare: Sequence[Callable] = (),
        num_proc: int | None = None,
        runs_dir: str | None = _TRAIN.runs_dir,
        **options,
    ) -> TrainResult:
        """Pre-train on text: a fresh model (from_scratch) or the loaded one; resume continues a checkpoint's
        run from its own weights.

        text_field: the column holding the text; max_tokens / sample_docs: train on the first N tokens /
        documents; on_prepare: hooks `(stage, done, total)` called while data is read and tokenized
        (step callbacks with an `on_prepare` method get them too); num_proc: tokenizing processes.
        processes > 1 (or an accelerate config) trains on several processes; the kernel then keeps its copy
        of the model on the CPU. runs_dir: where the run is recorded (default `self.runs_dir`).
        **options: TrainOptions' (steps, batch_size, lr...); lr and steps default by kind of run (docs/commands.md)."""
        given = {**_keywords(locals()), **options}
        return self.run(RunSpec.build("train", given), on_step=on_step, on_prepare=on_prepare)

    def taking(self, model: LoadedModel) -> Callable[[], None]:
        """What a run calls when it starts: the session then holds the model the run trains."""

        def start():
            if self.loaded is not model:
                self.loaded = model
                self.history = []

        return start

    def finetune(
        self,
        data: str | None = _FINETUNE.data,
        text: str | None = None,
        eval_data: str | None = _FINETUNE.eval_data,
        lora: bool = _FINETUNE.lora,
        lora_r: int = _FINETUNE.lora_r,
        lora_alpha: int | None = _FINETUNE.lora_alpha,
        task: str = _FINETUNE.task,
        labels: list[str] | str | None = _FINETUNE.labels,
        on_step: Sequence[Callable] = (),
        progress: bool = _FINETUNE.progress,
        trust_remote_code: bool = _FINETUNE.trust_remote_code,
        processes: int = _FINETUNE.processes,
        accelerate_config: str | None = _FINETUNE.accelerate_config,
        text_field: str | None = _FINETUNE.text_field,
        sample_docs: int | None = _FINETUNE.sample_docs,
        on_prepare: Sequence[Callable] = (),
        runs_dir: str | None = _FINETUNE.runs_dir,
        **options,
    ) -> TrainResult:
        """**options: TrainOptions' (epochs, steps, lr...); lr defaults by kind of run (docs/commands.md)."""
        given = {**_keywords(locals()), **options}
        return self.run(RunSpec.build("finetune", given), on_step=on_step, on_prepare=on_prepare)

    def run(self, spec: RunSpec, on_step: Sequence[Callable] = (), on_prepare: Sequence[Callable] = ()) -> TrainResult:
        """The train or finetune run of `spec` (`RunSpec.build`: what `train` and `finetune` and the magics
        run); on_step / on_prepare: as for `train`. lr 'suggested' is the latest lr-find's."""
        if spec.train.lr == "suggested":
            spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr=self._suggestion()))
        return training_run.run(self, spec=spec, on_step=on_step, on_prepare=on_prepare)

    def recorded(self, result: TrainResult, record: run_history.RunRecord) -> None:
        """The run's final status on disk, and the run in self.runs."""
        result.run_dir, result.record_id = str(record.path), record.id
        if record.info["kind"] == RunKind.LR_FIND:
            result.kind = RunKind.LR_FIND
        result.options = record.info["options"]
        record.finish(result, error=result.error)
        # the folder was on disk from the start: a first read of self.runs may already hold it
        self.runs = [r for r in self.runs if r.record_id != record.id] + [result]
        self.last = result

    def stoppable(self, work):
        """Run `work(stop_flag)` with a graceful interrupt handler from its very first line."""
        self.stop_flag = StopFlag()
        try:
            with graceful_interrupts(self.stop_flag):
                return work(self.stop_flag)
        finally:
            self.stop_flag = None

    def stop(self):
        """Ask the active run (train, finetune, generate or eval) to stop after its current step."""
        if self.stop_flag is not None:
            self.stop_flag.request("stop button")

    # --- the learning-rate finder ---
    def lr_find(
        self,
        finetune: bool = False,
        start_lr: float = _LR_FIND.start_lr,
        end_lr: float = _LR_FIND.end_lr,
        num_steps: int = _LR_FIND.num_steps,
        suggestion: str = _LR_FIND.suggestion,
        on_step: Sequence[Callable] = (),
        **options,
    ) -> TrainResult:
        """fastai's lr_find on what `train(**options)` (or `finetune(**options)`) would train: an exponential
        lr sweep with a smoothed loss, stopped at 4x its best; sets `self.suggested_lr` (valley by default,
        or minimum/10, steep), which `lr="suggested"` uses. The sweep trains a copy of the model and the
        RNG state is put back: the session's model and random streams are exactly as before. A run too."""
        from . import lr_finder
        from .training.checkpoints import rng_state, set_rng_state

        lr_finder.check(start_lr, end_lr, num_steps, suggestion)
        for name in ("eval_data", "checkpoint_every", "resume", "early_stopping", "processes", "accelerate_config"):
            if options.get(name) not in (None, False, 1):
                raise LLMError(
                    f"lr-find takes no --{name.replace('_', '-')}: it sweeps the lr on the training data only"
                )
        if options.get("min_delta"):  # an early-stopping setting: it would be silently ignored
            raise LLMError("lr-find takes no --min-delta: it sweeps the lr on the training data only")
        watcher = lr_finder.SweepWatcher(self, start_lr, end_lr, num_steps, suggestion)
        original, chat, rng = self.loaded, (self.history, self.system), rng_state()
        if original is not None:  # sweep a copy; the loaded model is never touched
            self.loaded = copy.copy(original)
            self.loaded.model = copy.deepcopy(original.model)
        try:
            run = self.finetune if finetune else self.train
            result = run(
                on_step=[watcher, *on_step],
                **{**options, "lr": start_lr, "steps": num_steps, "warmup": 0, "lr_sweep": end_lr},
            )
        finally:
            self.loaded, (self.history, self.system) = original, chat
            set_rng_state(rng)
        self.last = result
        return result

    @property
    def suggested_lr(self) -> float | None:
        """The latest lr-find run's suggestion (read back from the run history after a restart)."""
        found = [r.suggested_lr for r in self.runs if r.kind == RunKind.LR_FIND and r.suggested_lr]
        return found[-1] if found else None

    def _suggestion(self) -> float:
        if self.suggested_lr is None:
            raise LLMError("--lr suggested needs an earlier `%%llm lr-find` (none is recorded in the runs dir)")
        return self.suggested_lr

    # --- evaluation ---
    def eval(
        self,
        metric: str,
        data: str | None = _EVAL.data,
        text: str | None = None,
        max_new_tokens: int = _EVAL.max_new_tokens,
        seq_len: int = _EVAL.seq_len,
        text_field: str | None = _EVAL.text_field,
        sample_docs: int | None = _EVAL.sample_docs,
        max_tokens: int | None = _EVAL.max_tokens,
        progress: bool = True,
        runs_dir: str | None = _EVAL.runs_dir,
    ):
        """Score the loaded model on a data file; the result is also recorded with the latest run.
        Stopped (interrupt, Stop button, `stop()`), it is marked partial and is not a score."""
        from . import evaluation

        with datasets_bars(False):  # our one line for a data mistake, not datasets' own bars first
            corpus = read_corpus(data, text, text_field, sample_docs, cache=data_cache() / "datasets")
        scoring: dict[str, Any] = dict(max_new_tokens=max_new_tokens, seq_len=seq_len, max_tokens=max_tokens)
        record = (
            self.new_record(
                RunKind.EVAL,
                dict(metric=metric, data=data, **scoring, text_field=text_field, sample_docs=sample_docs),
                self.loaded.name if self.loaded else None,
                runs_dir,
            )
            if self.loaded
            else None
        )
        try:
            if record is not None:
                record.add_data(corpus, "data")
            result = self.stoppable(
                lambda stop: evaluation.evaluate(
                    self.loaded, metric, corpus, stop=stop, prep=Preparation(stop, progress=progress), **scoring
                )
            )
        except BaseException as error:
            if record is not None:
                record.finish(error=str(error) if isinstance(error, LLMError) else type(error).__name__)
            raise
        if record is not None:
            record.finish(
                metrics={}
                if result.partial
                else {
                    f"eval_{metric}": result.value,
                    **{k: v for k, v in result.details.items() if isinstance(v, (int, float))},
                },
                stopped=result.partial,
            )
        self.evaluations.append(result)
        trained = [r for r in self.runs if r.kind != RunKind.LR_FIND]
        if trained and not result.partial:  # the score of the model the latest run left
            trained[-1].metrics[f"eval_{metric}"] = result.value
            run_history.update_metrics(trained[-1].run_dir, {f"eval_{metric}": result.value})
        self.last = result
        return result

    # --- attention ---
    def attention(
        self,
        text: str,
        layer: int | None = _ATTENTION.layer,
        head: int | None = _ATTENTION.head,
        view: str | None = _ATTENTION.view,
        backend: str = _ATTENTION.backend,
        target: str | None = None,
    ):
        """An interactive attention view (widget; view='lens' opens its logit-lens tab, where `target` plots
        that token's probability and rank across layers), or bertviz's own head/model view HTML
        (backend='bertviz'; it needs a browser that can reach bertviz's CDN)."""
        from .inspect import attention

        loaded = self.require_model("attention")
        attention.check_layer_head(loaded.model, layer, head)
        if backend == "bertviz":
            captured = attention.capture(
                loaded, text, layers=layer if layer is not None else list(range(attention.model_shape(loaded.model)[0]))
            )
            self.last = captured
            from .views.attention import bertviz_html

            return bertviz_html(captured, view or "head")
        if backend != "widget":
            raise LLMError(f"unknown backend {backend!r}: use widget or bertviz")
        from .views.attention import AttentionView

        widget = AttentionView(loaded, text, layer=layer, head=head, view=view, target=target)
        self.last = widget.captured or widget  # opened on the lens: no attention captured yet
        return widget

    def explain(self, text: str) -> dict:
        """Which input tokens drive a prediction: attention rollout (attention sinks dropped) and, for causal
        models, gradient × input for the next token. 'target' names what is explained."""
        from .inspect import attention

        explanation = attention.explain(self.require_model("explain"), text)
        self.last = explanation
        return explanation

    def lens(self, text: str, top_k: int = 5, target: str | None = None):
        """The logit lens: every layer's top-k next-token guesses at every position (causal models); with a
        target, that token's probability (`.target_probs`) and rank (`.target_ranks`) in every layer."""
        from .inspect.lens import logit_lens

        result = logit_lens(self.require_model("lens"), text, top_k=top_k, target=target)
        self.last = result
        return result

    # --- why: activation patching and attribution ---
    def patch(
        self,
        clean: str,
        corrupted: str,
        answer: str | None = _PATCH.answer,
        wrong: str | None = _PATCH.wrong,
        site: str = _PATCH.site,
        layers: list[int] | str | None = None,
        batch_size: int = 64,
        progress: bool = True,
    ):
        """Activation patching: every layer × position (site 'heads': layer × head) of the corrupted run
        patched from the clean run; `.scores` is the share of the logit difference answer − wrong restored.
        answer / wrong default to the clean and the corrupted run's top next tokens. layers: a list of layer
        numbers or a text as --layers takes it ('0,5,20-29'). Stoppable."""
        from .inspect.patching import patch

        loaded = self.require_model("patch")
        return self._counted(
            f"patching {site}",
            "layer",
            progress,
            lambda stop, bar: patch(loaded, clean, corrupted, answer, wrong, site, layers, batch_size, stop, bar),
        )

    def attribute(
        self,
        text: str,
        method: str = _ATTRIBUTE.method,
        target: str | None = _ATTRIBUTE.target,
        max_new_tokens: int = _ATTRIBUTE.max_new_tokens,
        steps: int | None = _ATTRIBUTE.steps,
        batch_size: int | None = None,
        progress: bool = True,
    ):
        """Which input tokens drove each output token, with Captum's `method`. Without target: the greedy
        continuation (max_new_tokens); a classifier: the predicted label (or target, a label). Stoppable
        between target tokens: the finished ones are kept (`.interrupted`). batch_size: integration steps per
        forward pass (None: sized from a memory budget of 640 MiB of activations)."""
        from .inspect.attribution import attribute

        loaded = self.require_model("attribute")
        return self._counted(
            f"attribution ({method})",
            "token",
            progress,
            lambda stop, bar: attribute(loaded, text, method, target, max_new_tokens, steps, batch_size, stop, bar),
        )

    def _counted(self, description: str, unit: str, progress: bool, work):
        """A stoppable sweep, `work(stop, count)`, with a bar over what it counts; its result becomes `last`."""
        bar = ProgressBar(description, unit) if progress else None
        try:
            result = self.stoppable(lambda stop: work(stop, bar.count if bar else None))
        finally:
            if bar is not None:
                bar.close()
        self.last = result
        return result

    # --- classification ---
    def classify(self, texts: list[str] | str) -> list[str]:
        loaded = self.require_model("classify")
        if loaded.kind != CLASSIFIER:
            raise LLMError("the loaded model has no classification head: run finetune --task classify first")
        texts = [texts] if isinstance(texts, str) else texts
        labels = [loaded.model.config.id2label[i] for i in range(loaded.model.config.num_labels)]  # type: ignore[index, arg-type]  # transformers: id2label may be None or str-keyed; a classifier's is int-keyed
        records = [{"text": t, "label": labels[0]} for t in texts]
        examples = classification_examples(loaded.tokenizer, records, labels, 512)
        return [labels[i] for i in training.predict_labels(loaded, examples)]


def _remove_abandoned_staging(path: Path):
    """A save killed half-way (its process gone) leaves `.NAME.saving-PID-*` beside the folder: removed here."""
    import psutil

    for folder in path.parent.glob(f".{path.name}.saving-*"):
        pid = folder.name.removeprefix(f".{path.name}.saving-").split("-")[0]
        if not (pid.isdigit() and psutil.pid_exists(int(pid))) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _saved_files(path: Path) -> list[str] | None:
    """The files an earlier `save` wrote into path (None if it was not one); only plain names count."""
    try:
        manifest = json.loads((path / SAVE_MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list):
        return None
    return [f for f in files if isinstance(f, str) and f not in ("", ".", "..") and Path(f).name == f]
