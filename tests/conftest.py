"""Shared fixtures: a real IPython shell with the extension loaded, and the real packaged weights."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(autouse=True)
def private_runs_dir(tmp_path_factory):
    """Every test records its runs in a folder of its own, never in the repository's llm_runs/."""
    previous = os.environ.get("LLM_MAGICS_RUNS_DIR")
    os.environ["LLM_MAGICS_RUNS_DIR"] = str(tmp_path_factory.mktemp("llm_runs"))
    yield Path(os.environ["LLM_MAGICS_RUNS_DIR"])
    if previous is None:
        os.environ.pop("LLM_MAGICS_RUNS_DIR", None)
    else:
        os.environ["LLM_MAGICS_RUNS_DIR"] = previous


@pytest.fixture(scope="session")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "llm_magics")
    return ip


@pytest.fixture(scope="session")
def default_model_dir():
    """The de-quantized SmolLM2 (converted once, then read from the cache)."""
    from llm_magics.loading import gguf_to_safetensors, packaged_path

    return gguf_to_safetensors(packaged_path("default"))


@pytest.fixture
def cache(tmp_path, default_model_dir):
    """A private cache dir, so no test sees another's tokens; the converted default model is shared
    (a second conversion would take 20 s and print its own progress)."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "gguf").symlink_to(default_model_dir.parent, target_is_directory=True)
    previous = os.environ.get("LLM_MAGICS_CACHE")
    os.environ["LLM_MAGICS_CACHE"] = str(root)
    yield root / "data"
    # Not monkeypatch: datasets' map(num_proc=...) swaps os.environ for a copy, and monkeypatch's undo
    # would then restore the old object while the live one kept our temporary cache.
    if previous is None:
        os.environ.pop("LLM_MAGICS_CACHE", None)
    else:
        os.environ["LLM_MAGICS_CACHE"] = previous


@pytest.fixture
def session(default_model_dir):
    """A fresh Session with the default model loaded (0.3 s from the cache)."""
    from llm_magics import Session

    s = Session()
    s.load("default")
    return s


@pytest.fixture
def magic_session(shell, default_model_dir):
    """The kernel session the magics use, with a freshly loaded default model."""
    import llm_magics

    llm_magics.session.load("default")
    llm_magics.session.reset_chat()
    return llm_magics.session


def one_error_line(capsys) -> str:
    """The single line a user mistake prints on stderr (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def run(shell, line, cell=None):
    """Run a magic the way a notebook cell does; return the shell's `_llm`."""
    shell.user_ns.pop("_llm", None)
    source = f"%%llm {line}\n{cell}" if cell is not None else f"%llm {line}"
    result = shell.run_cell(source)
    assert result.error_in_exec is None, result.error_in_exec
    return shell.user_ns.get("_llm")


def interrupt_after(seconds: float, session=None) -> threading.Thread:
    """Deliver a real SIGINT to this process, as Jupyter's interrupt button does, `seconds` after
    the session's run has started (and only while it is still running)."""
    import llm_magics

    session = session or llm_magics.session

    def fire():
        deadline = time.monotonic() + 120
        while session.stop_flag is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(seconds)
        if session.stop_flag is not None:
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def browser():
    from browser_support import CHROMIUM
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()
