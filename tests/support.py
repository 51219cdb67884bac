"""Helpers the tests share (imported as `from support import ...`; fixtures stay in conftest.py)."""

import os
import signal
import threading
import time
from pathlib import Path

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
