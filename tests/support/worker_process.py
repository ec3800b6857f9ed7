"""Run the real `finsentry worker` as a child process, configured through FINSENTRY_* env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from finsentry.settings import Settings

_FORWARDED = (
    "app_id", "topic_raw", "topic_scored", "topic_dead_letters", "topic_alerts",
    "items_index", "company_verdicts_index", "alerts_index", "dead_letters_index",
    "kafka_bootstrap", "es_url",
    "max_batch", "max_wait", "max_text_chars", "bulk_initial_backoff", "bulk_max_backoff",
    "metrics_port", "kafka_session_timeout", "topic_partitions",
    "drift_index", "drift_metrics_port",
)  # fmt: skip


def settings_env(settings: Settings, model_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in _FORWARDED:
        env[f"FINSENTRY_{name.upper()}"] = str(getattr(settings, name))
    env["FINSENTRY_MANAGE_SERVICES"] = "false"
    env["FINSENTRY_MODEL_PATH"] = str(model_path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """A worker child process with its log in a file; stop it with `kill` or `terminate`."""

    def __init__(
        self,
        settings: Settings,
        model_path: Path,
        log_path: Path,
        loglevel: str = "WARNING",
        command: list[str] | None = None,
    ) -> None:
        """`command` (python arguments) replaces `-m finsentry worker --loglevel LEVEL`."""
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *(command or ["-m", "finsentry", "worker", "--loglevel", loglevel])],
            env=settings_env(settings, model_path),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    worker: WorkerProcess | None = None,
    interval: float = 0.5,
) -> None:
    """Poll `condition` every `interval` seconds; fail after `timeout` or when `worker` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(
                f"worker exited early while waiting for {what}:\n{worker.log_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            tail = worker.log_text()[-4000:] if worker is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(interval)
