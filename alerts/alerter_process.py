"""`finsentry alerter` as a child process, configured by a Settings object and AlertRules.

The end-to-end tests and benchmarks/alert_latency.py drive the real alerter this way: the
settings that name its world (app id, topics, indices, channels, SMTP) go to the child as
FINSENTRY_* variables, the rules as a JSON file, its output to a log file. The child runs
in its own session, so a kill reaches everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from finsentry.alerts.rules import AlertRules
from finsentry.settings import Settings

ALERTER_FIELDS = (
    "app_id",
    "kafka_bootstrap",
    "es_url",
    "topic_scored",
    "topic_alerts",
    "topic_partitions",
    "alerts_index",
    "watchlists_index",
    "webhook_urls",
    "slack_webhook_urls",
    "alert_channel_urls",
    "smtp_host",
    "smtp_port",
    "smtp_from",
    "digest_at",
    "alerter_instance_id",
)


def _env_value(value: Any) -> str:
    def plain(v: Any) -> Any:
        return v.get_secret_value() if isinstance(v, SecretStr) else v

    if isinstance(value, list | dict):
        return json.dumps(value, default=plain)
    return str(plain(value))


def alerter_env(settings: Settings, rules_file: Path, base: Mapping[str, str]) -> dict[str, str]:
    """`base` (the parent's environment) with the FINSENTRY_* variables that make a child
    alerter use these settings and the rules in `rules_file`; a None field is removed where
    None is its default, and set empty where the default is something else."""
    env = dict(base)
    for name in ALERTER_FIELDS:
        key = f"FINSENTRY_{name.upper()}"
        value = getattr(settings, name)
        env.pop(key, None)
        if value is not None:
            env[key] = _env_value(value)
        elif Settings.model_fields[name].default is not None:
            env[key] = ""  # None here, not the child's default (digest_at: "" = off)
    env["FINSENTRY_MANAGE_SERVICES"] = "false"
    env["FINSENTRY_ALERT_RULES_FILE"] = str(rules_file)
    return env


class AlerterProcess:
    """The alerter child: `start` it (again after a kill), `kill` it with any signal."""

    def __init__(
        self, settings: Settings, rules: AlertRules, work_dir: Path, loglevel: str = "info"
    ) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.rules_file = work_dir / "rules.json"
        self.rules_file.write_text(rules.model_dump_json(), encoding="utf-8")
        self.log_path = work_dir / "alerter.log"
        self.env = alerter_env(settings, self.rules_file, os.environ)
        self.loglevel = loglevel
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "finsentry", "alerter", "--loglevel", self.loglevel]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Send `sig` to the child's session and wait; SIGKILL if it has not exited by then."""
        if self.proc is None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]
