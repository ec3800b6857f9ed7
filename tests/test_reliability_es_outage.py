"""Elasticsearch down for a minute mid-stream (issue 7, part 1).

A private Elasticsearch node (same class as `finsentry services`, other ports and state dir;
the shared one is never touched) is stopped while a feed keeps sending to the shared Kafka.
The worker must hold its batch and retry with capped backoff, commit no offset it has not
indexed, and, once the node is back, index every item; writes are counted per item (the
document's `_version`, the scored topic's messages), and only what was in flight at the stop
may be written twice. A second worker gets SIGTERM during the outage, holding a batch it
cannot index: it must exit cleanly and ack none of that batch.

"Commit no offset it has not indexed" is checked exactly: the worker is frozen (SIGSTOP) for
a moment, the index is read and the node stopped, then the worker is let go; every committed
offset seen during the outage must belong to an item that was in the index when it stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from finsentry.es_client import make_es_client
from finsentry.services.elasticsearch import LocalElasticsearch
from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.counting import Tally, deliveries, in_flight, write_counts
from tests.support.feed import Feed, send_all
from tests.support.outcomes import record
from tests.support.private_services import private_elasticsearch, running
from tests.support.streams import committed_offsets, count, end_offsets, index_ids, kafka_admin
from tests.support.worker_process import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

AREA = "Elasticsearch outage"
RATE = 20.0
TOTAL = 1600  # 80 s of feed: before and during the outage, then the backlog after it
DOWN_SECONDS = 60.0
MAX_BACKOFF = 4.0
STOPPED_AFTER = 8.0  # seconds into the outage at which the second worker gets SIGTERM


@pytest.fixture(scope="module")
def node(services: Settings) -> Iterator[LocalElasticsearch]:
    with running(private_elasticsearch(services)) as started:
        assert isinstance(started, LocalElasticsearch)
        yield started


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def _names(settings: Settings) -> dict[str, object]:
    """The topic, index and group names of `settings`."""
    fields = ("app_id", "topic_raw", "topic_scored", "topic_dead_letters", "topic_alerts")
    indices = ("items_index", "dead_letters_index", "alerts_index", "company_verdicts_index")
    return {n: getattr(settings, n) for n in (*fields, *indices) if n in Settings.model_fields}


def _committed(settings: Settings) -> dict[int, int]:
    with kafka_admin(settings) as admin:
        return committed_offsets(admin, settings.app_id, settings.topic_raw)


TERM_TIMEOUT = 30.0


@dataclass
class Exit:
    code: int | None
    seconds: float


def _sigterm(worker: WorkerProcess) -> Exit:
    """SIGTERM, then how long the worker took to exit, and its exit code."""
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = worker.proc.wait(timeout=TERM_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    return Exit(code, time.monotonic() - started)


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
    # A second worker, on topics and indices of its own, is stopped during the outage.
    stopped = settings.model_copy(update=_names(unique_settings(node.settings)))
    stopped_before = send_all(stopped, 40, "s")
    feed = Feed(settings, TOTAL, RATE, prefix="o")
    feed.start()
    worker = WorkerProcess(settings, tiny_artifact, tmp_path / "worker.log")
    second = WorkerProcess(stopped, tiny_artifact, tmp_path / "stopped.log")
    snapshots: list[dict[int, int]] = []
    try:
        wait_until(lambda: count(es, settings.items_index) >= 150, 240, "150 items", worker)
        wait_until(
            lambda: sum(_committed(stopped).values()) >= len(stopped_before),
            120,
            "the second worker done with its first items",
            second,
        )

        # Read the index and stop the node while the worker cannot write.
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
            in_index_at_stop = set(index_ids(es, settings.items_index))
            committed_at_stop = _committed(settings)
            rss_before = _rss_mb(worker.proc.pid)
            node.down()
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        down_at = time.monotonic()
        stopped_during = send_all(stopped, 20, "d")
        term = None
        with kafka_admin(settings) as admin:
            while time.monotonic() - down_at < DOWN_SECONDS:
                snapshots.append(committed_offsets(admin, settings.app_id, settings.topic_raw))
                assert worker.proc.poll() is None, worker.log_text()[-3000:]
                held = "retrying" in second.log_text()  # its sink holds a batch
                if term is None and held and time.monotonic() - down_at > STOPPED_AFTER:
                    term = _sigterm(second)
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
        ids = index_ids(es, settings.items_index)
        alive = worker.proc.poll() is None
        tally = Tally(
            feed.ids(),
            write_counts(es, settings.items_index),
            deliveries(settings, settings.topic_scored),
            in_flight(feed.placed, committed_at_stop, in_index_at_stop),
            sent=deliveries(settings, settings.topic_raw),
        )
        stopped_committed = _committed(stopped)
        stopped_indexed = set(index_ids(es, stopped.items_index))
    finally:
        worker.terminate()
        second.terminate()
        for used in (settings, stopped):
            for index in (used.items_index, used.dead_letters_index):
                es.options(ignore_status=404).indices.delete(index=index)

    ahead = set().union(*(feed.ids_below(s) for s in snapshots)) - in_index_at_stop
    most_committed = max(sum(s.values()) for s in snapshots)
    log = worker.log_text()
    backoffs = [float(b) for b in re.findall(r"retrying \d+ documents in ([\d.]+)s", log)]
    batch_failures = len(re.findall(r"batch of \d+ failed \(attempt", log))

    exact = sorted(ids) == sorted(feed.ids())
    record(
        AREA,
        f"node stopped {DOWN_SECONDS:.0f}s mid-stream (outage {outage:.0f}s with restart), "
        f"feed of {TOTAL} items at {RATE:.0f}/s",
        f"all {TOTAL} indexed, one document each, ids exact",
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
    record(
        AREA,
        "writes counted per item (document _version, scored-topic messages)",
        "nothing lost; indexed again or delivered twice at most what was in flight at the "
        "stop (indexed, not committed), once each",
        tally.describe(),
        tally.complete and tally.bounded,
    )
    capped = bool(backoffs) and max(backoffs) <= MAX_BACKOFF and backoffs[:3] == [0.5, 1.0, 2.0]
    record(
        AREA,
        "retries during the outage",
        f"capped exponential backoff (0.5s doubling, cap {MAX_BACKOFF}s) inside the sink, no "
        "batch-level retry; worker keeps running",
        f"{len(backoffs)} bulk retries, backoffs {backoffs[:6]}... max {max(backoffs or [0])}s; "
        f"{batch_failures} batch-level failures; worker alive: {alive}",
        capped and alive and batch_failures == 0,
    )
    assert term is not None, "the second worker never held a batch: " + second.log_text()[-2000:]
    before_ids, during_ids = set(stopped_before.values()), set(stopped_during.values())
    held_back = in_flight(stopped_during, stopped_committed, during_ids)
    clean = term.code == 0 and term.seconds < TERM_TIMEOUT
    acked_nothing = (
        sum(stopped_committed.values()) == len(stopped_before)
        and held_back == during_ids
        and stopped_indexed == before_ids
    )
    record(
        AREA,
        f"SIGTERM to a worker {STOPPED_AFTER:.0f}s into the outage, holding a batch of "
        f"{len(during_ids)} items it cannot index",
        "exits cleanly (code 0) and promptly; acks nothing it did not index: every item sent "
        "during the outage stays uncommitted (a restart reads it again)",
        f"exit code {term.code} after {term.seconds:.1f}s; offsets committed "
        f"{sum(stopped_committed.values())} = items indexed before the outage "
        f"{len(stopped_before)}: {sum(stopped_committed.values()) == len(stopped_before)}; "
        f"outage items left uncommitted {len(held_back)}/{len(during_ids)}",
        clean and acked_nothing,
    )
    assert tally.complete and tally.bounded, tally.problems()
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
    assert capped and alive and batch_failures == 0
    assert clean, (term, second.log_text()[-3000:])
    assert acked_nothing, (stopped_committed, sorted(during_ids - held_back))
    assert backlog > 0 and rss_during - rss_before < 200
