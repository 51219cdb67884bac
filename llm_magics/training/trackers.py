"""`--track tensorboard|trackio|wandb|mlflow|aim`: experiment trackers through accelerate's own integration
(`Accelerator(log_with=...)`, `init_trackers` with the run's options as config, `log` per step,
`end_training`); accelerate logs on the main process only, so with --processes N rank 0 writes. Everything
stays local: TensorBoard, trackio, mlflow and aim write under the run's folder, and wandb runs offline when
no login is configured."""

from __future__ import annotations

import os
from pathlib import Path

from ..base.errors import LLMError

# tracker -> (the accelerate check that it is installed, the package the extra installs)
TRACKERS = {
    "tensorboard": ("is_tensorboard_available", "tensorboard"),
    "trackio": ("is_trackio_available", "trackio"),
    "wandb": ("is_wandb_available", "wandb"),
    "mlflow": ("is_mlflow_available", "mlflow"),
    "aim": ("is_aim_available", "aim"),
}
PROJECT = "llm_magics"  # accelerate's project name: TensorBoard writes to <run>/trackers/llm_magics


def parse(track: str | list[str] | None) -> list[str]:
    """The trackers asked for, each known and installed, else one line naming the extra to install."""
    if not track:
        return []
    names = [n.strip().lower() for n in (track.split(",") if isinstance(track, str) else track) if n.strip()]
    import accelerate.utils

    for name in names:
        if name not in TRACKERS:
            raise LLMError(f"unknown tracker {name!r} in --track: use {', '.join(TRACKERS)} (comma-separated)")
        check, package = TRACKERS[name]
        if not getattr(accelerate.utils, check)():
            raise LLMError(f'--track {name} needs {package}, which is not installed: pip install "llm-magics[{name}]"')
    return list(dict.fromkeys(names))


def accelerator_arguments(names: list[str], directory: str | None) -> dict:
    if not names:
        return {}
    return {"log_with": names, "project_dir": directory}


def start(accelerator, names: list[str], directory: str | None, config: dict) -> None:
    """init_trackers with the run's options (scalars only, as TensorBoard's hparams want them)."""
    if not names:
        return
    plain = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in config.items()}
    init = {}
    run_name = Path(directory).parent.name if directory else None  # the run's id in the run history
    if "trackio" in names:  # local: trackio's own store ($TRACKIO_DIR, else ~/.cache/huggingface/trackio)
        init["trackio"] = {"name": run_name, "embed": False, "auto_log_cpu": False, "auto_log_gpu": False}
    if "wandb" in names:
        logged_in = (
            os.environ.get("WANDB_API_KEY")
            or (Path.home() / ".netrc").is_file()
            and "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore")
        )
        init["wandb"] = {"dir": directory, "name": run_name, **({} if logged_in else {"mode": "offline"})}
    if "mlflow" in names and directory:
        _mlflow_into(Path(directory, "mlruns"))
    if "aim" in names and directory:
        init["aim"] = {"repo": directory}
    accelerator.init_trackers(PROJECT, config=plain, init_kwargs=init)


_OUR_MLFLOW_URI: str | None = None  # the run folder we pointed mlflow at last (not the user's own setting)


def _mlflow_into(folder: Path) -> None:
    """mlflow logs into the run's folder unless the user set MLFLOW_TRACKING_URI; our own setting from an
    earlier run is replaced (mlflow reads the variable at each run's start)."""
    global _OUR_MLFLOW_URI
    if os.environ.get("MLFLOW_TRACKING_URI") not in (None, _OUR_MLFLOW_URI):
        return
    _OUR_MLFLOW_URI = os.environ["MLFLOW_TRACKING_URI"] = folder.absolute().as_uri()
    # MLflow 3 refuses a folder store unless asked: a local folder is what an offline notebook wants
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def log(accelerator, names: list[str], row: dict) -> None:
    if names:
        values = {
            k: v
            for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step",)
        }
        accelerator.log(values, step=row["step"])


def end(accelerator, names: list[str]) -> None:
    if names:
        accelerator.end_training()
