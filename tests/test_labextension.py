"""The JupyterLab extension's own (jest) tests, and its command list kept in step with the magics."""
import json
import shutil
import subprocess

import pytest

from support import ROOT
from llm_magics.magics import command_spec

LABEXTENSION = ROOT / "labextension"


def test_completion_list_matches_the_magics():
    shipped = json.loads((LABEXTENSION / "src" / "commands.json").read_text())
    assert shipped == command_spec(), "run: python -m llm_magics commands > labextension/src/commands.json"


def test_jest_suite_passes():
    import os

    if not (LABEXTENSION / "node_modules").is_dir() or not shutil.which("npm"):
        why = "labextension dependencies not installed (bash .ci/setup installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {why}: the extension's jest suite must run in CI")  # never a silent skip
        pytest.skip(why)
    done = subprocess.run(["npm", "test", "--silent"], cwd=LABEXTENSION, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed" not in done.stderr.split("Tests:")[-1].split("\n")[0]


def test_prebuilt_extension_is_in_the_package():
    built = ROOT / "llm_magics" / "labextension"
    package = json.loads((built / "package.json").read_text())
    assert package["name"] == "llm-magics"
    assert any((built / "static").glob("remoteEntry.*.js"))


def test_kernel_side_snapshot_and_throttled_progress():
    from llm_magics import Session
    from llm_magics.frontend import FrontendBridge, snapshot

    from support import DATA

    s = Session()
    bridge = FrontendBridge(s, min_interval=3600)
    s.step_listeners.append(bridge.on_step)
    s.train(text=(DATA / "tiny_corpus.txt").read_text() * 3, from_scratch=True, steps=12, seq_len=32, progress=False)
    progress = [m for m in bridge.sent if m["active"]]
    assert [m["active"]["step"] for m in progress] == [1, 12]  # the first step, then throttled to the last
    message = snapshot(s)
    json.dumps(message)  # plain JSON for the comm
    assert message["status"]["model"].startswith("from-scratch") and message["runs"][0]["steps"] == 12
    assert message["active"] is None and message["status"]["process_memory_mb"] > 0


def test_wheel_ships_the_prebuilt_extension(tmp_path):
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("llm_magics-*.whl"))).namelist()
    shared = [n for n in names if "/share/jupyter/labextensions/llm-magics/" in n]
    assert any(n.endswith("/package.json") for n in shared)
    assert any("/static/remoteEntry." in n for n in shared)
    assert "llm_magics/views/attention.js" in names  # the attention widget's JS, no CDN
