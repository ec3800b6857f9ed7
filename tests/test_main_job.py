"""`finsentry run`, the main job, as a user starts it: services, worker, alerter, feed, view."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import unique_settings
from tests.support.worker_process import settings_env

pytestmark = pytest.mark.integration


def test_the_main_job_scores_the_simulated_feed_and_stops_cleanly(services, es, tiny_artifact):  # type: ignore[no-untyped-def]
    settings = unique_settings(services, max_wait=0.2)
    env = settings_env(settings, tiny_artifact)
    env["FINSENTRY_MANAGE_SERVICES"] = "true"  # `up` on running services is harmless
    done = subprocess.run(
        [sys.executable, "-m", "finsentry", "run", "--rate", "25", "--duration", "40"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    es.indices.refresh(index=settings.items_index)
    indexed = es.count(index=settings.items_index)["count"]
    assert indexed >= 100, done.stdout[-3000:]
    tickers = es.search(
        index=settings.items_index, size=0, aggs={"t": {"terms": {"field": "tickers"}}}
    )["aggregations"]["t"]["buckets"]
    assert tickers, "simulated items name listed companies"
    assert "worker and alerter started" in done.stdout
    for index in (settings.items_index, settings.dead_letters_index, settings.alerts_index):
        es.options(ignore_status=404).indices.delete(index=index)
