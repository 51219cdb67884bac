"""Training from scratch, continued pre-training, (LoRA) fine-tuning and classifier tuning.

One loop (`_optimize`) serves every kind: AdamW + warmup/cosine, gradient accumulation,
`accelerate` for mixed precision and multi-GPU (`accelerate launch` / torchrun), resumable
checkpoints, and a stop flag checked between optimizer steps so an interrupt never leaves
the weights half-updated.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .data import (IGNORE_INDEX, RandomWindows, classification_examples, pad_batch,
                   supervised_examples, texts_of, token_stream)
from .errors import LLMError, is_out_of_memory
from .generation import context_length
from .interrupts import StopFlag, graceful_interrupts
from .loading import CAUSAL, CLASSIFIER, LoadedModel, quiet_transformers

# Architectures for --from-scratch. Sizes are (hidden, layers, heads, context).
CONFIG_SIZES = {"tiny": (128, 4, 4, 512), "small": (512, 8, 8, 1024), "gpt2-124m": (768, 12, 12, 1024)}
STATE_FILE = "trainer_state.pt"


@dataclass
class TrainOptions:
    steps: int | None = None  # optimizer steps (train); finetune derives them from epochs
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    warmup: float = 0.1  # < 1: a fraction of the steps, else a step count
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seq_len: int = 128
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    output_dir: str | None = None
    resume: str | None = None
    eval_every: int | None = None
    seed: int = 0

    def validated(self) -> "TrainOptions":
        checks = [
            (self.steps is None or self.steps >= 1, "--steps must be at least 1"),
            (self.epochs > 0, "--epochs must be > 0"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.lr > 0, "--lr must be > 0"),
            (self.warmup >= 0, "--warmup must be >= 0"),
            (self.seq_len >= 2, "--seq-len must be at least 2"),
            (self.checkpoint_every is None or self.checkpoint_every >= 1, "--checkpoint-every must be >= 1"),
            (self.eval_every is None or self.eval_every >= 1, "--eval-every must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise LLMError(message)
        return self


@dataclass
class TrainResult:
    kind: str  # "train", "finetune" or "classify"
    total_steps: int
    history: list[dict] = field(default_factory=list)  # one row per optimizer step
    eval_history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    interrupted: bool = False
    checkpoint: str | None = None
    output_dir: str | None = None
    seconds: float = 0.0
    tokens: int = 0

    @property
    def steps_done(self) -> int:
        return self.history[-1]["step"] if self.history else 0

    @property
    def initial_loss(self) -> float | None:
        return self.history[0]["loss"] if self.history else None

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def history_frame(self):
        import pandas as pd

        return pd.DataFrame(self.history)

    def summary(self) -> str:
        if not self.history:
            return f"{self.kind}: stopped before the first step"
        line = (f"{self.kind}: {self.steps_done}/{self.total_steps} steps, loss "
                f"{self.initial_loss:.4f} -> {self.final_loss:.4f}, {self.tokens_per_second:,.0f} tokens/s")
        if self.metrics:
            line += ", " + ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        if self.interrupted:
            kept = f"last checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint (use --checkpoint-every)"
            line += f". Stopped early: the model in memory keeps step {self.steps_done}; {kept}"
        elif self.checkpoint:
            line += f"; checkpoint {self.checkpoint}"
        return line


# --- building models -------------------------------------------------------------------------

def byte_tokenizer():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def resolve_tokenizer(name: str, current: LoadedModel | None):
    from transformers import AutoTokenizer

    if name == "bytes":
        return byte_tokenizer()
    if name == "loaded":
        if current is None:
            raise LLMError("--tokenizer loaded needs a model loaded first")
        return current.tokenizer
    if name == "default":
        from .loading import gguf_to_safetensors, packaged_path

        return AutoTokenizer.from_pretrained(gguf_to_safetensors(packaged_path("default")))
    path = Path(name).expanduser()
    if not path.is_dir():
        raise LLMError(f"--tokenizer must be bytes, default, loaded or a tokenizer directory; got {name!r}")
    return AutoTokenizer.from_pretrained(path)


def scratch_config(name: str, arch: str, tokenizer):
    """A fresh GPT-2 or Llama config, sized by name or read from a JSON file."""
    from transformers import AutoConfig, GPT2Config, LlamaConfig

    special = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id or tokenizer.eos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if name.endswith(".json"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise LLMError(f"config file not found: {name}")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise LLMError(f"{name} is not valid JSON: {error.msg} (line {error.lineno})") from None
        model_type = values.pop("model_type", arch)
        try:
            return AutoConfig.for_model(model_type, **{**special, **values})
        except ValueError as error:
            raise LLMError(f"{name}: {error}") from None
    if name not in CONFIG_SIZES:
        raise LLMError(f"unknown --config {name!r}: use {', '.join(CONFIG_SIZES)} or a .json file")
    hidden, layers, heads, context = CONFIG_SIZES[name]
    if arch == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context, **special)
    if arch == "llama":
        return LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           num_key_value_heads=heads, intermediate_size=int(hidden * 8 / 3 / 32 + 1) * 32,
                           max_position_embeddings=context, tie_word_embeddings=True, **special)
    raise LLMError(f"unknown --arch {arch!r}: use llama or gpt2")


def new_model(config, device: torch.device):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device)


def classifier_from(loaded: LoadedModel, labels: list[str]):
    """A sequence-classification model whose body starts from the loaded model's weights."""
    from transformers import AutoModelForSequenceClassification

    base = _unwrap(loaded.model)
    config = copy.deepcopy(base.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.architectures = None
    if config.pad_token_id is None:
        config.pad_token_id = loaded.tokenizer.pad_token_id
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_config(config)
    body = getattr(base, base.base_model_prefix, base)
    target = getattr(classifier, classifier.base_model_prefix)
    missing, unexpected = target.load_state_dict(body.state_dict(), strict=False)
    if unexpected or [k for k in missing if "pooler" not in k]:
        raise LLMError(f"cannot put a classification head on {loaded.name}: weights do not match")
    return classifier.to(loaded.device, dtype=torch.float32)


def _unwrap(model):
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


# --- public entry points --------------------------------------------------------------------

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


def _add_lora(loaded: LoadedModel, rank: int, alpha: int | None, task: str, resume: str | None):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    if isinstance(loaded.model, PeftModel):
        return  # keep training the adapter that is already there
    if resume:
        loaded.model = PeftModel.from_pretrained(loaded.model, resume, is_trainable=True)
        return
    # peft still calls a transformers API that v5 renamed; the warning is theirs, not the user's.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    task_type = TaskType.SEQ_CLS if task == "classify" else TaskType.CAUSAL_LM
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=0.05, task_type=task_type)
    try:
        loaded.model = get_peft_model(loaded.model, config)
    except ValueError as error:
        raise LLMError(f"LoRA cannot be applied to {loaded.name}: {error}") from None


def _load_weights(loaded: LoadedModel, directory: str):
    from safetensors.torch import load_file

    weights = Path(directory) / "model.safetensors"
    if not weights.is_file():
        raise LLMError(f"--resume {directory}: no model.safetensors there")
    loaded.model.load_state_dict(load_file(weights, device=str(loaded.device)), strict=False)


# --- batches ---------------------------------------------------------------------------------

class EpochBatches:
    """Shuffled padded batches, epoch after epoch; its state makes a resumed run see the same order."""

    def __init__(self, examples: list[dict], batch_size: int, pad_id: int, seed: int = 0):
        self.examples, self.batch_size, self.pad_id = examples, batch_size, pad_id
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.position = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def next_batch(self) -> dict:
        if self.position >= len(self.order):
            self.order = torch.randperm(len(self.examples), generator=self.generator).tolist()
            self.position = 0
        chosen = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return pad_batch([self.examples[i] for i in chosen], self.pad_id)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict):
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]


def _fixed_windows(stream: torch.Tensor, seq_len: int, batch_size: int) -> list[dict]:
    blocks = [stream[i:i + seq_len] for i in range(0, max(1, len(stream) - seq_len + 1), seq_len)]
    blocks = [b for b in blocks if len(b) == seq_len] or [stream]
    return [{"input_ids": torch.stack(blocks[i:i + batch_size]), "labels": torch.stack(blocks[i:i + batch_size])}
            for i in range(0, len(blocks), batch_size)]


def _padded_batches(loaded: LoadedModel, examples: list[dict], batch_size: int) -> list[dict]:
    pad = loaded.tokenizer.pad_token_id or 0
    return [pad_batch(examples[i:i + batch_size], pad) for i in range(0, len(examples), batch_size)]


# --- evaluation ------------------------------------------------------------------------------

@torch.no_grad()
def _mean_loss(loaded: LoadedModel, batches: list[dict]) -> float:
    was_training = loaded.model.training
    loaded.model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(loaded.device) for k, v in batch.items()}
        tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(loaded.model(**batch).loss) * tokens
        count += tokens
    loaded.model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def predict_labels(loaded: LoadedModel, examples: list[dict], batch_size: int = 16) -> list[int]:
    was_training = loaded.model.training
    loaded.model.eval()
    predictions = []
    for batch in _padded_batches(loaded, examples, batch_size):
        batch = {k: v.to(loaded.device) for k, v in batch.items() if k != "labels"}
        predictions += loaded.model(**batch).logits.argmax(-1).tolist()
    loaded.model.train(was_training)
    return predictions


def classification_metrics(loaded: LoadedModel, examples: list[dict], batch_size: int = 16) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    truth = [e["labels"] for e in examples]
    predicted = predict_labels(loaded, examples, batch_size)
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "f1": float(f1_score(truth, predicted, average="macro", zero_division=0))}


# --- the loop --------------------------------------------------------------------------------

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


# --- checkpoints -----------------------------------------------------------------------------

def save_checkpoint(directory: Path, loaded: LoadedModel, optimizer, scheduler, batches, step: int,
                    result: TrainResult, keep: int) -> str:
    """Weights (or LoRA adapter) + tokenizer + optimizer/scheduler/data state, written atomically."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model = getattr(loaded.model, "module", loaded.model)
    with quiet_transformers():
        model.save_pretrained(partial)
    loaded.tokenizer.save_pretrained(partial)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "batches": batches.state_dict(), "history": result.history, "eval_history": result.eval_history,
                "tokens": result.tokens, "seconds": result.seconds}, partial / STATE_FILE)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    checkpoints = sorted(directory.parent.glob("checkpoint-*[0-9]"), key=lambda p: int(p.name.split("-")[-1]))
    for old in checkpoints[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)
    return str(directory)


def check_checkpoint(directory: str) -> Path:
    path = Path(directory).expanduser() / STATE_FILE
    if not path.is_file():
        raise LLMError(f"--resume {directory}: not a checkpoint directory (no {STATE_FILE})")
    return path


def _restore(directory: str, optimizer, scheduler, batches, result: TrainResult) -> int:
    state = torch.load(check_checkpoint(directory), weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    batches.load_state_dict(state["batches"])
    result.history = list(state["history"])
    result.eval_history = list(state.get("eval_history", []))
    result.tokens, result.seconds = state["tokens"], state["seconds"]
    return int(state["step"])
