"""Run every benchmark and write bench/RESULTS.md (each script prints its own markdown table).

    python bench/run_all.py [--out bench/RESULTS.md]

The sizes below keep the whole run near 10 minutes on a 2-core CPU (each script's own defaults are larger;
run a script alone for its full-size figures).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    ("generate_overhead.py", "--tokens 32 --repeats 3"),
    ("train_throughput.py", "--steps 30"),
    ("attention_capture.py", "--lengths 128 512"),
    ("attention_layer_switch.py", "--lengths 256"),
    ("long_context.py", "--tokens 1024"),
    ("browser_long_context.py", "--tokens 4096"),
    ("scaling_cpu.py", "--steps 20 --rounds 2"),
    ("data_scale.py", "--sizes 50 --old-up-to 50"),
    ("gpu_decode.py", ""),  # a line saying it skipped, without a CUDA GPU
    ("patching.py", "--layers 10"),
    ("attribution.py", "--prompt-tokens 30 --new-tokens 3 --steps 16"),
    ("trackers.py", "--steps 60 --repeats 3"),
    ("decode_cpu.py", "--tokens 32 --repeats 2"),
    ("int8_agreement.py", "--tokens 24"),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SCRIPT",
        help="run only these scripts, and replace just their sections of an existing --out",
    )
    args = parser.parse_args()
    out = args.out
    if args.only:
        return rerun(args.only, Path(out))
    sections = [
        f"# Benchmark results\n\nWritten by `python bench/run_all.py` on {time.strftime('%Y-%m-%d')}. "
        "Every ratio is measured side by side in one process against the plain-library baseline.\n"
    ]
    started = time.perf_counter()
    for script, arguments in SCRIPTS:
        print(f"== {script} {arguments}", flush=True)
        sections.append(section(script, arguments))
    # A CI or developer machine has no GPU: the GPU figures come from the last run on a lent GPU machine,
    # saved verbatim by whoever ran `python bench/gpu_decode.py` there.
    for saved in sorted((HERE / "gpu_results").glob("*.md")):
        sections.append(
            f"## gpu_decode.py on a GPU ({saved.stem}, saved in bench/gpu_results/)\n\n{saved.read_text().strip()}\n"
        )
    Path(out).write_text("\n".join(sections))
    print(f"all benchmarks: {time.perf_counter() - started:.0f} s", flush=True)


def section(script: str, arguments: str) -> str:
    """Run one script; its section of RESULTS.md: the command, then what it printed (or how it failed)."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / script), *arguments.split()], capture_output=True, text=True)
    table = done.stdout.strip() or f"failed:\n```\n{done.stderr[-2000:]}\n```"
    print(table, f"\n({time.perf_counter() - began:.0f} s)", flush=True)
    return f"## {script}\n\n`python bench/{script} {arguments}`\n\n{table}\n"


def rerun(scripts: list[str], out: Path) -> None:
    """Replace the sections of `scripts` in `out` by a new run of each (a script new to the list gets its section
    before the next listed one); the others stay as they were. The file is written after each script."""
    known = dict(SCRIPTS)
    order = [script for script, _ in SCRIPTS]
    unknown = [s for s in scripts if s not in known]
    if unknown:
        raise SystemExit(f"not in run_all's list: {', '.join(unknown)}")
    text = out.read_text()
    for script in scripts:
        fresh = section(script, known[script])
        start = text.find(f"## {script}\n")
        if start < 0:
            later = [text.find(f"## {s}\n") for s in order[order.index(script) + 1 :]]
            start = end = min([at for at in later if at >= 0], default=len(text))
            fresh += "\n"
        else:
            end = text.find("\n## ", start + 1)
            end = len(text) if end < 0 else end + 1
        text = text[:start] + fresh + text[end:]
        note = f"Sections re-run on {time.strftime('%Y-%m-%d')} with `--only`: {', '.join(scripts)}.\n"
        head, _, rest = text.partition("\n\n## ")
        head = "\n".join(line for line in head.splitlines() if not line.startswith("Sections re-run on"))
        out.write_text(f"{head}\n{note}\n## {rest}")


if __name__ == "__main__":
    main()
