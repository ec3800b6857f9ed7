"""No secret in the logs, even at DEBUG: the worker and the alerter run with every
SecretStr setting given a unique value, the worker indexes items (the Elasticsearch
credentials go out with every request), and neither process's output may contain a secret,
its base64 form (HTTP basic auth) or its URL-encoded form.

The shared broker is PLAINTEXT, so the Kafka SASL password is set but not sent here;
tests/test_reliability_kafka_sasl.py uses it on a real SASL_SSL broker.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.feed import send_all
from tests.support.outcomes import record
from tests.support.streams import count
from tests.support.worker_process import WorkerProcess, settings_env, wait_until

pytestmark = pytest.mark.integration

AREA = "security"
ITEMS = 20


def _secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex
    hook = f"http://127.0.0.1:9/hooks/{tag}-hook"
    return {
        "FINSENTRY_ES_PASSWORD": f"es-pw-{tag}",
        "FINSENTRY_KAFKA_SASL_PASSWORD": f"kafka-pw-{tag}",
        "FINSENTRY_SMTP_PASSWORD": f"smtp-pw-{tag}",
        "FINSENTRY_API_TOKEN": f"api-token-{tag}",
        "FINSENTRY_GRAFANA_TOKEN": f"grafana-token-{tag}",
        "FINSENTRY_GRAFANA_WEBHOOK_URL": f"http://127.0.0.1:9/grafana/{tag}-grafana",
        "FINSENTRY_ALERT_CHANNEL_URLS": json.dumps({"desk": f"{hook}-desk"}),
        "FINSENTRY_WEBHOOK_URLS": json.dumps([hook]),
        "FINSENTRY_SOURCE_SECRETS": json.dumps({"FEED_KEY": f"source-key-{tag}"}),
    }


def _forms(secret: str, username: str) -> list[str]:
    """A secret as it could appear in a log: itself, URL-encoded, in a basic-auth header."""
    basic = base64.b64encode(f"{username}:{secret}".encode()).decode()
    return [secret, quote(secret, safe=""), basic]


def test_worker_and_alerter_at_debug_log_no_secret(
    services: Settings, es: Any, tiny_artifact: Path, tmp_path: Path
) -> None:
    settings = unique_settings(services, max_batch=8, max_wait=0.1)
    secrets = _secrets()
    values = [
        secrets["FINSENTRY_ES_PASSWORD"],
        secrets["FINSENTRY_KAFKA_SASL_PASSWORD"],
        secrets["FINSENTRY_SMTP_PASSWORD"],
        secrets["FINSENTRY_API_TOKEN"],
        secrets["FINSENTRY_GRAFANA_TOKEN"],
        secrets["FINSENTRY_GRAFANA_WEBHOOK_URL"],
        *json.loads(secrets["FINSENTRY_ALERT_CHANNEL_URLS"]).values(),
        *json.loads(secrets["FINSENTRY_WEBHOOK_URLS"]),
        *json.loads(secrets["FINSENTRY_SOURCE_SECRETS"]).values(),
    ]
    env = {
        **secrets,
        "FINSENTRY_ES_USERNAME": "finsentry-writer",
        "FINSENTRY_KAFKA_SASL_USERNAME": "finsentry",
        "FINSENTRY_SMTP_USERNAME": "finsentry",
        "FINSENTRY_SMTP_HOST": "127.0.0.1",
    }
    send_all(settings, ITEMS, "s")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        worker = WorkerProcess(settings, tiny_artifact, tmp_path / "worker.log", loglevel="DEBUG")
    alerter_log = tmp_path / "alerter.log"
    with alerter_log.open("wb") as out:
        alerter = subprocess.Popen(
            [sys.executable, "-m", "finsentry", "alerter", "--loglevel", "debug"],
            env={**settings_env(settings, tiny_artifact), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: count(es, settings.items_index) >= ITEMS, 180, "items", worker)
            alerter_running = alerter.poll() is None
        finally:
            worker.terminate()
            alerter.terminate()
            try:
                alerter.wait(timeout=60)
            except subprocess.TimeoutExpired:
                alerter.kill()
    for index in (settings.items_index, settings.dead_letters_index, settings.alerts_index):
        es.options(ignore_status=404).indices.delete(index=index)

    outputs = {"worker": worker.log_text(), "alerter": alerter_log.read_text(errors="replace")}
    users = ("finsentry-writer", "finsentry", "elastic")
    found = {
        name: sorted(
            {
                f"{key[:12]}…"
                for key in values
                for user in users
                for form in _forms(key, user)
                if form in text
            }
        )
        for name, text in outputs.items()
    }
    debug_lines = {name: text.count("DEBUG") for name, text in outputs.items()}
    ok = not any(found.values()) and all(n > 0 for n in debug_lines.values()) and alerter_running
    record(
        AREA,
        f"worker (indexing {ITEMS} items) and alerter at DEBUG, with every SecretStr setting "
        "set (ES, SMTP, API, Grafana, webhook and channel URLs, source secrets, Kafka SASL)",
        "no secret in either output, as is, URL-encoded or as basic auth",
        f"{len(outputs['worker'])} bytes of worker log ({debug_lines['worker']} DEBUG records), "
        f"{len(outputs['alerter'])} bytes of alerter log ({debug_lines['alerter']} DEBUG "
        f"records); secrets found: {found}",
        ok,
    )
    assert alerter_running, outputs["alerter"][-3000:]
    assert all(n > 0 for n in debug_lines.values()), "the processes did not log at DEBUG"
    assert not any(found.values()), found
