"""The kernel's completions on a %llm line: after an option that takes values only those values (or file
names for a path option), not IPython's Python names and magics."""

import os

from llm_magics.completer import value_position


def _complete(shell, line):
    _, matches = shell.complete(None, line, len(line))
    return matches


def _completions(shell, line):
    """What ipykernel replies with (IPython's newer API, jedi included)."""
    from IPython.core.completer import provisionalcompleter

    with provisionalcompleter():
        return [c.text for c in shell.Completer.completions(line, len(line))]


def test_value_position_reads_the_option_before_the_cursor():
    assert value_position("%llm train --config ") == ("train", "--config", "")
    assert value_position("%%llm train --steps 3 --compare la") == ("train", "--compare", "la")
    assert value_position("%llm train --from-scratch ") is None  # a flag: an option comes next
    assert value_position("%llm train --config tiny ") is None
    assert value_position("%llm train") is None and value_position("x = 1") is None


def test_after_a_value_option_only_its_values(shell):
    matches = _complete(shell, "%llm train --compare ")
    assert sorted(matches) == ["all", "auto", "last", "none"]
    assert _complete(shell, "%%llm train --tokenizer de") == ["default"]
    assert sorted(_completions(shell, "%llm train --compare ")) == ["all", "auto", "last", "none"]
    # IPython suppresses the other matchers only for a matcher with completions: free values (--lr) are not ours


def test_a_path_option_completes_file_names(shell, tmp_path):
    (tmp_path / "corpus.txt").write_text("x")
    (tmp_path / "runs").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        matches = _complete(shell, "%llm train --data ./")
        assert {"./corpus.txt", "./runs/"} <= set(matches), matches
        assert not any(m in ("import", "%llm", "def") for m in matches)
        config = _complete(shell, "%llm train --config ")
        assert {"tiny", "small", "gpt2-124m", "corpus.txt"} <= set(config), config
        assert "import" not in config
    finally:
        os.chdir(cwd)
    # other lines complete as before
    assert "%timeit" in _complete(shell, "%timei")
