"""Apply each deliberate break of breaks.json to a copy of llm_magics/ and run the tests named for it against
the copy (PYTHONPATH at the copy, the repository's tests): a break is caught when its tests fail. First the
named tests run on an unbroken copy and must pass, so that "caught" means the break was caught.

    python tests/mutations/run.py [--only WORDS] [--list]

Prints one line per break and exits 1 if any survived or could not run its tests (2 if the unbroken copy fails
or a break no longer applies). Two breaks at a time: about 5 minutes on a quiet 2-core machine, 10 under load."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
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
    # one process: pyproject's "-n 2" with -x makes xdist end as "interrupted" (status 2), not "failed" (1)
    command = [sys.executable, "-m", "pytest", *(str(ROOT / t) for t in tests), "-q", "-x", "-n", "0", "--no-header"]
    command += [*config, "-W", "ignore::pytest_benchmark.logger.PytestBenchmarkWarning"]
    done = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)
    return done.returncode, "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])


def try_break(temp: Path, index: int, broken: dict) -> tuple[str, float, str]:
    """('caught' | 'SURVIVED' | 'ERROR', seconds, the output's last lines): caught means the tests ran and
    failed (pytest's status 1), not that they could not be collected or run."""
    folder = copy_package(temp / f"break-{index}")
    apply(folder, broken)
    began = time.monotonic()
    status, tail = run_tests(folder, broken["tests"])
    shutil.rmtree(folder)
    return {0: "SURVIVED", 1: "caught"}.get(status, "ERROR"), time.monotonic() - began, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="only the breaks whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the breaks and their tests")
    parser.add_argument("--jobs", type=int, default=2, help="breaks tried at once (default 2)")
    parser.add_argument("--show", action="store_true", help="print the last lines of each break's test output")
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
        print(f"unbroken: {len(every_test)} tests pass ({time.monotonic() - start:.0f} s)", flush=True)
        for broken in breaks:  # a stale break stops the run before any test does
            apply(copy_package(Path(temp) / "check"), broken)
            shutil.rmtree(Path(temp) / "check")
        verdicts = {}
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(try_break, Path(temp), i, broken): broken["name"] for i, broken in enumerate(breaks)}
            for future in as_completed(futures):
                verdict, seconds, tail = future.result()
                verdicts[futures[future]] = verdict
                print(f"{verdict:8} {futures[future]} ({seconds:.0f} s)", flush=True)
                if args.show or verdict != "caught":
                    print("    " + tail.replace("\n", "\n    "), flush=True)
    caught = sum(verdict == "caught" for verdict in verdicts.values())
    print(f"{caught} of {len(breaks)} breaks caught in {time.monotonic() - start:.0f} s")
    return 0 if caught == len(breaks) else 1


if __name__ == "__main__":
    sys.exit(main())
