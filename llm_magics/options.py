"""Every command's options, declared once: type, default, range, choices and help.

The magics' argparse parsers, the `Session` methods' defaults, `TrainOptions` / `SamplingSettings`, the
playground's sliders, the extension's completion list (commands.json) and the README's table of defaults
are all derived from the lists below (in the spirit of transformers' GenerationConfig).

A train or finetune run's settings are built here once, into a `RunSpec` (at the end), which is passed down
whole, as transformers passes its TrainingArguments: nothing below restates a default.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from types import SimpleNamespace
from typing import Any, Final, Literal

from .base.checks import check_finite, check_seed
from .base.errors import LLMError

MAGIC_ONLY: Final = False  # Option.keyword for an option no Session method takes (a view, --compile-backend)


# The values of two options, here because the modules that use them sit above this one.
ATTRIBUTION_METHODS = (
    "integrated-gradients",
    "layer-integrated-gradients",
    "saliency",
    "input-x-gradient",
    "occlusion",
    "feature-ablation",
    "shapley-sampling",
)
PATCH_SITES = ("residual", "attention", "mlp", "heads")
# attribute's --steps when not given: integrated gradients' integration steps, the other methods' samples
INTEGRATION_STEPS = 50
SHAPLEY_SAMPLES = 25


@dataclass(frozen=True)
class Bounds:
    """The values an option accepts: from `low` (inclusive; exclusive when `low_open`) up to `high`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    why: str = ""  # said after the rule, e.g. "(0 turns it off)"

    def problem(self, flag: str, value: Any) -> str | None:
        """One line saying what is wrong with `value`, or None when it is accepted."""
        if value is None or isinstance(value, str):  # unset, or a word such as 'suggested' checked elsewhere
            return None
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if not too_low and (self.high is None or value <= self.high):
            return None
        if self.low is not None and self.high is not None:
            rule = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        elif self.low_open:
            rule = f"> {self.low:g}"
        else:
            rule = f">= {self.low:g}" if self.low == 0 else f"at least {self.low:g}"
        return f"{flag} must be {rule}{' ' + self.why if self.why else ''}; got {value!r}"


AT_LEAST_1 = Bounds(1)
MAX_RETURN_SEQUENCES = 64  # samples one generate call draws side by side (each holds its own KV cache)
POSITIVE = Bounds(0, low_open=True)
NOT_NEGATIVE = Bounds(0)


@dataclass(frozen=True)
class Option:
    name: str  # the Python keyword; its flag is --name-with-dashes
    default: Any = None
    type: Callable | None = None  # int, float, str... None: a flag (see `flags`) or a string
    help: str = ""
    choices: tuple | None = None  # the only values argparse accepts
    values: tuple | None = None  # the usual values, for completion, where others (a path, a hub id) also go
    range: tuple | None = None  # (low, high, step): the playground's slider
    bounds: Bounds | None = None  # the values accepted (check_bounds); a slider's range is narrower
    flags: dict | None = None  # a boolean: each flag and the value it stores, e.g. {"--greedy": False}
    positional: str | None = None  # a positional argument's nargs: "?", "*", or "1" for exactly one
    required: bool = False
    metavar: str | None = None
    keyword: str | Literal[False] | None = None  # the Session keyword when it differs; MAGIC_ONLY when there is none
    group: str = ""  # the heading `--help` lists it under (see _grouped); none: the command's own options
    repeatable: bool = False  # given several times, the values (lists, from `type`) are joined into one list

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def api_name(self) -> str | None:
        return None if self.keyword is MAGIC_ONLY else self.keyword or self.name

    def value_help(self) -> str:
        """The help text with the default, as `--help` and the completer show it."""
        if self.flags or self.positional or self.default is None:
            return self.help
        return f"{self.help} (default {self.default})" if self.help else f"default {self.default}"


def _grouped(title: str, options: list[Option]) -> list[Option]:
    """Options shared by several commands, listed under one heading in `--help`."""
    return [replace(o, group=title) for o in options]


def _flag(name: str, help: str, default: bool = False, **more) -> Option:
    """A switch: --name turns it on (or, default True, --no-name turns it off)."""
    flag = ("--no-" if default else "--") + name.replace("_", "-")
    return Option(name, default, help=help, flags={flag: not default}, **more)


def split_stop_texts(text: str) -> list[str]:
    """One --stop value's texts: comma- or newline-separated, each stripped, `\\n` read as a newline."""
    pieces = (piece.strip().replace("\\n", "\n") for piece in text.replace("\n", ",").split(","))
    return [piece for piece in pieces if piece]


def _lr_value(text: str):
    return text if text == "suggested" else float(text)


DATA_HELP = (
    "a .txt (a document per blank-line-separated block), .jsonl/.json, .csv or .parquet file, a folder "
    "of them or one written by Dataset.save_to_disk; '-' or none = the cell body"
)
RUNS_DIR_HELP = "where the run is recorded (default llm_runs/ here, or $LLM_MAGICS_RUNS_DIR)"
COMPILE_BACKEND = Option(
    "compile_backend",
    type=str,
    keyword=MAGIC_ONLY,
    values=("inductor", "aot_eager", "eager"),
    help="torch.compile backend (default inductor; e.g. aot_eager)",
)
DEVICE = Option("device", "auto", str, "auto (CUDA if present), cpu, cuda, cuda:N", values=("auto", "cpu", "cuda"))

SAMPLING = _grouped(
    "sampling",
    [
        Option("max_new_tokens", 64, int, "tokens to generate", range=(1, 512, 1), bounds=AT_LEAST_1),
        Option(
            "temperature",
            0.7,
            float,
            "softmax temperature",
            range=(0.05, 2.0, 0.05),
            bounds=Bounds(0, low_open=True, why="(use --greedy for deterministic output)"),
        ),
        Option(
            "top_k",
            50,
            int,
            "keep the k likeliest tokens; 0 = off",
            range=(0, 200, 1),
            bounds=Bounds(0, why="(0 turns it off)"),
        ),
        Option(
            "top_p", 0.95, float, "nucleus sampling mass", range=(0.05, 1.0, 0.05), bounds=Bounds(0, 1, low_open=True)
        ),
        Option("repetition_penalty", 1.0, float, "> 1 discourages repeats", range=(0.8, 2.0, 0.05), bounds=POSITIVE),
        Option("seed", None, int, "same seed => same text"),
        Option(
            "stop",
            None,
            split_stop_texts,
            "end at the first of these texts (comma- or newline-separated; \\n: a newline; repeatable), cut from "
            "the output",
            repeatable=True,
        ),
        Option(
            "do_sample",
            True,
            help="sample (default for generate); --greedy: always take the likeliest token",
            flags={"--do-sample": True, "--greedy": False},
        ),
    ],
)
# A one-turn chat through the model's chat template (generate, the playground); `chat` keeps its history instead.
CHAT_TEMPLATE = _grouped(
    "chat template",
    [
        _flag("chat", "send the prompt as the user's turn through the model's chat template"),
        Option("system", type=str, help="a system prompt before the user's turn (implies --chat)"),
    ],
)
NUM_RETURN_SEQUENCES = Option(
    "num_return_sequences", 1, int, "samples to draw", range=(1, 8, 1), bounds=Bounds(1, MAX_RETURN_SEQUENCES)
)

# What a training run does; train, finetune and lr-find share them (see TrainOptions).
TRAINING = [
    *_grouped(
        "data",
        [
            Option("data", type=str, help=DATA_HELP),
            Option("eval_data", type=str, help="held-out data (same formats as --data) evaluated during training"),
            Option("text_field", type=str, help="the column holding the text when it is not 'text'"),
            Option("sample_docs", type=int, help="use only the first N documents (rows) of --data", bounds=AT_LEAST_1),
        ],
    ),
    *_grouped(
        "optimization",
        [
            Option(
                "steps", type=int, help="optimizer steps (finetune: from --epochs when not given)", bounds=AT_LEAST_1
            ),
            Option("batch_size", 8, int, bounds=AT_LEAST_1),
            Option("grad_accum", 1, int, "micro-batches per optimizer step", bounds=AT_LEAST_1),
            Option(
                "lr",
                type=_lr_value,
                help="peak learning rate (AdamW, warmup + cosine), or 'suggested': the last "
                "lr-find's; default: by kind of run (docs: Commands and options)",
                bounds=POSITIVE,
            ),
            Option("warmup", 0.1, float, "warmup: a fraction (<1) or a step count", bounds=NOT_NEGATIVE),
            Option("seq_len", 128, int, "tokens per training sequence", bounds=Bounds(2)),
        ],
    ),
    *_grouped(
        "evaluation, checkpoints and records",
        [
            Option("eval_every", type=int, help="evaluate --eval-data every N steps", bounds=AT_LEAST_1),
            Option("checkpoint_every", type=int, help="write a resumable checkpoint every N steps", bounds=AT_LEAST_1),
            Option("output_dir", type=str, help="where checkpoints go (default llm_runs/<kind>-<time>)"),
            Option("resume", type=str, help="continue from a checkpoint directory"),
            Option("runs_dir", type=str, help=RUNS_DIR_HELP),
        ],
    ),
    *_grouped(
        "early stopping",
        [
            Option(
                "early_stopping",
                type=int,
                metavar="PATIENCE",
                help="stop after PATIENCE evaluations without a better eval loss (needs --eval-data, --eval-every)",
                bounds=Bounds(1, why="(the patience)"),
            ),
            Option("min_delta", 0.0, float, "early stopping: how much lower counts as better", bounds=NOT_NEGATIVE),
            _flag(
                "restore_best",
                "early stopping: keep the last weights instead of loading the best evaluation's back",
                default=True,
            ),
        ],
    ),
    *_grouped(
        "the run",
        [
            Option("seed", 0, int),
            Option(
                "compare",
                "auto",
                str,
                "overlay earlier runs on the live chart, faded: auto (the previous run of the "
                "same kind on the same data), last, all, none, or ID,ID",
                keyword=MAGIC_ONLY,
                values=("auto", "last", "all", "none"),
            ),
            Option(
                "track",
                type=str,
                help="log to experiment trackers through accelerate, comma-separated: tensorboard, "
                "trackio, wandb (offline without a login), mlflow, aim",
                values=("tensorboard", "trackio", "wandb", "mlflow", "aim"),
            ),
            _flag("trust_remote_code", "allow Python code shipped with a --tokenizer or --resume folder"),
            _flag("progress", "hide the progress bar", default=True),
        ],
    ),
    *_grouped(
        "engine",
        [
            Option(
                "processes",
                1,
                int,
                "train on N processes (DDP through accelerate: one per GPU, or CPU processes with gloo)",
                bounds=AT_LEAST_1,
            ),
            Option(
                "accelerate_config",
                type=str,
                help="an accelerate config file (FSDP, DeepSpeed, several nodes), run with `accelerate launch`",
            ),
            _flag("compile", "torch.compile the model (slow first steps)"),
            COMPILE_BACKEND,
            _flag("gradient_checkpointing", "recompute activations in the backward pass: less memory, slower steps"),
            Option(
                "widget",
                help="--widget: live loss chart with a Stop button (default in a notebook); --no-widget: no live chart",
                flags={"--widget": True, "--no-widget": False},
                keyword=MAGIC_ONLY,
            ),
        ],
    ),
]
TRAIN_MODEL = _grouped(
    "the model trained",
    [  # which model `train` trains
        _flag("from_scratch", "a fresh model built from --config"),
        Option(
            "config", "tiny", str, "tiny, small, gpt2-124m or a config .json", values=("tiny", "small", "gpt2-124m")
        ),
        Option("arch", "llama", str, choices=("llama", "gpt2")),
        Option(
            "tokenizer",
            "bytes",
            str,
            "bytes (byte-level), default (SmolLM2's), loaded, or a dir",
            values=("bytes", "default", "loaded"),
        ),
        DEVICE,
        Option("max_tokens", type=int, help="train on the first N tokens of --data only"),
    ],
)
FINETUNE_MODEL = _grouped(
    "fine-tuning",
    [  # what `finetune` adds to the loaded model
        _flag("lora", "train a LoRA adapter (peft) instead of all weights"),
        Option("lora_r", 8, int, "the adapter's rank", bounds=AT_LEAST_1),
        Option(
            "lora_alpha",
            type=int,
            help="the adapter's scale is alpha / r (default: peft's)",
            bounds=Bounds(0, low_open=True, why="(the adapter's scale is alpha / r)"),
        ),
        Option("epochs", 1.0, float, "passes over --data when --steps is not given", bounds=POSITIVE),
        Option("task", "lm", str, choices=("lm", "classify")),
        Option("labels", type=str, help="comma-separated class labels for --task classify"),
    ],
)
LR_FIND = _grouped(
    "the sweep",
    [
        Option(
            "form",
            "train",
            str,
            "sweep what `train` (default) or `finetune` would train",
            choices=("train", "finetune"),
            positional="?",
            keyword=MAGIC_ONLY,
        ),  # the API: finetune=True
        Option("start_lr", 1e-7, float),
        Option("end_lr", 10.0, float),
        Option("num_steps", 100, int, "steps of the exponential sweep"),
        Option(
            "suggestion",
            "valley",
            str,
            "which suggestion `--lr suggested` uses",
            choices=("valley", "minimum", "steep"),
        ),
    ],
)
# lr-find sets the lr, the steps and the warmup of the run it sweeps
SWEPT = ("lr", "steps", "warmup")
# Learning-rate defaults by kind of run: a fresh tiny model takes a large one, a pretrained model a small one.
LR_BY_KIND = {"train --from-scratch": 3e-3, "train": 3e-4, "finetune": 5e-5, "finetune --lora": 2e-4}
STEPS_BY_KIND = {"train": 100, "finetune": "--epochs over --data"}


def default_lr(command: str, from_scratch: bool = False, lora: bool = False) -> float:
    """The lr a run of this kind gets when none is given."""
    if command == "train":
        return LR_BY_KIND["train --from-scratch" if from_scratch else "train"]
    return LR_BY_KIND["finetune --lora" if lora else "finetune"]


def _with(options: list[Option], **defaults) -> list[Option]:
    """The same options with some defaults changed for one command."""
    return [replace(o, default=defaults[o.name]) if o.name in defaults else o for o in options]


COMMANDS: dict[str, tuple[str, list[Option]]] = {
    "load": (
        "load a model: hub id, local dir, .gguf file, 'default' or 'minilm'",
        [
            Option(
                "model",
                "default",
                str,
                "hub id, local dir, .gguf file, 'default' or 'minilm'",
                positional="?",
                keyword="spec",
            ),
            DEVICE,
            Option(
                "dtype",
                "auto",
                str,
                "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16",
                values=("auto", "float32", "bfloat16", "float16"),
            ),
            _flag("trust_remote_code", "allow the model's own Python code"),
            Option(
                "quantize",
                "none",
                str,
                "none (exact), int8, int4 or int8-dynamic: quantized Linear weights for "
                "inference (training then needs a reload without it)",
                values=("none", "int8", "int4", "int8-dynamic"),
            ),
        ],
    ),
    "status": ("the loaded model: name, parameters, device, dtype, memory", []),
    "quantize": (
        "quantize the loaded model in place for inference: int8 or int4",
        [
            Option("mode", type=str, choices=("int8", "int4", "int8-dynamic"), positional="1"),
        ],
    ),
    "generate": (
        "cell body = prompt; streams the continuation",
        [
            Option("prompt", help="prompt (line magic); the cell body otherwise", positional="*", keyword=MAGIC_ONLY),
            *SAMPLING,
            NUM_RETURN_SEQUENCES,
            *CHAT_TEMPLATE,
            _flag("attention", "then show the attention of prompt + output", keyword=MAGIC_ONLY),
            _flag(
                "widget",
                "sampling playground pre-filled with these settings, tokens coloured by probability",
                keyword=MAGIC_ONLY,
            ),
            Option(
                "compile",
                None,
                help="static KV cache + torch.compile (CUDA graphs on GPU); the first call "
                "compiles (default: the session's)",
                flags={"--compile": True},
            ),
            COMPILE_BACKEND,
        ],
    ),
    "playground": (
        "sampling playground (cell body = prompt)",
        [
            Option("prompt", positional="*", keyword=MAGIC_ONLY),
            *SAMPLING,
            NUM_RETURN_SEQUENCES,
            *CHAT_TEMPLATE,
        ],
    ),
    "chat": (
        "cell body = your message; the history is kept across cells",
        [
            Option("message", positional="*", keyword=MAGIC_ONLY),
            Option("system", type=str, help="system prompt (kept until --reset or a new --system)"),
            _flag("reset", "forget the conversation", keyword=MAGIC_ONLY),
            *SAMPLING,
        ],
    ),
    "train": ("pre-train on text (cell body or --data)", [*TRAIN_MODEL, *_with(TRAINING, steps=100)]),
    "finetune": ("fine-tune the loaded model on --data", [*FINETUNE_MODEL, *TRAINING]),
    "lr-find": (
        "fastai's lr range test on the data of a train or finetune run",
        [*LR_FIND, *TRAIN_MODEL, *FINETUNE_MODEL, *(o for o in TRAINING if o.name not in SWEPT)],
    ),
    "save": (
        "save the model (LoRA merged) and tokenizer to DIR",
        [
            Option("directory", type=str, positional="1"),
            _flag("adapter", "save only the LoRA adapter", keyword="adapter_only"),
            _flag("overwrite", "write into a non-empty folder that is not an earlier save (its other files are kept)"),
        ],
    ),
    "attention": (
        "interactive attention view of TEXT (or the cell body)",
        [
            Option("text", positional="*", keyword=MAGIC_ONLY),
            Option("layer", type=int, help="layer to open first (default: the last)"),
            Option("head", type=int, help="head to open first (default: mean of all heads)"),
            Option(
                "view",
                type=str,
                choices=("head", "model", "matrix", "lens"),
                help="default: head view up to 256 tokens, matrix view beyond; lens: the logit lens",
            ),
            Option(
                "backend",
                "widget",
                str,
                "bertviz needs its CDN (require.js, d3, jQuery): offline our view is shown instead",
                choices=("widget", "bertviz"),
            ),
            _flag(
                "explain",
                "also show attention rollout and gradient x input side by side, the sinks named, and "
                "their rank correlation",
                keyword=MAGIC_ONLY,
            ),
        ],
    ),
    "lens": (
        "logit lens of TEXT (or the cell body): every layer's next-token guesses",
        [
            Option("text", positional="*", keyword=MAGIC_ONLY),
            Option(
                "target",
                type=str,
                help="also plot this token's probability and rank across the layers (its first "
                "token, as typed: ' Paris')",
            ),
        ],
    ),
    "patch": (
        "activation patching: cell body = clean prompt, then corrupted prompt",
        [
            Option(
                "answer",
                type=str,
                help="the clean answer token, as typed (' Paris'); default: the clean run's top next token",
            ),
            Option("wrong", type=str, help="the token it competes with; default: the corrupted run's top next token"),
            Option(
                "site",
                "residual",
                str,
                "what is patched: a layer's output, its attention or MLP output (layer x "
                "position), or one head's output at the last position (layer x head)",
                choices=PATCH_SITES,
            ),
            Option("layers", type=str, help="only these layers, e.g. 0,5,29 or 20-29 (default: all)"),
        ],
    ),
    "attribute": (
        "which input tokens drove each output token (Captum)",
        [
            Option("text", positional="*", keyword=MAGIC_ONLY),
            Option(
                "method",
                "integrated-gradients",
                str,
                "integrated-gradients, layer-integrated-gradients, saliency, "
                "input-x-gradient, occlusion, feature-ablation or shapley-sampling",
                values=ATTRIBUTION_METHODS,
            ),
            Option(
                "target",
                type=str,
                help="the output to explain (text; a label for a classifier); default: the "
                "greedy continuation, or the predicted label",
            ),
            Option("max_new_tokens", 10, int, "tokens generated without --target", bounds=AT_LEAST_1),
            Option(
                "steps",
                type=int,
                help=f"integration steps (default {INTEGRATION_STEPS}) or Shapley samples ({SHAPLEY_SAMPLES})",
                bounds=AT_LEAST_1,
            ),
            _flag("normalize", "scale each output token's row to its max", keyword=MAGIC_ONLY),
        ],
    ),
    "eval": (
        "score the loaded model on --data (or the cell body)",
        [
            Option("metric", type=str, choices=("perplexity", "accuracy", "f1", "bleu", "rouge"), required=True),
            Option("data", type=str, help=DATA_HELP),
            Option("text_field", type=str, help="the column holding the text when it is not 'text'"),
            Option("sample_docs", type=int, help="score only the first N documents (rows)"),
            Option("max_tokens", type=int, help="perplexity on the first N tokens only"),
            Option("max_new_tokens", 64, int, "for bleu / rouge generations"),
            Option("seq_len", 512, int, "window for perplexity"),
            Option("runs_dir", type=str, help=RUNS_DIR_HELP),
        ],
    ),
    "runs": (
        "the run history: a table of the recorded runs, newest first",
        [
            Option("runs_dir", type=str, help="the folder to list (default llm_runs/ here, or $LLM_MAGICS_RUNS_DIR)"),
            Option("delete", type=str, metavar="ID", help="remove one run (its history, options and checkpoints)"),
            Option("plot", type=str, choices=("loss", "eval_loss", "lr"), help="a static overlay of the runs' curves"),
            Option("ids", help="the runs to plot (default: all)", positional="*", keyword=MAGIC_ONLY),
        ],
    ),
}


def options(command: str) -> list[Option]:
    return COMMANDS[command][1]


def defaults(command: str) -> SimpleNamespace:
    """`defaults("train").batch_size`: the declared defaults, for signatures and dataclass fields."""
    return SimpleNamespace(**{o.name: o.default for o in options(command)})


def check_bounds(values: object, command: str, only: tuple[str, ...] | None = None) -> None:
    """One line for the first of the command's options (or of `only`) whose value in `values` (an object with
    those attributes, or a dict) is out of its declared bounds."""
    for option in options(command):
        if option.bounds is None or (only is not None and option.name not in only):
            continue
        value = values.get(option.name) if isinstance(values, dict) else getattr(values, option.name, None)
        problem = option.bounds.problem(option.flag, value)
        if problem:
            raise LLMError(problem)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """The command's options, as argparse arguments, each shared list under its `--help` heading."""
    headings: dict[str, Any] = {}
    for option in options(command):
        where = parser
        if option.group:
            if option.group not in headings:
                headings[option.group] = parser.add_argument_group(option.group)
            where = headings[option.group]
        if option.positional is not None:
            nargs = None if option.positional == "1" else option.positional
            where.add_argument(
                option.name, nargs=nargs, default=option.default, help=option.help, choices=option.choices
            )
        elif option.flags:
            target = where.add_mutually_exclusive_group() if len(option.flags) > 1 else where
            for flag, value in option.flags.items():
                target.add_argument(
                    flag, dest=option.name, action="store_const", const=value, default=option.default, help=option.help
                )
        else:
            where.add_argument(
                option.flag,
                type=option.type or str,
                default=option.default,
                choices=option.choices,
                required=option.required,
                metavar=option.metavar,
                help=option.value_help(),
                **({"action": "extend"} if option.repeatable else {}),
            )


def session_kwargs(args: argparse.Namespace, command: str, only: list[Option] | None = None) -> dict:
    """The parsed options the Session method takes, by its keyword names (no hand-copied lists)."""
    kwargs = {
        o.api_name: getattr(args, o.name) for o in (only or options(command)) if o.api_name and o.positional is None
    }
    if getattr(args, "compile_backend", None):  # --compile-backend NAME: the Session's `compile` names it
        kwargs["compile"] = args.compile_backend
    return kwargs


def completion_spec() -> dict:
    """Each command's options with their help and values, for the extension's completer."""
    spec: dict[str, dict] = {}
    for command, (_, opts) in COMMANDS.items():
        spec[command] = {}
        for o in opts:
            if o.flags:
                spec[command].update({flag: {"help": o.help} for flag in o.flags})
            elif o.positional is None:
                values = o.choices or o.values
                spec[command][o.flag] = {"help": o.value_help(), **({"values": list(values)} if values else {})}
    return spec


def readme_table() -> str:
    """The README's table of defaults: every option that has one, with the commands that share it."""
    rows: dict[tuple, list[str]] = {}
    for command, (_, opts) in COMMANDS.items():
        for o in opts:
            if o.name in ("lr", "steps") and command in ("train", "finetune"):
                continue  # by kind of run, below
            default = _shown_default(o)
            if o.positional is None and default:
                values = " / ".join(o.choices) if o.choices else f"{o.range[0]:g} to {o.range[1]:g}" if o.range else ""
                rows.setdefault((" ".join(o.flags) if o.flags else o.flag, default, values), []).append(command)
    lines = ["| option | commands | default | values |", "| --- | --- | --- | --- |"]
    lines += [f"| `--lr` | {kind} | {lr:g} | |" for kind, lr in LR_BY_KIND.items()]
    lines += [f"| `--steps` | {kind} | {steps} | |" for kind, steps in STEPS_BY_KIND.items()]
    lines += [
        f"| `{flag}` | {', '.join(commands)} | {default} | {values} |"
        for (flag, default, values), commands in rows.items()
    ]
    return "\n".join(lines)


def _shown_default(option: Option) -> str:
    """The default as the table shows it: the flag in effect for a switch, nothing for an unset option."""
    if option.flags:
        return next((f"`{flag}`" for flag, value in option.flags.items() if value == option.default), "")
    if option.default is None:
        return ""
    return f"{option.default:g}" if isinstance(option.default, float) else str(option.default)


# --- A train or finetune run's settings, built once from the declarations above ---

_D = defaults("finetune")  # lr and steps go by kind of run (RunSpec.build)


@dataclass
class TrainOptions:
    """What the training loop reads: optimization, evaluation, checkpoints and trackers."""

    steps: int | None = None  # optimizer steps (train); finetune derives them from epochs
    epochs: float = _D.epochs
    batch_size: int = _D.batch_size
    grad_accum: int = _D.grad_accum
    lr: float = LR_BY_KIND["train"]
    warmup: float = _D.warmup  # < 1: a fraction of the steps, else a step count
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seq_len: int = _D.seq_len
    checkpoint_every: int | None = _D.checkpoint_every
    keep_checkpoints: int = 2
    output_dir: str | None = _D.output_dir
    resume: str | None = _D.resume
    eval_every: int | None = _D.eval_every
    seed: int = _D.seed
    compile: bool | str = _D.compile  # torch.compile the model (True: inductor, or a backend name)
    gradient_checkpointing: bool = _D.gradient_checkpointing  # less memory, ~30% slower steps
    early_stopping: int | None = _D.early_stopping  # stop after this many evaluations without a better eval loss
    min_delta: float = _D.min_delta  # what counts as better: lower by more than this
    restore_best: bool = _D.restore_best  # after early stopping, load the best evaluation's weights back
    track: str | None = _D.track  # experiment trackers, comma-separated (tensorboard, trackio, wandb, mlflow, aim)
    tracker_dir: str | None = None  # where local trackers write (the run's folder)
    lr_sweep: float | None = None  # lr-find: grow the lr exponentially from `lr` to this over `steps` steps

    def validated(self) -> TrainOptions:
        check_finite(
            epochs=self.epochs,
            lr=self.lr,
            warmup=self.warmup,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            min_delta=self.min_delta,
        )
        check_seed(self.seed)
        check_bounds(self, "finetune")  # the bounds declared above (lr-find's and train's are the same)
        return self


@dataclass
class ModelSpec:
    """The model a run trains: train's (the loaded one, or a fresh one of --config) and what finetune adds
    to it (a LoRA adapter, a classification head)."""

    from_scratch: bool
    config: str
    arch: str
    tokenizer: str
    device: str
    trust_remote_code: bool
    lora: bool
    lora_r: int
    lora_alpha: int | None
    task: str
    labels: list[str] | None  # --task classify's (a line's comma-separated ones, split)


@dataclass
class DataSpec:
    """What a run reads: --data or the cell body (`text`), --eval-data, and how much of them."""

    data: str | None
    text: str | None
    eval_data: str | None
    text_field: str | None
    sample_docs: int | None
    max_tokens: int | None
    num_proc: int | None  # tokenizing processes (the API's own)


@dataclass
class EngineSpec:
    """Where a run goes: its processes, its progress bar and the run history it is recorded in."""

    processes: int
    accelerate_config: str | None
    progress: bool
    runs_dir: str | None


# What a run's record (run.json) keeps besides its TrainOptions; saved runs are read back in this shape.
RECORDED = {
    "train": (
        "from_scratch",
        "config",
        "arch",
        "tokenizer",
        "data",
        "eval_data",
        "text_field",
        "max_tokens",
        "sample_docs",
        "processes",
    ),
    "finetune": (
        "data",
        "eval_data",
        "lora",
        "lora_r",
        "lora_alpha",
        "task",
        "labels",
        "text_field",
        "sample_docs",
        "processes",
    ),
}
# The Session's keywords that are no option of the magics: the cell body, and train's tokenizing processes.
API_ONLY = {"train": ("text", "num_proc"), "finetune": ("text",)}


@dataclass
class RunSpec:
    """Everything a train or finetune run is asked, built once (`build`) and handed down whole."""

    command: str  # train or finetune
    train: TrainOptions
    model: ModelSpec
    data: DataSpec
    engine: EngineSpec

    @classmethod
    def build(cls, command: str, given: dict) -> RunSpec:
        """The run of `command` with the Session keywords `given` (a magic's line: `session_kwargs`); every
        other setting is its declared default, lr and steps by kind of run (None, as a line leaves them,
        too). The lr may still be 'suggested': the Session resolves it from its run history."""
        accepted = {o.api_name for o in options(command)} | set(API_ONLY[command]) | _field_names(TrainOptions)
        unknown = set(given) - accepted
        if unknown:
            raise LLMError(f"{command} got unknown option(s): {', '.join(sorted(unknown))}")
        declared = {o.name: o.default for o in [*TRAIN_MODEL, *FINETUNE_MODEL, *options(command)]}
        values = {**declared, **dict.fromkeys(API_ONLY["train"])}
        values.update({k: v for k, v in given.items() if not (k in ("lr", "steps") and v is None)})
        if values["lr"] is None:
            values["lr"] = default_lr(command, values["from_scratch"], values["lora"])
        if isinstance(values["labels"], str):  # --labels a,b,c
            values["labels"] = [label.strip() for label in values["labels"].split(",") if label.strip()]

        def part(cls):
            return cls(**{name: values[name] for name in _field_names(cls) if name in values})

        return cls(command, part(TrainOptions), part(ModelSpec), part(DataSpec), part(EngineSpec))

    @property
    def several(self) -> bool:
        """Trained on several processes (--processes N or an accelerate config)."""
        return self.engine.processes != 1 or self.engine.accelerate_config is not None

    def record(self) -> dict:
        """The options its run record keeps: the kind's own arguments, then every TrainOptions field."""
        arguments = {**asdict(self.model), **asdict(self.data), **asdict(self.engine)}
        return {**{name: arguments[name] for name in RECORDED[self.command]}, **asdict(self.train)}


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}
