"""Run every benchmark and write bench/RESULTS.md (each script prints its own markdown table).

    python bench/run_all.py
"""
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = ["generate_overhead.py", "train_throughput.py", "attention_capture.py", "attention_layer_switch.py",
           "scaling_cpu.py", "data_scale.py", "gpu_decode.py", "patching.py", "attribution.py", "trackers.py"]


def main():
    sections = [f"# Benchmark results\n\nWritten by `python bench/run_all.py` on {time.strftime('%Y-%m-%d')}. "
                "Every ratio is measured side by side in one process against the plain-library baseline.\n"]
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        done = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True)
        table = done.stdout.strip() or f"failed:\n```\n{done.stderr[-2000:]}\n```"
        print(table, flush=True)
        sections.append(f"## {script}\n\n{table}\n")
    # A CI or developer machine has no GPU: the GPU figures come from the last run on a lent GPU machine,
    # saved verbatim by whoever ran `python bench/gpu_decode.py` there.
    for saved in sorted((HERE / "gpu_results").glob("*.md")):
        sections.append(f"## gpu_decode.py on a GPU ({saved.stem}, saved in bench/gpu_results/)\n\n"
                        f"{saved.read_text().strip()}\n")
    (HERE / "RESULTS.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
