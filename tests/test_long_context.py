"""A 4,096-token text in the attention widget and its logit lens, within the memory goals: measured in a
subprocess (its own heap) with psutil, peak RSS above the RSS once the model is loaded."""
import json
import os
import subprocess
import sys

from support import ROOT

TOKENS = 4096
LIMIT_MB = 1536  # issue 20: under 1.5 GB extra RSS at 4k tokens

CHILD = r"""
import json, sys, threading, time
import psutil, torch
from llm_magics import Session
from llm_magics.views.attention import AttentionView, LENS_WINDOW

n = int(sys.argv[1])
loaded = Session().load("default")
paragraph = ("The river bends twice before it reaches the town. In spring the water rises over the stones, and "
             "the children watch the boats carry timber down to the mill, where the old wheel still turns. ")
ids = loaded.tokenizer(paragraph * (n // 20 + 2))["input_ids"][:n]
text = loaded.tokenizer.decode(ids)
process = psutil.Process()
base = peak = process.memory_info().rss
done = threading.Event()

def sample():
    global peak
    while not done.is_set():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.002)

def extra():
    return (max(peak, process.memory_info().rss) - base) / 2**20

thread = threading.Thread(target=sample, daemon=True)
thread.start()
steps = {}
view = AttentionView(loaded, text)  # a long text opens on the matrix view
steps["attention"] = extra()
view.layer = 3
steps["switch"] = extra()
view.view = "lens"
steps["lens"] = extra()
done.set()
thread.join()
sent = len(view.weights)
rows = torch.from_numpy(view.shown.numpy()[[0, len(view.tokens) // 2, -1]]).sum(-1).tolist()
print(json.dumps({"tokens": len(view.tokens), "view": view.view, "steps": steps, "sent": sent, "rows": rows,
                  "lens_start": view.lens["start"], "lens_width": len(view.lens["tokens"][0]),
                  "window": LENS_WINDOW, "shown": [view.shown_layer, view.shown_head]}))
"""


def test_4k_attention_and_lens_within_the_memory_goal():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(TOKENS)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    n = result["tokens"]
    assert n == TOKENS and result["shown"] == [3, -1]
    assert all(abs(total - 1) < 1e-4 for total in result["rows"])  # the mean map's rows are distributions
    assert result["sent"] == n * n  # the matrix view's map: one byte a cell, the mean only
    assert result["lens_start"] == n - result["window"] and result["lens_width"] == result["window"]
    for step, megabytes in result["steps"].items():  # cumulative peaks: each includes the steps before it
        assert megabytes < LIMIT_MB, f"{step}: {megabytes:.0f} MB extra RSS at {n} tokens"
