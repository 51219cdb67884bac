"""`%llm` / `%%llm`: parse the arguments, call the Session, print one line on user errors."""

from __future__ import annotations

import argparse
import io
import shlex
import sys

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import HTML, display

from . import options
from .base.errors import LLMError
from .base.progress import discard_open_bars


class _HelpShown(Exception):
    """--help was asked: the help text is printed and nothing runs."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting the kernel."""

    def error(self, message):
        raise LLMError(
            f"{message} (see `%llm {self.prog.split()[-1]} --help`)"
            if " " in self.prog
            else f"{message} (see `%llm --help`)"
        )

    def exit(self, status=0, message=None):
        if message:
            print(message, file=sys.stderr)
        raise _HelpShown


def build_parser() -> argparse.ArgumentParser:
    """One sub-parser per command, its arguments from the declaration in llm_magics/options.py."""
    parser = _Parser(
        prog="llm",
        description="Load, generate with, chat with, train and fine-tune a language model that lives in this kernel.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help, _) in options.COMMANDS.items():
        options.add_arguments(commands.add_parser(name, help=help), name)
    return parser


PARSER = build_parser()
_AT_ONCE = "interrupted at once: the model in memory keeps the last step it finished (see llm_magics.session.runs[-1])"
INTERRUPTED = {
    None: "interrupted; nothing was changed (the loaded model and any saved folder are as they were)",
    "train": _AT_ONCE,
    "finetune": _AT_ONCE,
}


# Sub-commands whose free text (prompt, message, text) may follow the options on the line itself.
FREE_TEXT = {
    "generate": "prompt",
    "playground": "prompt",
    "chat": "message",
    "attention": "text",
    "lens": "text",
    "attribute": "text",
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    actions = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
    return actions.choices


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    """The options that take no value (--greedy, --widget, --help)."""
    return {o for action in parser._actions if action.nargs == 0 for o in action.option_strings}


def command_spec() -> dict:
    """Every sub-command's long options, which of them are flags, the sub-commands that take free text on
    the line, and each command's and option's help and values: the JupyterLab extension completes and
    highlights from this."""
    commands = _subparsers()
    return {
        "options": {
            name: sorted(o for action in sub._actions for o in action.option_strings if o.startswith("--"))
            for name, sub in commands.items()
        },
        "flags": {name: sorted(o for o in _flags(sub) if o.startswith("--")) for name, sub in commands.items()},
        "free_text": sorted(FREE_TEXT),
        "commands": {name: help for name, (help, _) in options.COMMANDS.items()},
        "details": options.completion_spec(),
    }


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
    return token, text[stream.tell() :]


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
            discard_open_bars()
            print(f"llm {argv[0]}: {error}", file=sys.stderr)
            return None
        except KeyboardInterrupt:  # work with no steps to stop between (attention, lens, save), or a second
            # interrupt that did not wait for the step: one line, no traceback
            discard_open_bars()
            print(f"llm {argv[0]}: {INTERRUPTED.get(argv[0], INTERRUPTED[None])}", file=sys.stderr)
            return None
        except BaseException:
            discard_open_bars()
            raise
        if result is not None and self.shell is not None:
            self.shell.user_ns["_llm"] = result
        return None

    # Each handler turns parsed args into one Session call.
    def _load(self, args, cell):
        loaded = self.session.load(args.model, args.device, args.dtype, args.trust_remote_code, args.quantize)
        status = self.session.status()
        quantized = f", quantized {status['quantization']}" if args.quantize != "none" else ""
        print(
            f"Loaded {loaded.name}: {status['parameters'] / 1e6:.1f}M parameters, {loaded.kind}, "
            f"{status['device']}, {status['dtype']}{quantized}"
        )
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
        from .base.status import in_notebook
        from .views.streamed_text import StreamedText

        prompt = cell if cell is not None else args.prompt
        if args.widget:
            return self._playground(args, cell)
        settings = {**options.session_kwargs(args, "generate"), "chat": _wants_chat(args)}
        if args.num_return_sequences > 1:  # no streaming: the samples come together
            result = self.session.generate(prompt, **settings)
            for index, text in enumerate(result.texts, 1):
                if in_notebook():
                    display(_finished(prompt, text, f"sample {index}"), raw=True)
                else:
                    print(f"--- sample {index} ---\n{text}")
        else:
            stream = StreamedText(prompt)
            result = self.session.generate(prompt, on_text=stream, **settings)  # 0 samples is refused there
            stream.finish(result.text, _stopped_note(result))
        if result.compile_warmup:
            print(
                f"[--compile: this first call compiled the decoding step ({result.seconds:.1f} s in all); "
                "later calls of the same length reuse it]"
            )
        if args.attention:
            display(self.session.attention(prompt + result.text))
            self.session.last = result
        return result

    def _playground(self, args, cell):
        from .generation import SamplingSettings, require_chat_template
        from .views.playground import SamplingPanel

        prompt = cell if cell is not None else args.prompt
        sampling = [o for o in options.options("playground") if o not in options.CHAT_TEMPLATE]
        settings = SamplingSettings(**options.session_kwargs(args, "playground", sampling)).validated()
        chat = _wants_chat(args)
        if prompt.strip() or chat:
            loaded = self.session.require_model("generate")
            if chat:
                require_chat_template(loaded)
        panel = SamplingPanel(self.session, prompt, settings, chat=chat, system=args.system)
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
        result = self.session.chat(message, on_text=stream, **options.session_kwargs(args, "chat"))
        stream.finish(result.text, _stopped_note(result))
        return result

    def _train(self, args, cell):
        view = self._training_view(args, "train")
        spec = lambda: self._run_spec(args, "train", cell, view)  # noqa: E731
        result = _discarding_on_error(view, lambda: self.session.run(spec(), on_step=view))
        print(result.summary())
        return result

    def _finetune(self, args, cell):
        loaded = self.session.loaded
        if loaded is not None and loaded.name.startswith("from-scratch"):  # not the model one may expect
            print(f"finetune: tuning {loaded.name}, the model the last --from-scratch run trained")
        view = self._training_view(args, f"finetune ({args.task}{', LoRA' if args.lora else ''})")
        spec = lambda: self._run_spec(args, "finetune", cell, view)  # noqa: E731
        result = _discarding_on_error(view, lambda: self.session.run(spec(), on_step=view))
        print(result.summary())
        return result

    @staticmethod
    def _run_spec(args, command: str, cell: str | None, view: list) -> options.RunSpec:
        """The run the line asks for, built as `Session.train/finetune` build it (the live chart replaces the
        progress bar)."""
        given = {**options.session_kwargs(args, command), "text": cell, "progress": args.progress and not view}
        return options.RunSpec.build(command, given)

    def _training_view(self, args, title: str) -> list:
        from .base.status import in_notebook, while_first_importing
        from .runs import check_compare

        check_compare(args.compare, args.runs_dir or self.session.runs_dir)  # an unknown id: one line, no run
        if not (args.widget if args.widget is not None else in_notebook()):
            return []
        with while_first_importing("llm_magics.views.training_chart", f"{title}: preparing the live chart…"):
            from .views.training_chart import TrainingView  # plotly's import takes seconds the first time

        view = TrainingView(self.session, title, compare=args.compare)
        display(view)
        return [view]

    def _lr_find(self, args, cell):
        from .base.status import in_notebook
        from .lr_finder import figure

        # the sweep's own options, those of the training it sweeps, and that form's model options
        form = options.FINETUNE_MODEL if args.form == "finetune" else options.TRAIN_MODEL
        swept = options.LR_FIND + [o for o in options.TRAINING if o.name not in options.SWEPT] + form
        result = self.session.lr_find(
            finetune=args.form == "finetune", text=cell, **options.session_kwargs(args, "lr-find", swept)
        )
        bundle = figure(result)
        if in_notebook():
            display(bundle, raw=True)
        if result.suggested_lr:
            print(
                f"lr-find: {result.steps_done} steps, suggested lr {result.suggested_lr:.2e} ({args.suggestion}; "
                + ", ".join(f"{name} {lr:.2e}" for name, (lr, _) in result.suggestions.items())
                + "); `--lr suggested` on the next train/finetune uses it. The model is unchanged."
            )
        else:
            print(
                f"lr-find: {result.steps_done} steps, too few for a suggestion (try more --num-steps). "
                "The model is unchanged."
            )
        return result

    def _save(self, args, cell):
        path = self.session.save(args.directory, adapter_only=args.adapter, overwrite=args.overwrite)
        print(f"Saved {'LoRA adapter' if args.adapter else 'model'} and tokenizer to {path}")
        return path

    def _attention(self, args, cell):
        from .base.html import explain_html
        from .views.attention import BERTVIZ_OFFLINE

        text = cell if cell is not None else args.text
        _say_attention_wait(self.session, text)
        if args.backend == "bertviz":
            print(f"bertviz: {BERTVIZ_OFFLINE}")
        view = self.session.attention(text, layer=args.layer, head=args.head, view=args.view)
        display(view)
        captured = self.session.last
        if args.explain:
            display(HTML(explain_html(self.session.explain(text))))
            self.session.last = captured
        return view

    def _lens(self, args, cell):
        text = cell if cell is not None else args.text
        view = self.session.attention(text, view="lens", target=args.target)
        display(view)
        return view

    def _attribute(self, args, cell):
        text = cell if cell is not None else args.text
        result = self.session.attribute(
            text, method=args.method, target=args.target, max_new_tokens=args.max_new_tokens, steps=args.steps
        )
        print(result.summary())
        display(result.view(normalize=args.normalize))
        return result

    def _patch(self, args, cell):
        lines = [line for line in (cell or "").splitlines() if line.strip()]
        if len(lines) != 2:
            raise LLMError(
                f"patching needs two prompts: the clean one on the first line of the cell, the corrupted "
                f"one on the second (got {len(lines)} non-empty line{'s' if len(lines) != 1 else ''})"
            )
        result = self.session.patch(
            lines[0], lines[1], answer=args.answer, wrong=args.wrong, site=args.site, layers=args.layers
        )
        print(result.summary())
        display(result.view())
        return result

    def _eval(self, args, cell):
        result = self.session.eval(text=cell, **options.session_kwargs(args, "eval"))
        print(result.summary())
        return result

    def _runs(self, args, cell):
        from .runs import runs_dir

        where = args.runs_dir or self.session.runs_dir
        if args.delete:
            info = self.session.delete_run(args.delete, where)
            print(
                f"Deleted run {info['id']} ({info.get('kind')}, {info.get('steps') or 0} steps, "
                f"{info.get('status')}) from {runs_dir(where)}"
            )
            return None
        if args.plot:
            from .runs import plot

            bundle = plot(args.plot, args.ids or None, where)
            display(bundle, raw=True)
            return bundle
        frame = self.session.run_table(where)
        for note in frame.attrs.get("unreadable", []):
            print(note)
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


def _finished(prompt: str, text: str, note: str) -> dict:
    from .views.streamed_text import StreamedText

    shown = StreamedText(prompt, notebook=True)
    shown.text = text
    return shown.bundle(note)


def _wants_chat(args) -> bool:
    """--chat, or a --system prompt (which only a chat template can take)."""
    return bool(args.chat or args.system is not None)


def _stopped_note(result) -> str:
    if result.interrupted:
        return f"[stopped after {result.new_tokens} tokens; partial text kept in _llm]"
    return f"[{result.new_tokens} tokens, {result.tokens_per_second:.1f} tok/s, stopped at {result.stop_reason}]"


def _say_attention_wait(session, text: str) -> None:
    """Capturing every layer's maps over long texts takes seconds: say what is being done first."""
    from .base.status import say

    tokenizer = session.tokenizer
    if tokenizer is None or not text:
        return
    tokens = len(tokenizer(text)["input_ids"])
    if tokens >= 256 or "llm_magics.views.attention" not in sys.modules:
        say(f"attention: capturing every layer and head over {tokens} tokens…")
