"""The plain Python API. The magics only parse arguments and call a `Session`.

    from llm_magics import Session
    s = Session()
    s.load("default")
    print(s.generate("Once upon a time", max_new_tokens=20, seed=0).text)
"""
from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch

from . import generation, loading, training
from .data import Corpus, Preparation, datasets_bars, check_labels, classification_examples, data_cache, read_corpus
from .devices import memory_report
from .errors import LLMError, no_model
from .generation import GenerationResult, SamplingSettings
from .interrupts import StopFlag, graceful_interrupts
from .progress import ProgressBar
from .loading import CAUSAL, CLASSIFIER, LoadedModel
from .training import TrainOptions, TrainResult


def _split(kwargs: dict, cls) -> tuple[dict, dict]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in kwargs.items() if k in names}, {k: v for k, v in kwargs.items() if k not in names}


def _no_extra(extra: dict, what: str):
    if extra:
        raise LLMError(f"{what} got unknown option(s): {', '.join(sorted(extra))}")


class Session:
    """One in-kernel model plus its chat history and the runs made with it."""

    def __init__(self):
        self.loaded: LoadedModel | None = None
        self.history: list[dict] = []  # chat messages
        self.system: str | None = None
        self.runs: list[TrainResult] = []
        self.evaluations: list = []
        self.last = None  # the latest result of any command
        self.stop_flag: StopFlag | None = None  # set while a run is active (Stop button, interrupt)
        self.step_listeners: list[Callable] = []  # called on every training step of every run

    # --- models ---
    @property
    def model(self):
        return self.loaded.model if self.loaded else None

    @property
    def tokenizer(self):
        return self.loaded.tokenizer if self.loaded else None

    def load(self, spec: str = "default", device: str = "auto", dtype: str = "auto",
             trust_remote_code: bool = False) -> LoadedModel:
        self.loaded = loading.load_model(spec, device, dtype, trust_remote_code)
        self.history = []
        self.last = self.loaded
        return self.loaded

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
        return {"model": loaded.name, "kind": loaded.kind, "source": loaded.source,
                "parameters": params, "trainable_parameters": trainable, "device": str(loaded.device),
                "dtype": str(loaded.dtype).removeprefix("torch."),
                "context_length": generation.context_length(loaded.model),
                **memory_report(loaded.model, loaded.device),
                "chat_turns": len(self.history) // 2, "runs": len(self.runs)}

    def save(self, directory: str, adapter_only: bool = False) -> str:
        """Save weights + tokenizer; LoRA is merged into a copy unless adapter_only."""
        from peft import PeftModel

        loaded = self.require_model("save")
        path = Path(directory).expanduser()
        if path.exists() and not path.is_dir():
            raise LLMError(f"{directory} exists and is not a directory")
        model = loaded.model
        if isinstance(model, PeftModel) and not adapter_only:
            model = copy.deepcopy(model).merge_and_unload()
        elif adapter_only and not isinstance(model, PeftModel):
            raise LLMError("--adapter saves a LoRA adapter, but the loaded model has none")
        path.mkdir(parents=True, exist_ok=True)
        with loading.quiet_transformers():
            model.save_pretrained(path)
        loaded.tokenizer.save_pretrained(path)
        return str(path)

    # --- generation ---
    def generate(self, prompt: str, on_text: Callable[[str], None] | None = None,
                 output_scores: bool = False, **settings) -> GenerationResult:
        sampling, extra = _split(settings, SamplingSettings)
        _no_extra(extra, "generate")
        result = self._stoppable(lambda stop: generation.generate(
            self.loaded, prompt, SamplingSettings(**sampling), on_text, stop, output_scores))
        self.last = result
        return result

    def chat(self, message: str, system: str | None = None, on_text: Callable[[str], None] | None = None,
             **settings) -> GenerationResult:
        if system is not None:
            self.system = system or None
        sampling, extra = _split(settings, SamplingSettings)
        _no_extra(extra, "chat")
        result = self._stoppable(lambda stop: generation.chat_turn(
            self.loaded, self.history, message, self.system, SamplingSettings(**sampling), on_text, stop))
        self.last = result
        return result

    def reset_chat(self, system: str | None = None):
        self.history = []
        self.system = system

    # --- training ---
    def train(self, text: str | None = None, data: str | None = None, from_scratch: bool = False,
              config: str = "tiny", arch: str = "llama", tokenizer: str = "bytes",
              eval_data: str | None = None, on_step: list[Callable] = (), device: str = "auto",
              progress: bool = True, text_field: str | None = None, max_tokens: int | None = None,
              sample_docs: int | None = None, on_prepare: list[Callable] = (), num_proc: int | None = None,
              **options) -> TrainResult:
        """Pre-train on text: a fresh model (from_scratch) or the loaded one.

        text_field: the column holding the text; max_tokens / sample_docs: train on the first N tokens /
        documents; on_prepare: hooks `(stage, done, total)` called while data is read and tokenized
        (step callbacks with an `on_prepare` method get them too); num_proc: tokenizing processes."""
        train_options, extra = _split(options, TrainOptions)
        _no_extra(extra, "train")
        opts = TrainOptions(**train_options).validated()
        if opts.resume:
            training.check_checkpoint(opts.resume)
        if not from_scratch and not opts.resume:
            self.require_model("train")
            if self.loaded.kind != CAUSAL:
                raise LLMError(f"train needs a causal language model; {self.loaded.name} is {self.loaded.kind}")

        def work(stop: StopFlag, callbacks: list) -> TrainResult:
            prep = self._preparation(stop, callbacks, on_prepare, progress)
            corpus = self._read(prep, data, text, text_field, sample_docs)
            eval_corpus = self._read(prep, eval_data, None, text_field, None) if eval_data and corpus else None
            if corpus is None or (eval_data and eval_corpus is None):
                prep.close()
                return TrainResult(kind="train", total_steps=opts.steps or 100, interrupted=True)
            if opts.resume and from_scratch:
                self.load(opts.resume, device=device)  # the checkpoint holds the architecture and weights
            elif from_scratch:
                self.loaded = self._scratch_model(config, arch, tokenizer, device)
                self.history = []
            return training.train_causal_lm(self.loaded, corpus, opts, callbacks, stop, eval_corpus, prep,
                                            max_tokens, num_proc)

        return self._run(work, on_step, progress, "train")

    @staticmethod
    def _preparation(stop: StopFlag, callbacks: list, on_prepare, progress: bool) -> Preparation:
        hooks = [c.on_prepare for c in callbacks if callable(getattr(c, "on_prepare", None))] + list(on_prepare)
        return Preparation(stop, hooks, progress)

    @staticmethod
    def _read(prep: Preparation, data: str | None, text: str | None, text_field: str | None,
              sample_docs: int | None) -> Corpus | None:
        """Read --data (or the cell body) as an interruptible stage; None when stopped."""
        if prep.stopped:
            return None
        prep.report("reading", 0, 1, bar=False)  # datasets' readers show their own tqdm bar
        corpus = None
        with prep.interruptible(), datasets_bars(prep.progress):
            corpus = read_corpus(data, text, text_field, sample_docs, cache=data_cache() / "datasets")
        if corpus is None or prep.stopped:
            return None
        prep.report("reading", 1, 1, bar=False)
        return corpus

    def _scratch_model(self, config: str, arch: str, tokenizer_name: str, device: str) -> LoadedModel:
        from .devices import resolve_device

        tokenizer = training.resolve_tokenizer(tokenizer_name, self.loaded)
        model_config = training.scratch_config(config, arch, tokenizer)
        torch_device = resolve_device(device)
        model = training.new_model(model_config, torch_device)
        name = f"from-scratch {Path(config).stem} {model_config.model_type}"
        return LoadedModel(model, tokenizer, name, "", CAUSAL, torch_device, torch.float32)

    def finetune(self, data: str | None = None, text: str | None = None, eval_data: str | None = None,
                 lora: bool = False, lora_r: int = 8, lora_alpha: int | None = None, task: str = "lm",
                 labels: list[str] | str | None = None, on_step: list[Callable] = (), progress: bool = True,
                 text_field: str | None = None, sample_docs: int | None = None, on_prepare: list[Callable] = (),
                 **options) -> TrainResult:
        train_options, extra = _split(options, TrainOptions)
        _no_extra(extra, "finetune")
        opts = TrainOptions(**{"lr": 2e-4 if lora else 5e-5, **train_options}).validated()
        loaded = self.require_model("finetune")
        if isinstance(labels, str):
            labels = [label.strip() for label in labels.split(",") if label.strip()]
        if task == "classify" and not labels and loaded.kind == CLASSIFIER:
            labels = [loaded.model.config.id2label[i] for i in range(loaded.model.config.num_labels)]
        if task == "classify":
            check_labels(labels)
        if opts.resume:
            training.check_checkpoint(opts.resume)
        kind = "classify" if task == "classify" else "finetune"

        def work(stop: StopFlag, callbacks: list) -> TrainResult:
            prep = self._preparation(stop, callbacks, on_prepare, progress)
            corpus = self._read(prep, data, text, text_field, sample_docs)
            eval_corpus = self._read(prep, eval_data, None, text_field, None) if eval_data and corpus else None
            if corpus is None or (eval_data and eval_corpus is None):
                prep.close()
                return TrainResult(kind=kind, total_steps=opts.steps or 0, interrupted=True)
            return training.finetune(loaded, corpus, opts, lora=lora, lora_r=lora_r, lora_alpha=lora_alpha,
                                     task=task, labels=labels, eval_corpus=eval_corpus, on_step=callbacks,
                                     stop=stop, prep=prep)

        return self._run(work, on_step, progress, task)

    def _run(self, work: Callable[[StopFlag, list], TrainResult], on_step, progress: bool,
             description: str) -> TrainResult:
        callbacks = list(on_step) + self.step_listeners + ([ProgressBar(description)] if progress else [])
        try:
            result = self._stoppable(lambda stop: work(stop, callbacks))
        finally:
            for callback in callbacks:
                getattr(callback, "close", lambda: None)()
        self.runs.append(result)
        self.last = result
        return result

    def _stoppable(self, work):
        """Run `work(stop_flag)` with a graceful interrupt handler from its very first line."""
        self.stop_flag = StopFlag()
        try:
            with graceful_interrupts(self.stop_flag):
                return work(self.stop_flag)
        finally:
            self.stop_flag = None

    def stop(self):
        """Ask the active run (train, finetune or generate) to stop after its current step."""
        if self.stop_flag is not None:
            self.stop_flag.request("stop button")

    # --- evaluation ---
    def eval(self, metric: str, data: str | None = None, text: str | None = None, max_new_tokens: int = 64,
             seq_len: int = 512, text_field: str | None = None, sample_docs: int | None = None,
             max_tokens: int | None = None, progress: bool = True):
        """Score the loaded model on a data file; the result is also recorded with the latest run."""
        from . import evaluation

        corpus = read_corpus(data, text, text_field, sample_docs, cache=data_cache() / "datasets")
        result = evaluation.evaluate(self.loaded, metric, corpus, max_new_tokens, seq_len, max_tokens,
                                     Preparation(progress=progress))
        self.evaluations.append(result)
        if self.runs:
            self.runs[-1].metrics[f"eval_{metric}"] = result.value
        self.last = result
        return result

    # --- attention ---
    def attention(self, text: str, layer: int | None = None, head: int | None = None, view: str | None = None,
                  backend: str = "widget"):
        """An interactive attention view (widget), or bertviz's head view (backend='bertviz')."""
        from . import attention

        loaded = self.require_model("attention")
        if backend == "bertviz":
            captured = attention.capture(loaded, text, layers=layer if layer is not None else
                                         list(range(attention.model_shape(loaded.model)[0])))
            self.last = captured
            return attention.bertviz_html(captured, view or "head")
        if backend != "widget":
            raise LLMError(f"unknown backend {backend!r}: use widget or bertviz")
        from .attention_view import AttentionView

        widget = AttentionView(loaded, text, layer=layer, head=head, view=view)
        self.last = widget.capture
        return widget

    def explain(self, text: str) -> dict:
        """Which input tokens drive the next-token prediction: attention rollout and gradient × input."""
        from . import attention

        loaded = self.require_model("explain")
        captured = attention.capture(loaded, text, rollout=True)
        explanation = {"tokens": captured.tokens, "rollout": captured.rollout[-1].tolist()}
        if loaded.kind == CAUSAL:
            explanation["saliency"] = attention.saliency(loaded, text)[1].tolist()
        self.last = explanation
        return explanation

    # --- classification ---
    def classify(self, texts: list[str] | str) -> list[str]:
        loaded = self.require_model("classify")
        if loaded.kind != CLASSIFIER:
            raise LLMError("the loaded model has no classification head: run finetune --task classify first")
        texts = [texts] if isinstance(texts, str) else texts
        labels = [loaded.model.config.id2label[i] for i in range(loaded.model.config.num_labels)]
        records = [{"text": t, "label": labels[0]} for t in texts]
        examples = classification_examples(loaded.tokenizer, records, labels, 512)
        return [labels[i] for i in training.predict_labels(loaded, examples)]
