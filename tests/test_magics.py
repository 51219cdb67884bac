"""The magics through a real IPython InteractiveShell, on the real packaged weights."""

import html
import json

import pytest
import torch

import llm_magics
from support import DATA, interrupt_after, run


def test_help_lists_every_command_and_option(shell, capsys):
    run(shell, "--help")
    out = capsys.readouterr().out
    for command in ("load", "status", "generate", "chat", "train", "finetune", "save"):
        assert command in out
    run(shell, "generate --help", "Once upon a time")
    out = capsys.readouterr().out
    for option in (
        "--max-new-tokens",
        "--temperature",
        "--top-k",
        "--top-p",
        "--repetition-penalty",
        "--num-return-sequences",
        "--seed",
        "--do-sample",
        "--greedy",
    ):
        assert option in out


def _sections(help_text: str) -> dict[str, list[str]]:
    """`--help`'s headings and the flags listed under each."""
    sections: dict[str, list[str]] = {}
    heading = None
    for line in help_text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading = sections.setdefault(line[:-1], [])
        elif heading is not None and line.startswith("  -"):
            heading.append(line.split()[0])
    return sections


def test_help_lists_shared_options_under_their_headings(shell, capsys):
    run(shell, "train --help")
    train = _sections(capsys.readouterr().out)
    assert {
        "data",
        "optimization",
        "evaluation, checkpoints and records",
        "early stopping",
        "the run",
        "engine",
        "the model trained",
    } <= set(train), train
    assert (
        "--lr" in train["optimization"]
        and "--eval-data" in train["data"]
        and "--early-stopping" in train["early stopping"]
        and "--from-scratch" in train["the model trained"]
    )
    run(shell, "chat --help", "hi")
    chat = _sections(capsys.readouterr().out)
    assert "--temperature" in chat["sampling"] and "--system" in chat["options"], chat
    # every flag of every command is listed once, under exactly one heading
    for command, (_, opts) in llm_magics.options.COMMANDS.items():
        run(shell, f"{command} --help", "x")
        listed = [flag for flags in _sections(capsys.readouterr().out).values() for flag in flags]
        expected = {flag for o in opts if o.positional is None for flag in (o.flags or [o.flag])} | {"-h,"}
        assert sorted(listed) == sorted(expected), command


def test_user_errors_are_one_line_without_traceback(shell, capsys):
    llm_magics.session.loaded = None
    run(shell, "generate --max-new-tokens 5", "hello")
    err = capsys.readouterr().err
    assert "no model loaded" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    run(shell, "generate --temprature 3", "hello")
    err = capsys.readouterr().err
    assert "unrecognized arguments: --temprature" in err and "Traceback" not in err
    run(shell, "frobnicate")
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


@pytest.mark.slow
def test_load_status_generate(shell, capsys, magic_session):
    loaded = run(shell, "load default")
    assert loaded is llm_magics.session.loaded
    status = run(shell, "status")
    out = capsys.readouterr().out
    assert "parameters" in out and status["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    first = run(shell, "generate --seed 7 --max-new-tokens 12", "Once upon a time")
    printed = capsys.readouterr().out
    assert first.text.strip() in printed
    second = run(shell, "generate --seed 7 --max-new-tokens 12", "Once upon a time")
    assert first.text == second.text and llm_magics.last is second
    three = run(shell, "generate --num-return-sequences 3 --max-new-tokens 8 --seed 1", "Hello")
    assert len(three.texts) == 3 and "--- sample 3 ---" in capsys.readouterr().out


@pytest.mark.slow
def test_chat_magic_keeps_history_and_resets(shell, capsys, magic_session):
    reply = run(shell, "chat --greedy --max-new-tokens 30", "What is the capital of France?")
    assert "Paris" in reply.text and "Paris" in capsys.readouterr().out
    run(shell, "chat --greedy --max-new-tokens 20", "Thanks! Say that again.")
    assert len(magic_session.history) == 4
    run(shell, "chat --reset")
    assert magic_session.history == [] and "cleared" in capsys.readouterr().out
    run(shell, "chat --system 'Answer in French.' --greedy --max-new-tokens 10", "Hello")
    assert magic_session.system == "Answer in French."


@pytest.mark.slow
def test_playground_and_generate_magics_take_chat_and_system(shell, capsys, magic_session):
    from support import one_error_line

    question, system = "What is the capital of France?", "You are a pirate."
    tokenizer = magic_session.tokenizer

    def templated(messages):  # the oracle: the tokenizer's own chat template
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]

    user = {"role": "user", "content": question}
    pirate = templated([{"role": "system", "content": system}, user])
    panel = run(shell, f"playground --chat --system '{system}' --greedy --max-new-tokens 6", question)
    assert panel.chat.value is True and panel.system.value == system  # the boxes as the flags set them
    assert panel.runs[0].prompt_ids == pirate and panel.runs[0].chat and panel.runs[0].system == system
    assert "system: 'You are a pirate.'" in html.unescape(panel.columns[0].value)
    # --chat alone: the template without a system turn; neither: the raw prompt
    plain_chat = run(shell, "playground --chat --greedy --max-new-tokens 6", question)
    assert plain_chat.system.value == "" and plain_chat.runs[0].prompt_ids == templated([user]) != pirate
    raw = run(shell, "playground --greedy --max-new-tokens 6", question)
    assert raw.chat.value is False and raw.runs[0].prompt_ids == tokenizer(question)["input_ids"]
    # generate: --system implies --chat; --widget opens the playground with both
    generated = run(shell, f"generate --system '{system}' --greedy --max-new-tokens 6", question)
    assert generated.prompt_ids == pirate and generated.text == panel.runs[0].text
    widget = run(shell, f"generate --widget --system '{system}' --greedy --max-new-tokens 6", question)
    assert widget.chat.value is True and widget.runs[0].prompt_ids == pirate
    capsys.readouterr()
    template = tokenizer.chat_template
    tokenizer.chat_template = None  # a model without a chat template: one line, for both magics
    try:
        run(shell, "playground --chat", question)
        assert "has no chat template" in one_error_line(capsys)
        run(shell, "generate --chat --max-new-tokens 2", question)
        assert "has no chat template" in one_error_line(capsys)
    finally:
        tokenizer.chat_template = template


@pytest.mark.slow
def test_train_from_scratch_magic_loss_falls(shell, capsys):
    corpus = (DATA / "tiny_corpus.txt").read_text() * 5
    result = run(
        shell, "train --from-scratch --config tiny --steps 80 --batch-size 8 --seq-len 64 --no-progress", corpus
    )
    assert result.final_loss < 0.7 * result.initial_loss
    assert "80/80 steps" in capsys.readouterr().out
    assert llm_magics.session.loaded.name.startswith("from-scratch tiny")
    sample = run(shell, "generate --greedy --max-new-tokens 20", "The cat")
    assert sample.new_tokens > 0


def test_data_errors_name_the_problem(shell, capsys, magic_session, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": \n')
    run(shell, f"finetune --data {bad}")
    assert "line 2: invalid JSON" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    run(shell, f"finetune --data {empty}")
    assert "is empty" in capsys.readouterr().err
    run(shell, f"finetune --data {tmp_path / 'missing.jsonl'}")
    assert "data file not found" in capsys.readouterr().err
    run(shell, f"finetune --data {DATA / 'instructions.jsonl'} --seq-len 100000")
    assert "larger than the model's context (8192" in capsys.readouterr().err
    run(shell, "train --steps 5", "   ")
    assert "no data" in capsys.readouterr().err


@pytest.mark.slow
def test_interrupting_generation_keeps_partial_text(shell, capsys, magic_session):
    timer = interrupt_after(0.5)
    # Greedy counting never ends on its own, so only the interrupt can stop it early.
    result = run(shell, "generate --greedy --max-new-tokens 2000", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")
    timer.join()
    assert result.interrupted and 0 < result.new_tokens < 2000
    assert "stopped after" in capsys.readouterr().out
    again = run(shell, "generate --greedy --max-new-tokens 5", "The capital of France is")
    assert again.new_tokens == 5 and not again.interrupted


@pytest.mark.slow
def test_interrupting_training_keeps_model_and_checkpoint(shell, capsys, tmp_path):
    corpus = (DATA / "tiny_corpus.txt").read_text()
    timer = interrupt_after(2)
    result = run(
        shell,
        f"train --from-scratch --steps 100000 --checkpoint-every 20 --output-dir {tmp_path} "
        "--no-progress --seq-len 32 --batch-size 4",
        corpus,
    )
    timer.join()
    assert result.interrupted and 0 < result.steps_done < 100000
    assert result.checkpoint.endswith(f"checkpoint-{result.steps_done}")
    assert "Stopped early" in capsys.readouterr().out
    state = json.loads((tmp_path / f"checkpoint-{result.steps_done}" / "config.json").read_text())
    assert state["model_type"] == "llama"
    sample = run(shell, "generate --greedy --max-new-tokens 5", "The cat")
    assert 1 <= sample.new_tokens <= 5  # a briefly trained model may stop at EOS
