"""The package installs the way Jupyter extensions do: one version, and a wheel built from a clean checkout
that carries the prebuilt JupyterLab extension into a fresh environment."""

import itertools
import json
import re
import subprocess
import sys
import tarfile
import zipfile

import nbformat
import pytest
from nbclient import NotebookClient

from support import ROOT


def test_the_version_is_written_once_and_the_extension_agrees():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^version\s*=", pyproject, re.M) is None, "the version lives in llm_magics/__init__.py"
    assert 'dynamic = ["version"]' in pyproject
    python_version = re.search(
        r'^__version__ = "([^"]+)"', (ROOT / "llm_magics" / "__init__.py").read_text(), re.M
    ).group(1)
    assert json.loads((ROOT / "labextension" / "package.json").read_text())["version"] == python_version


def _run(*command, **kwargs):
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_wheel_from_a_clean_checkout_installs_the_extension(tmp_path, monkeypatch):
    # A clean copy holds only committed files: no node_modules, no prebuilt extension, no build outputs.
    source = tmp_path / "source"
    source.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    (tmp_path / "source.tar").write_bytes(archive)
    with tarfile.open(tmp_path / "source.tar") as tar:
        tar.extractall(source, filter="data")
    assert not (source / "llm_magics" / "labextension").exists()

    # sdist, then the wheel built from that sdist (what pip does with an sdist from PyPI).
    _run(sys.executable, "-m", "build", "--outdir", tmp_path / "dist", source)
    wheel = next((tmp_path / "dist").glob("llm_magics-*.whl"))
    sdist = next((tmp_path / "dist").glob("llm_magics-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        assert any(n.endswith("llm_magics/labextension/static/style.js") for n in tar.getnames())
    shared = "llm_magics-{}.data/data/share/jupyter/labextensions/llm-magics/".format(wheel.name.split("-")[1])
    names = zipfile.ZipFile(wheel).namelist()
    assert {shared + "package.json", shared + "install.json"} <= set(names)
    assert any(n.startswith(shared + "static/remoteEntry.") for n in names)

    # A fresh environment that reuses this one's torch & co. but gets llm-magics only from the wheel.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)

    listing = _run(python, "-m", "jupyterlab.labextensions", "list")
    section = re.sub(r"\x1b\[[0-9;]*m", "", listing).split(str(venv / "share" / "jupyter" / "labextensions") + "\n", 1)
    assert len(section) == 2, listing
    venv_entries = itertools.takewhile(lambda line: line[:1].isspace(), section[1].splitlines())
    ours = [line for line in venv_entries if "llm-magics" in line]
    # "(python, llm-magics)" comes from the shipped install.json.
    assert ours and re.search(r"llm-magics v\S+ enabled\s+OK \(python, llm-magics\)", ours[0]), listing

    # A kernel started from that environment loads the extension and runs a magic.
    kernels = tmp_path / "jupyter" / "kernels" / "llm-magics-venv"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "env": {"PYTHONPATH": ""},  # no source tree on the path: the kernel must find the installed wheel
                "display_name": "llm-magics wheel",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext llm_magics\nimport llm_magics\nprint(llm_magics.__file__)"),
            nbformat.v4.new_code_cell("%llm --help"),
        ]
    )
    # Started outside the checkout, whose llm_magics/ would otherwise shadow the installed one.
    NotebookClient(
        notebook, kernel_name="llm-magics-venv", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[0].outputs)
    assert str(venv) in printed, printed
    assert "train" in "".join(o.get("text", "") for o in notebook.cells[1].outputs)
