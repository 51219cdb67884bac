"""The deliberate breaks of tests/mutations/breaks.json: each one applied to a copy of the package turns its
named tests red (tests/mutations/run.py; about 5-10 minutes on 2 cores)."""

import subprocess
import sys

import pytest

from support import ROOT


@pytest.mark.slow
@pytest.mark.cpu_heavy
def test_every_deliberate_break_is_caught():
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "mutations" / "run.py")], capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stdout + done.stderr
