"""Line magics keep their free text exactly as typed: options are read shell-style, the text is not."""

import pytest

import llm_magics
from llm_magics.magics import split_line
from support import run

TEXT = "It's a dog's life, \"isn't\" it?  #1"


def test_options_are_split_shell_style_and_the_text_is_kept_verbatim():
    assert split_line(f"attention --layer 3 --explain {TEXT}") == (["attention", "--layer", "3", "--explain"], TEXT)
    assert split_line("chat --system 'Answer in French.' --greedy Hi, it's me") == (
        ["chat", "--system", "Answer in French.", "--greedy"],
        "Hi, it's me",
    )
    # A value may start with '-'; `--` ends the options; --opt=value is one token.
    assert split_line("generate --temperature -1 --seed=3 -- --not-an-option") == (
        ["generate", "--temperature", "-1", "--seed=3"],
        "--not-an-option",
    )
    assert split_line("generate The cat --seed 3") == (["generate"], "The cat --seed 3")  # text ends the options
    assert split_line("load default --device cpu") == (["load", "default", "--device", "cpu"], "")


def test_attention_line_keeps_apostrophes(shell, capsys, magic_session):
    view = run(shell, f"attention --layer 1 {TEXT}")
    assert capsys.readouterr().err == ""
    expected = magic_session.tokenizer(TEXT)["input_ids"]
    assert len(view.tokens) == len(expected)
    assert "".join(view.tokens).count("'") == TEXT.count("'")


@pytest.mark.slow
def test_generate_and_chat_lines_keep_the_text(shell, capsys, magic_session):
    result = run(shell, f"generate --greedy --max-new-tokens 2 {TEXT}")
    assert result.prompt == TEXT
    reply = run(shell, "chat --greedy --max-new-tokens 4 --system 'Be brief.' What's 2+2? Don't explain.")
    assert reply.prompt == "What's 2+2? Don't explain." and magic_session.system == "Be brief."
    assert magic_session.history[-2] == {"role": "user", "content": "What's 2+2? Don't explain."}
    assert "Traceback" not in capsys.readouterr().err
    assert llm_magics.last is reply
