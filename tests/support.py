"""Helpers the tests share (imported as `from support import ...`; fixtures stay in conftest.py)."""

import gc
import os
import signal
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
ARTIFACTS = ROOT / "test-artifacts"
# A model small enough that a few steps take well under a second on a 2-core CPU (`tiny_config` writes it).
TINY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
# Two layers of 64: big enough for bf16 rounding, dropout and a checkpoint's files to show, still trains in ms.
TWO_LAYER_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
}


# The device and precision the suite runs on, read in this one place: LLM_MAGICS_TEST_DEVICE=cpu (the
# default) or cuda / cuda:N (then the dtype is what `--device auto` picks there: bf16). `meta` keeps the model
# fixtures on the CPU (meta tensors hold no values); test_device_placement's fake device checks placement.
TEST_DEVICE = os.environ.get("LLM_MAGICS_TEST_DEVICE", "cpu")
DEVICE = torch.device("cpu" if TEST_DEVICE == "meta" else TEST_DEVICE)
DTYPE = torch.float32 if DEVICE.type == "cpu" else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
# What `--device auto` picks, so where a kernel started by a test runs (its status bar shows it).
AUTO_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Tolerances per dtype. fp32 keeps each test's own (1e-5 for probabilities and maps, 1e-4 for sums and
# entropies). bf16 keeps 8 bits of mantissa (a relative step of 2**-8 = 0.004): a probability read through a
# bf16 model differs from its reference by up to ~1e-2, so the floor there is 2e-2 absolute and relative.
LOW_PRECISION_FLOOR = {torch.bfloat16: 2e-2, torch.float16: 5e-3}
# Training losses that should agree (grad accumulation against a bigger batch, a resumed run against an
# uninterrupted one), by the dtype the forward passes compute in. In bf16 (autocast) only the order of the
# sums differs: measured 1.2e-4 for 2 x 4 against a batch of 8, where a batch of 4 instead of 8 is 3e-2 off.
LOSS_ATOL = {torch.float32: 1e-4, torch.bfloat16: 1e-3, torch.float16: 1e-3}


def tol(atol: float = 1e-5, rtol: float = 0.0, dtype: torch.dtype | None = None) -> dict:
    """assert_close / assert_allclose tolerances: the fp32 ones a test states, raised to the floor of a lower
    precision when the suite runs in one (`dtype`: the compared tensors' own, default the suite's)."""
    floor = LOW_PRECISION_FLOOR.get(dtype or DTYPE, 0.0)
    return {"atol": max(atol, floor), "rtol": max(rtol, floor)}


class PeakMemory:
    """Extra memory at the peak of a block, in MB (`mb()`, readable inside the block too): the CUDA
    allocator's peak on a GPU (RSS cannot see device memory), else RSS sampled every 2 ms by a thread of its
    own, so a peak between two reads is seen too."""

    def __init__(self, device: torch.device | str | None = None):
        self.cuda = torch.device(device or DEVICE).type == "cuda"
        self.samples = 0

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        import psutil

        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.samples += 1
            self.done.wait(0.002)

    def mb(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        self.peak = max(self.peak, self.process.memory_info().rss)
        return (self.peak - self.base) / 2**20

    def __exit__(self, *exc):
        if not self.cuda:
            self.done.set()
            self.thread.join()


def one_error_line(capsys) -> str:
    """The single line a user mistake prints on stderr (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def run(shell, line, cell=None):
    """Run a magic the way a notebook cell does; return the shell's `_llm`."""
    shell.user_ns.pop("_llm", None)
    source = f"%%llm {line}\n{cell}" if cell is not None else f"%llm {line}"
    result = shell.run_cell(source)
    assert result.error_in_exec is None, result.error_in_exec
    return shell.user_ns.get("_llm")


class interrupt_after:
    """Deliver a real SIGINT to this process, as Jupyter's interrupt button does, `seconds` after the
    session's run has started. The signal is sent from inside a forward pass of that run (a global
    forward pre-hook, armed by the timer), never from the timer thread: a run that has already ended can
    not be hit, so the test cannot be killed by a late interrupt. Call join() after the run."""

    def __init__(self, seconds: float, session=None):
        import torch

        import llm_magics

        self.session = session or llm_magics.session
        self.armed, self.fired = threading.Event(), False
        self.hook = torch.nn.modules.module.register_module_forward_pre_hook(self._maybe_fire)
        self.thread = threading.Thread(target=self._arm, args=(seconds,), daemon=True)
        self.thread.start()

    def _arm(self, seconds):
        deadline = time.monotonic() + 120
        while self.session.stop_flag is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(seconds)
        self.armed.set()

    def _maybe_fire(self, module, args):
        if self.armed.is_set() and not self.fired and self.session.stop_flag is not None:
            self.fired = True
            os.kill(os.getpid(), signal.SIGINT)

    def join(self):
        self.thread.join()
        self.hook.remove()


def interrupt_at_forward(model, calls: int):
    """A real SIGINT from inside `model`'s forward number `calls`: a stop at an exact point of a run."""
    count = [0]

    def hook(module, args, output):
        count[0] += 1
        if count[0] == calls:
            os.kill(os.getpid(), signal.SIGINT)

    return model.register_forward_hook(hook)


def tiny_causal_model(folder: Path, tokenizer_dir: Path, initializer_range: float = 0.02) -> Path:
    """A random llama of TINY_CONFIG's shape with `tokenizer_dir`'s tokenizer (the packaged default's), saved
    in `folder` for `Session.load`: generation and attribution run in milliseconds on it. A larger
    initializer_range gives peaked next-token distributions, more like a trained model's."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        **{k: v for k, v in TINY_CONFIG.items() if k != "model_type"},
        vocab_size=len(tokenizer),
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,  # the logit of the current token is large: greedy repeats, as small LMs do
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
