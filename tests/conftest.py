"""Shared fixtures: a real IPython shell with the extension loaded, and the real packaged weights."""
import os

import pytest

# Test tiers, assigned here rather than in each file. `pytest -m "not slow"` is the everyday run;
# `pytest tests` (CI) runs everything.
BY_FILE = {
    "test_browser.py": ("browser", "slow"),
    "test_browser_attention.py": ("browser", "slow"),
    "test_notebooks.py": ("notebook", "slow"),
    "test_kernel_feedback.py": ("notebook", "slow"),
    "test_packaging.py": ("notebook",),  # its slow test starts a kernel from the built wheel
    "test_scaling.py": ("slow",),  # several processes, torch.compile
}
# Tests of other files that take more than a few seconds on a 2-core machine (measured with --durations).
SLOW = {
    "test_packaging.py::test_wheel_from_a_clean_checkout_installs_the_extension",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        for marker in BY_FILE.get(name, ()):
            item.add_marker(marker)
        if f"{name}::{item.originalname}" in SLOW or f"{name}::{item.name}" in SLOW:  # all params, or one
            item.add_marker("slow")


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
