"""Shared fixtures: a real IPython shell with the extension loaded, and the real packaged weights.

Tiers are marked on the tests themselves: `@pytest.mark.slow` on a test (or `pytestmark` on a module) puts it
in the slow tier; tests/browser/ and tests/notebooks/ mark each module browser or notebook, and slow.
`pytest -m "not slow"` is the everyday run; `pytest tests` (CI) runs everything."""

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    """Under pytest-xdist (`-n 2` in pyproject.toml), the workers share the cores: torch would otherwise start as
    many threads as there are cores in each worker (and in each kernel or process a test starts)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """pytest-xdist's groups (`--dist loadgroup`): a file's tests run on one worker (its module fixtures are built
    once), and so do all the browser tests (one Jupyter server and one Chromium at a time: two browser tests at
    once starve a 2-core machine until a click times out). A test marked `cpu_heavy` (it starts processes of
    its own) joins the browser tests' worker, so that it never runs beside one."""
    for item in items:
        alone = item.get_closest_marker("browser") or item.get_closest_marker("cpu_heavy")
        group = "browser" if alone else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))


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


@pytest.fixture
def tiny_config(tmp_path):
    """A --config .json file of support.TINY_CONFIG."""
    import json

    from support import TINY_CONFIG

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return str(path)


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


def _load_on() -> dict:
    """Where the model fixtures load: the suite's device and dtype (support.DEVICE, support.DTYPE)."""
    from support import DEVICE, DTYPE

    return {"device": str(DEVICE), "dtype": str(DTYPE).removeprefix("torch.")}


LOAD_ON = _load_on()


@pytest.fixture
def session(default_model_dir):
    """A fresh Session with the default model loaded (0.3 s from the cache) on the suite's device."""
    from llm_magics import Session

    s = Session()
    s.load("default", **LOAD_ON)
    return s


@pytest.fixture
def magic_session(shell, default_model_dir):
    """The kernel session the magics use, with a freshly loaded default model."""
    import llm_magics

    llm_magics.session.load("default", **LOAD_ON)
    llm_magics.session.reset_chat()
    return llm_magics.session
