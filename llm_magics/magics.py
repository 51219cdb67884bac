"""`%llm` / `%%llm`: parse the arguments, call the Session, print one line on user errors."""
from __future__ import annotations

import argparse
import io
import shlex
import sys

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import HTML, display

from .errors import LLMError


class _HelpShown(Exception):
    """--help was asked: the help text is printed and nothing runs."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting the kernel."""

    def error(self, message):
        raise LLMError(f"{message} (see `%llm {self.prog.split()[-1]} --help`)"
                       if " " in self.prog else f"{message} (see `%llm --help`)")

    def exit(self, status=0, message=None):
        if message:
            print(message, file=sys.stderr)
        raise _HelpShown


def _sampling_options(parser: argparse.ArgumentParser, greedy_default: bool = False):
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    group.add_argument("--temperature", type=float, default=0.7, help="softmax temperature (default 0.7)")
    group.add_argument("--top-k", type=int, default=50, help="keep the k likeliest tokens; 0 = off (default 50)")
    group.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    group.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats")
    group.add_argument("--seed", type=int, default=None, help="same seed => same text")
    mode = group.add_mutually_exclusive_group()
    mode.add_argument("--do-sample", dest="do_sample", action="store_true", default=not greedy_default,
                      help="sample (default for generate)")
    mode.add_argument("--greedy", dest="do_sample", action="store_false", help="always take the likeliest token")


DATA_HELP = ("a .txt (a document per blank-line-separated block), .jsonl/.json, .csv or .parquet file, a folder "
             "of them or one written by Dataset.save_to_disk; '-' or none = the cell body")


def _lr_value(text: str):
    return text if text == "suggested" else float(text)


RUNS_DIR_HELP = "where the run is recorded (default llm_runs/ here, or $LLM_MAGICS_RUNS_DIR)"


def _training_options(parser: argparse.ArgumentParser, lr: float | None):
    group = parser.add_argument_group("training")
    group.add_argument("--data", help=DATA_HELP)
    group.add_argument("--eval-data", help="held-out data (same formats as --data) evaluated during training")
    group.add_argument("--text-field", help="the column holding the text when it is not 'text'")
    group.add_argument("--sample-docs", type=int, help="use only the first N documents (rows) of --data")
    group.add_argument("--steps", type=int, help="optimizer steps")
    group.add_argument("--batch-size", type=int, default=8)
    group.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    group.add_argument("--lr", type=_lr_value, default=lr,
                       help="peak learning rate (AdamW, warmup + cosine), or 'suggested': the last lr-find's")
    group.add_argument("--warmup", type=float, default=0.1, help="warmup: a fraction (<1) or a step count")
    group.add_argument("--seq-len", type=int, default=128, help="tokens per training sequence")
    group.add_argument("--eval-every", type=int, help="evaluate --eval-data every N steps")
    group.add_argument("--checkpoint-every", type=int, help="write a resumable checkpoint every N steps")
    group.add_argument("--output-dir", help="where checkpoints go (default llm_runs/<kind>-<time>)")
    group.add_argument("--resume", help="continue from a checkpoint directory")
    group.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    group.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                       help="stop after PATIENCE evaluations without a better eval loss "
                            "(needs --eval-data, --eval-every)")
    group.add_argument("--min-delta", type=float, default=0.0, help="early stopping: how much lower counts as better")
    group.add_argument("--no-restore-best", dest="restore_best", action="store_false",
                       help="early stopping: keep the last weights instead of loading the best evaluation's back")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--compare", default="auto", help="overlay earlier runs on the live chart, faded: auto (the "
                       "previous run of the same kind on the same data), last, all, none, or ID,ID")
    group.add_argument("--track", help="log to experiment trackers through accelerate, comma-separated: "
                       "tensorboard, trackio, wandb (offline without a login), mlflow, aim")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow Python code shipped with a --tokenizer or --resume folder")
    group.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    scale = parser.add_argument_group("scaling up")
    scale.add_argument("--processes", type=int, default=1,
                       help="train on N processes (DDP through accelerate: one per GPU, or CPU processes with gloo)")
    scale.add_argument("--accelerate-config", help="an accelerate config file (FSDP, DeepSpeed, several nodes), "
                       "run with `accelerate launch`")
    scale.add_argument("--compile", action="store_true", help="torch.compile the model (slow first steps)")
    scale.add_argument("--compile-backend", help="torch.compile backend (default inductor; e.g. aot_eager)")
    scale.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute activations in the backward pass: less memory, slower steps")
    view = group.add_mutually_exclusive_group()
    view.add_argument("--widget", dest="widget", action="store_true", default=None,
                      help="live loss chart with a Stop button (default in a notebook)")
    view.add_argument("--no-widget", dest="widget", action="store_false", help="no live chart")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llm", description="Load, generate with, chat with, train and fine-tune a "
                     "language model that lives in this kernel.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    load = commands.add_parser("load", help="load a model: hub id, local dir, .gguf file, 'default' or 'minilm'")
    load.add_argument("model", nargs="?", default="default")
    load.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    load.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    load.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code")
    load.add_argument("--quantize", default="none", help="none (default, exact), int8, int4 or int8-dynamic: "
                      "quantized Linear weights for inference (training then needs a reload without it)")

    commands.add_parser("status", help="the loaded model: name, parameters, device, dtype, memory")

    quantize = commands.add_parser("quantize", help="quantize the loaded model in place for inference: int8 or int4")
    quantize.add_argument("mode", choices=["int8", "int4", "int8-dynamic"])

    generate = commands.add_parser("generate", help="cell body = prompt; streams the continuation")
    generate.add_argument("prompt", nargs="*", help="prompt (line magic); the cell body otherwise")
    _sampling_options(generate)
    generate.add_argument("--num-return-sequences", type=int, default=1, help="samples to draw")
    generate.add_argument("--attention", action="store_true", help="then show the attention of prompt + output")
    generate.add_argument("--widget", action="store_true",
                          help="sampling playground pre-filled with these settings, tokens coloured by probability")
    generate.add_argument("--compile", action="store_true", default=None,
                          help="static KV cache + torch.compile (CUDA graphs on GPU); the first call compiles")
    generate.add_argument("--compile-backend", help="torch.compile backend (default inductor; e.g. aot_eager)")

    playground = commands.add_parser("playground", help="sampling playground (cell body = prompt)")
    playground.add_argument("prompt", nargs="*")
    _sampling_options(playground)
    playground.add_argument("--num-return-sequences", type=int, default=1)

    chat = commands.add_parser("chat", help="cell body = your message; the history is kept across cells")
    chat.add_argument("message", nargs="*")
    chat.add_argument("--system", help="system prompt (kept until --reset or a new --system)")
    chat.add_argument("--reset", action="store_true", help="forget the conversation")
    _sampling_options(chat)

    train = commands.add_parser("train", help="pre-train on text (cell body or --data)")
    train.add_argument("--from-scratch", action="store_true", help="a fresh model built from --config")
    train.add_argument("--config", default="tiny", help="tiny, small, gpt2-124m or a config .json")
    train.add_argument("--arch", default="llama", choices=["llama", "gpt2"])
    train.add_argument("--tokenizer", default="bytes", help="bytes (byte-level), default (SmolLM2's), loaded, or a dir")
    train.add_argument("--device", default="auto")
    train.add_argument("--max-tokens", type=int, help="train on the first N tokens of --data only")
    _training_options(train, lr=3e-3)

    finetune = commands.add_parser("finetune", help="fine-tune the loaded model on --data")
    finetune.add_argument("--lora", action="store_true", help="train a LoRA adapter (peft) instead of all weights")
    finetune.add_argument("--lora-r", type=int, default=8)
    finetune.add_argument("--lora-alpha", type=int)
    finetune.add_argument("--epochs", type=float, default=1.0)
    finetune.add_argument("--task", default="lm", choices=["lm", "classify"])
    finetune.add_argument("--labels", help="comma-separated class labels for --task classify")
    _training_options(finetune, lr=None)

    lr_find = commands.add_parser("lr-find", help="fastai's lr range test on the data of a train or finetune run")
    lr_find.add_argument("form", nargs="?", default="train", choices=["train", "finetune"],
                         help="sweep what `train` (default) or `finetune` would train")
    lr_find.add_argument("--start-lr", type=float, default=1e-7)
    lr_find.add_argument("--end-lr", type=float, default=10.0)
    lr_find.add_argument("--num-steps", type=int, default=100, help="steps of the exponential sweep (default 100)")
    lr_find.add_argument("--suggestion", default="valley", choices=["valley", "minimum", "steep"],
                         help="which suggestion `--lr suggested` uses (default valley)")
    lr_find.add_argument("--from-scratch", action="store_true", help="train form: a fresh model built from --config")
    lr_find.add_argument("--config", default="tiny")
    lr_find.add_argument("--arch", default="llama", choices=["llama", "gpt2"])
    lr_find.add_argument("--tokenizer", default="bytes")
    lr_find.add_argument("--device", default="auto")
    lr_find.add_argument("--max-tokens", type=int)
    lr_find.add_argument("--lora", action="store_true", help="finetune form: sweep a LoRA adapter")
    lr_find.add_argument("--lora-r", type=int, default=8)
    lr_find.add_argument("--lora-alpha", type=int)
    lr_find.add_argument("--epochs", type=float, default=1.0)
    lr_find.add_argument("--task", default="lm", choices=["lm", "classify"])
    lr_find.add_argument("--labels")
    _training_options(lr_find, lr=None)

    save = commands.add_parser("save", help="save the model (LoRA merged) and tokenizer to DIR")
    save.add_argument("directory")
    save.add_argument("--adapter", action="store_true", help="save only the LoRA adapter")
    save.add_argument("--overwrite", action="store_true",
                      help="write into a non-empty folder that is not an earlier save (its other files are kept)")

    attention = commands.add_parser("attention", help="interactive attention view of TEXT (or the cell body)")
    attention.add_argument("text", nargs="*")
    attention.add_argument("--layer", type=int, help="layer to open first (default: the last)")
    attention.add_argument("--head", type=int, help="head to open first (default: mean of all heads)")
    attention.add_argument("--view", choices=["head", "model", "matrix", "lens"],
                           help="default: head view up to 256 tokens, matrix view beyond; lens: the logit lens")
    attention.add_argument("--backend", default="widget", choices=["widget", "bertviz"],
                           help="bertviz needs its CDN (require.js, d3, jQuery): offline our view is shown instead")
    attention.add_argument("--explain", action="store_true",
                           help="also shade tokens by attention rollout (sinks dropped) and gradient x input")

    lens = commands.add_parser("lens", help="logit lens of TEXT (or the cell body): every layer's next-token guesses")
    lens.add_argument("text", nargs="*")

    patch = commands.add_parser("patch", help="activation patching: cell body = clean prompt, then corrupted prompt")
    patch.add_argument("--answer", help="the clean answer token, as typed (' Paris'); default: the clean run's top "
                       "next token")
    patch.add_argument("--wrong", help="the token it competes with; default: the corrupted run's top next token")
    patch.add_argument("--site", default="residual", choices=["residual", "attention", "mlp", "heads"],
                       help="what is patched: a layer's output, its attention or MLP output (layer x position), "
                       "or one head's output at the last position (layer x head)")
    patch.add_argument("--layers", help="only these layers, e.g. 0,5,29 or 20-29 (default: all)")

    attribute = commands.add_parser("attribute", help="which input tokens drove each output token (Captum)")
    attribute.add_argument("text", nargs="*")
    attribute.add_argument("--method", default="integrated-gradients",
                           help="integrated-gradients (default), layer-integrated-gradients, saliency, "
                           "input-x-gradient, occlusion, feature-ablation or shapley-sampling")
    attribute.add_argument("--target", help="the output to explain (text; a label for a classifier); default: the "
                           "greedy continuation, or the predicted label")
    attribute.add_argument("--max-new-tokens", type=int, default=10, help="tokens generated without --target")
    attribute.add_argument("--steps", type=int, help="integration steps (default 50) or Shapley samples (25)")
    attribute.add_argument("--normalize", action="store_true", help="scale each output token's row to its max")

    evaluate = commands.add_parser("eval", help="score the loaded model on --data (or the cell body)")
    evaluate.add_argument("--metric", required=True, choices=["perplexity", "accuracy", "f1", "bleu", "rouge"])
    evaluate.add_argument("--data", help=DATA_HELP)
    evaluate.add_argument("--text-field", help="the column holding the text when it is not 'text'")
    evaluate.add_argument("--sample-docs", type=int, help="score only the first N documents (rows)")
    evaluate.add_argument("--max-tokens", type=int, help="perplexity on the first N tokens only")
    evaluate.add_argument("--max-new-tokens", type=int, default=64, help="for bleu / rouge generations")
    evaluate.add_argument("--seq-len", type=int, default=512, help="window for perplexity")
    evaluate.add_argument("--runs-dir", help=RUNS_DIR_HELP)

    runs = commands.add_parser("runs", help="the run history: a table of the recorded runs, newest first")
    runs.add_argument("--runs-dir", help="the folder to list (default llm_runs/ here, or $LLM_MAGICS_RUNS_DIR)")
    runs.add_argument("--delete", metavar="ID", help="remove one run (its history, options and checkpoints)")
    runs.add_argument("--plot", choices=["loss", "eval_loss", "lr"], help="a static overlay of the runs' curves")
    runs.add_argument("ids", nargs="*", help="the runs to plot (default: all)")

    return parser


PARSER = build_parser()
_AT_ONCE = "interrupted at once: the model in memory keeps the last step it finished (see llm_magics.session.runs[-1])"
INTERRUPTED = {None: "interrupted; nothing was changed (the loaded model and any saved folder are as they were)",
               "train": _AT_ONCE, "finetune": _AT_ONCE}


# Sub-commands whose free text (prompt, message, text) may follow the options on the line itself.
FREE_TEXT = {"generate": "prompt", "playground": "prompt", "chat": "message", "attention": "text", "lens": "text",
             "attribute": "text"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    actions = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
    return actions.choices


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    """The options that take no value (--greedy, --widget, --help)."""
    return {o for action in parser._actions if action.nargs == 0 for o in action.option_strings}


def command_spec() -> dict:
    """Every sub-command's long options, which of them are flags, and the sub-commands that take free
    text on the line: the JupyterLab extension completes and highlights from this."""
    commands = _subparsers()
    return {"options": {name: sorted(o for action in sub._actions for o in action.option_strings
                                     if o.startswith("--")) for name, sub in commands.items()},
            "flags": {name: sorted(o for o in _flags(sub) if o.startswith("--")) for name, sub in commands.items()},
            "free_text": sorted(FREE_TEXT)}


def split_line(line: str) -> tuple[list[str], str]:
    """The argv for argparse and the free text, kept verbatim.

    Options are read shell-style up to the first token that is neither an option nor an option's value
    (or up to `--`); the rest of the line is the text as typed, apostrophes and quotes included.
    Sub-commands without free text are split shell-style as a whole.
    """
    command, _, rest = line.strip().partition(" ")
    parser = _subparsers().get(command)
    if parser is None or command not in FREE_TEXT:
        return shlex.split(line), ""
    flags, argv, wants_value = _flags(parser), [command], False
    while True:
        rest = rest.lstrip()
        if not rest or not (wants_value or rest.startswith("-")):
            break
        token, rest = _first_token(rest)
        if token == "--" and not wants_value:
            rest = rest.lstrip()
            break
        argv.append(token)
        wants_value = not wants_value and "=" not in token and token not in flags
    return argv, rest


def _first_token(text: str) -> tuple[str, str]:
    """The first shell-style token of `text` and the text after it."""
    stream = io.StringIO(text)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    token = lexer.get_token()
    assert token is not None  # the caller passes text that is not blank
    return token, text[stream.tell():]


@magics_class
class LLMMagics(Magics):
    def __init__(self, shell, session):
        super().__init__(shell)
        self.session = session

    @line_cell_magic
    def llm(self, line: str, cell: str | None = None):
        """Run `%llm --help` for the commands."""
        try:
            argv, text = split_line(line)
        except ValueError as error:
            print(f"llm: cannot parse the line: {error}", file=sys.stderr)
            return None
        if not argv:
            PARSER.print_help()
            return None
        try:
            args = PARSER.parse_args(argv)
            if args.command in FREE_TEXT:
                setattr(args, FREE_TEXT[args.command], text)
            result = getattr(self, f"_{args.command.replace('-', '_')}")(args, _as_typed(cell))
        except _HelpShown:
            return None
        except LLMError as error:
            print(f"llm {argv[0]}: {error}", file=sys.stderr)
            return None
        except KeyboardInterrupt:  # work with no steps to stop between (attention, lens, save), or a second
            # interrupt that did not wait for the step: one line, no traceback
            print(f"llm {argv[0]}: {INTERRUPTED.get(argv[0], INTERRUPTED[None])}", file=sys.stderr)
            return None
        if result is not None and self.shell is not None:
            self.shell.user_ns["_llm"] = result
        return None

    # Each handler turns parsed args into one Session call.
    def _load(self, args, cell):
        loaded = self.session.load(args.model, args.device, args.dtype, args.trust_remote_code, args.quantize)
        status = self.session.status()
        quantized = f", quantized {status['quantization']}" if args.quantize != "none" else ""
        print(f"Loaded {loaded.name}: {status['parameters'] / 1e6:.1f}M parameters, {loaded.kind}, "
              f"{status['device']}, {status['dtype']}{quantized}")
        return loaded

    def _status(self, args, cell):
        status = self.session.status()
        if status["model"] is None:
            print("No model loaded. `%llm load default` loads SmolLM2-135M-Instruct.")
        else:
            width = max(map(len, status))
            for key, value in status.items():
                print(f"{key:<{width}}  {value:,}" if isinstance(value, int) else f"{key:<{width}}  {value}")
        return status

    def _quantize(self, args, cell):
        done = self.session.quantize(args.mode)
        print(f"Quantized {self.session.loaded.name}: {done.describe()}")
        return done

    def _generate(self, args, cell):
        from .status import in_notebook
        from .views.streamed_text import StreamedText

        prompt = cell if cell is not None else args.prompt
        if args.widget:
            return self._playground(args, cell)
        if args.num_return_sequences > 1:  # no streaming: the samples come together
            result = self.session.generate(prompt, **_sampling(args), num_return_sequences=args.num_return_sequences,
                                           compile=_compile(args))
            for index, text in enumerate(result.texts, 1):
                if in_notebook():
                    display(_finished(prompt, text, f"sample {index}"), raw=True)
                else:
                    print(f"--- sample {index} ---\n{text}")
        else:
            stream = StreamedText(prompt)
            result = self.session.generate(prompt, on_text=stream, **_sampling(args), compile=_compile(args),
                                           num_return_sequences=args.num_return_sequences)  # 0 is refused there
            stream.finish(result.text, _stopped_note(result))
        if result.compile_warmup:
            print(f"[--compile: this first call compiled the decoding step ({result.seconds:.1f} s in all); "
                  "later calls of the same length reuse it]")
        if args.attention:
            display(self.session.attention(prompt + result.text))
            self.session.last = result
        return result

    def _playground(self, args, cell):
        from .generation import SamplingSettings
        from .views.playground import SamplingPanel

        prompt = cell if cell is not None else args.prompt
        settings = SamplingSettings(**_sampling(args), num_return_sequences=args.num_return_sequences).validated()
        if prompt.strip():
            self.session.require_model("generate")
        panel = SamplingPanel(self.session, prompt, settings)
        display(panel)
        if prompt.strip():
            panel.generate()
        return panel

    def _chat(self, args, cell):
        from .views.streamed_text import StreamedText

        message = (cell if cell is not None else args.message).strip()
        if args.reset:
            self.session.reset_chat(args.system)
            if not message:
                print("Chat history cleared.")
                return None
        stream = StreamedText(message, chat=True)
        result = self.session.chat(message, system=args.system, on_text=stream, **_sampling(args))
        stream.finish(result.text, _stopped_note(result))
        return result

    def _train(self, args, cell):
        view = self._training_view(args, "train")
        result = _discarding_on_error(view, lambda: self.session.train(
                                    text=cell, data=args.data, from_scratch=args.from_scratch,
                                    config=args.config, arch=args.arch, tokenizer=args.tokenizer,
                                    eval_data=args.eval_data, device=args.device, on_step=view,
                                    progress=args.progress and not view, trust_remote_code=args.trust_remote_code,
                                    processes=args.processes, accelerate_config=args.accelerate_config,
                                    text_field=args.text_field, max_tokens=args.max_tokens,
                                    sample_docs=args.sample_docs, runs_dir=args.runs_dir,
                                    **_train_options(args)))
        print(result.summary())
        return result

    def _finetune(self, args, cell):
        loaded = self.session.loaded
        if loaded is not None and loaded.name.startswith("from-scratch"):  # not the model one may expect
            print(f"finetune: tuning {loaded.name}, the model the last --from-scratch run trained")
        view = self._training_view(args, f"finetune ({args.task}{', LoRA' if args.lora else ''})")
        result = _discarding_on_error(view, lambda: self.session.finetune(
                                       data=args.data, text=cell, eval_data=args.eval_data, lora=args.lora,
                                       lora_r=args.lora_r, lora_alpha=args.lora_alpha, task=args.task,
                                       labels=args.labels, on_step=view, progress=args.progress and not view,
                                       trust_remote_code=args.trust_remote_code, epochs=args.epochs,
                                       processes=args.processes, accelerate_config=args.accelerate_config,
                                       text_field=args.text_field, sample_docs=args.sample_docs,
                                       runs_dir=args.runs_dir, **_train_options(args)))
        print(result.summary())
        return result

    def _training_view(self, args, title: str) -> list:
        from .runs import check_compare
        from .status import before_first_import, in_notebook

        check_compare(args.compare, args.runs_dir or self.session.runs_dir)  # an unknown id: one line, no run
        if not (args.widget if args.widget is not None else in_notebook()):
            return []
        before_first_import("llm_magics.views.training_chart", f"{title}: preparing the live chart…")  # plotly's import
        from .views.training_chart import TrainingView

        view = TrainingView(self.session, title, compare=args.compare)
        display(view)
        return [view]

    def _lr_find(self, args, cell):
        from .lr_finder import figure
        from .status import in_notebook

        options = dict(progress=args.progress, trust_remote_code=args.trust_remote_code, text_field=args.text_field,
                       sample_docs=args.sample_docs, runs_dir=args.runs_dir, start_lr=args.start_lr,
                       end_lr=args.end_lr, num_steps=args.num_steps, suggestion=args.suggestion,
                       **{k: v for k, v in _train_options(args).items() if k not in ("lr", "steps", "warmup")})
        if args.form == "finetune":
            result = self.session.lr_find(finetune=True, data=args.data, text=cell, lora=args.lora,
                                          lora_r=args.lora_r, lora_alpha=args.lora_alpha, task=args.task,
                                          labels=args.labels, epochs=args.epochs, **options)
        else:
            result = self.session.lr_find(text=cell, data=args.data, from_scratch=args.from_scratch,
                                          config=args.config, arch=args.arch, tokenizer=args.tokenizer,
                                          device=args.device, max_tokens=args.max_tokens, **options)
        bundle = figure(result)
        if in_notebook():
            display(bundle, raw=True)
        if result.suggested_lr:
            print(f"lr-find: {result.steps_done} steps, suggested lr {result.suggested_lr:.2e} ({args.suggestion}; "
                  + ", ".join(f"{name} {lr:.2e}" for name, (lr, _) in result.suggestions.items())
                  + "); `--lr suggested` on the next train/finetune uses it. The model is unchanged.")
        else:
            print(f"lr-find: {result.steps_done} steps, too few for a suggestion (try more --num-steps). "
                  "The model is unchanged.")
        return result

    def _save(self, args, cell):
        path = self.session.save(args.directory, adapter_only=args.adapter, overwrite=args.overwrite)
        print(f"Saved {'LoRA adapter' if args.adapter else 'model'} and tokenizer to {path}")
        return path

    def _attention(self, args, cell):
        from .views.attention import BERTVIZ_OFFLINE
        from .views.html import tokens_html

        text = cell if cell is not None else args.text
        _say_attention_wait(self.session, text)
        if args.backend == "bertviz":
            print(f"bertviz: {BERTVIZ_OFFLINE}")
        view = self.session.attention(text, layer=args.layer, head=args.head, view=args.view)
        display(view)
        captured = self.session.last
        if args.explain:
            explanation = self.session.explain(text)
            sinks = explanation["sinks"]
            display(HTML(tokens_html(explanation["tokens"], explanation["rollout"],
                                     f"attention rollout → {explanation['target']} (attention to sinks dropped)",
                                     sinks)))
            if "saliency" in explanation:
                display(HTML(tokens_html(explanation["tokens"], explanation["saliency"],
                                         f"gradient × input → {explanation['target']} "
                                         f"(predicted: {explanation['predicted']!r})")))
            self.session.last = captured
        return view

    def _lens(self, args, cell):
        text = cell if cell is not None else args.text
        view = self.session.attention(text, view="lens")
        display(view)
        return view

    def _attribute(self, args, cell):
        text = cell if cell is not None else args.text
        result = self.session.attribute(text, method=args.method, target=args.target,
                                        max_new_tokens=args.max_new_tokens, steps=args.steps)
        print(result.summary())
        display(result.view(normalize=args.normalize))
        return result

    def _patch(self, args, cell):
        lines = [line for line in (cell or "").splitlines() if line.strip()]
        if len(lines) != 2:
            raise LLMError(f"patching needs two prompts: the clean one on the first line of the cell, the corrupted "
                           f"one on the second (got {len(lines)} non-empty line{'s' if len(lines) != 1 else ''})")
        result = self.session.patch(lines[0], lines[1], answer=args.answer, wrong=args.wrong, site=args.site,
                                    layers=_layers(args.layers))
        print(result.summary())
        display(result.view())
        return result

    def _eval(self, args, cell):
        result = self.session.eval(args.metric, data=args.data, text=cell, max_new_tokens=args.max_new_tokens,
                                   seq_len=args.seq_len, text_field=args.text_field, sample_docs=args.sample_docs,
                                   max_tokens=args.max_tokens, runs_dir=args.runs_dir)
        print(result.summary())
        return result

    def _runs(self, args, cell):
        from .runs import runs_dir

        where = args.runs_dir or self.session.runs_dir
        if args.delete:
            info = self.session.delete_run(args.delete, where)
            print(f"Deleted run {info['id']} ({info.get('kind')}, {info.get('steps') or 0} steps, "
                  f"{info.get('status')}) from {runs_dir(where)}")
            return None
        if args.plot:
            from .runs import plot

            bundle = plot(args.plot, args.ids or None, where)
            display(bundle, raw=True)
            return bundle
        frame = self.session.run_table(where)
        if frame.empty:
            print(f"No runs recorded in {runs_dir(where)} yet.")
            return None
        display(frame)
        return frame


def _discarding_on_error(view: list, run):
    """Run the training; when it fails on its input before a first step, remove the live chart."""
    try:
        return run()
    except LLMError:
        for shown in view:
            if not shown.steps:
                shown.discard()
        raise


def _as_typed(cell: str | None) -> str | None:
    """The cell body as the user typed it: IPython ends every body with one newline of its own (it adds
    it when the cell does not end with one), and only that one is dropped."""
    return cell[:-1] if cell is not None and cell.endswith("\n") else cell


def _layers(text: str | None) -> list[int] | None:
    """'0,5,20-29' -> [0, 5, 20, ..., 29]."""
    if not text:
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            layers.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise LLMError(f"--layers {text!r}: write layer numbers and ranges, e.g. 0,5,20-29") from None
    return layers



def _finished(prompt: str, text: str, note: str) -> dict:
    from .views.streamed_text import StreamedText

    shown = StreamedText(prompt, notebook=True)
    shown.text = text
    return shown.bundle(note)


def _stopped_note(result) -> str:
    if result.interrupted:
        return f"[stopped after {result.new_tokens} tokens; partial text kept in _llm]"
    return f"[{result.new_tokens} tokens, {result.tokens_per_second:.1f} tok/s, stopped at {result.stop_reason}]"


def _say_attention_wait(session, text: str) -> None:
    """Capturing every layer's maps over long texts takes seconds: say what is being done first."""
    from .status import say

    tokenizer = session.tokenizer
    if tokenizer is None or not text:
        return
    tokens = len(tokenizer(text)["input_ids"])
    if tokens >= 256 or "llm_magics.views.attention" not in sys.modules:
        say(f"attention: capturing every layer and head over {tokens} tokens…")


def _sampling(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                do_sample=args.do_sample)


def _compile(args) -> bool | str | None:
    """--compile [--compile-backend NAME]; None leaves the session's default (generation)."""
    if args.compile_backend:
        return args.compile_backend
    return args.compile


def _train_options(args) -> dict:
    options = dict(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                   warmup=args.warmup, seq_len=args.seq_len, eval_every=args.eval_every,
                   checkpoint_every=args.checkpoint_every, output_dir=args.output_dir, resume=args.resume,
                   seed=args.seed, compile=_compile(args) or False,
                   gradient_checkpointing=args.gradient_checkpointing, early_stopping=args.early_stopping,
                   min_delta=args.min_delta, restore_best=args.restore_best, track=args.track)
    if args.lr is not None:
        options["lr"] = args.lr
    return options
