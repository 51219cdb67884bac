"""Every bench script still imports what it measures: a renamed module (llm_magics.widgets became views/)
once broke bench/train_throughput.py unseen until the next bench run. `--help` runs every import, nothing else."""

import subprocess
import sys

import pytest

from support import ROOT

HELPERS = ("common.py", "plain_captum.py")  # imported by the scripts, never run on their own
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name not in HELPERS)


def test_every_script_is_listed_by_run_all():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    run_all = module_from_spec(spec)
    spec.loader.exec_module(run_all)
    listed = {script for script, _ in run_all.SCRIPTS}
    # int8_kernels.py is the kernel study behind docs/performance.md's decoding notes, run by hand (minutes per
    # kernel); gpu_suite.py runs the test suite on a GPU machine, not a benchmark of run_all's
    assert listed == set(SCRIPTS) - {"run_all.py", "int8_kernels.py", "gpu_suite.py"}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_imports_and_shows_its_options(script):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
