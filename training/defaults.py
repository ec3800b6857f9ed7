"""The default artifact: trained once on a fresh machine, then reused."""

from __future__ import annotations

import fcntl
from pathlib import Path

from finsentry.models.artifact import newest_servable
from finsentry.settings import Settings
from finsentry.training.config import TrainConfig, default_data


def default_config(settings: Settings, *, progress: bool = True) -> TrainConfig:
    """The default recipe: one MiniLM encoder with a sentiment head and a topic head."""
    return TrainConfig(
        task="multitask",
        data=default_data(settings.data_dir, "multitask"),
        output_dir=settings.models_dir,
        progress=progress,
    )


def ensure_default_artifact(settings: Settings, progress: bool = True) -> Path:
    """The artifact the scorer would serve; trains the default one when there is none.

    Training takes about half an hour on two CPU cores (minutes on a GPU). A lock file in
    the models folder keeps two processes from training at once."""
    if settings.model_path is not None:
        return Path(settings.model_path)
    found = newest_servable(settings.models_dir)
    if found is not None:
        return found
    from finsentry.training.train import run_training

    Path(settings.models_dir).mkdir(parents=True, exist_ok=True)
    with (Path(settings.models_dir) / ".train.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = newest_servable(settings.models_dir)
        if found is not None:
            return found
        return run_training(default_config(settings, progress=progress))
