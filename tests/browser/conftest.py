"""The browser tests' shared fixtures: one headless Chromium, one JupyterLab and one Notebook 7 server for the
whole session, a folder of its own under the server's root for each test, and a screenshot of every open page
when a test fails."""

import os
import re
import shutil

import pytest

from browser_support import CHROMIUM, serve, shut_down_kernels
from support import ARTIFACTS


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def settings_dir(tmp_path_factory):
    """The servers' JupyterLab settings (the theme a test picks): emptied after each test."""
    return tmp_path_factory.mktemp("jupyterlab-settings")


def _server(app, tmp_path_factory, settings_dir):
    root = tmp_path_factory.mktemp(app)
    env = dict(os.environ)
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings_dir)
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path_factory.mktemp(f"{app}-workspaces"))
    # Unset: each kernel records its runs in llm_runs/ of its notebook's folder, the test's own.
    env.pop("LLM_MAGICS_RUNS_DIR", None)
    yield from serve(app, root, env)


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory, settings_dir):
    yield from _server("lab", tmp_path_factory, settings_dir)


@pytest.fixture(scope="session")
def notebook7_server(tmp_path_factory, settings_dir):
    yield from _server("notebook", tmp_path_factory, settings_dir)


def _own_folder(server, request, settings_dir):
    """The server as this test sees it: its root is a fresh folder named after the test. After the test, its
    kernels are shut down and the settings it changed are forgotten."""
    view = server.within(re.sub(r"[^\w.-]+", "-", request.node.name)[:80])
    yield view
    shut_down_kernels(server)
    shutil.rmtree(settings_dir, ignore_errors=True)
    settings_dir.mkdir(exist_ok=True)


@pytest.fixture
def lab(lab_server, request, settings_dir):
    yield from _own_folder(lab_server, request, settings_dir)


@pytest.fixture
def notebook7(notebook7_server, request, settings_dir):
    yield from _own_folder(notebook7_server, request, settings_dir)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test leaves a screenshot of each page it had open in test-artifacts/; the pages are then closed
    (the browser outlives the test)."""
    report = yield
    browser = item.funcargs.get("browser") if hasattr(item, "funcargs") else None
    if report.when == "call" and browser is not None:
        pages = [page for context in browser.contexts for page in context.pages if not page.is_closed()]
        if report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            for index, page in enumerate(pages):
                try:
                    page.screenshot(path=str(ARTIFACTS / f"{item.name}-failure-{index}.png"))
                except Exception as error:  # a crashed page: the report still says why the test failed
                    report.sections.append(("screenshot", f"page {index}: no screenshot ({error})"))
        for page in pages:
            page.close()
    return report
