"""Apply each deliberate break of breaks.json to a copy of llm_magics/ and run the tests named for it against
the copy (PYTHONPATH at the copy, the repository's tests): a break is caught when its tests fail. First the
named tests run on an unbroken copy and must pass, so that "caught" means the break was caught.

    python tests/mutations/run.py [--only WORDS] [--list]

Prints one line per break and exits 1 if any survived (2 if the unbroken copy fails or a break no longer
applies). About 5 minutes on a 2-core machine."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BREAKS = Path(__file__).with_name("breaks.json")


def load_breaks() -> list[dict]:
    return json.loads(BREAKS.read_text())["breaks"]


def copy_package(folder: Path) -> Path:
    shutil.copytree(ROOT / "llm_magics", folder / "llm_magics", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def apply(folder: Path, broken: dict) -> None:
    path = folder / broken["file"]
    text = path.read_text()
    count = text.count(broken["old"])
    if count != 1:
        raise SystemExit(f"break {broken['name']!r}: its old text occurs {count} times in {broken['file']} (not once)")
    path.write_text(text.replace(broken["old"], broken["new"]))


def run_tests(folder: Path, tests: list[str]) -> tuple[int, str]:
    """pytest on the named tests with the copy first on the path (PYTHONPATH, and the working directory that
    `python -m` puts first); (exit status, last lines of the output)."""
    env = {**os.environ, "PYTHONPATH": str(folder)}
    check = "import llm_magics, sys; sys.exit(0 if llm_magics.__file__.startswith(sys.argv[1]) else 3)"
    if subprocess.run([sys.executable, "-c", check, str(folder)], env=env, cwd=folder).returncode:
        raise SystemExit(f"the copy in {folder} is not the llm_magics that Python imports")
    config = ["--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider"]
    command = [sys.executable, "-m", "pytest", *(str(ROOT / t) for t in tests), "-q", "-x", "--no-header", *config]
    done = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)
    return done.returncode, "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="only the breaks whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the breaks and their tests")
    args = parser.parse_args()
    breaks = [b for b in load_breaks() if not args.only or args.only in b["name"]]
    if args.list:
        for broken in breaks:
            print(f"{broken['name']}: {broken['file']} -> {' '.join(broken['tests'])}")
        return 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llm-mutations-") as temp:
        unbroken = copy_package(Path(temp) / "unbroken")
        every_test = sorted({test for broken in breaks for test in broken["tests"]})
        status, tail = run_tests(unbroken, every_test)
        if status != 0:
            print(f"the named tests fail without any break:\n{tail}")
            return 2
        print(f"unbroken: {len(every_test)} tests pass ({time.monotonic() - start:.0f} s)")
        survived = []
        for index, broken in enumerate(breaks):
            folder = copy_package(Path(temp) / f"break-{index}")
            apply(folder, broken)
            began = time.monotonic()
            status, tail = run_tests(folder, broken["tests"])
            verdict = "caught" if status != 0 else "SURVIVED"
            print(f"{verdict:8} {broken['name']} ({time.monotonic() - began:.0f} s)", flush=True)
            if status == 0:
                survived.append(broken["name"])
            shutil.rmtree(folder)
    caught = len(breaks) - len(survived)
    print(f"{caught} of {len(breaks)} breaks caught in {time.monotonic() - start:.0f} s")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
