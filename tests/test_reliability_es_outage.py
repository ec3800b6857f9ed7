"""Elasticsearch down for a minute mid-stream (issue 7, part 1).

A private Elasticsearch node (same class as `finsentry services`, other ports and state dir;
the shared one is never touched) is stopped while a feed keeps sending to the shared Kafka.
The worker must hold its batch and retry with capped backoff, commit no offset it has not
indexed, and, once the node is back, index every item exactly once.

"Commit no offset it has not indexed" is checked exactly: the worker is frozen (SIGSTOP) for
a moment, the index is read and the node stopped, then the worker is let go; every committed
offset seen during the outage must belong to an item that was in the index when it stopped.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from finsentry.es_client import make_es_client
from finsentry.services.elasticsearch import LocalElasticsearch
from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.feed import Feed
from tests.support.outcomes import record
from tests.support.private_services import private_elasticsearch, running
from tests.support.streams import committed_offsets, count, end_offsets, index_ids, kafka_admin
from tests.support.worker_process import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

AREA = "Elasticsearch outage"
RATE = 20.0
TOTAL = 2400  # two minutes of feed: before, during and after the outage
DOWN_SECONDS = 60.0
MAX_BACKOFF = 4.0


@pytest.fixture(scope="module")
def node(services: Settings) -> Iterator[LocalElasticsearch]:
    with running(private_elasticsearch(services)) as started:
        assert isinstance(started, LocalElasticsearch)
        yield started


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def test_elasticsearch_down_for_a_minute_mid_stream_loses_and_duplicates_nothing(
    node: LocalElasticsearch, tiny_artifact: Path, tmp_path: Path
) -> None:
    settings = unique_settings(
        node.settings,
        max_batch=16,
        max_wait=0.2,
        bulk_initial_backoff=0.5,
        bulk_max_backoff=MAX_BACKOFF,
    )
    es: Any = make_es_client(settings)
    feed = Feed(settings, TOTAL, RATE, prefix="o")
    feed.start()
    worker = WorkerProcess(settings, tiny_artifact, tmp_path / "worker.log")
    snapshots: list[dict[int, int]] = []
    try:
        wait_until(lambda: count(es, settings.items_index) >= 150, 240, "150 items", worker)

        # Read the index and stop the node while the worker cannot write.
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
            in_index_at_stop = set(index_ids(es, settings.items_index))
            rss_before = _rss_mb(worker.proc.pid)
            node.down()
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        down_at = time.monotonic()
        with kafka_admin(settings) as admin:
            while time.monotonic() - down_at < DOWN_SECONDS:
                snapshots.append(committed_offsets(admin, settings.app_id, settings.topic_raw))
                assert worker.proc.poll() is None, worker.log_text()[-3000:]
                time.sleep(1.0)
            produced = end_offsets(admin, settings.topic_raw, settings.topic_partitions)
            backlog = sum(produced.values()) - sum(snapshots[-1].values())
        rss_during = _rss_mb(worker.proc.pid)
        node.up()
        outage = time.monotonic() - down_at

        feed.join(timeout=TOTAL / RATE + 120)
        assert feed.error is None and not feed.is_alive()
        wait_until(lambda: count(es, settings.items_index) >= TOTAL, 300, "every item", worker)
        with kafka_admin(settings) as admin:
            wait_until(
                lambda: (
                    sum(committed_offsets(admin, settings.app_id, settings.topic_raw).values())
                    >= len(feed.placed)
                ),
                60,
                "offsets committed to the end",
                worker,
            )
        time.sleep(2.0)  # anything written twice would show now
        ids = index_ids(es, settings.items_index)
        alive = worker.proc.poll() is None
    finally:
        worker.terminate()
        es.options(ignore_status=404).indices.delete(index=settings.items_index)
        es.options(ignore_status=404).indices.delete(index=settings.dead_letters_index)

    ahead = set().union(*(feed.ids_below(s) for s in snapshots)) - in_index_at_stop
    most_committed = max(sum(s.values()) for s in snapshots)
    log = worker.log_text()
    backoffs = [float(b) for b in re.findall(r"retrying \d+ documents in ([\d.]+)s", log)]
    batch_failures = log.count("failed; retrying")

    exact = sorted(ids) == sorted(feed.ids())
    record(
        AREA,
        f"node stopped {DOWN_SECONDS:.0f}s mid-stream (outage {outage:.0f}s with restart), "
        f"feed of {TOTAL} items at {RATE:.0f}/s",
        f"all {TOTAL} indexed exactly once, ids exact",
        f"{len(ids)} documents, {len(set(ids))} distinct ids, ids exact: {exact}",
        exact and len(ids) == TOTAL,
    )
    record(
        AREA,
        "committed offsets while the node was down",
        "no offset committed for an item not yet indexed",
        f"{len(snapshots)} polls; at most {most_committed} offsets committed, "
        f"{len(in_index_at_stop)} items were in the index at the stop; "
        f"committed but not indexed: {len(ahead)}",
        not ahead,
    )
    capped = bool(backoffs) and max(backoffs) <= MAX_BACKOFF and backoffs[:3] == [0.5, 1.0, 2.0]
    record(
        AREA,
        "retries during the outage",
        f"capped exponential backoff (0.5s doubling, cap {MAX_BACKOFF}s); worker keeps running",
        f"{len(backoffs)} bulk retries, backoffs {backoffs[:6]}... max {max(backoffs or [0])}s; "
        f"{batch_failures} batch-level failures; worker alive: {alive}",
        capped and alive,
    )
    record(
        AREA,
        "what the worker holds while the node is down",
        "a bounded buffer: the backlog stays in Kafka, worker memory flat",
        f"backlog left in Kafka at the end of the outage: {backlog} messages; "
        f"worker RSS {rss_before:.0f} MB -> {rss_during:.0f} MB",
        backlog > 0 and rss_during - rss_before < 200,
    )
    assert exact and len(ids) == TOTAL
    assert not ahead, f"committed before indexed: {sorted(ahead)[:20]}"
    assert capped and alive
    assert backlog > 0 and rss_during - rss_before < 200
