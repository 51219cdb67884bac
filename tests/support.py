"""Helpers the tests share (imported as `from support import ...`; fixtures stay in conftest.py)."""
import os
import signal
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
ARTIFACTS = ROOT / "test-artifacts"


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
