"""Run every benchmark and write bench/RESULTS.md (each script prints its own markdown table).

    python bench/run_all.py
"""
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = ["generate_overhead.py", "train_throughput.py", "attention_capture.py", "attention_layer_switch.py",
           "scaling_cpu.py", "data_scale.py", "gpu_decode.py"]


def main():
    sections = [f"# Benchmark results\n\nWritten by `python bench/run_all.py` on {time.strftime('%Y-%m-%d')}. "
                "Every ratio is measured side by side in one process against the plain-library baseline.\n"]
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        done = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True)
        table = done.stdout.strip() or f"failed:\n```\n{done.stderr[-2000:]}\n```"
        print(table, flush=True)
        sections.append(f"## {script}\n\n{table}\n")
    (HERE / "RESULTS.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
