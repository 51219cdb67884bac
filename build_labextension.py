"""The npm step of the Python build (hatch-jupyter-builder's `build-function`, see pyproject.toml).

`npm ci` installs exactly the locked dependencies of labextension/, then its build script compiles the
TypeScript and writes the prebuilt extension into llm_magics/labextension. The build's own Python is
passed on (it has JupyterLab, whose core packages the extension build links against)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

LABEXTENSION = Path(__file__).resolve().parent / "labextension"


def build(target_name: str, version: str, **_) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("building llm-magics needs Node.js and npm, for its JupyterLab extension")
    env = {**os.environ, "PYTHON": sys.executable}
    installed = LABEXTENSION / "node_modules" / ".package-lock.json"  # npm writes it on every install
    lock = LABEXTENSION / "package-lock.json"
    # Re-installs only when the lock file changed (editable re-installs would otherwise redo it each time).
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run([npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=LABEXTENSION, env=env, check=True)
    subprocess.run([npm, "run", "build", "--silent"], cwd=LABEXTENSION, env=env, check=True)
