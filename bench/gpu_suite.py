"""The GPU check in one call (issue 28 item 5): the test suite with LLM_MAGICS_TEST_DEVICE=cuda, then the GPU
benchmark (bench/gpu_decode.py). Writes bench/gpu_results/<gpu>-suite.md with its JSON twin (counts, the
failures by name, the device, torch and the time each part took) and <gpu>-decode.md (the benchmark's tables).

    python bench/gpu_suite.py                                # everything: the whole suite, then the benchmark
    python bench/gpu_suite.py --parts suite -- -m "not slow" # one part; after --, arguments for pytest
    python bench/gpu_suite.py --parts suite --tests "tests/test_bf16_exactness.py tests/test_attention.py"
    python bench/gpu_suite.py --parts decode --decode-args "--parts decode,attention"

Each part has its own --timeout (seconds); what a part reached is written even when it runs out. Without a
CUDA GPU it says so and stops (--allow-cpu runs it anyway, to check this script).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "gpu_results"


def device() -> dict:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        memory_gb = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        name, memory_gb = "CPU (no CUDA GPU)", None
    return {"name": name, "memory_gb": memory_gb, "torch": torch.__version__, "cuda": torch.version.cuda}


def run(command: list[str], env: dict, timeout: float, log: Path) -> tuple[int | str, float]:
    """Run to completion or timeout, the output going to `log`; (return code or "timeout", seconds)."""
    start = time.monotonic()
    with log.open("w") as out:
        try:
            code: int | str = subprocess.run(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return code, round(time.monotonic() - start, 1)


def suite(tests: str, pytest_args: list[str], timeout: float, env: dict, out: Path) -> dict:
    junit, log = out.with_suffix(".junit.xml"), out.with_suffix(".log")
    command = [sys.executable, "-m", "pytest", *tests.split(), "-p", "no:cacheprovider", "-q", f"--junitxml={junit}"]
    code, seconds = run(command + pytest_args, env, timeout, log)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    if junit.exists():  # pytest writes it at the end: a timeout leaves only the log
        for case in ET.parse(junit).getroot().iter("testcase"):
            counts["tests"] += 1
            for kind, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
                if case.find(kind) is not None:
                    counts[key] += 1
                    if kind != "skipped":
                        failed.append(f"{case.get('classname')}::{case.get('name')}")
    else:  # the log's last summary line, e.g. "3 failed, 120 passed in 300.00s"
        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        counts["summary"] = tail[0] if tail else ""
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"exit": code, "seconds": seconds, "pytest_args": [tests, *pytest_args], **counts, "failed": failed}


def decode(decode_args: str, timeout: float, env: dict, log: Path) -> dict:
    code, seconds = run([sys.executable, str(HERE / "gpu_decode.py"), *decode_args.split()], env, timeout, log)
    return {"exit": code, "seconds": seconds, "args": decode_args, "tables": log.name}


def markdown(report: dict) -> str:
    d = report["device"]
    lines = [
        f"# GPU suite on {d['name']}",
        "",
        f"{report['date']} UTC; torch {d['torch']}, CUDA {d['cuda']}, {d['memory_gb']} GiB; "
        f"LLM_MAGICS_TEST_DEVICE={report['test_device']}.",
    ]
    if "suite" in report:
        s = report["suite"]
        lines += [
            "",
            f"## Test suite (`pytest {' '.join(s['pytest_args'])}`): exit {s['exit']}, {s['seconds']} s",
            "",
            "| tests | passed | failed | errors | skipped |",
            "|---|---|---|---|---|",
            f"| {s['tests']} | {s['passed']} | {s['failures']} | {s['errors']} | {s['skipped']} |",
        ]
        if s.get("summary"):
            lines += ["", f"No JUnit report (the run timed out); the log's last line: `{s['summary']}`"]
        lines += [""] + [f"- failed: `{name}`" for name in s["failed"]]
    if "decode" in report:
        b = report["decode"]
        lines += [
            "",
            f"## bench/gpu_decode.py {b['args']}: exit {b['exit']}, {b['seconds']} s, tables in {b['tables']}",
        ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="suite,decode", help="comma-separated: suite, decode")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds each part may take")
    parser.add_argument("--decode-args", default="", help="arguments for bench/gpu_decode.py")
    parser.add_argument("--tests", default="tests", help="what pytest runs (default: the whole suite)")
    parser.add_argument("--out", default=str(RESULTS), help="the folder the results go to")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a CUDA GPU (to check the script)")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("skipped: no CUDA GPU on this machine (the suite's cuda run needs one)")
        return
    test_device = "cuda" if torch.cuda.is_available() else "cpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLM_MAGICS_TEST_DEVICE": test_device}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = device()
    slug = re.sub(r"[^a-z0-9]+", "-", info["name"].lower()).strip("-")[:40]
    report: dict = {"device": info, "test_device": test_device, "date": time.strftime("%Y-%m-%d %H:%M")}
    parts = set(args.parts.split(","))
    if "suite" in parts:
        report["suite"] = suite(args.tests, args.pytest_args, args.timeout, env, out / f"{slug}-suite")
    if "decode" in parts:
        report["decode"] = decode(args.decode_args, args.timeout, env, out / f"{slug}-decode.md")
    (out / f"{slug}-suite.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{slug}-suite.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
