"""The kernel side of the JupyterLab extension: a comm ("llm_magics") that tells the status bar and the
runs panel what is loaded and what is training. Outside JupyterLab the comm goes nowhere, harmlessly.

The kernel pushes a snapshot after every cell and, throttled, during training, on the comm it opens. A page
that connects later (a reload, a second tab) opens a comm of its own to ask for one ({"type": "request"});
a click on a run in the panel asks for its curves ({"type": "history", "id": ...}). Every message is
broadcast to all connected pages, marked with "source" (a reloaded page reads the pushes on the kernel's comm
before it knows its id)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Literal, TypedDict, cast, get_args, get_type_hints

from .base.live import page_drew

if TYPE_CHECKING:
    from comm.base_comm import BaseComm

COMM_TARGET = "llm_magics"
SOURCE = "llm-magics"  # marks our messages: a reloaded page reads them before it knows the comm's id
CURVE_POINTS = 300  # the most points a curve sends (the panel's chart is ~300 px wide)

# --- the protocol: every message between the kernel and the page, and the records they carry ---------------
# labextension/src/protocol.ts declares the same types; `python -m llm_magics protocol` writes protocol() to
# labextension/test/protocol.json, which tests/test_labextension.py keeps equal to these and jest to protocol.ts.

Curve = list[list[float]]  # [[step, value], ...]


# A TypedDict's optional fields are those of a total=False class (Python 3.10 has no NotRequired): each
# message with some is its required fields' class and a total=False subclass that adds the others.
class _ModelName(TypedDict):
    model: str | None  # None: no model loaded (and no other field)


class ModelStatus(_ModelName, total=False):
    """Session.status() with this module's memory figures: the fields the page reads (it sends more)."""

    kind: str
    device: str
    dtype: str
    parameters: int
    trainable_parameters: int
    context_length: int | None
    weights_mb: float
    quantization: str
    gpu_memory_mb: float  # on CUDA only
    process_memory_mb: float


class RunRow(TypedDict):
    """One run of the session, as `%llm runs` lists it."""

    index: int
    id: str | None
    kind: str
    status: str
    steps: int
    total_steps: int
    initial_loss: float | None
    final_loss: float | None
    interrupted: bool
    final_eval_loss: float | None
    best_eval_loss: float | None
    eval_step: int | None
    checkpoint: str | None
    output_dir: str | None
    metrics: dict[str, float]
    tokens_per_second: float


class ActiveRun(TypedDict):
    """The run in progress, as its last step left it."""

    kind: str
    step: int
    total_steps: int
    loss: float
    loss_curve: Curve
    cell_id: str | None  # the notebook cell that runs it


class _Status(TypedDict):
    type: Literal["status"]
    source: str
    status: ModelStatus
    runs: list[RunRow]
    active: ActiveRun | None


class StatusMessage(_Status, total=False):
    """Kernel to page, after every cell, during training and on request: what is loaded and the runs."""

    reply_to: str | None  # on an answer: the request_id it answers


class _History(TypedDict):
    type: Literal["history"]
    source: str
    id: str


class HistoryMessage(_History, total=False):
    """Kernel to page, on request: one run's curves, or the error why not."""

    kind: str
    status: str
    loss: Curve
    eval_loss: Curve
    error: str
    reply_to: str | None


class SnapshotRequest(TypedDict):
    """Page to kernel (a page's own comm, on opening it): send me a snapshot."""

    type: Literal["request"]
    request_id: str


class HistoryRequest(TypedDict):
    """Page to kernel: send me this run's curves."""

    type: Literal["history"]
    id: str
    request_id: str


class DrawnReport(TypedDict):
    """Page to kernel, while a cell trains: the page has drawn this redraw of this live chart (base/live.py)."""

    type: Literal["drawn"]
    chart: str
    redraw: int


TO_PAGE = (StatusMessage, HistoryMessage)
TO_KERNEL = (SnapshotRequest, HistoryRequest, DrawnReport)
RECORDS = (ModelStatus, RunRow, ActiveRun)


def fields(record) -> dict[str, str]:
    """A TypedDict's fields, each "required" or "optional"."""
    return {name: "required" if name in record.__required_keys__ else "optional" for name in record.__annotations__}


def kind(message) -> str:
    """A message's `type`: its Literal's one value."""
    return get_args(get_type_hints(message)["type"])[0]


def protocol() -> dict:
    """The protocol as JSON (labextension/test/protocol.json): each message by its `type`, each record by name."""
    return {
        "comm_target": COMM_TARGET,
        "source": SOURCE,
        "to_page": {kind(message): fields(message) for message in TO_PAGE},
        "to_kernel": {kind(message): fields(message) for message in TO_KERNEL},
        "records": {record.__name__: fields(record) for record in RECORDS},
    }


def curve(rows: list[dict], key: str, limit: int = CURVE_POINTS) -> Curve:
    """[[step, value], ...] of the rows that have `key`, thinned evenly to at most `limit` (the last kept)."""
    points = [[row["step"], row[key]] for row in rows if row.get(key) is not None]
    if len(points) <= limit:
        return points
    stride = len(points) / limit
    return [points[int(i * stride)] for i in range(limit - 1)] + [points[-1]]


def run_status(result) -> str:
    """As `%llm runs` says it: finished, stopped at step N, or failed with its reason."""
    if result.error:
        return f"failed: {result.error}"
    if getattr(result, "stopped_early", False):
        return f"stopped early at step {result.steps_done}"
    if result.interrupted:
        return f"stopped at step {result.steps_done}"
    return "finished"


def run_row(index: int, r) -> RunRow:
    evals = [row["eval_loss"] for row in r.eval_history if row.get("eval_loss") is not None]
    return {
        "index": index,
        "id": r.record_id,
        "kind": r.kind,
        "status": run_status(r),
        "steps": r.steps_done,
        "total_steps": r.total_steps,
        "initial_loss": r.initial_loss,
        "final_loss": r.final_loss,
        "interrupted": r.interrupted,
        "final_eval_loss": evals[-1] if evals else r.metrics.get("eval_loss"),
        "best_eval_loss": min(evals) if evals else r.metrics.get("eval_loss"),
        # the step the metrics were measured at (a stopped run's last eval may be older than its last step)
        "eval_step": r.eval_history[-1]["step"] if r.eval_history else None,
        "checkpoint": r.checkpoint,
        "output_dir": r.output_dir,
        "metrics": r.metrics,
        "tokens_per_second": r.tokens_per_second,
    }


def snapshot(session, active: ActiveRun | None = None) -> StatusMessage:
    """What the status bar and the runs panel show, as plain JSON."""
    status = cast(ModelStatus, session.status())
    runs = [run_row(i, r) for i, r in enumerate(session.runs)]
    torch = sys.modules.get("torch")  # never imported for this (at %load_ext it takes seconds)
    if torch is not None and torch.cuda.is_available():
        status["gpu_memory_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
    import psutil

    status["process_memory_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    return {"type": "status", "source": SOURCE, "status": status, "runs": runs, "active": active}


def history_message(session, run_id) -> HistoryMessage:
    """One run's loss and eval-loss curves, for the panel's chart."""
    found = [r for r in session.runs if r.record_id is not None and r.record_id == run_id]
    if not found:
        return {"type": "history", "source": SOURCE, "id": run_id, "error": f"run {run_id} is not in this kernel"}
    r = found[-1]
    return {
        "type": "history",
        "source": SOURCE,
        "id": run_id,
        "kind": r.kind,
        "status": run_status(r),
        "loss": curve(r.history, "loss"),
        "eval_loss": curve(r.eval_history, "eval_loss"),
    }


def _cell_id() -> str | None:
    """The id of the notebook cell that runs now (JupyterLab sends it with the execute request): a page
    reloaded meanwhile draws the progress in that cell."""
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        return kernel.get_parent("shell").get("metadata", {}).get("cellId") if kernel else None
    except Exception:
        return None


class FrontendBridge:
    """Sends a snapshot after every cell and, throttled, during training; answers the pages' requests."""

    def __init__(self, session, min_interval: float = 1.0):
        self.session = session
        self.min_interval = min_interval
        self.comm: BaseComm | None = None
        self.active: ActiveRun | None = None  # the run in progress, as the last progress message said
        self._last: float | None = None  # None: nothing sent yet (monotonic() may be small after boot)

    def _send(self, message: StatusMessage) -> None:
        data = dict(message)
        if self.comm is None:
            try:
                from comm import create_comm

                self.comm = create_comm(target_name=COMM_TARGET, data=data)
                self.comm.on_close(self._closed)
            except Exception:  # no kernel (plain IPython): nothing to tell
                self.comm = None
        else:
            self.comm.send(data)

    def _closed(self, msg) -> None:
        self.comm = None  # a page without our extension closed it: the next message opens a new one

    def open(self) -> None:
        """At %load_ext: open the push comm (a page that connects later finds it) and take the pages'
        requests. A page opens its own comm for them, over a kernel subshell where there is one (ipykernel
        7): ipykernel routes a comm's messages to the shell its last reply came from, so the answers on that
        comm come even while a cell trains on the main shell."""
        if self.comm is None:
            self._send(snapshot(self.session))
        try:
            from comm import get_comm_manager

            get_comm_manager().register_target(COMM_TARGET, self._on_open)
        except Exception:  # no kernel: nobody to ask
            pass

    def _on_open(self, comm, open_msg) -> None:
        comm.on_msg(lambda msg: self.answer(comm, msg))
        self.answer(comm, open_msg)

    def answer(self, comm, msg) -> None:
        """A page's request: a snapshot ({"type": "request"}) or a run's curves ({"type": "history", "id"})."""
        data = (msg.get("content") or {}).get("data") or {}  # a SnapshotRequest or a HistoryRequest
        reply: StatusMessage | HistoryMessage
        if data.get("type") == "request":
            reply = snapshot(self.session, active=self.active)
        elif data.get("type") == "history":
            reply = history_message(self.session, data.get("id"))
        elif data.get("type") == "drawn" and isinstance(data.get("redraw"), int):
            page_drew(str(data.get("chart")), data["redraw"])
            return  # a report: no answer
        else:
            return
        reply["reply_to"] = data.get("request_id")  # which request of the page this answers
        comm.send(reply)

    def after_cell(self, *args) -> None:
        self.active = None
        if self.session.loaded is not None or self.session.runs or self.comm is not None:
            self._send(snapshot(self.session))

    def on_step(self, row: dict, result) -> None:
        """A training callback: live progress for the status bar and the panel, at most once a second."""
        now = time.monotonic()
        throttled = self._last is not None and now - self._last < self.min_interval
        if throttled and row["step"] != result.total_steps:
            return
        self._last = now
        self.active = {
            "kind": result.kind,
            "step": row["step"],
            "total_steps": result.total_steps,
            "loss": row["loss"],
            "loss_curve": curve(result.history, "loss"),
            "cell_id": _cell_id(),
        }
        self._send(snapshot(self.session, active=self.active))
