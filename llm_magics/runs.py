"""The run history on disk: every train, finetune, eval and lr-find run is a folder under the runs dir.

    llm_runs/20261129-193012-a1b2/
        run.json       kind, resolved options, starting model, data files and their cache keys, status,
                       final metrics, checkpoints, timings (rewritten atomically at the start and the end)
        history.jsonl  one JSON line per optimizer step (loss, eval loss, lr, tokens/s, wall time),
                       appended and flushed as the run goes: a crashed kernel leaves a readable partial run
        checkpoints/   the run's checkpoints (when --checkpoint-every is on and no --output-dir is given)

`table()` lists them newest first, `load(ID)` gives one run's history as a pandas frame, `delete(ID)`
removes one, and `Session.runs` is rebuilt from these folders after a kernel restart.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path

from .base.errors import LLMError
from .base.files import why_not_written
from .base.kinds import RunKind

RUN_FILE = "run.json"
HISTORY_FILE = "history.jsonl"
DEFAULT_DIR = "llm_runs"
# Options that name where things go rather than what the run did: never shown as a difference.
_NOT_COMPARED = {"output_dir", "runs_dir", "progress", "resume", "widget", "compare", "track"}


def runs_dir(requested: str | os.PathLike | None = None) -> Path:
    """--runs-dir, else $LLM_MAGICS_RUNS_DIR, else llm_runs/ in the current folder (the notebook's)."""
    return Path(requested or os.environ.get("LLM_MAGICS_RUNS_DIR") or DEFAULT_DIR).expanduser()


def _plain(value):
    """JSON-safe: numbers stay numbers (nan/inf as null), paths and other objects become text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy or torch scalar
        return _plain(value.item())
    return str(value)


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_plain(data), indent=1))
    os.replace(partial, path)  # a reader never sees half a file


def data_record(corpus, role: str) -> dict:
    """A data source as the run used it: the files, their size and time, and the datasets cache key."""
    files = [
        {"path": str(f), "bytes": f.stat().st_size, "modified": f.stat().st_mtime}
        for f in getattr(corpus, "files", [])
        if Path(f).exists()
    ]
    return {
        "role": role,
        "origin": corpus.origin,
        "format": corpus.builder,
        "rows": len(corpus),
        "text_field": corpus.text_field,
        "files": files,
        "cache_key": getattr(corpus.dataset, "_fingerprint", None),
    }


class RunRecord:
    """Writes one run into its folder as it goes. Also a step callback: each row becomes a history line."""

    def __init__(self, root: str | os.PathLike | None, kind: str, options: dict, model: str | None):
        self.root = runs_dir(root)
        self.id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        self.path = self.root / self.id
        self.info = {
            "id": self.id,
            "kind": kind,
            "model": model,
            "options": _plain(options),
            "data": [],
            "status": "running",
            "started": time.time(),
            "finished": None,
            "duration": None,
            "steps": 0,
            "total_steps": None,
            "metrics": {},
            "checkpoints": [],
            "pid": os.getpid(),
        }
        try:
            self.path.mkdir(parents=True, exist_ok=False)
            _write_json(self.path / RUN_FILE, self.info)
            self._history = open(self.path / HISTORY_FILE, "a", encoding="utf-8")
        except OSError as error:
            raise LLMError(f"--runs-dir {self.root} is not writable: {error.strerror or error}") from None
        self._previous: tuple[float, float] | None = None  # (tokens, elapsed) of the last row

    def add_data(self, corpus, role: str) -> None:
        if corpus is not None:
            self.info["data"].append(data_record(corpus, role))
            self._save()

    def __call__(self, row: dict, result) -> None:
        tokens, elapsed = row.get("tokens", 0), row.get("elapsed", 0.0)
        before_tokens, before_elapsed = self._previous or (0, 0.0)
        seconds = elapsed - before_elapsed
        line = {
            **row,
            "tokens_per_second": (tokens - before_tokens) / seconds if seconds > 0 else None,
            "wall_time": time.time(),
        }
        self._previous = (tokens, elapsed)
        try:
            self._history.write(json.dumps(_plain(line)) + "\n")
            self._history.flush()  # a crash after this step still leaves it on disk
        except OSError as error:
            raise LLMError(
                f"--runs-dir {self.root}: {why_not_written(error)}; the run stopped at step {row['step']}"
            ) from None
        self.info["steps"], self.info["total_steps"] = row["step"], result.total_steps

    def finish(
        self, result=None, error: str | None = None, metrics: dict | None = None, stopped: bool | None = None
    ) -> None:
        """The final status: finished, stopped at step N, or failed with its one-line reason."""
        if not self._history.closed:
            try:
                self._history.close()
            except OSError:  # the last buffered line could not be written (a full disk): the rows before it are
                pass
        steps = result.steps_done if result is not None and hasattr(result, "steps_done") else self.info["steps"]
        stopped = stopped if stopped is not None else bool(result is not None and getattr(result, "interrupted", False))
        if error:
            status = f"failed: {error}"
        elif getattr(result, "stopped_early", False):
            status = f"stopped early at step {steps} (best eval loss at step {result.best_step})"
        elif stopped:
            status = f"stopped at step {steps}"
        else:
            status = "finished"
        self.info.update(status=status, finished=time.time(), steps=steps)
        self.info["duration"] = self.info["finished"] - self.info["started"]
        if result is not None and hasattr(result, "total_steps"):
            self.info["total_steps"] = result.total_steps
            self.info["checkpoints"] = _checkpoints_of(result)
            # every measured eval with its step (a graceful stop's eval comes after its step's history line)
            self.info["eval_history"] = list(getattr(result, "eval_history", []))
            for key in ("best_step", "stopped_early", "restored_step", "suggested_lr", "suggestions"):
                if getattr(result, key, None) is not None:
                    self.info[key] = getattr(result, key)
        self.info["metrics"] = dict(metrics if metrics is not None else getattr(result, "metrics", {}) or {})
        self._save()

    def _save(self) -> None:
        try:
            _write_json(self.path / RUN_FILE, self.info)
            _UNSAVED.pop(str(self.path), None)
        except OSError:  # a full disk, or the folder deleted under us: the run itself is unaffected,
            _UNSAVED[str(self.path)] = dict(self.info)  # and this kernel still lists it as it ended
            try:
                (self.path / (RUN_FILE + ".partial")).unlink(missing_ok=True)
            except OSError:
                pass


# Records this kernel could not write (a full disk): read back from memory, so a run that ended is never
# listed as "running".
_UNSAVED: dict[str, dict] = {}


def _checkpoints_of(result) -> list[str]:
    folder = Path(result.output_dir) if getattr(result, "output_dir", None) else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.glob("checkpoint-*[0-9]") if p.is_dir())


def update_metrics(run_dir: str | None, metrics: dict) -> None:
    """Add metrics (an eval of the run's model) to a recorded run."""
    if not run_dir:
        return
    path = Path(run_dir) / RUN_FILE
    try:
        info = json.loads(path.read_text())
        info.setdefault("metrics", {}).update(_plain(metrics))
        _write_json(path, info)
    except (OSError, ValueError):
        pass


# --- reading back ------------------------------------------------------------------------------


def read_info(path: Path) -> dict | None:
    """A run folder's run.json plus its history rows (what was written before a crash, at least).

    A record that cannot be read (cut short, or not a JSON object) does not hide the run: it is listed with
    a status that says so and where its history is kept, and can still be plotted from that history."""
    rows = _history_rows(path / HISTORY_FILE)
    try:
        info = dict(_UNSAVED[str(path)]) if str(path) in _UNSAVED else json.loads((path / RUN_FILE).read_text())
    except FileNotFoundError:
        if not (path / HISTORY_FILE).is_file():
            return None  # not a run folder
        info = None
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("id"), str):
        kept = f"history kept at {path / HISTORY_FILE}" if rows else "no history"
        info = {"id": path.name, "kind": None, "options": {}, "status": f"record unreadable, {kept}"}
        info["steps"] = rows[-1]["step"] if rows else 0
        info["unreadable"] = f"run {path.name}: record unreadable, {kept}"
    info["history"] = rows
    info["path"] = str(path)
    if info.get("status") == "running":
        alive = info.get("pid") == os.getpid() or _alive(info.get("pid"))
        if not alive:
            last = rows[-1]["step"] if rows else 0
            info["status"] = f"unfinished at step {last} (the kernel ended)"
            info["steps"] = last
    return info


def _history_rows(path: Path) -> list[dict]:
    rows: list[dict] = []
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a crash
                    break
                if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                    break
                rows.append(row)
    except (OSError, UnicodeDecodeError):
        pass
    return rows


def _alive(pid) -> bool:
    import psutil

    return isinstance(pid, int) and psutil.pid_exists(pid)


def all_runs(root: str | os.PathLike | None = None) -> list[dict]:
    """Every readable run in the folder, oldest first."""
    folder = runs_dir(root)
    if folder.exists() and not folder.is_dir():
        raise LLMError(f"--runs-dir {folder} is not a folder")
    if not folder.is_dir():
        return []
    found = [info for path in folder.iterdir() if path.is_dir() for info in [read_info(path)] if info]
    return sorted(found, key=lambda info: (info.get("started") or 0, info["id"]))


def find(run_id: str, root: str | os.PathLike | None = None) -> dict:
    """One run by its id (or a unique start of it)."""
    runs = all_runs(root)
    matches = [info for info in runs if info["id"] == run_id] or [
        info for info in runs if info["id"].startswith(str(run_id))
    ]
    if len(matches) != 1:
        what = "is ambiguous" if matches else "is unknown"
        raise LLMError(f"run id {run_id!r} {what} in {runs_dir(root)}: `%llm runs` lists the runs there")
    return matches[0]


def load(run_id: str, root: str | os.PathLike | None = None):
    """One run's history (one row per step) as a pandas DataFrame; `frame.attrs` holds its run.json."""
    import pandas as pd

    info = find(run_id, root)
    frame = pd.DataFrame(info["history"])
    frame.attrs.update({k: v for k, v in info.items() if k != "history"})
    return frame


def delete(run_id: str, root: str | os.PathLike | None = None) -> dict:
    info = find(run_id, root)
    shutil.rmtree(info["path"])
    return info


def eval_losses(info: dict) -> list[tuple[int, float]]:
    """(step, eval loss) of every measured evaluation: run.json's list once the run ended, else the rows."""
    rows = info.get("eval_history") or info["history"]
    return [(row["step"], row["eval_loss"]) for row in rows if row.get("eval_loss") is not None]


def differing_options(runs: list[dict]) -> list[str]:
    """The option names whose values are not the same in every run (kind-specific ones included)."""
    names = sorted({k for info in runs for k in (info.get("options") or {})} - _NOT_COMPARED)
    return [n for n in names if len({json.dumps((info.get("options") or {}).get(n)) for info in runs}) > 1]


def label(info: dict, names: list[str]) -> str:
    """A run named by the options in which it differs: 'lr=3e-3 lora=True'."""
    options = info.get("options") or {}
    parts = [f"{n}={_short(options.get(n))}" for n in names]
    return " ".join(parts) or info["id"]


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or os.sep in value):
        return Path(value).name
    return str(value)


def summary_row(info: dict, names: list[str]) -> dict:
    evals = eval_losses(info)
    history = info["history"]
    row = {"id": info["id"], "kind": info.get("kind"), "model": info.get("model")}
    row.update({n: (info.get("options") or {}).get(n) for n in names})
    metrics = info.get("metrics") or {}
    row["final_loss"] = history[-1]["loss"] if history else None
    row["final_eval_loss"] = evals[-1][1] if evals else metrics.get("eval_loss")
    row["best_eval_loss"] = min(v for _, v in evals) if evals else metrics.get("eval_loss")
    if info.get("kind") == RunKind.EVAL:
        row["metrics"] = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
    row["steps"] = info.get("steps") or (history[-1]["step"] if history else 0)
    row["status"] = info.get("status")
    duration = info.get("duration")
    row["duration"] = f"{duration:.1f} s" if isinstance(duration, (int, float)) else None
    return row


def table(root: str | os.PathLike | None = None):
    """The runs newest first: id, kind, model, the options that differ between them, final and best eval
    loss, steps, status and duration (a pandas DataFrame)."""
    import pandas as pd

    runs = all_runs(root)
    names = differing_options(runs)
    rows = [summary_row(info, names) for info in reversed(runs)]
    frame = pd.DataFrame(rows)
    if "metrics" in frame and frame["metrics"].isna().all():
        frame = frame.drop(columns="metrics")
    frame.attrs["unreadable"] = [info["unreadable"] for info in runs if "unreadable" in info]
    return frame


def to_result(info: dict):
    """A TrainResult rebuilt from a run folder (Session.runs after a restart)."""
    from .training.options import TrainResult

    history = info["history"]
    status = info.get("status") or ""
    result = TrainResult(
        kind=RunKind(info.get("kind") or RunKind.TRAIN),
        total_steps=info.get("total_steps") or 0,
        history=history,
        eval_history=[{"step": s, "eval_loss": v} for s, v in eval_losses(info)],
        metrics=info.get("metrics") or {},
        interrupted=not status.startswith(("finished", "failed")),
        checkpoint=(info.get("checkpoints") or [None])[-1],
        seconds=history[-1].get("elapsed", 0.0) if history else 0.0,
        tokens=history[-1].get("tokens", 0) if history else 0,
        error=status.removeprefix("failed: ") if status.startswith("failed") else None,
    )
    result.run_dir, result.record_id, result.options = info["path"], info["id"], info.get("options") or {}
    result.best_step = info.get("best_step")
    result.suggested_lr = info.get("suggested_lr")
    if info.get("kind") == RunKind.LR_FIND:
        result.suggestions = {k: (v[0], tuple(v[1])) for k, v in (info.get("suggestions") or {}).items()}
        result.sweep = {
            "lr": [r.get("lr_used") for r in history],
            "smoothed_loss": [r.get("smoothed_loss") for r in history],
        }
    return result


# --- comparing runs ----------------------------------------------------------------------------


def select(spec: str | None, kind: str, options: dict, root, exclude: str | None = None) -> list[dict]:
    """The earlier runs to overlay: 'auto' (the previous run of the same kind on the same data, if any),
    'last' (the previous run of the same kind), 'all' (every run of that kind), 'none', or 'ID,ID'."""
    spec = (spec or "auto").strip()
    if spec == "none":
        return []
    runs = [info for info in all_runs(root) if info["id"] != exclude and info["history"]]
    if spec not in ("auto", "last", "all"):
        return [info for info in (find(i.strip(), root) for i in spec.split(",") if i.strip()) if info["id"] != exclude]
    same_kind = [info for info in runs if info.get("kind") == kind]
    if spec == "all":
        return same_kind
    if spec == "auto":
        same_kind = [info for info in same_kind if (info.get("options") or {}).get("data") == options.get("data")]
    return same_kind[-1:]


def check_compare(spec: str | None, root) -> None:
    """Unknown ids in --compare are one line before the run starts."""
    if spec and spec not in ("auto", "last", "all", "none"):
        for run_id in spec.split(","):
            if run_id.strip():
                find(run_id.strip(), root)


def smoothed(values: list[float], smoothing: float) -> list[float]:
    """TensorBoard's debiased exponential moving average."""
    out, average = [], 0.0
    for count, value in enumerate(values, 1):
        average = smoothing * average + (1 - smoothing) * value
        out.append(average / (1 - smoothing**count) if smoothing else value)
    return out


PLOT_METRICS = ("loss", "eval_loss", "lr")


def plot(metric: str = "loss", run_ids: list[str] | None = None, root=None) -> dict:
    """`%llm runs --plot`: a static overlay of runs (a plotly mime bundle, with an inline SVG fallback for
    saved notebooks viewed without plotly), each run named by the options in which it differs."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from .base.html import GRID, LR_TICKS, PLOT_CONFIG, PLOT_THEME, svg_chart

    if metric not in PLOT_METRICS:
        raise LLMError(f"unknown --plot {metric!r}: use {', '.join(PLOT_METRICS)}")
    runs = [find(i, root) for i in run_ids] if run_ids else [i for i in all_runs(root) if i["history"]]
    names = differing_options(runs)
    figure = go.Figure(
        layout=dict(
            **PLOT_THEME,
            autosize=True,
            height=340,
            margin=dict(l=55, r=20, t=60, b=40),
            xaxis=dict(title="step", gridcolor=GRID, tickformat="d"),
            yaxis=dict(title=metric, gridcolor=GRID, **(LR_TICKS if metric == "lr" else {})),
            legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"),
        )
    )
    series = []
    for info in runs:
        points = [
            (row["step"], row[metric])
            for row in (info.get("eval_history") or info["history"] if metric == "eval_loss" else info["history"])
            if row.get(metric) is not None
        ]
        name = f"{info['id']}: {label(info, names)}" if names else info["id"]
        figure.add_scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            name=name,
            mode="lines+markers" if metric == "eval_loss" else "lines",
        )
        series.append((name, [p[0] for p in points], [p[1] for p in points], "currentColor"))
    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict())
    bundle["application/vnd.plotly.v1+json"]["config"] = PLOT_CONFIG
    palette = ["#1f77b4", "#e4572e", "#2ca02c", "#9467bd", "#8c564b", "#17becf"]
    bundle["text/html"] = svg_chart([(n, xs, ys, palette[i % len(palette)]) for i, (n, xs, ys, _) in enumerate(series)])
    bundle["text/plain"] = f"{metric} of {len(runs)} runs: " + ", ".join(n for n, *_ in series)
    return bundle
