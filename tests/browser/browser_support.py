"""Shared by the browser tests: a real Jupyter server on loopback and a real headless Chromium."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import nbformat
import pytest

from support import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")
TOKEN = "llm-magics-test-token"

# A live training chart past its 5th step. Waited for with `polling=250`: the default polls every animation
# frame, and body.innerText (layout forced on each read) at 60 Hz starves a busy page.
LIVE_CHART_PAST_STEP_5 = (
    "() => /step ([6-9]|\\d\\d+)\\//.test(document.querySelector('.llm-training-view')?.textContent || '')"
)


def notebook_says(text: str) -> str:
    """A page condition: the current notebook's text includes `text` (for wait_for_function, polling=250)."""
    return f"() => (document.querySelector('.jp-Notebook')?.textContent || '').includes({text!r})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(str):
    """A server's base URL; `root` is the folder a test writes its notebooks in, `folder` that folder's path
    under the server's root ("" for the root itself)."""

    root = None
    folder = ""

    def within(self, folder: str) -> "Server":
        view = Server(self)
        view.root, view.folder = self.root / folder, folder
        view.root.mkdir(parents=True, exist_ok=True)
        return view


def serve(app: str, root, env=None):
    """Start `jupyter app` on loopback serving `root` (env: the server's and its kernels' environment), and
    yield its base URL until the generator is closed."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    # one log per pytest-xdist worker: each worker starts its own servers
    name = f"jupyter-{app}{'-' + os.environ['PYTEST_XDIST_WORKER'] if 'PYTEST_XDIST_WORKER' in os.environ else ''}.log"
    log = open(ARTIFACTS / name, "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            app,
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.disable_check_xsrf=True",
            "--allow-root",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
        ]
        # a folder holding an llm-magics build to test instead of the installed one (searched first)
        + (
            [f"--LabApp.extra_labextensions_path={os.environ['LLM_MAGICS_TEST_LABEXTENSIONS']}"]
            if os.environ.get("LLM_MAGICS_TEST_LABEXTENSIONS")
            else []
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        # The server and its kernels (which inherit it) yield the CPU to the browser, as a user's own browser
        # has it: on 2 cores, a kernel training flat out beside another test starves the page under test
        # until its clicks time out.
        preexec_fn=lambda: os.nice(10),
    )
    base = Server(f"http://127.0.0.1:{port}")
    base.root = root
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"jupyter {app} did not start: see test-artifacts/{name}")
    yield base
    server.terminate()
    server.wait(timeout=30)
    log.close()


def shut_down_kernels(base):
    """Shut down every kernel of this server (a test's kernels must not outlive it: each holds a model)."""
    for kind in ("sessions", "kernels"):
        with urllib.request.urlopen(f"{base}/api/{kind}?token={TOKEN}", timeout=30) as reply:
            for entry in json.load(reply):
                request = urllib.request.Request(f"{base}/api/{kind}/{entry['id']}?token={TOKEN}", method="DELETE")
                try:
                    urllib.request.urlopen(request, timeout=60).close()
                except urllib.error.HTTPError as error:  # gone meanwhile (a session's kernel goes with it)
                    if error.code != 404:
                        raise


# Any URL that does not go to this machine: matched by Playwright itself, so loopback requests (all of
# JupyterLab's) never wait for a Python callback.
LEAVES_THE_MACHINE = re.compile(r"^(?!https?://(127\.0\.0\.1|localhost|\[::1\])[:/])(?!data:|blob:|about:).*")


def write_notebook(root, name, cells):
    """A Python 3 notebook of these code cells at root/name."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, root / name)


def offline(page) -> list[str]:
    """Abort every request that leaves this machine (CDNs, fonts, telemetry): the page must work offline
    whatever this host's network. Returns the list the aborted URLs are added to."""
    blocked = []

    def abort(route):
        blocked.append(route.request.url)
        route.abort()

    page.route(LEAVES_THE_MACHINE, abort)
    return blocked


def open_page(browser, lab, name, path="lab/tree"):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.blocked = offline(page)
    errors = []
    page.on(
        "console", lambda m: errors.append(f"{m.text} (at {m.location.get('url', '?')})") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: errors.append(f"{e} (at {(e.stack or '').splitlines()[1:2]})"))
    where = f"{lab.folder}/{name}" if getattr(lab, "folder", "") else name
    page.goto(f"{lab}/{path}/{where}?reset&token={TOKEN}")  # reset: no notebooks restored from before
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_function(
        "window.jupyterapp && window.jupyterapp.shell.currentWidget && "
        "window.jupyterapp.shell.currentWidget.sessionContext && "
        "window.jupyterapp.shell.currentWidget.sessionContext.session && "
        "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel && "
        "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=90_000,
    )
    return page, errors


# Console errors a page may log without anything of ours being wrong: (message, where it is raised, why allowed).
# Every other console error or uncaught page error fails the test.
ALLOWED_CONSOLE_ERRORS = [
    (
        "Cannot read properties of undefined (reading 'schema')",
        "/static/notebook/notebook_core.",
        "Notebook 7.6's own core bundle throws it while opening a notebook; raised in its code, not in our extension",
    ),
]


def ours(errors):
    """The console errors that fail a test: all of them except the allow-list above."""
    return [e for e in errors if not any(text in e and where in e for text, where, _ in ALLOWED_CONSOLE_ERRORS)]
