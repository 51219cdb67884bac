"""`--processes N` / `--accelerate-config FILE`: the same training on several processes, the kernel
staying the user's home.

accelerate's `notebook_launcher` forks N workers from the live kernel (DDP; gloo on CPU, NCCL on GPUs);
`--accelerate-config` runs `accelerate launch --config_file FILE` on this module instead (FSDP,
DeepSpeed, several nodes: whatever the config says). Every worker runs the ordinary loop
(`train_causal_lm` / `finetune`). A multiprocessing manager relays between them and the kernel:
rank 0 sends each step's row (the kernel's chart, status bar and progress bar draw it), the kernel
sets a shared event on Stop (every rank then stops after the same step through accelerate's trigger),
and at the end rank 0 hands the trained model back through a file, which the kernel loads into its
session.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..base.errors import LLMError
from ..base.interrupts import StopFlag
from ..base.kinds import RunKind
from ..data import Corpus, Preparation
from ..loading import LoadedModel
from ..options import check_bounds
from .checkpoints import lock_output_dir
from .options import RunSpec, TrainResult

MODEL_FILE = "model.pt"


@dataclass
class Job:
    """What each worker runs: the loop's `run_here` of this spec on these corpora."""

    kind: RunKind  # TRAIN (train_causal_lm) or FINETUNE
    loaded: LoadedModel
    corpus: Corpus
    spec: RunSpec
    eval_corpus: Corpus | None = None
    gpus: bool = False  # one GPU per worker, else CPU
    directory: str = ""  # where rank 0 leaves the trained model


class _SharedStop(StopFlag):
    """A worker's stop flag: its own interrupt, or the kernel's Stop relayed through the shared event."""

    def __init__(self, event):
        super().__init__()
        self.event = event

    @property
    def requested(self) -> bool:
        return self._event.is_set() or self.event.is_set()


def run(
    job: Job,
    processes: int,
    on_step: list[Callable],
    stop: StopFlag,
    accelerate_config: str | None = None,
    prep: Preparation | None = None,
) -> TrainResult:
    """Train on `processes` workers; relay rank 0's rows to `on_step`; load the result into job.loaded."""
    check_bounds({"processes": processes}, "train", only=("processes",))
    port = None
    if accelerate_config is None:
        _check_can_fork(job, processes)
        port = _port()
    else:
        _check_config(accelerate_config, processes)
    if not _tokenize_here(job, prep or Preparation(stop, progress=False)):
        return TrainResult(kind=job.kind, total_steps=job.spec.train.steps or 0, interrupted=True)
    # the kernel holds --output-dir's lock for the workers (rank 0 writes the checkpoints)
    lock = (
        lock_output_dir(job.spec.train.output_dir)
        if job.spec.train.checkpoint_every and job.spec.train.output_dir
        else None
    )
    try:
        return _run_locked(job, processes, on_step, stop, accelerate_config, port)
    finally:
        if lock:
            lock.release()


def _run_locked(
    job: Job, processes: int, on_step: list[Callable], stop: StopFlag, accelerate_config: str | None, port: int | None
) -> TrainResult:
    environment = dict(os.environ)  # accelerate and torch.distributed set MASTER_PORT, TORCHELASTIC_* ...
    at_once = threading.Event()
    with (
        tempfile.TemporaryDirectory(prefix="llm-magics-run-") as directory,
        _manager() as manager,
        _two_stage_interrupts(stop, at_once),
    ):
        job.directory = directory
        relay = (manager.Queue(), manager.Event())
        failure: list[str] = []
        launch = threading.Thread(
            target=_launch, args=(job, relay, processes, port, accelerate_config, failure), daemon=True
        )
        launch.start()
        try:
            outcome = _follow(relay, launch, job.kind, on_step, stop, at_once)
        finally:
            relay[1].set()  # whatever happened in the kernel, the workers stop too
            _end(launch, manager, at_once)
            _restore_environment(environment)
        if at_once.is_set() and not isinstance(outcome, tuple):  # (a result that came back is kept)
            raise LLMError(
                "stopped at once by a second interrupt: the training processes were ended and their "
                "steps are lost (the model in this kernel has none of them)"
            )
        if isinstance(outcome, Exception):
            raise outcome
        if outcome is None:
            raise LLMError(f"the training processes failed: {failure[0] if failure else 'no result came back'}")
        result, kind, dtype = outcome
        model = torch.load(Path(directory) / MODEL_FILE, weights_only=False)
        job.loaded.model = model.to(job.loaded.device).eval()
        job.loaded.kind, job.loaded.dtype = kind, dtype
        return result


def _tokenize_here(job: Job, prep: Preparation) -> bool:
    """Tokenize in the kernel, with its progress and Stop, into the cache the workers then only read (no
    two processes writing one cache entry). False when stopped."""
    from ..data import data_cache, packed_tokens
    from .loop import tokenized_examples

    data, model = job.spec.data, job.spec.model
    for corpus in (job.corpus, job.eval_corpus):
        if corpus is None:
            continue
        if job.kind == RunKind.TRAIN:
            limit = data.max_tokens if corpus is job.corpus else None
            done = packed_tokens(corpus, job.loaded.tokenizer, prep, limit, data_cache(), data.num_proc)
        else:
            done = tokenized_examples(job.loaded, corpus, model.task, model.labels, job.spec.train.seq_len, prep)
        if done is None:
            prep.close()
            return False
    prep.close()
    return True


@contextlib.contextmanager
def _two_stage_interrupts(stop: StopFlag, at_once: threading.Event):
    """In the kernel while the workers run: the first interrupt asks every rank to stop after the same step,
    a second one ends the workers at once. Neither raises: a KeyboardInterrupt inside a call to the
    manager would leave its connection broken (queue.Empty, SystemError) and the workers running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        (at_once.set if stop.requested else lambda: stop.request("interrupted"))()

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _end(launch: threading.Thread, manager, at_once: threading.Event):
    """Wait for the launcher; workers that have not ended after a second interrupt (or a minute after the
    stop) are terminated, so the launcher's rendezvous ends and frees its port."""
    deadline, ended = time.monotonic() + 60, False
    while launch.is_alive():
        if not ended and (at_once.is_set() or time.monotonic() > deadline):
            # ended on purpose: torch's launcher would log each worker's SIGTERM with a traceback
            logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
            server = getattr(manager, "_process", None)
            for child in multiprocessing.active_children():
                if child is not server and child.pid != getattr(server, "pid", None):
                    child.terminate()
            ended = True
        launch.join(0.1)


def _restore_environment(environment: dict):
    """The kernel's environment as it was before the run, on every exit path."""
    for name in [name for name in os.environ if name not in environment]:
        del os.environ[name]
    for name, value in environment.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _follow(relay, launch: threading.Thread, kind: RunKind, on_step, stop: StopFlag, at_once: threading.Event):
    """In the kernel: draw rank 0's rows, pass Stop on, and wait for the outcome (or the launcher's end)."""
    messages, stop_event = relay
    mirror = TrainResult(kind=kind, total_steps=0)
    while True:
        if stop.requested:
            stop_event.set()
        if at_once.is_set():
            return None
        try:
            message = messages.get(timeout=0.1)
        except queue.Empty:
            if launch.is_alive():
                continue
            return None
        tag, payload = message
        if tag == "step":
            row, mirror.total_steps, mirror.kind = payload
            mirror.history.append(row)
            mirror.tokens, mirror.seconds = row["tokens"], row["elapsed"]
            mirror.interrupted = stop.requested
            for callback in on_step:
                callback(row, mirror)
        elif tag == "error":
            return LLMError(payload)
        elif tag == "failed":
            return RuntimeError(f"a training process failed: {payload}")
        elif tag == "done":
            return payload


def _launch(job: Job, relay, processes: int, port: int | None, accelerate_config: str | None, failure: list[str]):
    try:
        if accelerate_config is None:
            assert port is not None  # run() picks one for forked workers
            _launch_forked(job, relay, processes, port)
        else:
            _launch_script(job, relay, processes, accelerate_config)
    except BaseException as error:  # reported by the kernel thread, which owns the user's output
        failure.append(str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__)


def _launch_forked(job: Job, relay, processes: int, port: int):
    from accelerate import notebook_launcher
    from accelerate.state import AcceleratorState

    # A single-process run earlier in this kernel left accelerate's state behind; the workers make their own.
    AcceleratorState._reset_state(reset_partial_state=True)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # "running on a child thread"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # fast tokenizers warn after a fork otherwise
    notebook_launcher(_work, (job, relay), num_processes=processes, use_port=str(port))


def _launch_script(job: Job, relay, processes: int, config: str):
    """`accelerate launch --config_file FILE -m llm_magics.training.distributed JOBDIR`."""
    torch.save({"job": job, "relay": relay}, Path(job.directory) / "job.pt")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(Path(config).expanduser())]
    if processes > 1:
        command += ["--num_processes", str(processes)]
    command += ["-m", "llm_magics.training.distributed", job.directory]
    env = {**os.environ, "LLM_MAGICS_AUTHKEY": bytes(multiprocessing.current_process().authkey).hex()}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"accelerate launch exited with {done.returncode}")


def _work(job: Job, relay):
    """One worker (rank): the ordinary loop on this rank's device, rank 0 relaying to the kernel."""
    from .loop import Hooks, run_here

    messages, stop_event = relay
    # Jupyter's interrupt reaches every process of the kernel's group: the workers leave it to the kernel,
    # which relays it to all ranks at once (a rank stopping on its own would break the others' collectives).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        loaded = job.loaded
        if job.gpus:
            loaded.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        else:
            loaded.device = torch.device("cpu")
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        loaded.model.to(loaded.device)  # type: ignore[arg-type]  # transformers' wrapper around Module.to hides its signature
        # Each rank draws the same global batch (same seed) and keeps its share of it.
        spec = job.spec
        spec = replace(spec, train=replace(spec.train, batch_size=spec.train.batch_size * world))
        on_step = (
            [lambda row, result: messages.put(("step", (row, result.total_steps, result.kind)))] if rank == 0 else []
        )
        stop = _SharedStop(stop_event)
        prep = Preparation(stop, progress=False)  # the kernel tokenized already: this reads its cache
        result = run_here(loaded, job.corpus, job.eval_corpus, spec=spec, hooks=Hooks(on_step, stop, prep, None))
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # What every rank did (its last step, its evaluations), so the kernel can see they agree.
            ranks: list[dict] = [{}] * world  # all_gather_object replaces each item
            torch.distributed.all_gather_object(ranks, {"steps": result.steps_done, "evaluations": result.eval_history})
            result.ranks = ranks
        if rank == 0:
            torch.save(loaded.model.to("cpu"), Path(job.directory) / MODEL_FILE)  # type: ignore[arg-type]  # as above: Module.to
            messages.put(("done", (result, loaded.kind, loaded.dtype)))
    except LLMError as error:
        if rank == 0:
            messages.put(("error", str(error)))
        raise
    except Exception as error:  # a bug or a library failure: one line in the kernel, the traceback here
        messages.put(("failed", f"rank {rank}: {type(error).__name__}: {error}".splitlines()[0]))
        raise


def _check_can_fork(job: Job, processes: int):
    """What breaks forking the kernel, as one line each."""
    if job.gpus:
        if torch.cuda.is_initialized():
            raise LLMError(
                "CUDA is already initialised in this kernel (a model or tensor was put on the GPU), "
                "and forked workers cannot use it: restart the kernel, load with --device cpu, then "
                "run --processes N (each worker takes its own GPU)"
            )
        if processes > torch.cuda.device_count():
            raise LLMError(
                f"--processes {processes} but this machine has {torch.cuda.device_count()} GPU(s): "
                "ask for at most one process per GPU"
            )
    elif processes > (os.cpu_count() or 1):
        raise LLMError(
            f"--processes {processes} but this machine has {os.cpu_count()} CPU core(s): "
            "ask for at most one process per core"
        )


def _check_config(path: str, processes: int):
    """The config is passed on untouched; we only read it to refuse what would silently run one process."""
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise LLMError(f"--accelerate-config {path}: no such file")
    try:
        config = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise LLMError(f"--accelerate-config {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    wanted = processes if processes > 1 else int(config.get("num_processes", 1))  # --processes overrides it
    if processes > 1 and str(config.get("distributed_type", "NO")).upper() == "NO":
        raise LLMError(
            f"--accelerate-config {path} has distributed_type NO: accelerate would run one process, not "
            f"--processes {processes}; set distributed_type (e.g. MULTI_GPU) or drop the config"
        )
    if config.get("distributed_type") == "MULTI_CPU" and wanted > 1 and not config.get("mpirun_config"):
        raise LLMError(
            f"--accelerate-config {path}: accelerate launch runs several CPU processes only through "
            "MPI (mpirun_config); for CPU processes use --processes N without a config"
        )


def _port() -> int:
    """MASTER_PORT when the user set one (it must be free), else a free port the OS picks."""
    wanted = int(os.environ.get("MASTER_PORT", 0))
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            raise LLMError(
                f"port {wanted} (MASTER_PORT) is in use, maybe by another distributed run: "
                "unset MASTER_PORT or set a free one"
            ) from None
        return probe.getsockname()[1]


class _manager:
    """A multiprocessing manager on this machine: its queue and event reach forked workers and
    `accelerate launch` workers alike (they connect with the kernel's authkey)."""

    def __enter__(self):
        self.manager = multiprocessing.get_context("fork").Manager()
        return self.manager

    def __exit__(self, *exc):
        self.manager.shutdown()


def _main(directory: str):
    multiprocessing.current_process().authkey = bytes.fromhex(os.environ["LLM_MAGICS_AUTHKEY"])
    saved = torch.load(Path(directory) / "job.pt", weights_only=False)
    _work(saved["job"], saved["relay"])


if __name__ == "__main__":
    _main(sys.argv[1])
