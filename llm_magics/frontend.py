"""The kernel side of the JupyterLab extension: a comm ("llm_magics") that tells the status bar and the
runs panel what is loaded and what is training. Outside JupyterLab the comm goes nowhere, harmlessly."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comm.base_comm import BaseComm

COMM_TARGET = "llm_magics"


def snapshot(session, active: dict | None = None) -> dict:
    """What the status bar and the runs panel show, as plain JSON."""
    status = session.status()
    runs = [{"index": i, "kind": r.kind, "steps": r.steps_done, "total_steps": r.total_steps,
             "initial_loss": r.initial_loss, "final_loss": r.final_loss, "interrupted": r.interrupted,
             "checkpoint": r.checkpoint, "output_dir": r.output_dir, "metrics": r.metrics,
             "tokens_per_second": r.tokens_per_second, "id": r.record_id,
             # the step the metrics were measured at (a stopped run's last eval may be older than its last step)
             "eval_step": r.eval_history[-1]["step"] if r.eval_history else None}
            for i, r in enumerate(session.runs)]
    try:
        import torch

        if torch.cuda.is_available():
            status["gpu_memory_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    import psutil

    status["process_memory_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    return {"type": "status", "status": status, "runs": runs, "active": active}


class FrontendBridge:
    """Sends a snapshot after every cell and, throttled, during training."""

    def __init__(self, session, min_interval: float = 1.0):
        self.session = session
        self.min_interval = min_interval
        self.comm: BaseComm | None = None
        self._last: float | None = None  # None: nothing sent yet (monotonic() may be small after boot)
        self.sent: list[dict] = []  # what was sent, for the tests

    def _send(self, message: dict) -> None:
        if self.comm is None:
            try:
                from comm import create_comm

                self.comm = create_comm(target_name=COMM_TARGET, data=message)
            except Exception:  # no kernel (plain IPython): nothing to tell
                self.comm = None
        else:
            self.comm.send(message)
        self.sent = (self.sent + [message])[-20:]

    def after_cell(self, *args) -> None:
        if self.session.loaded is not None or self.session.runs:
            self._send(snapshot(self.session))

    def on_step(self, row: dict, result) -> None:
        """A training callback: live progress for the status bar, at most once a second."""
        now = time.monotonic()
        throttled = self._last is not None and now - self._last < self.min_interval
        if throttled and row["step"] != result.total_steps:
            return
        self._last = now
        self._send(snapshot(self.session, active={"kind": result.kind, "step": row["step"],
                                                  "total_steps": result.total_steps, "loss": row["loss"]}))
