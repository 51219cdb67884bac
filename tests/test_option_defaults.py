"""Every option is declared once (llm_magics/options.py): the magics, the API, the playground and the docs' options
table agree with the declaration, option by option."""

import inspect
import re
import shlex
from dataclasses import asdict, fields

import pytest

from llm_magics import Session, options
from llm_magics.generation import SamplingSettings
from llm_magics.magics import PARSER
from llm_magics.training import TrainOptions
from llm_magics.views.playground import SamplingPanel
from support import ROOT, run

METHODS = {
    "load": "load",
    "quantize": "quantize",
    "generate": "generate",
    "playground": None,
    "chat": "chat",
    "train": "train",
    "finetune": "finetune",
    "lr-find": "lr_find",
    "save": "save",
    "attention": "attention",
    "lens": None,
    "patch": "patch",
    "attribute": "attribute",
    "eval": "eval",
    "status": None,
    "runs": None,
}
REQUIRED = {"save": "DIR", "quantize": "int8", "eval": "--metric perplexity"}  # what the line needs to parse
TRAIN_FIELDS = {f.name for f in fields(TrainOptions)}
SAMPLING_FIELDS = {f.name for f in fields(SamplingSettings)}
# Each kind of run: the line, and the same run through the API.
KINDS = [
    ("train", "train", {}),
    ("train --from-scratch", "train", {"from_scratch": True}),
    ("finetune", "finetune", {}),
    ("finetune --lora", "finetune", {"lora": True}),
]


def _parsed(line: str):
    return PARSER.parse_args(shlex.split(line))


def _api_home(command: str, option: options.Option) -> str:
    """The Session method an option of an lr-find line reaches (lr-find passes it on to train or finetune)."""
    if command != "lr-find" or option in options.LR_FIND:
        return command
    return "finetune" if option in options.FINETUNE_MODEL else "train"


def test_every_command_has_its_declaration_and_nothing_else():
    assert set(METHODS) == set(options.COMMANDS) == set(PARSER._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", sorted(options.COMMANDS))
def test_the_magics_default_is_the_apis_for_every_option(command):
    args = _parsed(f"{command} {REQUIRED.get(command, '')}")
    checked = 0
    for option in options.options(command):
        if option.required or option.positional == "1":
            continue  # no default: the line must give it
        if option.positional is None:  # argparse's default is the declared one
            assert getattr(args, option.name) == option.default, option.flag
        name, home = option.api_name, _api_home(command, option)
        if name is None or METHODS[home] is None and home != "playground":
            continue  # a view's option (--widget, --compare): the magic's alone
        if METHODS[home]:
            parameters = inspect.signature(getattr(Session, METHODS[home])).parameters
        else:  # the playground's own options (--chat, --system) are the panel's
            parameters = inspect.signature(SamplingPanel).parameters if home == "playground" else {}
        if name in parameters:
            api = parameters[name].default
        elif home in ("generate", "chat", "playground") and name in SAMPLING_FIELDS:
            api = SamplingSettings.__dataclass_fields__[name].default
        elif home in ("train", "finetune") and name in TRAIN_FIELDS:
            continue  # below: TrainOptions as a run of each kind resolves them
        else:
            pytest.fail(f"{command} {option.flag}: no Session method of {home} takes {name!r}")
        assert api is not inspect.Parameter.empty, f"{command} {option.flag}: the API requires it"
        assert getattr(args, option.name) == api, (
            f"{command} {option.flag}: magic {getattr(args, option.name)!r}, API {api!r}"
        )
        checked += 1
    assert checked or METHODS[command] is None or command in ("save", "quantize")


@pytest.mark.parametrize("line, command, api_kwargs", KINDS)
def test_training_options_resolve_alike_from_the_magic_and_the_api(line, command, api_kwargs):
    """lr and steps go by kind of run: the magic leaves them unset and the run resolves them as the API does;
    every other setting of the RunSpec a line builds is the one the API's keywords build."""
    from_magic = options.RunSpec.build(command, options.session_kwargs(_parsed(line), command))
    from_api = options.RunSpec.build(command, api_kwargs)
    assert asdict(from_magic) == asdict(from_api)
    assert from_api.train.lr == options.LR_BY_KIND[line]
    assert from_api.train.steps == (100 if command == "train" else None)  # finetune: --epochs over the data


@pytest.mark.slow
def test_a_real_run_records_the_same_options_from_the_magic_and_the_api(shell, tmp_path):
    """A from-scratch train run, stopped after its first step, records the options it ran with. Only --config is
    given (a very small model, both ways alike); every other option is its default."""
    import json

    import llm_magics

    config = tmp_path / "small.json"
    config.write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "intermediate_size": 64,
                "max_position_embeddings": 128,
            }
        )
    )
    session = llm_magics.session
    stop = lambda row, result: session.stop()  # noqa: E731 (one step is enough to record the options)
    session.step_listeners.append(stop)
    corpus = "the cat sat on the mat. " * 200
    try:
        run(shell, f"train --from-scratch --config {config} --no-widget --no-progress", corpus)
        from_magic = session.runs[-1].options
        session.train(text=corpus, from_scratch=True, config=str(config), progress=False)
        from_api = session.runs[-1].options
    finally:
        session.step_listeners.remove(stop)
    paths = ("output_dir", "tracker_dir")  # each run's own folder
    assert {k: v for k, v in from_magic.items() if k not in paths} == {
        k: v for k, v in from_api.items() if k not in paths
    }
    assert from_api["lr"] == options.LR_BY_KIND["train --from-scratch"] and from_api["steps"] == 100


def test_playground_sliders_have_the_declared_ranges():
    from llm_magics.views.playground import SamplingPanel

    panel = SamplingPanel(Session(), "")
    sliders = {
        "temperature": panel.temperature,
        "top_k": panel.top_k,
        "top_p": panel.top_p,
        "repetition_penalty": panel.repetition_penalty,
        "max_new_tokens": panel.max_new_tokens,
        "num_return_sequences": panel.num_samples,
    }
    declared = {o.name: o for o in options.options("playground") if o.range}
    assert set(sliders) == set(declared)
    for name, slider in sliders.items():
        low, high, step = declared[name].range
        assert (slider.min, slider.max, slider.step) == pytest.approx((low, high, step)), name
        assert slider.value == declared[name].default, name


def test_docs_table_is_the_declaration():
    page = (ROOT / "docs" / "commands.md").read_text()
    table = re.search(r"<!-- generated: options -->\n(.*?)\n<!-- end generated -->", page, re.S)
    assert table, "docs/commands.md lacks the options table markers"
    assert table.group(1).strip() == options.readme_table(), "docs/commands.md differs: run python3 docs/generate.py"


def test_completion_spec_shows_values_and_help():
    spec = options.completion_spec()
    assert spec["train"]["--arch"] == {"help": "default llama", "values": ["llama", "gpt2"]}
    assert spec["generate"]["--greedy"]["help"].startswith("sample (default for generate)")
    assert "values" in spec["load"]["--dtype"] and "bfloat16" in spec["load"]["--dtype"]["values"]
    for command, opts in spec.items():  # every option argparse knows is in the completion, and no other
        parser = PARSER._subparsers._group_actions[0].choices[command]
        known = {o for action in parser._actions for o in action.option_strings if o.startswith("--")}
        assert set(opts) == known - {"--help"}, command
